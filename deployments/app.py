"""The match graph: Ingress -> signal deployments and every searcher slot, built from settings.

`build_app(settings)` gives the Serve application; `app_builder` is the same for `serve run` /
`serve deploy` (see `serve_config.yaml`), reading settings from env/YAML plus the config's args.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.serve import Application

from mediamatch.platform.settings import DeploymentSettings, Settings, load_settings
from mediamatch.platform.signals import SIGNAL_TYPES, get_signal_type

from .ingress import Ingress
from .searcher import ShardSearcher
from .signals import SignalComputer


def deployment_options(config: DeploymentSettings, name: str, access_log: bool, model: bool = False) -> dict[str, Any]:
    """Serve options of one deployment: autoscaling, concurrency, resources (a GPU for a model
    deployment when the cluster has one and the settings do not say otherwise)."""
    gpus = config.num_gpus
    if gpus is None:
        gpus = 1 if model and ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {
        "name": name,
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "autoscaling_config": {
            "min_replicas": config.min_replicas,
            "initial_replicas": max(1, config.min_replicas),
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests,
            "upscale_delay_s": config.upscale_delay_s,
            "downscale_delay_s": config.downscale_delay_s,
        },
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": gpus},
        "logging_config": {"enable_access_log": access_log},
    }


def served_types(settings: Settings) -> list[str]:
    return [get_signal_type(n).name for n in (settings.serve.signal_types or list(SIGNAL_TYPES))]


def searcher_name(signal_type: str, slot: int) -> str:
    return f"Searcher-{signal_type}-{slot}"


def embedder_name(signal_type: str) -> str:
    return f"Embedder-{signal_type}"


def deployment_names(settings: Settings) -> list[str]:
    """Every deployment `build_app` makes, by the names a Serve config refers to them."""
    names = served_types(settings)
    return (
        ["Ingress", "Hasher"]
        + [embedder_name(n) for n in names if SIGNAL_TYPES[n].needs_model]
        + [searcher_name(n, slot) for n in names for slot in range(settings.serve.search_slots)]
    )


def build_app(settings: Settings) -> Application:
    serve_cfg, config = settings.serve, settings.model_dump(mode="json")
    names = served_types(settings)
    cheap = [n for n in names if not SIGNAL_TYPES[n].needs_model]
    computers = {"hasher": SignalComputer.options(**deployment_options(serve_cfg.hasher, "Hasher", serve_cfg.access_log)).bind(config, cheap)}
    for name in names:
        if SIGNAL_TYPES[name].needs_model:
            options = deployment_options(serve_cfg.embedder, embedder_name(name), serve_cfg.access_log, model=True)
            computers[f"embed-{name}"] = SignalComputer.options(**options).bind(config, [name])
    searchers = {
        name: [
            ShardSearcher.options(**deployment_options(serve_cfg.searcher, searcher_name(name, slot), serve_cfg.access_log)).bind(config, name, slot, serve_cfg.search_slots)
            for slot in range(serve_cfg.search_slots)
        ]
        for name in names
    }
    return Ingress.options(**deployment_options(serve_cfg.ingress, "Ingress", serve_cfg.access_log)).bind(config, computers, searchers)


def app_builder(args: dict[str, Any]) -> Application:
    """For `serve run mediamatch.deployments.app:app_builder` and `serve deploy`: settings from
    the environment / `MEDIAMATCH_CONFIG`, with the config's `args` (settings fields) on top."""
    return build_app(load_settings(args.pop("config", None), **args))
