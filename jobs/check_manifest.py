"""`raybind check` as a script, for `ray job submit --working-dir . -- python jobs/check_manifest.py ...`
(the command itself: raybind/commands; `python jobs/check_manifest.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("check")
