"""One settings object for the CLI, the reindex job and the Serve application.

Precedence, highest first: explicit overrides (CLI flags), environment variables
`MEDIAMATCH_*` (nested with `__`, e.g. `MEDIAMATCH_INDEX__SHARDS=4`), the YAML file named by
`--config` or `MEDIAMATCH_CONFIG`, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    seed: int = 1234


class LimitSettings(BaseModel):
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_text_chars: int = 100_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAMATCH_", env_nested_delimiter="__", extra="forbid")

    storage: str = Field(default_factory=default_storage, description="local path, file:// or s3://bucket/prefix")
    s3_endpoint: str | None = Field(None, description="endpoint override for S3-compatible stores")
    s3_region: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    ray_address: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict, description="per signal type match threshold")
    index: IndexSettings = Field(default_factory=IndexSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    commit_batch: int = Field(500, ge=1, description="entries per catalog commit when banking many files")

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
