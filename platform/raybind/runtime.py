"""Starting or joining Ray with the resources the config budgets, and Ray Data's execution settings."""

from __future__ import annotations

import logging
import os
import sys

import ray
from ray.data import DataContext

from raybind.config import MediaRunConfig

log = logging.getLogger(__name__)


# Loggers of Ray's libraries in the driver: their INFO lines (dataset plans, execution stats) are framework
# detail, not the job's progress.
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


# Ray Train's controller takes one report per worker per poll, every 2 s by default, and a worker's
# `report` blocks until its previous one is taken: a worker that reports every log step faster than that
# (the quickstart: 10 steps in under a second) spends the rest of the 2 s waiting. Polling every 0.25 s
# costs the controller one small call per worker per poll. The driver's own value, when set, wins.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.25"


def worker_env(hub_offline: str = "inherit", environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables every worker of a job gets. `HF_HUB_OFFLINE` is a setting (`ray.hub_offline`):
    inherit passes the driver's value on when it has one (unset: workers may reach the hub, as the L/14
    recipes' `pretrained: openai` and hub-named synthesizers need on a cluster with network); on/off force it."""
    environ = os.environ if environ is None else environ
    env = {"TOKENIZERS_PARALLELISM": "false", TRAIN_POLL_ENV: environ.get(TRAIN_POLL_ENV, TRAIN_POLL_S)}
    if hub_offline == "on":
        env["HF_HUB_OFFLINE"] = "1"
    elif hub_offline == "off":
        env["HF_HUB_OFFLINE"] = "0"
    elif "HF_HUB_OFFLINE" in environ:
        env["HF_HUB_OFFLINE"] = environ["HF_HUB_OFFLINE"]
    return env


def start_ray(address: str | None = None, num_cpus: float | None = None,
              object_store_memory_mb: int | None = None, dashboard: bool = True, verbose: bool = True,
              hub_offline: str = "inherit") -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS) or `address` (`auto`: the head running on this
    machine); else start a Ray of this process's own, even when a head started by `ray start` runs here
    (`address="local"`: joining it by accident would ignore `num_cpus`, which Ray refuses). One console line
    says which.

    `dashboard=False` only for local runs that use no Ray Train (which polls the dashboard's State API).
    `verbose=False` keeps worker output and Ray's INFO logs off the console (errors still raise here).
    """
    if ray.is_initialized():
        return
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": worker_env(hub_offline)}
    if address:
        # A job submitted with --runtime-env already has env_vars (and py_modules, a working dir): combine
        # ours with them instead of failing on the keys both set.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        context = ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose)
        print(f"ray: joined the cluster at {context.address_info.get('gcs_address', address)} "
              f"({ray.cluster_resources().get('CPU', 0):g} CPUs)", file=sys.stderr, flush=True)
        return
    object_store = object_store_memory_mb * 2**20 if object_store_memory_mb else None
    # The dashboard (bound to localhost) serves the State API that Ray Train's controller polls.
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store, include_dashboard=dashboard,
             dashboard_host="127.0.0.1", runtime_env=runtime_env, logging_level=logging.WARNING,
             log_to_driver=verbose)
    print(f"ray: started a local Ray for this job ({ray.cluster_resources().get('CPU', 0):g} CPUs; "
          "ray.address joins a cluster)", file=sys.stderr, flush=True)


def init_ray(cfg: MediaRunConfig) -> None:
    """Start or join Ray as the config says and apply its Ray Data settings."""
    start_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb, verbose=cfg.ray.verbose,
              hub_offline=cfg.ray.hub_offline)
    configure_data_context(cfg)
    pin_data_bookkeeping_to_driver()


def pin_data_bookkeeping_to_driver() -> None:
    """Create Ray Data's cluster-wide bookkeeping actors (stats, usage) from the driver, so they live on the
    driver's node. They are detached and pinned to the node of whichever process first uses Ray Data: left
    to a training worker, they land on a GPU node and keep it busy forever, so the autoscaler never removes
    it (seen with Ray 2.60's fake multi-node autoscaler). These are Ray Data internals: without them, skip."""
    try:
        from ray.data._internal.stats import get_or_create_stats_actor
        from ray.data._internal.usage.actor import get_or_create_usage_collection_actor
    except ImportError:
        log.debug("Ray Data's bookkeeping actors have moved; not pinning them")
        return
    get_or_create_stats_actor()
    get_or_create_usage_collection_actor()


def configure_data_context(cfg: MediaRunConfig) -> None:
    """Apply the config to this process's Ray Data context: progress bars (auto: on a terminal only) and the
    object-store budget of streaming executions."""
    ctx = DataContext.get_current()
    bars = {"on": True, "off": False}.get(cfg.ray.progress_bars, sys.stdout.isatty())
    ctx.enable_progress_bars = bars
    ctx.enable_operator_progress_bars = bars
    if not bars and not cfg.ray.verbose:  # Ray Data would warn that the bars we turned off are off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    budget = getattr(cfg.data, "object_store_budget_mb", None)   # a training run's setting; inference has none
    if budget:
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=budget * 2**20)
