"""Starting or joining Ray with the resources the config budgets, and Ray Data's execution settings."""

from __future__ import annotations

import logging
import os
import sys

import ray
from ray.data import DataContext

from raybind.config import RayBindConfig

log = logging.getLogger(__name__)


# Loggers of Ray's libraries in the driver: their INFO lines (dataset plans, execution stats) are framework
# detail, not the job's progress.
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


def start_ray(address: str | None = None, num_cpus: float | None = None,
              object_store_memory_mb: int | None = None, dashboard: bool = True, verbose: bool = True) -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS) or `address`; else start a local Ray.

    `dashboard=False` only for local runs that use no Ray Train (which polls the dashboard's State API).
    `verbose=False` keeps worker output and Ray's INFO logs off the console (errors still raise here).
    """
    if ray.is_initialized():
        return
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                                "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose)
        return
    object_store = object_store_memory_mb * 2**20 if object_store_memory_mb else None
    # The dashboard (bound to localhost) serves the State API that Ray Train's controller polls.
    ray.init(num_cpus=num_cpus, object_store_memory=object_store, include_dashboard=dashboard,
             dashboard_host="127.0.0.1", runtime_env=runtime_env, logging_level=logging.WARNING,
             log_to_driver=verbose)


def init_ray(cfg: RayBindConfig) -> None:
    """Start or join Ray as the config says and apply its Ray Data settings."""
    start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb, verbose=cfg.ray.verbose)
    configure_data_context(cfg)


def configure_data_context(cfg: RayBindConfig) -> None:
    ctx = DataContext.get_current()
    bars = {"on": True, "off": False}.get(cfg.ray.progress_bars, sys.stdout.isatty())
    ctx.enable_progress_bars = bars
    ctx.enable_operator_progress_bars = bars
    if cfg.data.object_store_budget_mb:
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=cfg.data.object_store_budget_mb * 2**20)
