"""Faults while serving: replicas killed under load."""

from __future__ import annotations

import threading
import time
from collections import Counter

import ray

from conftest import Service, wait_until
from mediamatch.platform.client import Client


def replica_actors(deployment: str, app: str = "mediamatch") -> list[str]:
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


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
        for deployment in ("Searcher-0", "Embedder"):  # the searcher deployment (compact: every type; co_located: the model types), every model
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


class FlakyLink:
    """A TCP forwarder on loopback that can go down: new connections are closed at once and
    open ones are cut, as when the object store becomes unreachable."""

    def __init__(self, target_port: int):
        import asyncio

        self.target_port, self.up = target_port, True
        self.loop = asyncio.new_event_loop()
        self.writers: set = set()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        import asyncio

        async def start():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        import asyncio

        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, upstream_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def set_up(self, up: bool) -> None:
        self.up = up
        if not up:
            for writer in list(self.writers):
                self.loop.call_soon_threadsafe(writer.close)
            self.writers.clear()


def test_object_store_outage(service, s3_endpoint):
    """The store goes away under a running service (its own application, on S3 through a link
    that can be cut): bank writes get a clear 503 and leave nothing behind, matching goes on from
    memory, a replica started meanwhile reports why it is not ready, and all recovers after."""
    import boto3
    from ray import serve

    from mediamatch.deployments.app import build_app
    from mediamatch.platform.settings import Settings

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
    link = FlakyLink(int(s3_endpoint.rsplit(":", 1)[1]))
    one = {"min_replicas": 1, "max_replicas": 1}
    settings = Settings(
        storage="s3://outage/mm",
        s3_endpoint=f"http://127.0.0.1:{link.port}",
        serve={"signal_types": ["pdq", "md5"], "poll_seconds": 0.5, "ingress": one, "hasher": one, "searcher": one,
               "layout": "compact"},  # a Searcher replica to restart during the outage
    )
    serve.run(build_app(settings), name="outage", route_prefix="/outage")  # beside the session's application
    try:
        store_outage(service.url + "/outage", link)
    finally:
        link.set_up(True)
        serve.delete("outage")


def store_outage(url: str, link: FlakyLink) -> None:
    import requests

    http = requests.Session()
    wait_until(lambda: http.get(url + "/readyz").status_code == 200)
    assert http.post(url + "/v1/banks", json={"name": "o"}).status_code == 201
    photo = {"signals": {"pdq": "a5" * 32}}
    banked = http.post(url + "/v1/banks/o/entries", json=photo).json()
    assert [m["entry_id"] for m in http.post(url + "/v1/match", json=photo).json()["matches"]] == [banked["entry_id"]]
    try:
        link.set_up(False)
        refused = http.post(url + "/v1/banks/o/entries", json={"signals": {"pdq": "5a" * 32}})
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "storage_unavailable")
        matched = http.post(url + "/v1/match", json=photo)  # answered from memory
        assert matched.status_code == 200 and [m["entry_id"] for m in matched.json()["matches"]] == [banked["entry_id"]]
        (name,) = replica_actors("Searcher-0", app="outage")
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        wait_until(lambda: "cannot load the index" in http.get(url + "/readyz").text)
        assert http.post(url + "/v1/match", json=photo).status_code == 503
    finally:
        link.set_up(True)
    wait_until(lambda: http.get(url + "/readyz").status_code == 200)
    assert [m["entry_id"] for m in http.post(url + "/v1/match", json=photo).json()["matches"]] == [banked["entry_id"]]
    assert http.get(url + "/v1/banks/o").json()["entry_count"] == 1  # the refused write left nothing
    assert http.post(url + "/v1/banks/o/entries", json={"signals": {"pdq": "5a" * 32}}).status_code == 201


