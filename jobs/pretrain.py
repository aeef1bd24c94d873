"""`raybind pretrain` as a script, for `ray job submit --working-dir . -- python jobs/pretrain.py ...`
(the command itself: raybind/commands; `python jobs/pretrain.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("pretrain")
