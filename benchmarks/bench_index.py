"""Index build: the Ray Data job vs a plain single-process faiss script, same data, same parameters.

    python benchmarks/bench_index.py [--n 1000000] [--shards 2] [--only float|pdq]

For each of (a) N 256-d float vectors and (b) N PDQ hashes, the data is first written as
Parquet to a local object store (untimed). Then, in this one process:
1. plain faiss: read the Parquet with pyarrow, train on a random sample, add, serialize and
   write the index: the same index type and parameters the job chooses (`choose_params`);
2. the Ray Data job: `build_index` end to end (read, sample, train, add in shards, write,
   measure recall on held-out queries, manifest, publish).
Printed: seconds of each, the ratio, recall@10 of each against exact search on the same
held-out queries, and peak resident memory (this process and its children, sampled).
Data: float vectors are a seeded mixture of 4,096 Gaussian clusters on the unit sphere (a
realistic structure, not uniform noise); PDQ hashes are seeded random bits, 10% of them
near-duplicates (≤ 8 bits flipped) of others, as real banks hold edits of one image.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mediamatch.indexing.reindex import build_index, column_values, perturb_queries, recall_at_k
from mediamatch.platform.index import Shard, choose_params, empty_index, merge_results, serialize, set_nprobe
from mediamatch.platform.settings import IndexSettings
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.signals.base import FloatVectorSignal
from mediamatch.platform.storage import ObjectStore


class Float256(FloatVectorSignal):
    """The benchmark's 256-d float signal (the layout of a learned image descriptor)."""

    name = "bench_float256"
    content_types = frozenset()
    dim = 256
    default_threshold = 2.0

    def compute(self, content, limits=None):
        raise NotImplementedError("benchmark vectors are generated, not computed")


SIGNAL_TYPES[Float256.name] = Float256()  # known to this driver, where index versions are named


def float_data(n: int, rng) -> np.ndarray:
    centres = Float256().encode(rng.standard_normal((4096, 256)).astype(np.float32))
    out = np.empty((n, 256), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, 256)).astype(np.float32) * 0.05
        out[start:stop] = centres[rng.integers(0, 4096, stop - start)] + noise
    return Float256().encode(out)


def pdq_data(n: int, rng) -> np.ndarray:
    hashes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    dupes = rng.choice(n, n // 10, replace=False)
    bits = np.unpackbits(hashes[rng.integers(0, n, len(dupes))], axis=1)
    flips = rng.integers(0, 256, size=(len(dupes), 8))
    for row, f in zip(bits, flips):
        row[f[: rng.integers(1, 9)]] ^= 1
    hashes[dupes] = np.packbits(bits, axis=1)
    return hashes


class PeakMemory:
    """Peak RSS of this process plus its children (Ray workers), sampled every 0.2 s."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_rss(pid) for pid in _descendants(os.getpid())))
            self._stop.wait(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def plain_faiss(signal_type, path: str, params, out_dir: str, seed: int) -> tuple[float, object]:
    """The baseline: read, train, add, write, single process, faiss's own threads."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    table = pq.read_table(path)
    values = column_values(signal_type, table.column("value"))
    index = empty_index(params)
    if params.needs_training:
        rng = np.random.default_rng(seed)
        index.train(values[rng.choice(len(values), params.train_size, replace=False)])
    index.add(values)
    with open(os.path.join(out_dir, "plain.index"), "wb") as f:
        f.write(serialize(index))
    seconds = time.perf_counter() - started
    return seconds, Shard(params, np.asarray(table.column("entry_id").to_pylist(), dtype=object), index=index)


def run_case(kind: str, n: int, shards: int, seed: int, workdir: str) -> dict:
    signal_type = Float256() if kind == "float" else SIGNAL_TYPES["pdq"]
    rng = np.random.default_rng(seed)
    values = float_data(n, rng) if kind == "float" else pdq_data(n, rng)
    ids = [f"e{i:09d}" for i in range(n)]
    store = ObjectStore(os.path.join(workdir, kind))
    key = "bench/signals.parquet"
    os.makedirs(os.path.dirname(store.path(key)), exist_ok=True)
    # the job's signal schema (see signal_table), built from the arrays without a Python loop
    if kind == "float":
        column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 256)
    else:
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(values.tobytes())])
    table = pa.table({"entry_id": pa.array(ids), "value": column})
    pq.write_table(table, store.path(key), row_group_size=100_000)
    del table
    settings = IndexSettings(flat_max=50_000, shards=shards, seed=seed)
    params = choose_params(signal_type, n, settings)

    with PeakMemory() as mem:
        plain_seconds, plain = plain_faiss(signal_type, store.path(key), params, workdir, seed)
    plain_peak = mem.peak

    with PeakMemory() as mem:
        started = time.perf_counter()
        manifest = build_index(store, signal_type, ray.data.read_parquet(store.path(key), filesystem=store.fs), shards, settings)
        ray_seconds = time.perf_counter() - started
    ray_peak = mem.peak

    # plain's recall, at the nprobe the job tuned, on fresh held-out queries by the same rule
    queries = perturb_queries(signal_type, values[rng.choice(n, settings.recall_queries, replace=False)], rng)
    started = time.perf_counter()
    if kind == "float":
        set_nprobe(plain.index, manifest.params.nprobe)
        approx, k, radius = plain.search(queries, 10, 2.0), 10, 2.0
        exact_params = params.model_copy(update={"type": "flat"})
    else:
        approx, k, radius = plain.search(queries, 1000, 31), 1000, 31
        exact_params = params.model_copy(update={"type": "binary_flat"})
    exact = Shard.build(exact_params, plain.entry_ids, values, None).search(queries, k, radius)
    plain_recall = recall_at_k(merge_results([approx], k), exact)
    recall_seconds = time.perf_counter() - started
    return {
        "case": f"{n:,} x {'256-d float' if kind == 'float' else 'PDQ'}",
        "index": params.type,
        "params": manifest.params.model_dump(exclude_none=True),
        "ray_seconds": round(ray_seconds, 2),
        "ray_stages": manifest.stage_seconds,
        "plain_seconds": round(plain_seconds, 2),
        "plain_recall_seconds": round(recall_seconds, 2),
        "ratio": round(ray_seconds / plain_seconds, 3),
        "ray_recall_at_10": manifest.recall_at_10,
        "plain_recall_at_10": round(plain_recall, 4),
        "ray_peak_gib": round(ray_peak / 2**30, 2),
        "plain_peak_gib": round(plain_peak / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--only", choices=["float", "pdq"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for kind in [args.only] if args.only else ["float", "pdq"]:
            results.append(run_case(kind, args.n, args.shards, args.seed, workdir))
            print(json.dumps(results[-1]), flush=True)
    print("\n| case | index | Ray job s | plain faiss s | ratio | recall@10 Ray / plain | peak RSS GiB Ray / plain |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {r['index']} | {r['ray_seconds']} | {r['plain_seconds']} | {r['ratio']} | "
            f"{r['ray_recall_at_10']} / {r['plain_recall_at_10']} | {r['ray_peak_gib']} / {r['plain_peak_gib']} |"
        )
    print(f"\ncommand: python benchmarks/bench_index.py --n {args.n} --shards {args.shards}" + (f" --only {args.only}" if args.only else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
