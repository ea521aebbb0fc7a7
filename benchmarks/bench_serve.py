"""Match latency and throughput: the Serve application vs a plain FastAPI + faiss server.

    python benchmarks/bench_serve.py [--n 1000000] [--seconds 15] [--concurrency 1,8]
                                     [--modes proxy,haproxy,throughput,haproxy+throughput]
                                     [--layouts compact,co_located] [--json out.json]

One run, one machine, the same data and the same client for every server:
  0. bank N PDQ hashes (seeded random, plus the hashes of the real test photos so uploads
     match) in a catalog in a temp dir, and build + publish the index with the reindex job
     (a multi-hash index: exact within 31 bits). Untimed.
  1. the service, once per data-plane mode (`--modes`) and layout (`--layouts`: `compact`, the
     default, searches in a Searcher deployment after a Hasher call for an upload; `co_located`
     hashes and searches in the ingress), each in a child process of its own
     (Serve reads its mode from the environment when Ray starts): `build_app` on a local Ray
     instance (pdq and md5 served), on loopback. Modes: `proxy` (Serve's Python proxy actor,
     handle calls over Ray), `haproxy` (RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy in front of the
     ingress replicas), `throughput` (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: direct ingress, gRPC
     between replicas) and both together;
  2. the baseline, after Ray is shut down: `plain_server.py` under uvicorn, one process,
     loading the same hashes into faiss's multi-hash index (the service's default index is its
     own `binary_postings`, exact within the same radius: the same answers).
For each server and request kind, closed-loop clients (threads, one HTTP session each) send
requests for `--seconds` after a 2 s warm-up, at each concurrency: p50/p99 latency of every
request and the achieved requests per second; where the time goes: the ingress's own
`took_ms` (p50; the rest of a request is the proxy, HTTP and the client) and the mean time
of its search calls (the hop to a Searcher, or the in-process search; from its /metrics).
Kinds: `hash` (JSON `{"signals": {"pdq": ...}}`,
a banked hash with 0-8 bits flipped) and `photo` (a multipart JPEG upload, decoded and hashed
by the server). The service hashes a query photo in its 8 dihedral forms; the plain server's
`photo` hashes one, its `photo (dihedral)` (the `/dihedral` route) the 8 the service does, so
that row's ratio is the platform's cost for the same work. The servers' resident memory (the whole process tree) is sampled once loaded.
The client runs on the same 2 cores as the servers: read the figures as relative.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import requests
import psutil  # after ray: the venv's psutil is the copy Ray ships

from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.deployments.app import data_plane_env
from mediamatch.platform.settings import DATA_PLANES, Settings
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.storage import ObjectStore

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parents[1] / "shared" / "conformance"
PDQ = SIGNAL_TYPES["pdq"]
BATCH = 50_000
GIB = 1 << 30


def real_photos() -> list[bytes]:
    """JPEGs of the conformance photos and scikit-image's samples (as the tests use)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import jpeg, source_photos

    return [jpeg(image) for image in source_photos()]


def bank(store: ObjectStore, n: int, photo_hashes: list[str], seed: int) -> list[str]:
    """N entries in bank `bench`; returns their PDQ hashes (the photos' first)."""
    rng = np.random.default_rng(seed)
    catalog = Catalog(store)
    catalog.create_bank("bench", labels=["bench"])
    hashes = list(dict.fromkeys(photo_hashes))
    random_codes = rng.integers(0, 256, (n - len(hashes), 32), dtype=np.uint8)
    hashes += [row.tobytes().hex() for row in random_codes]
    ids = []
    for start in range(0, n, BATCH):
        added = catalog.add_entries("bench", [Entry(bank="bench", content_type="photo", signals={"pdq": h}) for h in hashes[start : start + BATCH]])
        ids += [e.entry_id for e in added]
        print(f"  banked {start + len(added):,} / {n:,}", end="\r", flush=True)
    print()
    return ids, hashes


def hash_queries(hashes: list[str], count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    out = []
    for row in rng.integers(0, len(hashes), count):
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(hashes[row]), dtype=np.uint8))
        bits[rng.choice(256, int(rng.integers(0, 9)), replace=False)] ^= 1
        out.append({"signals": {"pdq": np.packbits(bits).tobytes().hex()}})
    return out


