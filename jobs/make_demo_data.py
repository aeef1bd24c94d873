"""`raybind demo-data` as a script, for `ray job submit --working-dir . -- python jobs/make_demo_data.py ...`
(the command itself: raybind/commands; `python jobs/make_demo_data.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("demo-data")