def test_durability_across_a_restart(service):
    """5,000 entries banked by 8 concurrent clients; the whole application is taken down and
    deployed again; every acknowledged entry is listed and matches."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from ray import serve

    from mediamatch.deployments.app import build_app

    service.ok("POST", "/v1/banks", json={"name": "durable"})
    rng = np.random.default_rng(11)
    hashes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(5000)]
    clients = [Client(service.url, service.token("writer")) for _ in range(8)]

    def bank(i: int) -> tuple[str, str] | None:
        try:
            entry = clients[i % 8].call("POST", "/v1/banks/durable/entries", json={"signals": {"pdq": hashes[i]}})
            return entry["entry_id"], hashes[i]
        except Exception:
            return None  # not acknowledged: not counted

    with ThreadPoolExecutor(8) as pool:
        acknowledged = [r for r in pool.map(bank, range(len(hashes))) if r]
    assert len(acknowledged) >= 4990

    serve.delete("mediamatch")
    serve.run(build_app(service.settings), name="mediamatch", route_prefix="/")
    wait_until(lambda: service.call("GET", "/readyz").status_code == 200, timeout=180)

    listed, cursor = set(), None
    while True:
        page = service.ok("GET", "/v1/banks/durable/entries", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
        listed |= {e["entry_id"] for e in page["entries"]}
        if not (cursor := page["next_cursor"]):
            break
    assert {entry_id for entry_id, _ in acknowledged} <= listed

    matcher = Client(service.url, service.token("matcher"), retries=3)

    def matches(item: tuple[str, str]) -> bool:
        result = matcher.call("POST", "/v1/match", json={"signals": {"pdq": item[1]}, "banks": ["durable"]})
        return item[0] in {m["entry_id"] for m in result["matches"]}

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(matches, acknowledged))


def test_overload_is_shed_with_503(service):
    """Far beyond capacity (a small application: 2 requests at a time, 4 queued), callers get a
    quick 503 in the API's error shape (`overloaded`, with Retry-After) instead of a growing
    queue, and the accepted requests' latency stays bounded."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from ray import serve

    from mediamatch.deployments.app import build_app

    from mediamatch.platform.settings import Settings

    tight = {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 2, "max_queued_requests": 4}
    one = {"min_replicas": 1, "max_replicas": 1}
    small = {"signal_types": ["md5"], "ingress": tight, "hasher": one, "searcher": one}
    settings = Settings(**{**service.settings.model_dump(), "serve": small})
    serve.run(build_app(settings), name="overload", route_prefix="/overload")
    url = service.url + "/overload"
    try:
        wait_until(lambda: requests.get(url + "/readyz").status_code == 200)
        body = {"text": "x" * 10_000}  # hashed by the Hasher: a little work per request

        def call(_):
            started = time.perf_counter()
            response = requests.post(url + "/v1/hash", json=body, headers={"Authorization": f"Bearer {service.token('matcher')}"}, timeout=60)
            return response.status_code, time.perf_counter() - started, response

        with ThreadPoolExecutor(48) as pool:
            results = list(pool.map(call, range(240)))
        healthy = requests.get(url + "/healthz")  # probes are not shed
    finally:
        serve.delete("overload")
    codes = [code for code, _, _ in results]
    accepted = sorted(seconds for code, seconds, _ in results if code == 200)
    shed = [(seconds, response) for code, seconds, response in results if code == 503]
    refusals = Counter(answer_shape(response) for code, _, response in results if code != 200)
    print(f"\noverload: {len(accepted)} accepted, {len(shed)} shed with 503; accepted p99 {accepted[int(0.99 * (len(accepted) - 1))]:.3f} s; refusals {dict(refusals)}")
    assert set(refusals) == {(503, "application/json", "overloaded", "1")}
    assert accepted and accepted[int(0.99 * (len(accepted) - 1))] < 10 and max(seconds for seconds, _ in shed) < 10
    assert healthy.status_code == 200


def answer_shape(response) -> tuple:
    """Status, content type, the API's error code (else the body's start) and Retry-After."""
    ctype = response.headers.get("content-type", "")
    what = response.json()["error"]["code"] if ctype == "application/json" else response.text[:60]
    return response.status_code, ctype, what, response.headers.get("retry-after")


def test_tokens_never_reach_the_logs(service):
    import glob
    import os

    service.call("GET", "/v1/banks", headers={"Authorization": "Bearer not-a-real-token-zzz"}, team=None)
    logs = glob.glob("/tmp/ray/session_latest/logs/**/*", recursive=True)  # every Ray process's log
    assert logs
    leaked = [path for path in logs if os.path.isfile(path) and any(s in open(path, "rb").read() for s in (b"test-token-", b"not-a-real-token-zzz"))]
    assert leaked == []


