"""Faults while serving: replicas killed under load."""

from __future__ import annotations

import threading
import time

import ray

from mediamatch.platform.client import Client


def replica_actors(deployment: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"] and a["name"].startswith("SERVE_REPLICA")]


def wait_healthy(deployment: str, killed: str, timeout: float = 120) -> float:
    """Seconds until the deployment has a replica other than the killed one, answering."""
    from ray import serve

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = serve.status().applications["mediamatch"].deployments[deployment]
        if status.status == "HEALTHY" and [n for n in replica_actors(deployment) if n != killed]:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(f"{deployment} did not recover")


def test_killed_replicas_recover_and_retried_requests_succeed(service, photo_corpus):
    service.ok("POST", "/v1/banks", json={"name": "faults"})
    photo = service.ok("POST", "/v1/banks/faults/entries", json={"signals": {"pdq": "5a" * 32}})
    text = service.ok("POST", "/v1/banks/faults/entries", json={"text": "a caption that must keep matching"})
    client = Client(service.url, service.token("matcher"), retries=6, backoff=0.25)
    outcomes, stop = [], threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            body = {"signals": {"pdq": "5a" * 32}} if i % 2 else {"text": "A caption that must keep matching!"}
            want = photo if i % 2 else text
            try:
                result = client.call("POST", "/v1/match", json={**body, "banks": ["faults"]})
                outcomes.append(want["entry_id"] in {m["entry_id"] for m in result["matches"]})
            except Exception as exc:  # a request that failed even after its retries
                outcomes.append(exc)
            i += 1

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(2)
        recovery = {}
        for deployment in ("Searcher-pdq-0", "Embedder-text_embedding"):
            (name,) = replica_actors(deployment)
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            recovery[deployment] = round(wait_healthy(deployment, name), 1)
        time.sleep(2)
    finally:
        stop.set()
        worker.join()
    failed = [o for o in outcomes if o is not True]
    print(f"\nreplica loss: {len(outcomes)} requests, {client.retried} retries, {len(failed)} failed; recovery seconds {recovery}")
    assert failed == [] and len(outcomes) > 20
