"""Training checkpoints: the model contract of `encoders.checkpoint` plus optimizer and progress beside it.

    <checkpoint>/raybind.json, <modality>/...   model (adapters + trained tensors), see encoders.checkpoint;
                                            raybind.json also keeps the run's media settings (frames,
                                            synthesizers: config.MediaSettings), so evaluation decodes as training did
    <checkpoint>/trainer_state.pt               optimizer + LR scheduler state (loaded weights_only=True)
    <checkpoint>/progress.json                  step, epoch, metrics so far

A checkpoint directory is written completely on local disk first; Ray uploads it and registers it only
after the upload finished, so resume never sees a half-written one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from encoders import BindModel, save_model
from encoders.checkpoint import load_into
from raybind.config import CHECKPOINT_MEDIA_KEY

TRAINER_STATE = "trainer_state.pt"
PROGRESS = "progress.json"


def save_training_checkpoint(directory: Path, model: BindModel, optimizer: torch.optim.Optimizer,
                             scheduler: torch.optim.lr_scheduler.LRScheduler, progress: dict[str, Any],
                             data: dict[str, Any] | None = None) -> Path:
    """Write the model (with the run's media settings `data`), optimizer and scheduler state and `progress`
    into the local `directory`, which Ray uploads whole afterwards."""
    save_model(model, directory, extra={"step": progress["step"], **({CHECKPOINT_MEDIA_KEY: data} if data else {})})
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / TRAINER_STATE)
    (directory / PROGRESS).write_text(json.dumps(progress, indent=2, sort_keys=True))
    return directory


def load_training_checkpoint(directory: Path, model: BindModel, optimizer: torch.optim.Optimizer,
                             scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Restore model, optimizer and scheduler in place; return the saved progress."""
    load_into(model, directory)
    state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    saved = [len(group["params"]) for group in state["optimizer"]["param_groups"]]
    ours = [len(group["params"]) for group in optimizer.param_groups]
    if saved != ours:   # Adam's moments belong to parameters by position: another set cannot resume
        raise ValueError(
            f"cannot resume from {directory}: its optimizer holds {sum(saved)} trained tensors in groups of {saved}, "
            f"this model trains {sum(ours)} in groups of {ours} (towers that train other parameters, e.g. written "
            "before class embeddings and temporal norms trained). Continue from its weights in a new run: another "
            "`name`, with `model.init_from` set to this run's folder (<storage>/<name>)")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return json.loads((directory / PROGRESS).read_text())