def admitted_over(limiters: list, who, seconds: float, clients: int = 4) -> tuple[int, int]:
    """Requests admitted, and asked, when `clients` callers per limiter (replica) ask as fast as they can."""
    import asyncio

    from mediamatch.platform.errors import RateLimited

    asked = []

    async def client(limiter) -> int:
        admitted, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            asked.append(1)
            try:
                await limiter.check(who)
                admitted += 1
            except RateLimited:
                pass
            await asyncio.sleep(0.001)
        return admitted

    async def run() -> int:
        return sum(await asyncio.gather(*(client(limiter) for limiter in limiters for _ in range(clients))))

    return asyncio.run(run()), len(asked)


def test_shared_rate_limits_hold_across_replicas():
    """Two replicas leasing from one set of buckets admit the team's rate, not twice it; a team
    over its rate costs a lease call per due token, not per request."""
    from mediamatch.platform.auth import Principal, SharedRateLimiter, TokenBuckets

    buckets, calls = TokenBuckets(), []

    async def lease(*args):
        calls.append(args)
        return buckets.take(*args)

    who = Principal("t", frozenset({"match"}), rate_per_second=40, burst=10)
    replicas = [SharedRateLimiter(lease), SharedRateLimiter(lease)]
    admitted, asked = admitted_over(replicas, who, seconds=2)
    expected = 10 + 40 * 2
    print(f"\nshared limits: {admitted} admitted of {expected} configured over 2 s by 2 replicas; {asked} asked, {len(calls)} lease calls")
    assert abs(admitted - expected) <= 0.15 * expected
    assert len(calls) < asked / 10


def test_rate_limits_fall_back_to_each_replica_when_the_shared_buckets_fail():
    from mediamatch.platform.auth import Principal, SharedRateLimiter

    async def lease(*args):
        raise ConnectionError("the limits replica is gone")

    who = Principal("t", frozenset({"match"}), rate_per_second=5, burst=5)
    assert 5 <= admitted_over([SharedRateLimiter(lease)], who, seconds=0.5)[0] <= 8  # the burst, then 5 a second


def small_app(service, name: str, **serve):
    """An application of its own beside the session's (md5 only, one replica of each unless
    `serve` says otherwise) on the session's settings and tokens, under /<name>; its URL."""
    import requests
    from ray import serve as ray_serve

    from mediamatch.deployments.app import build_app
    from mediamatch.platform.settings import Settings

    one = {"min_replicas": 1, "max_replicas": 1}
    config = {"signal_types": ["md5"], "ingress": one, "hasher": one, "searcher": one, **serve}
    settings = Settings(**{**service.settings.model_dump(), "serve": config})
    ray_serve.run(build_app(settings), name=name, route_prefix=f"/{name}")
    url = f"{service.url}/{name}"
    wait_until(lambda: requests.get(url + "/readyz").status_code == 200)
    return url


def test_a_teams_rate_holds_across_ingress_replicas(service):
    """Two ingress replicas, 8 callers as fast as they can for 6 s: the team's configured rate
    (burst + rate x seconds) is what is admitted, within 15%, not twice it."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from ray import serve

    two = {"min_replicas": 2, "max_replicas": 2}
    url = small_app(service, "limits", ingress=two)
    headers = {"Authorization": f"Bearer {service.token('metered')}"}
    seconds, (rate, burst) = 6.0, Service.TOKENS_METERED
    try:
        started = time.perf_counter()

        def caller(_) -> list[int]:
            http, codes = requests.Session(), []
            while time.perf_counter() - started < seconds:
                codes.append(http.get(url + "/v1/signal-types", headers=headers).status_code)
            return codes

        with ThreadPoolExecutor(8) as pool:
            codes = [c for codes in pool.map(caller, range(8)) for c in codes]
        elapsed = time.perf_counter() - started
    finally:
        serve.delete("limits")
    admitted, expected = codes.count(200), burst + rate * elapsed
    print(f"\ncluster-wide rate: {admitted} admitted of {len(codes)} in {elapsed:.1f} s by 2 ingress replicas; configured {expected:.0f} ({admitted / expected:.2f}x)")
    assert set(codes) <= {200, 429}
    assert abs(admitted - expected) <= 0.15 * expected
