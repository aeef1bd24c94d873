"""Shared fixtures. Ray fixtures live in tests/raybind/conftest.py so encoder tests never start Ray."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_config():
    from encoders import languagebind_config

    return languagebind_config("tiny", ["video", "audio", "depth", "thermal"])
