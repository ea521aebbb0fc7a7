"""Cluster-wide rate limits: what they admit across 2 ingress replicas, and what they cost.

    python benchmarks/bench_rate_limits.py [--seconds 10] [--rate 20] [--requests 400]

A local Ray instance serves a small application (md5 only) with 2 ingress replicas, whose
teams lease tokens from the one RateLimits replica:
  1. admitted rate: 8 closed-loop callers of a team limited to `--rate` per second (burst =
     rate) for `--seconds`; admitted vs configured (burst + rate x seconds). Each replica
     limiting on its own would admit about twice that.
  2. latency: `--requests` sequential GET /v1/signal-types per team, in turn: a team with no
     limit (the baseline), one with a high rate (leases of 5% of its rate: a round trip to
     RateLimits every 5,000 requests) and one under 20 per second with a burst it does not
     exhaust (leases of one token: a round trip per request, the worst case); p50 / p99 of
     each and the difference from the baseline.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray
import requests
from ray import serve

from mediamatch.deployments.app import build_app
from mediamatch.platform.auth import token_digest
from mediamatch.platform.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    teams = {"free": {}, "limited": {"rate_per_second": args.rate, "burst": int(args.rate)}, "fast": {"rate_per_second": 100_000},
             "slow": {"rate_per_second": 10, "burst": 100_000}}
    tokens = [{"team": t, "token_sha256": token_digest(f"bench-{t}"), "roles": ["match"], **grant} for t, grant in teams.items()]
    one, two = {"min_replicas": 1, "max_replicas": 1}, {"min_replicas": 2, "max_replicas": 2}
    settings = Settings(storage=tempfile.mkdtemp(), tokens=tokens, serve={"signal_types": ["md5"], "ingress": two, "hasher": one, "searcher": one})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="mediamatch", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/signal-types"
    while requests.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
        time.sleep(0.5)
    try:
        admitted(url, args)
        latency(url, args)
    finally:
        serve.shutdown()
        ray.shutdown()


def admitted(url: str, args) -> None:
    headers = {"Authorization": "Bearer bench-limited"}
    started = time.perf_counter()

    def caller(_) -> list[int]:
        http, codes = requests.Session(), []
        while time.perf_counter() - started < args.seconds:
            codes.append(http.get(url, headers=headers).status_code)
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [c for codes in pool.map(caller, range(8)) for c in codes]
    elapsed = time.perf_counter() - started
    expected = int(args.rate) + args.rate * elapsed
    print(f"admitted: {codes.count(200)} of {len(codes)} requests in {elapsed:.1f} s; configured {expected:.0f}; ratio {codes.count(200) / expected:.3f}")


def latency(url: str, args) -> None:
    http, seconds = requests.Session(), {"free": [], "fast": [], "slow": []}
    for i in range(3 * args.requests):
        team = list(seconds)[i % 3]
        started = time.perf_counter()
        assert http.get(url, headers={"Authorization": f"Bearer bench-{team}"}).status_code == 200
        seconds[team].append(time.perf_counter() - started)
    p = {t: (np.median(s) * 1000, np.percentile(s, 99) * 1000) for t, s in seconds.items()}
    for team, (p50, p99) in p.items():
        print(f"latency {team:>5}: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    for team in ("fast", "slow"):
        print(f"added for {team}: p50 {p[team][0] - p['free'][0]:+.2f} ms ({p[team][0] / p['free'][0]:.2f}x)")


if __name__ == "__main__":
    main()
