"""`raybind build` as a script, for `ray job submit --working-dir . -- python jobs/build_dataset.py ...`
(the command itself: raybind/commands; `python jobs/build_dataset.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("build")
