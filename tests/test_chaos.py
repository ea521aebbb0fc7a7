"""Faults on a real multi-node Ray cluster (tests/local_cluster.py: a head and two worker nodes,
in subprocesses beside the session's Ray instance): the whole service SIGKILLed while clients
bank, a worker node lost under matching and during a reindex.

Short runs here (`make test`); `make chaos` runs them long (MEDIAMATCH_CHAOS=long).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

from conftest import new_s3_store
from local_cluster import LocalCluster
from mediamatch.platform.client import ApiError, Client
from mediamatch.platform.storage import ObjectStore
from mediamatch.platform.versions import IndexVersions

LONG = os.environ.get("MEDIAMATCH_CHAOS") == "long"
BANKING_SECONDS = 60 if LONG else 4
STREAM_SECONDS = 30 if LONG else 3  # of matching before the node is lost, and after it recovers
ENTRIES = 5000 if LONG else 300


def cluster_config(path, store: ObjectStore) -> tuple[str, str]:
    """A settings file for the service on the cluster (pdq and md5, 2 replicas of each
    deployment, 4 shards per index), and the storage URI."""
    two = {"min_replicas": 2, "max_replicas": 2}
    settings = {
        "serve": {"signal_types": ["pdq", "md5"], "poll_seconds": 0.5, "ingress": two, "hasher": two, "searcher": two},
        "index": {"shards": 4, "flat_max": 1000, "recall_queries": 50},
        **({"s3_endpoint": store.endpoint} if store.is_s3 else {}),
    }
    path.write_text(yaml.safe_dump(settings))
    return str(path), store.uri


def random_hashes(seed: int):
    rng = np.random.default_rng(seed)
    while True:
        yield rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def listed_entries(client: Client, bank: str) -> dict[str, str]:
    """entry_id -> pdq of every entry the service lists."""
    listed, cursor = {}, None
    while True:
        page = client.call("GET", f"/v1/banks/{bank}/entries", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
        listed |= {e["entry_id"]: e["signals"].get("pdq") for e in page["entries"]}
        if not (cursor := page["next_cursor"]):
            return listed


def all_match(client: Client, bank: str, entries: dict[str, str]) -> list[str]:
    """The entries whose own hash does not find them."""
    def found(item) -> bool:
        entry_id, pdq = item
        result = client.call("POST", "/v1/match", json={"signals": {"pdq": pdq}, "banks": [bank]})
        return entry_id in {m["entry_id"] for m in result["matches"]}

    with ThreadPoolExecutor(8) as pool:
        return [entry_id for (entry_id, _), ok in zip(entries.items(), pool.map(found, entries.items())) if not ok]


# `make test` crashes the S3 store (conditional writes, no rename) and `make chaos` both: each
# crash costs two cluster start-ups, 2-4 minutes on this machine
@pytest.fixture(params=[pytest.param("local", marks=pytest.mark.skipif(not LONG, reason="the directory store's crash runs in `make chaos`")), "s3"])
def cluster_store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(str(tmp_path / "store"))
    return new_s3_store(request.getfixturevalue("s3_endpoint"))


def test_acknowledged_entries_survive_a_crash_of_the_whole_cluster(cluster_store, tmp_path):
    """8 clients bank; every process of the service (raylets, workers, the GCS, proxies, agents)
    is SIGKILLed by pid; `mediamatch serve` on a fresh cluster over the same store lists and
    matches every entry whose 201 was received, and every entry it lists is whole."""
    config, storage = cluster_config(tmp_path / "settings.yaml", cluster_store)
    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.serve(config, storage)
        Client(cluster.url).call("POST", "/v1/banks", json={"name": "crash"})
        acknowledged, stop = {}, threading.Event()

        def bank(seed: int) -> None:
            client, hashes = Client(cluster.url, timeout=30), random_hashes(seed)
            while not stop.is_set():
                pdq = next(hashes)
                try:
                    entry = client.call("POST", "/v1/banks/crash/entries", json={"signals": {"pdq": pdq}})
                except Exception:
                    continue  # not acknowledged (the crash): not counted
                acknowledged[entry["entry_id"]] = pdq

        clients = [threading.Thread(target=bank, args=(seed,)) for seed in range(8)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(BANKING_SECONDS)
            before = len(acknowledged)
            killed = cluster.kill()  # mid-stream: requests are in flight
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        assert cluster.processes() == [] and before > 0

        started = time.time()
        cluster.start()
        cluster.serve(config, storage)
        restart = time.time() - started
        client = Client(cluster.url, retries=5)
        listed = listed_entries(client, "crash")
        lost = sorted(set(acknowledged) - set(listed))
        unmatched = all_match(client, "crash", listed)
    print(f"\ncrash ({'s3' if cluster_store.is_s3 else 'directory'} store): {killed} processes SIGKILLed while 8 clients banked; "
          f"{len(acknowledged)} acknowledged, {len(listed)} listed after a restart in {restart:.0f} s; "
          f"acknowledged-but-lost {len(lost)}; listed but not matching {len(unmatched)}")
    assert lost == [] and unmatched == []
    assert all(len(pdq or "") == 64 for pdq in listed.values())  # nothing half-written


def test_a_worker_node_lost_under_matching_and_during_a_reindex(tmp_path):
    """The service spread over two workers; a reindex builds its shards on both (the manifest
    names the node of each). A worker's raylet is SIGKILLed under a stream of matches: the
    service answers from the other, Serve replaces the lost replicas. Another worker's raylet is
    killed during a reindex: the job retries the lost shard tasks or fails and publishes
    nothing, and the previous version keeps serving."""
    store = ObjectStore(str(tmp_path / "store"))
    config, storage = cluster_config(tmp_path / "settings.yaml", store)
    # 3 logical CPUs a worker: one left alone holds every replica (1.1 CPUs) and still has a whole
    # CPU for the reindex's tasks (with 2, the job waits for a CPU that never comes)
    with LocalCluster(tmp_path / "cluster", cpus=3) as cluster:
        cluster.serve(config, storage)
        placement = cluster.placement()
        print("\nplacement:", {node: sorted(n.split("#")[1] for n in names if n.startswith("SERVE_REPLICA")) for node, names in placement.items()})
        assert all(any(n.startswith("SERVE_REPLICA") for n in placement.get(w, [])) for w in cluster.workers)

        client = Client(cluster.url, retries=10, backoff=0.5)
        client.call("POST", "/v1/banks", json={"name": "nodes"})
        hashes = random_hashes(5)
        with ThreadPoolExecutor(8) as pool:
            banked = dict(pool.map(lambda pdq: bank_one(client, pdq), [next(hashes) for _ in range(ENTRIES)]))
        first = reindex(client)
        assert first["state"] == "succeeded", first
        manifest = IndexVersions(store, "pdq").get(first["version"])
        names = cluster.nodes()
        built_on = [names.get(s.node, s.node) for s in manifest.shards]
        print(f"reindex {first['version']}: shards built on {built_on}")
        assert set(built_on) == set(cluster.workers)

        failed, recovery, requests = node_lost_under_matching(cluster, banked)
        print(f"node loss: {requests} matches, {failed} failed (no retries); Serve replaced the lost replicas in {recovery:.1f} s")

        cluster.kill("worker_a")  # what is left of it
        cluster.start_node("worker_a")
        cluster.wait_nodes(3)
        job = client.call("POST", "/v1/reindex", json={"signal_types": ["pdq"]})["job_id"]
        while client.call("GET", f"/v1/reindex/{job}")["state"] == "pending":
            time.sleep(0.05)
        cluster.raylet("worker_b").kill()
        status = wait_job(client, job)
        serving = client.call("GET", "/v1/indexes")["pdq"]
        versions = [m.version for m in IndexVersions(store, "pdq").list()]
        print(f"reindex under node loss: {status['state']} ({status.get('error') or status.get('version')}); versions {versions}, serving {serving['serving']}")
        if status["state"] == "succeeded":
            assert versions == [first["version"], status["version"]]
        else:
            assert versions == [first["version"]] and serving["version"] == first["version"]
        assert all_match(client, "nodes", banked) == []


def bank_one(client: Client, pdq: str) -> tuple[str, str]:
    return client.call("POST", "/v1/banks/nodes/entries", json={"signals": {"pdq": pdq}})["entry_id"], pdq


def reindex(client: Client) -> dict:
    return wait_job(client, client.call("POST", "/v1/reindex", json={"signal_types": ["pdq"]})["job_id"])


def wait_job(client: Client, job: str, timeout: float = 180) -> dict:
    """The job's final status. Polls that fail while a node is being lost (Serve's proxy answers
    a request whose replica died with its own 500) are asked again."""
    deadline, status = time.time() + timeout, {}
    while status.get("state") not in ("succeeded", "failed"):
        assert time.time() < deadline, f"reindex {job} did not finish: {status}"
        try:
            status = client.call("GET", f"/v1/reindex/{job}")
        except ApiError as exc:
            if exc.status < 500:
                raise
            print(f"reindex status poll failed during the node loss: {exc}")
        time.sleep(0.3)
    return status


def node_lost_under_matching(cluster: LocalCluster, banked: dict[str, str]) -> tuple[int, float, int]:
    """SIGKILL worker_a's raylet while a client streams matches (no retries); the failed
    requests, the seconds until Serve runs every replica again elsewhere, the requests sent."""
    items, outcomes, stop = list(banked.items()), [], threading.Event()

    def stream() -> None:
        client, i = Client(cluster.url, timeout=30), 0
        while not stop.is_set():
            entry_id, pdq = items[i % len(items)]
            try:
                result = client.call("POST", "/v1/match", json={"signals": {"pdq": pdq}, "banks": ["nodes"]})
                outcomes.append(entry_id in {m["entry_id"] for m in result["matches"]})
            except Exception as exc:
                outcomes.append(exc)
            i += 1

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(STREAM_SECONDS)
        killed_at = time.time()
        cluster.raylet("worker_a").kill()
        recovery = cluster.serve_recovered(killed_at, "worker_a", replicas=2)
        after = len(outcomes)
        time.sleep(STREAM_SECONDS)
    finally:
        stop.set()
        worker.join()
    assert all(o is True for o in outcomes[after:]) and len(outcomes) > after  # recovered: every later request answers
    return sum(o is not True for o in outcomes), recovery, len(outcomes)
