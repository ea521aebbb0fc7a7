"""Autoscaling: a deployment's replicas grow under load and shrink after it."""

from __future__ import annotations

import threading
import time

import requests


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def test_hasher_scales_up_under_load_and_back_down(service):
    from ray import serve

    from mediamatch.deployments.app import build_app
    from mediamatch.platform.settings import Settings

    elastic = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1, "downscale_delay_s": 3, "num_cpus": 0.1}
    one = {"min_replicas": 1, "max_replicas": 1}
    small = {"signal_types": ["md5"], "ingress": {**one, "max_ongoing_requests": 64}, "hasher": elastic, "searcher": one}
    serve.run(build_app(Settings(**{**service.settings.model_dump(), "serve": small})), name="elastic", route_prefix="/elastic")
    url, stop, seen = service.url + "/elastic", threading.Event(), []
    headers = {"Authorization": f"Bearer {service.token('matcher')}"}

    def load():
        session = requests.Session()
        while not stop.is_set():
            session.post(url + "/v1/hash", json={"text": "y" * 50_000}, headers=headers, timeout=60)

    try:
        threads = [threading.Thread(target=load) for _ in range(12)]
        for t in threads:
            t.start()
        deadline = time.time() + 90
        while time.time() < deadline and running_replicas("elastic", "Hasher") < 2:
            time.sleep(0.5)
        seen.append(running_replicas("elastic", "Hasher"))
        stop.set()
        for t in threads:
            t.join()
        deadline = time.time() + 90
        while time.time() < deadline and running_replicas("elastic", "Hasher") > 1:
            time.sleep(0.5)
        seen.append(running_replicas("elastic", "Hasher"))
    finally:
        stop.set()
        serve.delete("elastic")
    assert seen == [2, 1]
