"""`raybind evaluate` as a script, for `ray job submit --working-dir . -- python jobs/evaluate.py ...`
(the command itself: raybind/commands; `python jobs/evaluate.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("evaluate")
