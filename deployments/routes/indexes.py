"""Index operations (admin): reindex jobs and their progress, the served versions, rollback.

The operations are plain functions of the ingress too, for the web console's pages."""

from __future__ import annotations

import ray
from fastapi import APIRouter, Request

from mediamatch.indexing import jobs
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.versions import IndexVersions

from ..http import IngressDep, either_body, read_request
from ..models import ReindexAccepted, ReindexRequest, RollbackRequest

router = APIRouter(tags=["indexes"])


@router.post("/v1/reindex", status_code=202, openapi_extra=either_body(ReindexRequest, ()))
async def reindex(request: Request, ingress: IngressDep) -> ReindexAccepted:
    (await ingress.principal(request)).require("admin")
    body = await read_request(request, ReindexRequest, 1 << 16, optional=True)
    names = body.signal_types if isinstance(body, ReindexRequest) else None
    return ReindexAccepted(job_id=await start_reindex(ingress, names))


async def start_reindex(ingress, signal_types: list[str] | None) -> str:
    """Start a reindex job of these signal types (None: every one); its id."""
    for name in signal_types or ():
        get_signal_type(name)
    status, ref = await ingress.run(jobs.submit, ingress.settings, signal_types)
    ingress.jobs[status.job_id] = ref
    return status.job_id


@router.get("/v1/reindex/{job_id}")
async def reindex_status(request: Request, job_id: str, ingress: IngressDep) -> jobs.JobStatus:
    (await ingress.principal(request)).require("admin")
    return await job_status(ingress, job_id)


async def job_status(ingress, job_id: str) -> jobs.JobStatus:
    """A job's recorded status, or `failed` when its process died without recording it."""
    status = await ingress.run(jobs.read_status, ingress.store, job_id)
    ref = ingress.jobs.get(job_id)
    if status.state in ("pending", "running") and ref is not None and ray.wait([ref], timeout=0)[0]:
        status = await ingress.run(jobs.read_status, ingress.store, job_id)  # the job writes its last status, then ends
        if status.state in ("pending", "running"):  # it died without recording it (its process crashed)
            status = status.model_copy(update={"state": "failed", "error": f"the job's process died: {job_error(ref)}"})
            await ingress.run(jobs.write_status, ingress.store, status)
    return status


def job_error(ref) -> str:
    try:
        ray.get(ref)
        return "it ended without a last status"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@router.get("/v1/indexes")
async def indexes(request: Request, ingress: IngressDep) -> dict[str, dict]:
    (await ingress.principal(request)).require("admin")
    return await index_statuses(ingress)


async def index_statuses(ingress) -> dict[str, dict]:
    """Per signal type: the published version (from its manifest) and what the searchers serve."""
    live = await ingress.searcher_statuses()
    out = {}
    for name in live:
        published = await ingress.run(IndexVersions(ingress.store, name).status)
        out[name] = {**published, "serving": live[name]["version"], "live_delta": live[name]["live_delta"]}
    return out


@router.post("/v1/indexes/{signal_type}/rollback")
async def rollback(request: Request, signal_type: str, body: RollbackRequest, ingress: IngressDep) -> dict:
    (await ingress.principal(request)).require("admin")
    return await roll_back(ingress, signal_type, body.version)


async def roll_back(ingress, signal_type: str, version: str) -> dict:
    """Publish an earlier (or later) recorded version again; the new published status."""
    versions = IndexVersions(ingress.store, get_signal_type(signal_type).name)
    await ingress.run(versions.rollback, version)
    return await ingress.run(versions.status)
