"""`raybind import-languagebind` as a script, for `ray job submit --working-dir . -- python jobs/import_languagebind.py ...`
(the command itself: raybind/commands; `python jobs/import_languagebind.py --help` lists its options)."""

from raybind.cli import job_main

if __name__ == "__main__":
    job_main("import-languagebind")
