"""Shared fixtures. Ray fixtures live in tests/raybind/conftest.py so encoder tests never start Ray."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Fake credentials for the local moto S3 server; set before Ray starts so its workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def tiny_config():
    from encoders import languagebind_config

    return languagebind_config("tiny", ["video", "audio", "depth", "thermal"])
