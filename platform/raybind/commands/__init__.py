"""The `raybind` subcommands, one module each: `SUMMARY` (one line for `raybind --help`), `add_arguments`
and `run(args) -> summary dict`. Heavy imports (Ray, torch) happen inside `run`, so help is instant.

`jobs/<name>.py` are thin entry points over these for `ray job submit --working-dir .`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# subcommand -> module under raybind.commands, in the order `raybind --help` lists them
COMMANDS: dict[str, str] = {
    "pretrain": "pretrain",
    "sweep": "sweep",
    "build": "build",
    "check": "check",
    "evaluate": "evaluate",
    "embed": "embed",
    "query": "query",
    "import-languagebind": "import_languagebind",
    "export-languagebind": "export_languagebind",
    "demo-data": "demo_data",
    "bench": "bench",
}


def command_module(name: str) -> ModuleType:
    """The module that implements subcommand `name`."""
    return importlib.import_module(f"raybind.commands.{COMMANDS[name]}")
