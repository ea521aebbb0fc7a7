"""The match graph: Ingress -> signal deployments and every searcher slot (and, when a token has
a rate, the one RateLimits replica the ingress replicas lease tokens from), built from settings.

The layout (`serve.layout`) decides how signal types share deployments: `compact` runs one
Embedder for every model and one Searcher per slot for every signal type; `co_located` (the
default) is compact with the searching of the types that need no model inside the ingress (a hash lookup makes no hop; that stage scales with the ingress; hashing
stays in the Hasher, whose CPU work would contend with the ingress's event loop for the GIL);
`per_signal_type` gives each its own, to scale each stage separately.

`build_app(settings)` gives the Serve application; `app_builder` is the same for `serve run` /
`serve deploy` (see `serve_config.yaml`), reading settings from env/YAML plus the config's args.
"""

from __future__ import annotations

import socket
import tempfile
from typing import Any

import ray
from ray.serve import Application

from mediamatch.platform.settings import DATA_PLANES, DeploymentSettings, Settings, load_settings
from mediamatch.platform.signals import SIGNAL_TYPES, get_signal_type

from .ingress import Ingress
from .limits import RateLimits
from .searcher import ShardSearcher
from .signals import SignalComputer
from .verifier import Verifier


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


def ingress_options(config: DeploymentSettings, access_log: bool) -> dict[str, Any]:
    """The Ingress's Serve options: its replicas take every request in, up to their own admission
    limit (`http.Admission`: `max_ongoing_requests` at work, `max_queued_requests` waiting) and
    as many again, at least 64, for a burst of refusals (each answered at once), so that
    overload is answered by the app in the API's shape. Serve's own limits stay behind that as
    a backstop, its queue as deep: with direct ingress (HAProxy) a replica counts a burst of
    arrivals as queued until each takes a slot, and drops what is over `max_queued_requests`
    with its plain-text 503 even while slots are free."""
    options = deployment_options(config, "Ingress", access_log)
    if config.max_queued_requests >= 0:
        admitted = config.max_ongoing_requests + config.max_queued_requests
        options["max_ongoing_requests"] = options["max_queued_requests"] = admitted + max(64, admitted)
    return options


# A stopping ingress replica with direct ingress (haproxy, throughput) keeps serving at least this
# long so that external load balancers can deregister it: Serve's default is 30 s, which every
# Ctrl-C of `mediamatch serve` waited out. A local instance has none (its HAProxy is Serve's own,
# reconfigured within a second): 2 s. A cluster's nodes keep Serve's default.
LOCAL_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


