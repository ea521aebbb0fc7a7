"""Hash-list import and export: 1M PDQ rows into the directory store and the moto S3 store,
matchable at once through a searcher's live delta and then through the next reindex; a 100k
mixed-entry export -> import round trip with the same entries and match answers.

    python benchmarks/bench_exchange.py [--n 1000000] [--round-trip 100000] [--no-s3]
                                        [--no-baseline] [--no-reindex] [--batch-size 50000]

For each store, in this one process:
  1. import: `mediamatch bank import`'s code (`exchange.import_stream`) reading the CSV file
     (signal_type,signal,external_id), every row parsed, committed in batches; wall and CPU s;
  2. live: a fresh searcher's `LiveIndex` follows the catalog from its start (what a running
     searcher does batch by batch), then 1,000 near-duplicate queries (5 bits flipped) must all
     find their entry;
  3. reload: a fresh `Catalog` folds the log (what an ingress replica does at start);
  4. (directory store) reindex: the Ray Data job publishes the pdq index; a searcher loading
     it holds the entries in the version, not the delta, and the queries still all match.
The baseline, in the same run on the directory store: the path banking took before (the
`Entry` models of `Catalog.add_entries`, log records as JSON), with the same batches.
The machine is shared: the 1-minute load average is printed beside each figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

from mediamatch.platform import catalog as catalog_module
from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.exchange import export_chunks, import_stream
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.storage import ObjectStore

PDQ = SIGNAL_TYPES["pdq"]


def load() -> float:
    return os.getloadavg()[0]


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.load = load()

    def __str__(self) -> str:
        return f"{self.wall:7.2f} s wall, {self.cpu:7.2f} s CPU (load {self.load:.1f})"


def random_hashes(n: int, seed: int) -> list[str]:
    raw = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    return [row.tobytes().hex() for row in raw]


def flip(values: list[str], bits: int = 5) -> list[str]:
    mask = (1 << bits) - 1
    return [format(int(v, 16) ^ mask, "064x") for v in values]


def write_csv(path: str, values: list[str]) -> None:
    with open(path, "w") as f:
        f.write("signal_type,signal,external_id\n")
        f.writelines(f"pdq,{v},p{i}\n" for i, v in enumerate(values))


def check_matches(store: ObjectStore, values: list[str], sample: np.ndarray) -> tuple[Timer, int, int]:
    """A fresh searcher (load + catch-up timed), then the near-duplicate queries; (timer, found, delta size)."""
    with Timer() as t:
        live = LiveIndex(store, PDQ)
    queries = [values[i] for i in sample]
    _, hits = live.search(PDQ.encode(flip(queries)), 5, 31)
    found = sum(1 for i, h in zip(sample, hits) if any(d == 5 for _, _, d, _ in h))
    return t, found, len(live.state.delta)


def follow(name: str, store: ObjectStore, values: list[str]) -> np.ndarray:
    """Time a fresh searcher's live-delta catch-up (1,000 sampled near-duplicates matched) and a
    catalog reload, as a starting ingress does; returns the sample."""
    sample = np.random.default_rng(1).choice(len(values), 1000, replace=False)
    t, found, delta = check_matches(store, values, sample)
    print(f"{name:<10} live delta catch-up     {t}  -> {delta:,} in the delta, {found}/1000 near-duplicates found")
    with Timer() as t:
        Catalog(store).refresh()
    print(f"{name:<10} catalog reload          {t}")
    return sample


def run_store(name: str, store: ObjectStore, csv_path: str, values: list[str], batch: int, reindex: bool) -> None:
    catalog = Catalog(store)
    catalog.create_bank("bench")
    size = os.path.getsize(csv_path)
    with Timer() as t, open(csv_path, "rb") as f:
        report = import_stream(catalog, "bench", f, name=csv_path, size=size, batch_size=batch)
    print(f"{name:<10} import {len(values):,} rows    {t}  -> {report.added:,} added in {report.batches} commits, {report.bad_count} bad")
    sample = follow(name, store, values)
    with Timer() as t, open(csv_path, "rb") as f:
        again = import_stream(catalog, "bench", f, name=csv_path, size=size, batch_size=batch)
    print(f"{name:<10} re-import (all banked)  {t}  -> {again.added} added, {again.already_banked:,} already banked")
    if reindex:
        import ray

        from mediamatch.indexing.reindex import reindex as run_reindex
        from mediamatch.platform.settings import Settings

        if not ray.is_initialized():
            os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        with Timer() as t:
            published = run_reindex(Settings(storage=store.uri), ["pdq"], store=store)
        print(f"{name:<10} reindex (Ray job, pdq)  {t}  -> {published['pdq'].version}, {published['pdq'].count:,} entries, {published['pdq'].params.type}")
        t, found, delta = check_matches(store, values, sample)
        print(f"{name:<10} searcher load           {t}  -> {delta:,} in the delta, {found}/1000 near-duplicates found")


def run_baseline(store: ObjectStore, values: list[str], batch: int) -> None:
    """The path before: Entry models through Catalog.add_entries, each batch a JSON log record."""
    catalog = Catalog(store)
    catalog.create_bank("bench")
    inline, catalog_module.INLINE_MAX = catalog_module.INLINE_MAX, 1 << 62
    try:
        with Timer() as t:
            for start in range(0, len(values), batch):
                catalog.add_entries("bench", [Entry(bank="bench", content_type="photo", signals={"pdq": PDQ.parse(v)}, external_id=f"p{i}")
                                              for i, v in enumerate(values[start:start + batch], start)])
        print(f"{'baseline':<10} add_entries, JSON log  {t}")
        follow("baseline", store, values)
    finally:
        catalog_module.INLINE_MAX = inline


def moto_store() -> tuple[ObjectStore, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(key, value)  # moto accepts any credentials

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return ObjectStore(f"s3://{bucket}/data", endpoint=endpoint), proc


def round_trip(n: int, tmp: str) -> None:
    """n mixed entries exported as CSV and imported into a fresh store: same entries, same answers."""
    source, target = ObjectStore(f"{tmp}/rt-a"), ObjectStore(f"{tmp}/rt-b")
    catalog = Catalog(source)
    catalog.create_bank("mixed", labels=["partner"])
    rng = np.random.default_rng(2)
    pdqs, md5s = random_hashes(n, 3), [rng.integers(0, 256, 16, dtype=np.uint8).tobytes().hex() for _ in range(n)]
    kinds = rng.integers(0, 4, n)
    entries = []
    for i in range(n):
        if kinds[i] == 0:
            entries.append(Entry(bank="mixed", content_type="photo", signals={"pdq": pdqs[i]}, labels=[f"l{i % 5}"], metadata={"case": i}))
        elif kinds[i] == 1:
            entries.append(Entry(bank="mixed", content_type="photo", signals={"pdq": pdqs[i], "md5": md5s[i]}, external_id=f"x{i}"))
        elif kinds[i] == 2:
            entries.append(Entry(bank="mixed", content_type="video", signals={"md5": md5s[i]}, labels=["video"]))
        else:
            entries.append(Entry(bank="mixed", content_type="text", signals={"text_exact": pdqs[i]}, metadata={"note": f"text, {i}"}))
    for start in range(0, n, 50_000):
        catalog.add_entries("mixed", entries[start:start + 50_000])
    with Timer() as t:
        path = f"{tmp}/mixed.csv"
        with open(path, "wb") as f:
            for chunk in export_chunks(catalog, "mixed", "csv"):
                f.write(chunk)
    print(f"round trip export {n:,} mixed entries  {t}  -> {os.path.getsize(path) / 1e6:.1f} MB CSV")
    fresh = Catalog(target)
    fresh.create_bank("mixed", labels=["partner"])
    with Timer() as t, open(path, "rb") as f:
        report = import_stream(fresh, "mixed", f, name=path)
    print(f"round trip import                   {t}  -> {report.added:,} added, {report.bad_count} bad")
    same = lambda c: sorted((e["content_type"], json.dumps(e["signals"], sort_keys=True), e["labels"], json.dumps(e["metadata"], sort_keys=True)) for e in c.entries["mixed"].iter_entries())  # noqa: E731
    fresh.refresh()
    catalog.refresh()
    entries_equal = same(fresh) == same(catalog)
    queries = [pdqs[i] for i in np.flatnonzero(kinds <= 1)[:1000]]

    def answers(store: ObjectStore, c: Catalog) -> list:
        _, hits = LiveIndex(store, PDQ).search(PDQ.encode(flip(queries)), 5, 31)
        return [sorted((json.dumps(c.entries[b][e]["signals"], sort_keys=True), d) for e, b, d, _ in h) for h in hits]

    print(f"round trip: same entries {entries_equal}, same answers to {len(queries)} pdq queries {answers(target, fresh) == answers(source, catalog)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--round-trip", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-reindex", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-exchange-")
    values = random_hashes(args.n, 0)
    csv_path = f"{tmp}/list.csv"
    write_csv(csv_path, values)
    print(f"{args.n:,} PDQ rows, {os.path.getsize(csv_path) / 1e6:.1f} MB CSV; batches of {args.batch_size:,}; {os.cpu_count()} CPUs")
    run_store("directory", ObjectStore(f"{tmp}/dir"), csv_path, values, args.batch_size, not args.no_reindex)
    if not args.no_s3:
        store, proc = moto_store()
        try:
            run_store("moto S3", store, csv_path, values, args.batch_size, False)
        finally:
            proc.terminate()
    if not args.no_baseline:
        run_baseline(ObjectStore(f"{tmp}/baseline"), values, args.batch_size)
    if args.round_trip:
        round_trip(args.round_trip, tmp)


if __name__ == "__main__":
    main()
