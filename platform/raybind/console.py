"""What a person sees while training runs: one line per log step and a small table per validation.

Ray Train calls user callbacks on its controller, not in the driver: `ProgressCallback` forwards each
report through a Ray queue and `ProgressPrinter` (a thread in the driver) prints it on stderr. Plain
lines, no redraws, so logs and CI read the same as a terminal. Ray's own per-report and plan dumps stay
off unless `ray.verbose` (`--verbose`) asks for them.
"""

from __future__ import annotations

import queue as stdlib_queue
import sys
import threading
import time
from typing import Any, TextIO

from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

from raybind import metrics as M


class ProgressCallback(UserCallback):
    """On the Ray Train controller: forward rank 0's metrics of every report to the driver."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        """Ray Train's hook after each report: queue rank 0's metrics without blocking the controller."""
        self.queue.put(dict(metrics[0]), block=False)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressLines:
    """Formats reports: a progress line each, and a validation table when new validation results arrive."""

    def __init__(self, total_steps: int, modalities: tuple[str, ...]) -> None:
        self.total, self.modalities = total_steps, modalities
        self.first: tuple[float, int] | None = None
        self.last_val: dict[str, Any] = {}

    def lines(self, metrics: dict[str, Any], now: float | None = None) -> list[str]:
        """The lines for one report: the progress line (losses, samples/s, data wait, ETA), then the validation
        table when the report brings new validation results. `now`: monotonic seconds (default: now)."""
        now = time.monotonic() if now is None else now
        step = int(metrics.get(M.STEP) or 0)
        if self.first is None:
            self.first = (now, step)
        losses = " ".join(f"{m} {metrics[M.tower_key(M.TRAIN_LOSS, m)]:.3f}" for m in self.modalities
                          if M.tower_key(M.TRAIN_LOSS, m) in metrics)
        line = f"step {step:>{len(str(self.total))}}/{self.total}  loss {losses or '-'}"
        if metrics.get(M.SAMPLES_PER_S) is not None:
            line += f"  {metrics[M.SAMPLES_PER_S]:.1f} samples/s"
        if metrics.get(M.DATA_WAIT_FRAC) is not None:
            line += f"  data wait {metrics[M.DATA_WAIT_FRAC]:.0%}"
        started, first_step = self.first
        if step > first_step and step < self.total:
            line += f"  ETA {_duration((self.total - step) * (now - started) / (step - first_step))}"
        out = [line]
        val = {k: v for k, v in metrics.items() if k.split("/")[0] in M.VALIDATION}
        if val and val != self.last_val:
            self.last_val = val
            out.extend(self.validation_table(step, metrics))
        return out

    def validation_table(self, step: int, metrics: dict[str, Any]) -> list[str]:
        """R@1/5/10 and loss per tower of the newest validation, labelled with its step (0: before training)."""
        taken = metrics.get(M.VAL_STEP, step)
        when = "before training" if taken == 0 else f"at step {taken}"
        rows = [f"  validation {when}:", f"    {'tower':8s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'loss':>7s}"]
        for m in self.modalities:
            if M.tower_key(M.VAL_R1, m) not in metrics:
                continue
            values = [metrics.get(M.tower_key(name, m), float("nan")) for name in (M.VAL_R1, M.VAL_R5, M.VAL_R10)]
            loss = metrics.get(M.tower_key(M.VAL_LOSS, m), float("nan"))
            rows.append(f"    {m:8s} " + " ".join(f"{v:6.3f}" for v in values) + f" {loss:7.3f}")
        return rows


class ProgressPrinter:
    """Driver side: prints what `callback` forwards until `stop()`; use as a context manager around fit."""

    def __init__(self, total_steps: int, modalities: tuple[str, ...], out: TextIO = sys.stderr) -> None:
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.callback = ProgressCallback(self.queue)
        self.format = ProgressLines(total_steps, modalities)
        self.out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raybind-progress", daemon=True)

    def __enter__(self) -> "ProgressPrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.queue.shutdown()

    def _print(self, metrics: dict[str, Any]) -> None:
        for line in self.format.lines(metrics):
            print(line, file=self.out, flush=True)

    def _run(self) -> None:
        while True:
            try:
                self._print(self.queue.get(timeout=0.5))
            except (Empty, stdlib_queue.Empty):
                if self._stop.is_set():
                    return
