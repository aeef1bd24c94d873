"""One `raybind` command: every job is a subcommand, and `jobs/<name>.py` runs the same one."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from raybind.cli import build_parser
from raybind.commands import COMMANDS, command_module

ROOT = Path(__file__).resolve().parents[2]
JOBS = {"pretrain": "pretrain", "sweep": "sweep", "build": "build_dataset", "check": "check_manifest",
        "evaluate": "evaluate",
        "embed": "embed", "query": "query", "demo-data": "make_demo_data", "bench": "benchmark",
        "import-languagebind": "import_languagebind", "export-languagebind": "export_languagebind"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240, cwd=ROOT)


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_help_lists_every_subcommand_with_its_summary():
    result = _run("-m", "raybind", "--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"    {name}" in result.stdout
        first_words = command_module(name).SUMMARY.split()[:3]
        assert " ".join(first_words) in " ".join(result.stdout.split()), name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_job_script_is_its_subcommand(name):
    """`python jobs/<script>.py --help` offers exactly the options of `raybind <name>`."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    expected = _options(subparsers.choices[name])
    result = _run(f"jobs/{JOBS[name]}.py", "--help")
    assert result.returncode == 0, result.stderr
    assert {o for o in expected if o != "-h"} <= set(result.stdout.replace(",", " ").split())
    assert command_module(name).__doc__.splitlines()[0] in result.stdout


def test_subcommand_runs_and_ends_with_its_json_line(tmp_path):
    result = _run("-m", "raybind", "demo-data", "--output", str(tmp_path), "--train", "3", "--val", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["clips"] == 5
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 3


def test_bad_input_exits_2_naming_the_field():
    result = _run("-m", "raybind", "pretrain", "--config", "configs/quickstart.yaml", "--set",
                  "model.towers.video.mask_ratio=1.5")
    assert result.returncode == 2
    assert "model.towers.video.mask_ratio: Input should be less than 1" in result.stderr
    result = _run("-m", "raybind", "bench", "--suite", "nope")
    assert result.returncode == 2 and "unknown suite(s) ['nope']" in result.stderr