def data_plane_env(mode: str) -> dict[str, str]:
    """The environment a local Ray instance starts with for data plane `mode` (every flag of the
    others off). HAProxy gets a folder and stats/metrics ports of its own, so that two
    instances on one machine (a test session and a `mediamatch serve`) do not collide."""
    flags = {name for env in DATA_PLANES.values() for name in env}
    env = {name: "0" for name in flags} | DATA_PLANES[mode] | LOCAL_DRAIN
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        # short: Serve puts the node's 56-character id below it, and a socket path has at most 97
        folder = tempfile.mkdtemp(prefix="mmhap-", dir="/tmp")
        env |= {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def served_types(settings: Settings) -> list[str]:
    return [get_signal_type(n).name for n in (settings.serve.signal_types or list(SIGNAL_TYPES))]


def stage_groups(settings: Settings) -> tuple[list[list[str]], list[list[str]]]:
    """The signal types each embedder and each searcher deployment serves: all in one of each
    (`compact`: fewest replicas, one search call per query; `co_located`: the model types'
    only, see `in_ingress`), or one deployment per type (`per_signal_type`: each scaled on its
    own, the shape of a cluster)."""
    names = served_types(settings)
    models = [n for n in names if SIGNAL_TYPES[n].needs_model]
    searched = [n for n in names if SIGNAL_TYPES[n].searched and n not in in_ingress(settings)]  # keypoints: the Verifier's
    if settings.serve.layout == "per_signal_type":
        return [[n] for n in models], [[n] for n in searched]
    return ([models] if models else []), ([searched] if searched else [])


def in_ingress(settings: Settings) -> list[str]:
    """The searched signal types that the ingress searches itself (`co_located`): those that need no model."""
    if settings.serve.layout != "co_located":
        return []
    return [n for n in served_types(settings) if SIGNAL_TYPES[n].searched and not SIGNAL_TYPES[n].needs_model]


def verifies(settings: Settings) -> bool:
    """Whether the application verifies photo candidates (a Verifier deployment)."""
    return settings.verify.enabled and "keypoints" in served_types(settings)


def shares_rate_limits(settings: Settings) -> bool:
    """Whether the application runs the RateLimits deployment: when some token has a rate (without
    one, no request is ever limited, and a replica would hold memory for nothing)."""
    return any(token.rate_per_second for token in settings.tokens)


def group_name(kind: str, types: list[str], settings: Settings) -> str:
    """`Embedder` / `Searcher` for a compact or co_located layout's group, `Embedder-<type>` / `Searcher-<type>` for one type's."""
    return f"{kind}-{types[0]}" if settings.serve.layout == "per_signal_type" else kind


def searcher_name(group: str, slot: int) -> str:
    return f"{group}-{slot}"


def deployment_names(settings: Settings) -> list[str]:
    """Every deployment `build_app` makes, by the names a Serve config refers to them."""
    embedders, searchers = stage_groups(settings)
    return (
        ["Ingress", *(["RateLimits"] if shares_rate_limits(settings) else []), "Hasher"]
        + [group_name("Embedder", g, settings) for g in embedders]
        + [searcher_name(group_name("Searcher", g, settings), slot) for g in searchers for slot in range(settings.serve.search_slots)]
        + (["Verifier"] if verifies(settings) else [])
    )


def build_app(settings: Settings) -> Application:
    serve_cfg, config = settings.serve, settings.model_dump(mode="json")
    embedders, searcher_groups = stage_groups(settings)
    cheap = [n for n in served_types(settings) if not SIGNAL_TYPES[n].needs_model]
    hasher = SignalComputer.options(**deployment_options(serve_cfg.hasher, "Hasher", serve_cfg.access_log)).bind(config, cheap)
    computers = [[cheap, hasher]]
    for group in embedders:
        options = deployment_options(serve_cfg.embedder, group_name("Embedder", group, settings), serve_cfg.access_log, model=True)
        computers.append([group, SignalComputer.options(**options).bind(config, group)])
    searchers = []
    for group in searcher_groups:
        name, slots = group_name("Searcher", group, settings), serve_cfg.search_slots
        options = [deployment_options(serve_cfg.searcher, searcher_name(name, slot), serve_cfg.access_log) for slot in range(slots)]
        searchers.append([group, [ShardSearcher.options(**options[slot]).bind(config, group, slot, slots) for slot in range(slots)]])
    if in_ingress(settings):
        searchers.append([in_ingress(settings), None])  # searched in the ingress
    verifier = Verifier.options(**deployment_options(serve_cfg.verifier, "Verifier", serve_cfg.access_log)).bind(config) if verifies(settings) else None
    stored = [n for n in served_types(settings) if not SIGNAL_TYPES[n].searched]  # computed and kept at banking, never searched
    limits = RateLimits.options(logging_config={"enable_access_log": serve_cfg.access_log}).bind() if shares_rate_limits(settings) else None
    return Ingress.options(**ingress_options(serve_cfg.ingress, serve_cfg.access_log)).bind(config, computers, searchers, limits, stored, verifier)


def app_builder(args: dict[str, Any]) -> Application:
    """For `serve run mediamatch.deployments.app:app_builder` and `serve deploy`: settings from
    the environment / `MEDIAMATCH_CONFIG`, with the config's `args` (settings fields) on top."""
    return build_app(load_settings(args.pop("config", None), **args))