def load(url: str, kind: str, bodies: list, concurrency: int, seconds: float) -> dict:
    """Closed-loop clients for `seconds` (after a 2 s warm-up); latency of every request."""
    latencies: list[float] = []
    inside: list[float] = []  # the server's own took_ms: the time inside the ingress
    errors = [0]
    stop_at = [0.0]
    lock = threading.Lock()

    def client(number: int) -> None:
        session = requests.Session()
        i = number
        while time.perf_counter() < stop_at[0]:
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.perf_counter()
            if kind == "photo":
                response = session.post(url + "/v1/match", files={"file": ("photo.jpg", body, "image/jpeg")}, timeout=60)
            else:
                response = session.post(url + "/v1/match", json=body, timeout=60)
            elapsed = time.perf_counter() - started
            answer = response.json() if response.status_code == 200 else {}
            ok = bool(answer.get("matches"))
            with lock:
                if measuring[0] and ok:
                    latencies.append(elapsed)
                    inside.append(answer.get("took_ms", float("nan")))
                elif measuring[0]:
                    errors[0] += 1

    measuring = [False]
    searched = search_seconds(url)
    stop_at[0] = time.perf_counter() + 2 + seconds
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(2)
    measuring[0] = True
    began = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    total, calls = np.subtract(search_seconds(url), searched)
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "rps": round(len(latencies) / took, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "ingress_p50_ms": round(float(np.nanmedian(inside)), 2) if inside and not np.isnan(inside).all() else None,
        "search_mean_ms": round(1000 * total / calls, 2) if calls else None,
    }


def search_seconds(url: str) -> tuple[float, float]:
    """The ingress's search-call time so far, summed over signal types: (seconds, calls), from
    its /metrics (none for the plain server)."""
    response = requests.get(url + "/metrics", timeout=30)
    if response.status_code != 200:
        return 0.0, 0.0
    sums = {"_sum": 0.0, "_count": 0.0}
    for line in response.text.splitlines():
        for suffix in sums:
            if line.startswith("mediamatch_search_seconds" + suffix + "{"):
                sums[suffix] += float(line.rsplit(" ", 1)[1])
    return sums["_sum"], sums["_count"]


def tree_rss(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / GIB, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, path: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url + path, timeout=5).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up")


def run_loads(url: str, workloads: dict, concurrencies: list[int], seconds: float, label: str) -> dict:
    out = {}
    for kind, bodies in workloads.items():
        for c in concurrencies:
            result = load(url, kind, bodies, c, seconds)
            out[f"{kind}@{c}"] = result
            print(f"  {label:<8} {kind:<6} concurrency {c:>2}: {result}", flush=True)
    return out


def serve_child(args) -> None:
    """One data-plane mode's measurements (this process's environment carries the mode)."""
    from ray import serve

    from mediamatch.deployments.app import build_app

    store = ObjectStore(args.store)
    workloads = json.loads(Path(args.workloads).read_text())
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    settings = Settings(storage=store.uri, serve={"signal_types": ["pdq", "md5"], "layout": args.layout})
    port = free_port()
    results = {}
    t0 = time.perf_counter()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="mediamatch", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_http(url, "/readyz")
    results["start_seconds"] = round(time.perf_counter() - t0, 1)
    results["rss_gib"] = tree_rss(os.getpid())
    print(f"  {args.serve_child}: up in {results['start_seconds']} s, {results['rss_gib']} GiB (all Ray processes)", flush=True)
    photos = [bytes.fromhex(p) for p in workloads["photo"]]
    results["loads"] = run_loads(url, {"hash": workloads["hash"], "photo": photos}, args.concurrencies, args.seconds, args.serve_child)
    serve.shutdown()
    ray.shutdown()
    Path(args.out).write_text(json.dumps(results))


