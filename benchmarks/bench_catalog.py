"""What a catalog reader (every ingress replica) holds: memory and lookup time at N entries.

    python benchmarks/bench_catalog.py [--n 1000000] [--no-baseline] [--store DIR]

Banks N PDQ entries (labels, a metadata field, an external id each) into a directory store as
an import does (batch files of 50,000), then 1,000 more by small commits. Then, each in a
fresh process so that resident memory is its own: `Catalog(store).refresh()` (what an ingress
does at start) — the RSS it added, its load time, `get` by id (what every match answer does
per hit) and a page of `list_entries`; and the baseline, in the same process: the same
entries held as a dict per entry (what the catalog held before it was columnar), the RSS
they add on top and the time to build them from the loaded catalog.
The 1-minute load average is printed beside each figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from mediamatch.platform import signals  # noqa: F401  (imported before measuring, as in an ingress)
from mediamatch.platform.catalog import Catalog, new_entry_id
from mediamatch.platform.storage import ObjectStore

BATCH = 50_000


def bank_entries(store: ObjectStore, n: int) -> None:
    catalog = Catalog(store)
    catalog.create_bank("bench", labels=["bench"])
    rng = np.random.default_rng(0)
    for start in range(0, n, BATCH):
        raw = rng.integers(0, 256, (min(BATCH, n - start), 32), dtype=np.uint8)
        catalog.add_entry_records("bench", [record(i, row.tobytes().hex()) for i, row in enumerate(raw, start)])
        print(f"  banked {start + len(raw):,}", file=sys.stderr, end="\r")
    for i in range(n, n + 1000, 10):
        catalog.add_entry_records("bench", [record(j, f"{j:064x}") for j in range(i, i + 10)])


def record(i: int, pdq: str) -> dict:
    return {"entry_id": new_entry_id(), "bank": "bench", "content_type": "photo", "signals": {"pdq": pdq}, "metadata": {"case": i},
            "enabled": True, "created_at": "2026-12-03T00:00:00.000+00:00", "media": None, "labels": ["imported"], "external_id": f"p{i}"}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(root: str, baseline: bool) -> dict:
    """In this (fresh) process: load the catalog and time what a replica does with it; then
    (`baseline`) the same entries as a dict each, their memory on top of the columnar one's."""
    before = rss()
    started = time.perf_counter()
    catalog = Catalog(ObjectStore(root))
    catalog.refresh()
    loaded = time.perf_counter() - started
    bank = catalog.entries["bench"]
    columnar = rss() - before
    sample = list(np.random.default_rng(0).choice([e["entry_id"] for e in bank.iter_entries()], 10_000))
    t = time.perf_counter()
    catalog.list_entries("bench", limit=100, cursor=sample[0])
    page_ms = (time.perf_counter() - t) * 1000
    out = {"columnar (now)": {"entries": len(bank), "rss_mib": columnar / 2**20, "load_s": loaded, **timed_gets(bank, sample),
                              "page_ms": page_ms, "load_avg": os.getloadavg()[0]}}
    if baseline:
        at = rss()
        started = time.perf_counter()
        held = {e["entry_id"]: e for e in bank.iter_entries()}
        out["dict per entry (before)"] = {"entries": len(held), "rss_mib": (rss() - at) / 2**20, "load_s": time.perf_counter() - started,
                                          **timed_gets(held, sample), "page_ms": float("nan"), "load_avg": os.getloadavg()[0]}
    return out


def timed_gets(held, ids: list[str]) -> dict:
    times = []
    for entry_id in ids:
        t = time.perf_counter()
        held.get(entry_id)
        times.append(time.perf_counter() - t)
    return {"get_us_p50": float(np.median(times)) * 1e6, "get_us_p99": float(np.percentile(times, 99)) * 1e6}


def in_subprocess(root: str, baseline: bool) -> dict:
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench_catalog as b; print(json.dumps(b.measure({root!r}, {baseline})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the dict-per-entry baseline (at 10M it needs > 20 GiB)")
    parser.add_argument("--store", help="a directory store: banked into when empty, reused when it holds a run's bank (default: a new temporary one)")
    args = parser.parse_args()
    root = args.store or tempfile.mkdtemp(prefix="bench-catalog-")
    if not ObjectStore(root).list("catalog/log"):
        t = time.perf_counter()
        bank_entries(ObjectStore(root), args.n)
        print(f"banked {args.n:,} + 1,000 entries in {time.perf_counter() - t:.1f} s (load {os.getloadavg()[0]:.1f})")
    results = in_subprocess(root, not args.no_baseline)
    print("\n| held as | entries | RSS added MiB | load s | get p50 µs | get p99 µs | list page ms | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['entries']:,} | {r['rss_mib']:.0f} | {r['load_s']:.2f} | {r['get_us_p50']:.1f} | {r['get_us_p99']:.1f} | {r['page_ms']:.2f} | {r['load_avg']:.1f} |")
    if len(results) == 2:
        now, before = results.values()
        print(f"\nmemory: {now['rss_mib'] / before['rss_mib']:.2f}x the dict-per-entry baseline; get p50 {now['get_us_p50'] / before['get_us_p50']:.1f}x")


if __name__ == "__main__":
    main()
