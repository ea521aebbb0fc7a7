"""One settings object for the CLI, the reindex job and the Serve application.

Precedence, highest first: explicit overrides (CLI flags), environment variables
`MEDIAMATCH_*` (nested with `__`, e.g. `MEDIAMATCH_INDEX__SHARDS=4`), the YAML file named by
`--config` or `MEDIAMATCH_CONFIG`, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource


def default_storage() -> str:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(data_home, "mediamatch")


class IndexSettings(BaseModel):
    shards: int = Field(1, ge=1, le=1024, description="shards per index version")
    flat_max: int = Field(50_000, ge=0, description="below this many vectors an index is exact (flat)")
    target_recall: float = Field(0.95, gt=0, le=1, description="recall@10 that nprobe is tuned to reach")
    recall_queries: int = Field(500, ge=10, description="held-out queries for the recall@10 check")
    train_per_list: int = Field(64, ge=39, description="training vectors per IVF list")
    refine: Literal["flat", "fp16", "sq8"] = Field(
        "fp16", description="IVF-PQ's re-rank copy of the vectors: float16 (half the exact floats' memory; cosine distances "
        "off by < 1e-4), 8-bit scalar quantized (a quarter; off by up to ~2e-3, too coarse for the photo descriptor's "
        "0.003 threshold) or the exact floats")
    binary_index: Literal["postings", "faiss_multihash"] = Field(
        "postings", description="hash indexes above flat_max, both exact within the match radius: numpy postings (0.11 GiB per "
        "1M PDQ hashes) or faiss's multi-hash (0.25 GiB)")
    seed: int = 1234


class LimitSettings(BaseModel):
    max_upload_bytes: int = 50 * 1024 * 1024
    max_import_bytes: int = Field(4 * 1024**3, ge=1, description="a hash list imported over HTTP (spooled to a temporary file)")
    max_image_pixels: int = 64_000_000
    max_text_chars: int = 100_000
    max_video_seconds: float = Field(600.0, gt=0, description="longer videos are refused (413)")
    max_audio_seconds: float = Field(900.0, gt=0, description="longer recordings are refused (413)")
    video_fps: float = Field(1.0, gt=0, le=60, description="video frames hashed per second (vpdq, video_embedding)")


class DeploymentSettings(BaseModel):
    """Replicas and load of one Serve deployment (its `autoscaling_config` and actor options)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(-1, ge=-1, description="beyond this many waiting, callers get 503 at once; -1: unbounded")
    upscale_delay_s: float = Field(30, ge=0, description="load must stay above target this long before a replica is added")
    downscale_delay_s: float = Field(600, ge=0, description="load must stay below target this long before a replica is removed")
    num_cpus: float = Field(0.1, ge=0, description="logical CPUs per replica (replicas mostly wait on I/O and each other)")
    num_gpus: float | None = Field(None, ge=0, description="None: 1 for model deployments when the cluster has GPUs")