def run_mode(mode: str, layout: str, workdir: str, store: ObjectStore, workloads_path: str, args) -> dict:
    out = os.path.join(workdir, f"{mode}-{layout}.json")
    env = {**os.environ, **data_plane_env(mode)}
    subprocess.run(
        [sys.executable, __file__, "--serve-child", f"{mode} {layout}", "--layout", layout, "--store", store.root, "--workloads", workloads_path,
         "--out", out, "--seconds", str(args.seconds), "--concurrency", args.concurrency],
        env=env, check=True,
    )
    return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--modes", default=",".join(DATA_PLANES), help=f"data-plane modes of the service to measure: {', '.join(DATA_PLANES)}")
    parser.add_argument("--layouts", default="compact,co_located", help="serve.layout of the service to measure: compact, co_located")
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json")
    parser.add_argument("--serve-child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.concurrencies = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if args.serve_child:
        return serve_child(args)
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in DATA_PLANES:
            parser.error(f"unknown mode {mode!r}: choose from {', '.join(DATA_PLANES)}")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as workdir:
        store = ObjectStore(os.path.join(workdir, "store"))
        photos = real_photos()
        photo_hashes = [PDQ.compute(p).value for p in photos]
        photos = [p for p, h in zip(photos, photo_hashes) if h]
        print(f"banking {args.n:,} PDQ hashes ({len(photos)} of real photos)", flush=True)
        t0 = time.perf_counter()
        ids, hashes = bank(store, args.n, [h for h in photo_hashes if h], args.seed)
        bank_seconds = time.perf_counter() - t0

        from mediamatch.indexing.reindex import reindex

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        settings = Settings(storage=store.uri, serve={"signal_types": ["pdq", "md5"]})
        t0 = time.perf_counter()
        manifest = reindex(settings, ["pdq", "md5"], store=store)["pdq"]
        print(f"index: {manifest.params.type}, {manifest.count:,} entries, built in {time.perf_counter() - t0:.1f} s", flush=True)
        ray.shutdown()

        workloads = {"hash": hash_queries(hashes, 2000, args.seed), "photo": photos}
        workloads_path = os.path.join(workdir, "workloads.json")
        Path(workloads_path).write_text(json.dumps({"hash": workloads["hash"], "photo": [p.hex() for p in photos]}))
        results: dict = {"n": args.n, "seconds": args.seconds, "bank_seconds": round(bank_seconds, 1), "index": manifest.params.model_dump(exclude_none=True)}
        layouts = [layout for layout in args.layouts.split(",") if layout]
        results["serve"] = {f"{mode} {layout}": run_mode(mode, layout, workdir, store, workloads_path, args) for mode in modes for layout in layouts}

        data = os.path.join(workdir, "plain.parquet")
        pq.write_table(pa.table({"entry_id": ids, "pdq": hashes}), data)
        port = free_port()
        t0 = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "plain_server:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=HERE, env={**os.environ, "PLAIN_DATA": data},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url, "/docs")
            results["plain_start_seconds"] = round(time.perf_counter() - t0, 1)
            results["plain_rss_gib"] = tree_rss(server.pid)
            print(f"plain server up in {results['plain_start_seconds']} s, {results['plain_rss_gib']} GiB", flush=True)
            results["plain"] = run_loads(url, workloads, args.concurrencies, args.seconds, "plain")
            dihedral = run_loads(url + "/dihedral", {"photo": photos}, args.concurrencies, args.seconds, "plain, dihedral")
            results["plain_dihedral"] = {key.replace("photo", "photo (dihedral)"): value for key, value in dihedral.items()}
        finally:
            server.terminate()
            server.wait(timeout=30)

    print("\n| mode, layout | request | clients | serve p50 / p99 ms | in ingress p50 ms | search call mean ms | plain p50 / p99 ms | serve / plain req/s | p50 ratio | req/s ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    plain = {**results["plain"], **results["plain_dihedral"]}
    for mode, served in results["serve"].items():
        photos = {key.replace("photo", "photo (dihedral)"): load for key, load in served["loads"].items() if key.startswith("photo")}
        for key, s in {**served["loads"], **photos}.items():
            p = plain[key]
            kind, c = key.split("@")
            print(f"| {mode} | {kind} | {c} | {s['p50_ms']} / {s['p99_ms']} | {s['ingress_p50_ms']} | {s['search_mean_ms']} | {p['p50_ms']} / {p['p99_ms']} | {s['rps']} / {p['rps']} | "
                  f"{s['p50_ms'] / p['p50_ms']:.2f} | {s['rps'] / p['rps']:.2f} |")
    for mode, served in results["serve"].items():
        print(f"{mode}: start {served['start_seconds']} s, {served['rss_gib']} GiB; plain: start {results['plain_start_seconds']} s, {results['plain_rss_gib']} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
