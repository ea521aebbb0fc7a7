"""Reindex jobs started over HTTP: a detached Ray actor on the head node runs `reindex`, its
status lives in object storage.

The status (`jobs/reindex/<job_id>.json`) is rewritten as the job progresses, so any ingress
replica, or one started after the job, can report it. The actor is detached and on the head, so
the job outlives the ingress replica that started it and any worker node (a plain task would
die with the replica that owns it); the shard tasks it runs on the workers are retried by Ray
when their node is lost. It ends itself once its last status is written.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any, Literal

import ray
from pydantic import BaseModel, Field

from mediamatch.platform.errors import NotFound
from mediamatch.platform.progress import recording_progress
from mediamatch.platform.settings import Settings
from mediamatch.platform.storage import ObjectStore

JOBS_PREFIX = "jobs/reindex"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobStatus(BaseModel):
    job_id: str
    state: Literal["pending", "running", "succeeded", "failed"] = "pending"
    progress: float = 0.0
    message: str = ""
    signal_types: list[str] | None = None
    version: str | None = Field(None, description="the published version, when the job built one signal type")
    versions: dict[str, str] = Field(default_factory=dict, description="published version per signal type")
    error: str | None = None
    created_at: str = Field(default_factory=_now)
    finished_at: str | None = None


def status_key(job_id: str) -> str:
    return f"{JOBS_PREFIX}/{job_id}.json"


def write_status(store: ObjectStore, status: JobStatus) -> None:
    store.put_json(status_key(status.job_id), status.model_dump())


def read_status(store: ObjectStore, job_id: str) -> JobStatus:
    if not job_id.replace("_", "").replace("-", "").isalnum():
        raise NotFound(f"no reindex job {job_id!r}")
    try:
        return JobStatus(**store.get_json(status_key(job_id)))
    except FileNotFoundError:
        raise NotFound(f"no reindex job {job_id!r}") from None


def submit(settings: Settings, signal_types: list[str] | None) -> tuple[JobStatus, ray.ObjectRef]:
    """Record a pending job and start it; returns its status and the task's ref."""
    store = ObjectStore.from_settings(settings)
    status = JobStatus(job_id=f"r_{int(time.time())}_{secrets.token_hex(4)}", signal_types=signal_types)
    write_status(store, status)
    job = ReindexJob.options(name=f"reindex-{status.job_id}", lifetime="detached", resources={HEAD_NODE: 0.001}).remote()
    return status, job.run.remote(settings.model_dump(), status)


HEAD_NODE = "node:__internal_head__"  # the resource Ray gives the head node alone


@ray.remote(num_cpus=0, max_restarts=0)
class ReindexJob:
    def run(self, settings: dict[str, Any], status: JobStatus) -> None:
        try:
            run_reindex(settings, status)
        finally:
            ray.actor.exit_actor()  # the caller's ref then fails: the stored status is the answer


def run_reindex(settings: dict[str, Any], status: JobStatus) -> JobStatus:
    """The job: the reindex pipeline, reporting progress at most twice a second."""
    from mediamatch.indexing.reindex import reindex

    config = Settings(**settings)
    store = ObjectStore.from_settings(config)
    progress = recording_progress(status, lambda: write_status(store, status))
    status.state = "running"
    write_status(store, status)
    try:
        published = reindex(config, status.signal_types, progress=progress, store=store)
        status.versions = {name: m.version for name, m in published.items()}
        status.version = next(iter(status.versions.values())) if len(status.versions) == 1 else None
        status.state, status.progress, status.message = "succeeded", 1.0, "published"
    except Exception as exc:
        status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
    status.finished_at = _now()
    write_status(store, status)
    return status