# Serve's data planes (read by Serve from the environment when Ray starts): `proxy` is Serve's
# Python proxy actor with handle calls over Ray; `haproxy` puts HAProxy in front of the ingress
# replicas' own HTTP servers; `throughput` is Serve's throughput-optimised mode (direct ingress,
# gRPC between replicas). `deployments.app.data_plane_env` gives a local instance's environment;
# benchmarks/bench_serve.py measures them side by side.
DATA_PLANES: dict[str, dict[str, str]] = {
    "proxy": {},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy+throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
DataPlane = Literal["proxy", "haproxy", "throughput", "haproxy+throughput"]


class VerifySettings(BaseModel):
    """Geometric verification of photo candidates (`deployments/verifier.py`)."""

    enabled: bool = Field(True, description="verify photo queries' candidates against banked keypoints (a Verifier deployment)")
    candidates: int = Field(20, ge=1, le=200, description="candidates verified per query: each photo signal's nearest, within `radius`")
    radius: dict[str, float] = Field(
        default_factory=lambda: {"pdq": 63, "image_embedding": 1.0},
        description="per photo signal, how far a candidate may be (looser than its match threshold: verification makes up the precision)",
    )
    cache_entries: int = Field(20_000, ge=0, description="parsed banked keypoints kept in memory per replica (about 12 KB each)")

    def candidate_radius(self, signal_type: str, threshold: float) -> float:
        """How far a hit of `signal_type` may be and still be verified: its `radius`, where wider than its threshold."""
        return max(threshold, self.radius.get(signal_type, threshold))


class ServeSettings(BaseModel):
    ingress: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(max_ongoing_requests=64, target_ongoing_requests=8, max_queued_requests=100)
    )
    hasher: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.25))
    embedder: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.5, max_replicas=1))
    searcher: DeploymentSettings = Field(default_factory=DeploymentSettings)
    verifier: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_cpus=0.5))
    signal_types: list[str] | None = Field(None, description="signal types served; None: every known one")
    data_plane: DataPlane = Field(
        "haproxy+throughput",
        description="how requests reach the ingress and travel between replicas (see DATA_PLANES); "
        "`mediamatch serve` sets it when it starts Ray, a cluster's nodes take it from their environment",
    )
    layout: Literal["compact", "co_located", "per_signal_type"] = Field(
        "co_located",
        description="compact: one Embedder for every model signal and one Searcher per slot for every signal type "
        "(fewest replicas; one search call per query); co_located: as compact, but the ingress itself searches "
        "the signal types that need no model (no hop for a hash lookup; every ingress replica holds those indexes whole); "
        "per_signal_type: one deployment each, scaled separately (a cluster's shape)",
    )
    search_slots: int = Field(1, ge=1, description="searcher deployments per signal type; slot i holds shards i, i+slots, ...")
    poll_seconds: float = Field(1.0, gt=0, description="how often searchers look for a new index version and catalog commits")
    max_batch_size: int = Field(32, ge=1)
    batch_wait_ms: float = Field(0.0, ge=0, description="wait this long for a batch to fill; 0: batch what is queued")
    access_log: bool = Field(False, description="Serve's per-request log lines (costly at high rates; /metrics counts requests)")
    max_matches: int = Field(100, ge=1, description="matches per signal type per request")


Role = Literal["match", "bank_write", "admin"]


class TeamToken(BaseModel):
    """A client team's bearer token: only its SHA-256 is configured (`mediamatch token create`)."""

    team: str
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[Role]
    banks: list[str] | None = Field(None, description="the banks this team may see, match against and write; None: every bank")
    rate_per_second: float | None = Field(None, gt=0, description="requests per second, across every ingress replica; None: unlimited")
    burst: int | None = Field(None, ge=1, description="requests at once above the rate; default: 2 s worth")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAMATCH_", env_nested_delimiter="__", extra="forbid")

    storage: str = Field(default_factory=default_storage, description="local path, file:// or s3://bucket/prefix")
    s3_endpoint: str | None = Field(None, description="endpoint override for S3-compatible stores")
    s3_region: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    ray_address: str | None = None
    metrics_export_port: int | None = Field(
        None, ge=1, le=65535, description="Prometheus port of the local Ray node `mediamatch serve` starts (every replica's figures); None: a free one, printed"
    )
    thresholds: dict[str, float] = Field(default_factory=dict, description="per signal type match threshold")
    image_model: str = Field(
        "promoted",
        description="the image descriptor: `promoted` (the store's promoted model, else the packaged default), "
        "`default`, a stored version `mNNNNNNNN`, or a folder holding config.json and weights.pt",
    )
    index: IndexSettings = Field(default_factory=IndexSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    commit_batch: int = Field(500, ge=1, description="entries per catalog commit when banking many files")
    serve: ServeSettings = Field(default_factory=ServeSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    tokens: list[TeamToken] = Field(default_factory=list, description="no tokens: anonymous, loopback only")
    loadtest_report: str | None = Field(
        None, description="the folder (a path or s3:// URI) of the load-test report the web console shows: `mediamatch loadtest --out DIR`"
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        yaml_file = os.environ.get("MEDIAMATCH_CONFIG")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from env + optional YAML file, with non-None `overrides` on top."""
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        os.environ["MEDIAMATCH_CONFIG"] = config_file
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
