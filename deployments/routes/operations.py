"""Operations: liveness, readiness, Prometheus metrics and the application's shape."""

from __future__ import annotations

import asyncio
import logging
import os

import ray
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from ray import serve

from mediamatch.platform.errors import NotReady

from .. import metrics
from ..http import IngressDep

log = logging.getLogger("ray.serve")
router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ingress: IngressDep) -> dict:
    try:
        statuses = await asyncio.wait_for(ingress.searcher_statuses(), timeout=5)
        handles = [*ingress.computers.values(), *([ingress.verifier] if ingress.verifier is not None else [])]
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in handles)), timeout=5)
    except Exception as exc:
        raise NotReady(f"index searchers are not ready: {type(exc).__name__}: {exc}") from None
    waiting = [s["reason"] for s in statuses.values() if not s["ready"]]
    if ingress.catalog.seq == 0 and ingress.catalog_error:
        waiting.append(f"the bank catalog is not loaded: {ingress.catalog_error}")
    if waiting:
        raise NotReady("; ".join(waiting))
    return {"ready": True, "indexes": {name: {"version": s["version"], "count": s["count"]} for name, s in statuses.items()}}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics_endpoint(ingress: IngressDep) -> Response:
    slots = [(slot, handle) for handles in ingress.searchers.values() for slot, handle in enumerate(handles)]
    try:
        replies = await asyncio.wait_for(asyncio.gather(*(handle.status.remote() for _, handle in slots)), timeout=5)
        for (slot, _), statuses in zip(slots, replies):
            metrics.show_index(slot, statuses)
    except Exception as exc:  # the request metrics are still worth serving
        log.warning("index gauges not updated: %s", exc)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


@router.get("/v1/deployments")
async def deployments(request: Request, ingress: IngressDep) -> dict:
    """This application's deployments with their running replicas, and the cluster's
    resources: the shape a load test measured (admin)."""
    (await ingress.principal(request)).require("admin")
    app_name = serve.get_replica_context().app_name
    status = (await ingress.run(serve.status)).applications[app_name]
    resources = ray.cluster_resources()
    return {
        "application": app_name,
        "deployments": {name: {"status": getattr(d.status, "value", str(d.status)), "replicas": d.replica_states.get("RUNNING", 0)} for name, d in status.deployments.items()},
        "cpus": os.cpu_count(),  # this node's cores (the logical CPUs Ray schedules by may differ)
        "ray_cpus": resources.get("CPU", 0),
        "gpus": resources.get("GPU", 0),
    }
