"""`raybind query` as a script, for `ray job submit --working-dir . -- python jobs/query.py ...`
(the command itself: raybind/commands; `python jobs/query.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("query")
