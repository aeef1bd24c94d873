"""Metric names: the one place that defines the keys the training loop reports and that the summary,
sweeps and dashboards read back.

Run-level metrics are plain names (`step`, `samples_per_s`). Per-tower metrics are `<name>/<modality>`
(`val_r1/video`); validation before and after training adds the moment: `val_r1_after/video`.
"""

from __future__ import annotations

from typing import Any

STEP = "step"
EPOCH = "epoch"
SAMPLES_PER_S = "samples_per_s"
DATA_WAIT_FRAC = "data_wait_frac"
ROWS_FIRST_PASS = "rows_first_pass"
VAL_ROWS = "val_rows"
RESUMED_FROM = "resumed_from"
STAGE = "stage"                    # index of the training stage the step is in (train.stages)
CAPTION_VIEWS = "caption_views"    # {view: times drawn so far}, all ranks (data.caption_views)
STAGE_SKIPPED_ROWS = "stage_skipped_rows"  # rows of a kind the stage did not feed (counted, not trained)

# per tower
TRAIN_LOSS = "loss"
LR = "lr"
LOGIT_SCALE = "logit_scale"
VAL_LOSS = "val_loss"
VAL_R1 = "val_r1"
VAL_R5 = "val_r5"
VAL_R10 = "val_r10"
VAL_R1_X2T = "val_r1_x2t"
CHANCE = "chance"
VAL_STEP = "val_step"        # run level: the step the reported validation was taken at (0: before training)
VAL_R1_MEAN = "val_r1_mean"  # run level: text-to-X R@1 averaged over the towers (what sweeps rank by default)
VALIDATION = (VAL_LOSS, VAL_R1, VAL_R5, VAL_R10, VAL_R1_X2T)  # what every validation pass yields per tower

BEFORE, AFTER = "before", "after"


def tower_key(name: str, modality: str, moment: str | None = None) -> str:
    """`val_r1/video`, or with a moment (before/after training) `val_r1_after/video`."""
    return f"{name}_{moment}/{modality}" if moment else f"{name}/{modality}"


def per_tower(metrics: dict[str, Any], modalities: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Reported metrics -> {modality: {name: value}} (names without the modality, e.g. `val_r1_after`)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in modalities}
    for key, value in metrics.items():
        name, _, modality = key.rpartition("/")
        if name and modality in out:
            out[modality][name] = value
    return out
