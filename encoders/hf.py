"""Loading and saving Hugging Face models without their per-file progress bars.

A job loads a small local language tower or depth model in well under a second; transformers would still
draw a bar for it on the job's console (and in every worker's log)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hugging Face progress bars off for the block, then as the caller had them (bars a user turned off
    stay off)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
