"""Index build, the Ray Data job vs a plain single-process faiss script (same data, same parameters), and the searchers it feeds.

    python benchmarks/bench_index.py [--n 1000000] [--shards 2] [--only float|pdq] [--seed 1234]
                                     [--json out.json] [--reader v2|v1] [--skip-plain]

Two cases, each built two ways from the same Parquet file in a local object store (temp dir):
  (a) N 256-d float vectors (IVF-PQ + float16 re-rank, parameters from `choose_params`),
  (b) N PDQ hashes, 256 bits (binary_postings: multi-index hashing over sorted postings, parameters
      from `choose_params`; the plain baseline builds the same index in one process).

Per case, in this one process and in this order:
  0. data: generated (seeded) and written as Parquet with the job's schema (`signal_table`),
     untimed;
  1. plain faiss, FIRST: read the Parquet with pyarrow, train on a random sample of
     `train_size` (float), add everything, write the index (+ the entry ids, as Parquet) to a
     file in the same temp dir, fsync'd. faiss on 2 threads (PDQ: the job's own index class,
     `BinaryPostings`, and its file). Timed: read + train + add + write.
     Peak memory: getrusage(RUSAGE_SELF / RUSAGE_CHILDREN).ru_maxrss, the process's high-water
     mark reset (/proc/self/clear_refs) just before this step (children: the largest child
     waited for, which includes an earlier case's searcher processes);
  2. the Ray Data job, SECOND: `build_index(store, type, ray.data.read_parquet(...), shards,
     IndexSettings(...))` end to end: read, materialise, sample, train, add in shards, write
     shards + ids + manifest, measure recall on held-out queries (tuning nprobe), publish.
     Peak memory: driver + every descendant process (raylet, GCS, workers) sampled with psutil
     every 0.2 s (sum of RSS; sum of PSS every ~1 s, which does not count the object store's
     shared pages twice);
  3. plain faiss recall, THIRD, timed separately: held-out queries drawn independently by the
     job's rule (random rows, `perturb_queries`), the job's tuned nprobe (`manifest.params.nprobe`);
     float: top-10 vs exact `IndexFlatIP` over all N; PDQ: every hash within 31 bits found by
     range search vs `IndexBinaryFlat` range search. Both are averaged per query, as the job does.
     Untimed cross-check on the same queries: the nprobe the single plain index needs to reach
     the target (doubled until it or a plateau, as the job tunes); the Ray-built index itself is checked in step 4.
  4. the searchers, FOURTH: each slot of the published index (one shard each) loaded in a fresh
     process as a `ShardSearcher` replica loads it (`LiveIndex(store, type, slot, slots)`, the
     shard's files checksummed). Memory: RSS after loading minus RSS before (both after gc and
     malloc_trim), the peak while loading (VmHWM, reset before), and parts of it: the entry-id
     and bank columns, the index's arrays (binary_postings), the index file's size. Then lookups as the replica answers them
     (`search_values` at `Settings()`'s k = serve.max_matches and match threshold, the
     manifest's nprobe): every query one value per call (p50/p99), then 64 batches of
     serve.max_batch_size (p50/p99 per batch). In-process: no Serve hops (bench_serve has those).
     Each searcher also answers the benchmark's queries (float: top 10; PDQ: all within 31
     bits): merged over slots, their recall against the exact answers is the Ray-built
     index's recall at the served nprobe. PDQ, then: the baseline in the same process: faiss's
     IndexBinaryMultiHash (16 x 16 bits, nflip 1: what binary_postings replaced) built over the
     same rows, serialized and deserialized (as a searcher loads a file: faiss's maps, allocated
     in order, search twice as fast as just after `add`), swapped in for the shard, its RSS
     growth, and the same lookups.
`--skip-plain` skips steps 1 and 3 (the plain build holds all N values in memory, 10 GB at
10M x 256-d): the queries are then drawn by the same rule from the Parquet file one row group
at a time, and their exact answers found by brute force over one row group (100,000 rows) at a
time (float: `ExactTopK`, faiss's `knn` per group merged in a `ResultHeap`; PDQ: `IndexBinaryFlat`
range search per group). The data is written in row groups too, so a float case never holds
more than one chunk of generated vectors (PDQ's 32 bytes per row are generated at once).
`ray.init(num_cpus=2)` happens once, before any timing; then a warm-up starts the workers and
Ray Data's helpers (a 2-row read), as on a long-lived cluster: that cold start is reported on
its own line, not counted in the job's figure. The 1-minute load average is recorded around
each timing: the machine is shared, so read the ratio with it. `--reader` picks Ray Data's
Parquet reader (`DataContext.use_datasource_v2`) for the job's input: v1, as the job reads the
catalog (the default), or v2, Ray's default.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import psutil  # after ray: the venv's psutil is the copy Ray ships (ray/thirdparty_files)

from mediamatch.indexing.reindex import PLATEAU, build_index, column_values, perturb_queries, signal_table
from mediamatch.platform.index import BinaryPostings, ExactTopK, choose_params, deserialize, empty_index, serialize
from mediamatch.platform.settings import IndexSettings, Settings
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.signals.base import FloatVectorSignal
from mediamatch.platform.storage import ObjectStore

THREADS = 2  # the machine's cores; faiss threads of the plain baseline, Ray's num_cpus
CHUNK = 100_000  # rows per generated chunk = Parquet row group
DATA_KEY = "bench/signals.parquet"
GIB = 2**30


class Float256(FloatVectorSignal):
    """The benchmark's 256-d float signal (the layout of a learned image descriptor)."""

    name = "bench_float256"
    content_types = frozenset()
    dim = 256
    default_threshold = 2.0

    def compute(self, content, limits=None):
        raise NotImplementedError("benchmark vectors are generated, not computed")


SIGNAL_TYPES[Float256.name] = Float256()  # known to this driver, where index versions are named


# -- data ---------------------------------------------------------------------------------------
FLOAT_DATA = (
    "4,096 Gaussian clusters on the unit sphere (centres uniform on the sphere, cluster sizes "
    "log-normal, spread varying per cluster, noise norm 0.5-1.0 around a unit centre), "
    "L2-normalised: clustered like real embeddings, NOT uniform random"
)
PDQ_DATA = "uniform random 256-bit hashes, 10% of them near-duplicates (1-8 bits flipped) of other rows"


def float_chunks(n: int, rng):
    d, k = 256, 4096
    centres = rng.standard_normal((k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, k)
    weights /= weights.sum()
    spread = rng.uniform(0.5, 1.0, k).astype(np.float32) / np.sqrt(d)  # per-dimension sigma
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        which = rng.choice(k, rows, p=weights)
        noise = rng.standard_normal((rows, d), dtype=np.float32) * spread[which, None]
        yield centres[which] + noise  # signal_table L2-normalises (Float256.encode)


def pdq_chunks(n: int, rng):
    hashes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    dupes = rng.choice(n, n // 10, replace=False)
    sources = rng.integers(0, n, len(dupes))
    hashes[dupes] = hashes[sources]
    flips = rng.integers(1, 9, len(dupes))  # 1..8 bits per near-duplicate
    rows = np.repeat(dupes, flips)
    bits = rng.integers(0, 256, len(rows))  # (a repeated position flips back: fine, still realistic)
    np.bitwise_xor.at(hashes, (rows, bits // 8), (1 << (7 - bits % 8)).astype(np.uint8))
    for start in range(0, n, CHUNK):
        yield [h.hex() for h in map(bytes, hashes[start : start + CHUNK])]


def entry_id(row: int) -> str:
    """An id of the service's form and length (`new_entry_id`: 'e_', 16 hex digits of a clock, 10
    random ones), 28 characters, with the row number in place of the clock."""
    return f"e_{row:016x}{row * 2654435761 % 16**10:010x}"


def row_of(entry_id: str) -> int:
    return int(entry_id[2:18], 16)


def write_data(kind: str, signal_type, n: int, seed: int, path: str) -> None:
    """The data as the job's signal schema (`signal_table`), one Parquet file, a row group per chunk."""
    rng = np.random.default_rng(seed)
    chunks = float_chunks(n, rng) if kind == "float" else pdq_chunks(n, rng)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer, start = None, 0
    for values in chunks:
        ids = [entry_id(i) for i in range(start, start + len(values))]
        table = signal_table(signal_type, ids, list(values))  # (it takes a list: rows or hex strings)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        start += len(values)
    writer.close()


# -- plain faiss --------------------------------------------------------------------------------
def read_values(kind: str, path: str) -> tuple[pa.Table, np.ndarray]:
    table = pq.read_table(path)
    column = table.column("value").combine_chunks()
    if kind == "float":
        values = column.flatten().to_numpy().reshape(-1, 256)
    else:
        values = np.frombuffer(column.buffers()[1], np.uint8)[column.offset * 32 : (column.offset + len(column)) * 32]
        values = values.reshape(-1, 32)
    return table, values


def plain_build(kind: str, path: str, params, out_dir: str, seed: int) -> dict:
    """The baseline: read, train, add, write; one process, faiss on THREADS threads."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index_path = os.path.join(out_dir, f"plain-{kind}.faiss")
    ids_path = os.path.join(out_dir, f"plain-{kind}.ids.parquet")
    t0 = time.perf_counter()
    table, values = read_values(kind, path)
    t_read = time.perf_counter()
    index = empty_index(params)  # IVF-PQ with its re-rank, or binary_postings, as the job builds it
    if kind == "float":
        sample = values[np.random.default_rng(seed).choice(len(values), params.train_size, replace=False)]
        index.train(sample)
        del sample
    t_train = time.perf_counter()
    index.add(values)
    t_add = time.perf_counter()
    if kind == "float":
        faiss.write_index(index, index_path)
    else:
        with open(index_path, "wb") as f:
            f.write(serialize(index))
    pq.write_table(table.select(["entry_id"]), ids_path)  # faiss id -> entry id, as the job writes
    for p in (index_path, ids_path):  # as durable as the object store's put (which fsyncs)
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    t_write = time.perf_counter()
    return {
        "seconds": t_write - t0,
        "stages": {"read": t_read - t0, "train": t_train - t_read, "add": t_add - t_train, "write": t_write - t_add},
        "index_path": index_path,
        "index_bytes": os.path.getsize(index_path),
    }


def plain_recall(kind: str, signal_type, path: str, index_path: str, params, nprobe, settings, seed: int) -> dict:
    """recall@10 of the plain index at the job's nprobe, on independently drawn held-out queries.

    Timed: the approximate search and the exact search (not the loading). Also returned: the
    queries and their exact answers (row numbers), for the untimed cross-checks below."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    t0 = time.perf_counter()
    _, values = read_values(kind, path)
    if kind == "float":
        index = faiss.read_index(index_path)
    else:
        with open(index_path, "rb") as f:
            index = deserialize(params, f.read())
    t_load = time.perf_counter()
    rng = np.random.default_rng(seed + 1)  # not the job's draw: same rule, other rows
    queries = perturb_queries(signal_type, values[rng.choice(len(values), settings.recall_queries, replace=False)], rng)
    if kind == "float":
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
        _, approx = index.search(queries, 10)
        exact_index = faiss.IndexFlatIP(params.dim)
        exact_index.add(values)
        _, exact_rows = exact_index.search(queries, 10)
        exact = [set(row[row >= 0].tolist()) for row in exact_rows]
        found = [set(row[row >= 0].tolist()) for row in approx]
    else:
        radius = int(signal_type.default_threshold) + 1  # faiss: distance < radius
        lims_a, _, ids_a = index.range_search(queries, radius)
        exact_index = faiss.IndexBinaryFlat(params.dim)
        exact_index.add(values)
        lims_x, _, ids_x = exact_index.range_search(queries, radius)
        exact = [set(ids_x[lims_x[i] : lims_x[i + 1]].tolist()) for i in range(len(queries))]
        found = [set(ids_a[lims_a[i] : lims_a[i + 1]].tolist()) for i in range(len(queries))]
    recall = set_recall(found, exact)
    t_done = time.perf_counter()
    out = {"recall": recall, "seconds": t_done - t_load, "load_seconds": t_load - t0, "queries": queries, "exact": exact}
    if kind == "float":  # the nprobe this single (unsharded) index needs: doubled until the target or a plateau, as the job tunes
        ivf, tuned, last = faiss.extract_index_ivf(index), 1, -1.0
        while True:
            ivf.nprobe = tuned
            r = set_recall([set(row.tolist()) for row in index.search(queries, 10)[1]], exact)
            if r >= settings.target_recall or r - last < PLATEAU or tuned >= params.nlist:
                break
            last, tuned = r, tuned * 2
        out["tuned"] = {"nprobe": tuned, "recall": round(r, 4)}
    return out


def set_recall(found: list[set], exact: list[set]) -> float:
    """Per query |found & exact| / |exact|, averaged over queries with an exact answer (as the job does)."""
    scores = [len(f & x) / len(x) for f, x in zip(found, exact) if x]
    return float(np.mean(scores)) if scores else 1.0


def recall_probe(signal_type) -> tuple[int, float]:
    """k and radius of the recall check: float top-10 (any distance); binary every hit within the threshold."""
    return (10, 2.0) if signal_type.index_kind == "float" else (1000, float(signal_type.default_threshold))


def ray_index_recall(searchers: list[dict], k: int, exact: list[set], searched: str = "served") -> float:
    """The published Ray-built index, as the searchers hold it (every slot, loaded and checksummed,
    at the manifest's nprobe), on the benchmark's own queries: a check of the job's self-measurement.
    `searched`: the top k of a search of k ("k10") or of the served k ("served", as the service asks)."""
    from mediamatch.platform.index import merge_results

    merged = merge_results([[[tuple(hit) for hit in row] for row in s["found"][searched]] for s in searchers], k)
    found = [{row_of(entry_id) for entry_id, _ in row} for row in merged]
    return set_recall(found, exact)


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (what ru_maxrss reports), Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def maxrss(who) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # kB on Linux


# -- scale: ground truth by chunks, and what a searcher holds and answers -------------------------
def row_groups(signal_type, path: str):
    """(first row, values) per Parquet row group: never all N values in memory at once."""
    file, start = pq.ParquetFile(path), 0
    for i in range(file.num_row_groups):
        values = column_values(signal_type, file.read_row_group(i, columns=["value"]).column("value"))
        yield start, values
        start += len(values)


def chunked_queries(signal_type, path: str, n: int, count: int, seed: int) -> np.ndarray:
    """`count` random rows made near-duplicate by the job's rule (`perturb_queries`), read by chunks."""
    rng = np.random.default_rng(seed + 1)  # not the job's draw: same rule, other rows
    rows = np.sort(rng.choice(n, count, replace=False))
    picked = [values[rows[(rows >= start) & (rows < start + len(values))] - start] for start, values in row_groups(signal_type, path)]
    return perturb_queries(signal_type, np.concatenate(picked)[rng.permutation(count)], rng)


def chunked_exact(signal_type, path: str, queries: np.ndarray, radius: int) -> list[set]:
    """Exact answers by brute force over one row group at a time: float: top-10 by inner product
    (`ExactTopK`); binary: every row within `radius` bits. Row numbers."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    if signal_type.index_kind == "float":
        top = ExactTopK(queries, 10)
        for _, values in row_groups(signal_type, path):
            top.add(values)
        return [{row for row, _ in hits} for hits in top.hits()]
    exact: list[set] = [set() for _ in queries]
    for start, values in row_groups(signal_type, path):
        flat = faiss.IndexBinaryFlat(signal_type.dim)
        flat.add(values)
        lims, _, rows = flat.range_search(queries, radius + 1)  # faiss: distance < radius
        for i in range(len(queries)):
            exact[i].update((rows[lims[i] : lims[i + 1]] + start).tolist())
    return exact


def trimmed_rss() -> int:
    """This process's RSS once garbage is collected and freed heap handed back (glibc malloc_trim)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss


def high_water_rss() -> int:
    """This process's peak RSS since the last `reset_peak_rss` (VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def warm_faiss() -> None:
    import faiss

    flat = faiss.IndexFlatIP(64)
    flat.add(np.ones((1000, 64), np.float32))
    flat.search(np.ones((64, 64), np.float32), 10)


def searcher_main(spec_path: str) -> None:
    """Child process: load one slot of the published index as a `ShardSearcher` replica does
    (`LiveIndex(store, type, slot, slots)`: its shards, checksummed), then time lookups as the
    replica answers them (`search_values` at the match request's k and radius from `Settings()`,
    the manifest's nprobe): one value per call, then batches of `serve.max_batch_size`."""
    from mediamatch.platform.live import LiveIndex

    with open(spec_path) as f:
        spec = json.load(f)
    settings = Settings()
    signal_type = Float256() if spec["kind"] == "float" else SIGNAL_TYPES["pdq"]
    queries = np.load(spec["queries"])
    values = [bytes(q).hex() for q in queries] if signal_type.index_kind == "binary" else list(queries)
    k, radius = settings.serve.max_matches, float(settings.thresholds.get(signal_type.name, signal_type.default_threshold))
    warm_faiss()  # its thread pool's first start is not the shard's memory
    base = trimmed_rss()
    reset_peak_rss()  # the high-water mark from here on: the load's own peak
    t0 = time.perf_counter()
    live = LiveIndex(ObjectStore(spec["root"]), signal_type, spec["slot"], spec["slots"])
    load_seconds = time.perf_counter() - t0
    peak, loaded = high_water_rss(), trimmed_rss()
    state = live.state
    found = {}  # for ray_index_recall: the top 10 (float) of a search of 10, and of one of the served k
    for name, probe_k in (("k10", recall_probe(signal_type)[0]), ("served", max(k, recall_probe(signal_type)[0]))):
        _, hits = live.search(queries, probe_k, recall_probe(signal_type)[1])
        found[name] = [[(entry_id, distance) for entry_id, _, distance, _ in row] for row in hits]
    columns = sum(s.entry_ids.nbytes + (s.bank_codes.nbytes if s.bank_codes is not None else 0) for s in state.shards)
    index_arrays = sum(s.index.nbytes for s in state.shards if isinstance(s.index, BinaryPostings))
    index_files = sum(os.path.getsize(live.store.path(state.manifest.shards[n].index)) for n in range(spec["slot"], len(state.manifest.shards), spec["slots"]))
    size = settings.serve.max_batch_size
    single, batches = timed_lookups(live, values, k, radius, size, spec["batches"], spec["slot"])
    out = {
        "slot": spec["slot"],
        "rows": state.count,
        "load_seconds": round(load_seconds, 2),
        "rss_before_gib": round(base / GIB, 3),
        "rss_loaded_gib": round(loaded / GIB, 3),
        "shard_rss_gib": round((loaded - base) / GIB, 3),
        "load_peak_growth_gib": round((peak - base) / GIB, 3),
        "id_bank_columns_gib": round(columns / GIB, 3),
        "index_arrays_gib": round(index_arrays / GIB, 3),
        "index_file_gib": round(index_files / GIB, 3),
        "rss_after_lookups_gib": round(trimmed_rss() / GIB, 3),
        "k": k,
        "radius": radius,
        "nprobe": state.manifest.params.nprobe,
        "single": {"lookups": len(single), "p50_ms": ms(single, 50), "p99_ms": ms(single, 99)},
        "batch": {"size": size, "batches": len(batches), "p50_ms": ms(batches, 50), "p99_ms": ms(batches, 99)},
        "found": found,
    }
    if state.manifest.params.type == "binary_postings":
        out["faiss_multihash"] = multihash_baseline(live, values, k, radius, size, spec["batches"], spec["slot"])
    with open(spec["out"], "w") as f:
        json.dump(out, f)


def ms(seconds: list[float], percentile: float) -> float:
    return round(float(np.percentile(seconds, percentile)) * 1000, 3)


def timed_lookups(live, values: list, k: int, radius: float, size: int, batches: int, seed: int) -> tuple[list[float], list[float]]:
    """Seconds of `search_values`: every value one per call (after 20 warm-up calls), then `batches` random batches of `size`."""
    for value in values[:20]:
        live.search_values([value], k, radius)
    single = []
    for value in values:
        t = time.perf_counter()
        live.search_values([value], k, radius)
        single.append(time.perf_counter() - t)
    rng, batch_seconds = np.random.default_rng(seed), []
    for _ in range(batches):
        batch = [values[i] for i in rng.choice(len(values), size, replace=False)]
        t = time.perf_counter()
        live.search_values(batch, k, radius)
        batch_seconds.append(time.perf_counter() - t)
    return single, batch_seconds


def multihash_baseline(live, values: list, k: int, radius: float, size: int, batches: int, seed: int) -> dict:
    """The same lookups with faiss's IndexBinaryMultiHash over the same rows (16 x 16 bits, nflip 1:
    the index binary_postings replaced), built, serialized and deserialized as a searcher loads
    it, swapped in for each loaded shard; its RSS growth (the faiss index: its own copy of the
    codes and its maps of 64-bit ids)."""
    import dataclasses

    state, base = live.state, trimmed_rss()
    t0 = time.perf_counter()
    swapped = []
    for shard in state.shards:
        params = shard.params.model_copy(update={"type": "binary_multihash"})
        built = empty_index(params)
        built.add(shard.index.codes)
        data = serialize(built)
        del built  # then loaded as a searcher loads its file: maps allocated in order search twice as fast as just built
        swapped.append(dataclasses.replace(shard, params=params, index=deserialize(params, data)))
        del data
    build_seconds, grown = time.perf_counter() - t0, trimmed_rss() - base
    answers = live.search_values(values, 1000, radius)[1]
    state.shards, ours = swapped, state.shards
    same = live.search_values(values, 1000, radius)[1] == answers
    single, batch_seconds = timed_lookups(live, values, k, radius, size, batches, seed)
    state.shards = ours
    return {"build_seconds": round(build_seconds, 2), "index_rss_gib": round(grown / GIB, 3), "same_answers": same,
            "single": {"p50_ms": ms(single, 50), "p99_ms": ms(single, 99)},
            "batch": {"size": size, "p50_ms": ms(batch_seconds, 50), "p99_ms": ms(batch_seconds, 99)}}


def searcher_figures(root: str, kind: str, manifest, queries: np.ndarray, workdir: str, batches: int = 64) -> list[dict]:
    """`searcher_main` per slot (one shard each), each in a fresh process, one after the other."""
    queries_path = os.path.join(workdir, f"{kind}-queries.npy")
    np.save(queries_path, queries)
    figures = []
    for slot in range(len(manifest.shards)):
        spec = {"root": root, "kind": kind, "slot": slot, "slots": len(manifest.shards), "queries": queries_path,
                "batches": batches, "out": os.path.join(workdir, f"{kind}-searcher-{slot}.json")}
        with open(spec["out"] + ".spec", "w") as f:
            json.dump(spec, f)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--searcher", spec["out"] + ".spec"], check=True)
        with open(spec["out"]) as f:
            figures.append(json.load(f))
    return figures


# -- Ray ----------------------------------------------------------------------------------------
class TreeMemory:
    """Peak memory of this process (the Ray driver) plus all its descendants (raylet, GCS, workers)."""

    def __init__(self, interval: float = 0.2, pss_every: int = 5):
        self.interval, self.pss_every = interval, pss_every
        self.peak_rss = self.peak_pss = 0
        self.peak_rss_parts: dict[str, int] = {}
        self._stop = threading.Event()
        self._me = psutil.Process()

    def sample(self, pss: bool = False) -> tuple[int, int, dict[str, int]]:
        parts: dict[str, int] = {}
        total_rss = total_pss = 0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                if pss:
                    info = proc.memory_full_info()
                    total_pss += info.pss
                else:
                    info = proc.memory_info()
                name = "driver" if proc.pid == self._me.pid else ("worker" if proc.name().startswith("ray::") else proc.name())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            parts[name] = parts.get(name, 0) + info.rss
            total_rss += info.rss
        return total_rss, total_pss, parts

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            rss, pss, parts = self.sample(pss=i % self.pss_every == 0)
            if rss > self.peak_rss:
                self.peak_rss, self.peak_rss_parts = rss, parts
            self.peak_pss = max(self.peak_pss, pss)
            i += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self.idle_rss, self.idle_pss, _ = self.sample(pss=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@ray.remote(num_cpus=1)
def _warm_up() -> int:
    import faiss  # noqa: F401  (the shard tasks import it too)

    return os.getpid()


def warm_up(log) -> dict:
    """Start the cluster's workers and Ray Data's helpers before any timing, as a long-lived
    cluster has them; the first (cold) Ray Data read is timed and reported, not counted."""
    ray.get([_warm_up.remote() for _ in range(THREADS)])
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as folder:
        path = os.path.join(folder, "warm.parquet")
        pq.write_table(pa.table({"entry_id": ["a", "b"], "value": [b"x", b"y"]}), path)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            ray.data.read_parquet(path).materialize().count()
            times.append(round(time.perf_counter() - t0, 2))
    log(f"Ray Data warm-up, a 2-row Parquet file read + materialised: cold {times[0]} s, then {times[1]} s (not counted)")
    return {"ray_data_cold_read_seconds": times[0], "ray_data_warm_read_seconds": times[1]}


def load() -> float:
    return round(os.getloadavg()[0], 1)


# -- one case -----------------------------------------------------------------------------------
def run_case(kind: str, n: int, shards: int, seed: int, workdir: str, log, skip_plain: bool = False) -> dict:
    signal_type = Float256() if kind == "float" else SIGNAL_TYPES["pdq"]
    root = os.path.join(workdir, kind)
    store = ObjectStore(root)
    path = store.path(DATA_KEY)
    settings = IndexSettings(shards=shards, seed=seed)
    params = choose_params(signal_type, n, settings)

    t0 = time.perf_counter()
    write_data(kind, signal_type, n, seed, path)
    log(f"[{kind}] data written: {os.path.getsize(path) / GIB:.2f} GiB Parquet in {time.perf_counter() - t0:.1f} s (untimed)")
    gc.collect()
    pa.default_memory_pool().release_unused()

    # 1. plain faiss build
    loads: dict[str, float] = {}
    plain = None
    if not skip_plain:
        reset_peak_rss()
        loads["plain_start"] = load()
        plain = plain_build(kind, path, params, workdir, seed)
        plain["peak_self"], plain["peak_children"] = maxrss(resource.RUSAGE_SELF), maxrss(resource.RUSAGE_CHILDREN)
        loads["plain_end"] = load()
        log(f"[{kind}] plain faiss: {plain['seconds']:.2f} s " + json.dumps({k: round(v, 2) for k, v in plain["stages"].items()}))
        gc.collect()
        pa.default_memory_pool().release_unused()

    # 2. the Ray Data job
    events: list[tuple[float, float, str]] = []
    loads["ray_start"] = load()
    with TreeMemory() as mem:
        started = time.perf_counter()
        progress = lambda fraction, message: events.append((round(time.perf_counter() - started, 2), fraction, message))  # noqa: E731
        manifest = build_index(
            store, signal_type, ray.data.read_parquet(store.path(DATA_KEY), filesystem=store.fs), shards, settings, progress=progress,
            served_k=Settings().serve.max_matches,
        )
        ray_seconds = time.perf_counter() - started
    loads["ray_end"] = load()
    log(f"[{kind}] Ray job: {ray_seconds:.2f} s, stages {manifest.stage_seconds}, recall {manifest.recall_at_10}, nprobe {manifest.params.nprobe}")
    for t, fraction, message in events:
        log(f"    {t:7.2f} s  {fraction:4.2f}  {message}")
    log(f"[{kind}] Ray peak: sum of RSS {mem.peak_rss / GIB:.2f} GiB, of PSS {mem.peak_pss / GIB:.2f} GiB")

    # 3. recall: plain faiss at the job's nprobe, or (--skip-plain) exact search by chunks alone
    if plain is not None:
        recall = plain_recall(kind, signal_type, path, plain["index_path"], params, manifest.params.nprobe, settings, seed)
        log(f"[{kind}] plain recall at the job's nprobe: {recall['recall']:.4f} in {recall['seconds']:.2f} s (+ {recall['load_seconds']:.2f} s loading)")
        if "tuned" in recall:
            log(f"[{kind}] plain index tuned on its own (nprobe doubled until {settings.target_recall}): {recall['tuned']}")
        queries, exact = recall["queries"], recall["exact"]
    else:
        t_exact = time.perf_counter()
        queries = chunked_queries(signal_type, path, n, settings.recall_queries, seed)
        exact = chunked_exact(signal_type, path, queries, int(recall_probe(signal_type)[1]))
        recall = {"exact_seconds": round(time.perf_counter() - t_exact, 2)}
        log(f"[{kind}] exact answers of {len(queries)} queries by brute force, one row group at a time: {recall['exact_seconds']} s")
    gc.collect()
    pa.default_memory_pool().release_unused()

    # 4. each slot as a searcher holds it, in a fresh process: memory, lookup latency, its answers
    loads["searcher_start"] = load()
    searchers = searcher_figures(root, kind, manifest, queries, workdir)
    loads["searcher_end"] = load()
    ray_check = ray_index_recall(searchers, recall_probe(signal_type)[0], exact)
    ray_check_k10 = ray_index_recall(searchers, recall_probe(signal_type)[0], exact, "k10")
    log(f"[{kind}] the Ray-built index, as the searchers hold it, on the benchmark's queries (manifest nprobe {manifest.params.nprobe}): {ray_check:.4f} "
        f"(top 10 of the served top {Settings().serve.max_matches}; of a top-10 search: {ray_check_k10:.4f})")
    for s in searchers:
        log(f"[{kind}] searcher slot {s['slot']}: {s['rows']:,} rows, +{s['shard_rss_gib']} GiB RSS loaded (peak +{s['load_peak_growth_gib']} while loading, {s['load_seconds']} s; "
            f"id + bank columns {s['id_bank_columns_gib']} GiB, index arrays {s['index_arrays_gib']} GiB, index file {s['index_file_gib']} GiB), "
            f"single p50/p99 {s['single']['p50_ms']}/{s['single']['p99_ms']} ms, batch of {s['batch']['size']} p50/p99 {s['batch']['p50_ms']}/{s['batch']['p99_ms']} ms")
        if "faiss_multihash" in s:
            b = s["faiss_multihash"]
            log(f"[{kind}]   baseline, same process and rows: faiss IndexBinaryMultiHash +{b['index_rss_gib']} GiB RSS (built in {b['build_seconds']} s), "
                f"single p50/p99 {b['single']['p50_ms']}/{b['single']['p99_ms']} ms, batch p50/p99 {b['batch']['p50_ms']}/{b['batch']['p99_ms']} ms, "
                f"same answers (k 1000): {b['same_answers']}")

    return {
        "case": f"{n:,} x {'256-d float' if kind == 'float' else 'PDQ 256-bit'}",
        "kind": kind,
        "n": n,
        "shards": shards,
        "data": FLOAT_DATA if kind == "float" else PDQ_DATA,
        "params": manifest.params.model_dump(exclude_none=True),
        "ray_seconds": round(ray_seconds, 2),
        "ray_stage_seconds": manifest.stage_seconds,
        "ray_build_seconds_in_manifest": manifest.build_seconds,
        "ray_progress": events,
        "ray_recall_at_10": manifest.recall_at_10,
        "ray_recall_method": manifest.recall_method,
        "ray_index_bytes": sum(s.bytes for s in manifest.shards),
        "plain_seconds": round(plain["seconds"], 2) if plain else None,
        "plain_stage_seconds": {k: round(v, 2) for k, v in plain["stages"].items()} if plain else None,
        "plain_recall_seconds": round(recall["seconds"], 2) if plain else None,
        "plain_recall_at_10": round(recall["recall"], 4) if plain else None,
        "plain_index_bytes": plain["index_bytes"] if plain else None,
        "plain_tuned_nprobe": recall.get("tuned"),
        "exact_by_chunks_seconds": recall.get("exact_seconds"),
        "ray_index_recall_on_bench_queries": round(ray_check, 4),
        "ray_index_recall_on_bench_queries_top10_search": round(ray_check_k10, 4),
        "ratio": round(ray_seconds / plain["seconds"], 3) if plain else None,
        "ray_peak_rss_gib": round(mem.peak_rss / GIB, 2),
        "ray_peak_pss_gib": round(mem.peak_pss / GIB, 2),
        "ray_idle_rss_gib": round(mem.idle_rss / GIB, 2),
        "ray_peak_rss_by_process_gib": {k: round(v / GIB, 2) for k, v in sorted(mem.peak_rss_parts.items())},
        "plain_peak_rss_gib": round(plain["peak_self"] / GIB, 2) if plain else None,
        "plain_peak_rss_children_gib": round(plain["peak_children"] / GIB, 3) if plain else None,
        "searchers": [{k: v for k, v in s.items() if k != "found"} for s in searchers],
        "searcher_rss_gib_all_shards": round(sum(s["shard_rss_gib"] for s in searchers), 3),
        "load_average_1min": loads,
    }


def describe(params: dict) -> str:
    if params["type"] == "ivfpq":
        return f"IVF-PQ nlist {params['nlist']}, M {params['m']}x{params['nbits']}b, re-rank x{params['refine_k_factor']:g}, train {params['train_size']:,}, nprobe {params['nprobe']}"
    if params["type"] == "binary_postings":
        return f"binary_postings {params['nhash']}x{params['dim'] // params['nhash']} bits, nflip {params['nflip']}"
    return params["type"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--only", choices=["float", "pdq"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", help="also write the figures (and the job's stage times) here")
    parser.add_argument(
        "--reader",
        choices=["v1", "v2"],
        default="v1",
        help="Ray Data's Parquet reader behind ray.data.read_parquet for the job's input: v1 (the default) is the "
        "one the job's own catalog read uses (indexing/reindex.py read_parquet); v2 is Ray's default, which "
        "starts footer-reading actors on every read",
    )
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="skip the plain-faiss baseline, which holds all N values in memory (10 GB at 10M x 256-d float); "
        "recall is then checked against exact search by brute force one row group at a time",
    )
    parser.add_argument("--searcher", help=argparse.SUPPRESS)  # internal: the child process of searcher_figures
    args = parser.parse_args()
    if args.searcher:
        return searcher_main(args.searcher)
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])

    def log(message: str) -> None:
        print(message, flush=True)

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.init(num_cpus=THREADS, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.DataContext.get_current().use_datasource_v2 = args.reader == "v2"
    cold = warm_up(log)

    log(f"float data: {FLOAT_DATA}")
    log(f"PDQ data: {PDQ_DATA}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as workdir:
        for kind in [args.only] if args.only else ["float", "pdq"]:
            results.append(run_case(kind, args.n, args.shards, args.seed, workdir, log, args.skip_plain))

    log(
        "\n| case | index (params from choose_params; nprobe tuned by the job) | Ray job s | plain faiss s (read+train+add+write) "
        "| ratio Ray/plain | plain recall check s | recall@10 Ray job, self-measured | recall@10 Ray index, bench queries "
        "| recall@10 plain, bench queries, job's nprobe | peak RSS GiB Ray (driver+workers) / plain |"
    )
    log("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        plain = {k: "skipped" if r[k] is None else r[k] for k in ("plain_seconds", "ratio", "plain_recall_seconds", "plain_recall_at_10", "plain_peak_rss_gib")}
        log(
            f"| {r['case']} | {describe(r['params'])} | {r['ray_seconds']} | {plain['plain_seconds']} | {plain['ratio']} | "
            f"{plain['plain_recall_seconds']} | {r['ray_recall_at_10']} | {r['ray_index_recall_on_bench_queries']} | "
            f"{plain['plain_recall_at_10']} | {r['ray_peak_rss_gib']} / {plain['plain_peak_rss_gib']} |"
        )
    log(
        "\n| case | shards | reindex s (stages) | searcher RSS GiB per shard (all shards) | lookup p50 / p99 ms, 1 value "
        "| lookup p50 / p99 ms, batch | recall@10 at the served nprobe (bench queries) | load avg start/end |"
    )
    log("|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["searchers"]
        per_shard = " / ".join(str(x["shard_rss_gib"]) for x in s)
        stages = ", ".join(f"{k} {v:g}" for k, v in r["ray_stage_seconds"].items())
        single = " · ".join(f"{x['single']['p50_ms']} / {x['single']['p99_ms']}" for x in s)
        batch = " · ".join(f"{x['batch']['p50_ms']} / {x['batch']['p99_ms']}" for x in s)
        loads = r["load_average_1min"]
        log(
            f"| {r['case']} | {r['shards']} | {r['ray_seconds']} ({stages}) | {per_shard} ({r['searcher_rss_gib_all_shards']}) | {single} "
            f"| {batch} (x{s[0]['batch']['size']}) | {r['ray_index_recall_on_bench_queries']} (nprobe {r['params'].get('nprobe')}) "
            f"| {loads['ray_start']}-{loads['ray_end']} / {loads['searcher_start']}-{loads['searcher_end']} |"
        )
    log("- searcher: each slot's shard loaded in a fresh process as a ShardSearcher replica loads it (LiveIndex); RSS after "
        "loading minus RSS before (both after gc + malloc_trim); lookups LiveIndex.search_values at Settings()'s k "
        "(serve.max_matches) and threshold, one value per call, then batches of serve.max_batch_size (' · ' between shards)")
    log("")
    for r in results:
        log(f"- {r['kind']}: Ray job stage_seconds {r['ray_stage_seconds']} (its time includes its own recall measurement and nprobe tuning); plain {r['plain_stage_seconds']}")
        log(f"  Ray peak: sum of RSS {r['ray_peak_rss_gib']} GiB (idle cluster {r['ray_idle_rss_gib']} GiB; by process {r['ray_peak_rss_by_process_gib']}), sum of PSS {r['ray_peak_pss_gib']} GiB; plain ru_maxrss self {r['plain_peak_rss_gib']} GiB, children {r['plain_peak_rss_children_gib']} GiB")
    for r in results:
        log(f"- {r['kind']}: 1-minute load average (2 cores) at start/end of each timing: {r['load_average_1min']}")
    log(f"- Ray Data cold start, once per cluster, not counted above: {cold['ray_data_cold_read_seconds']} s for a 2-row file (warm: {cold['ray_data_warm_read_seconds']} s)")
    log(f"- Ray Data Parquet reader: {args.reader} (--reader)")
    log("- PDQ 'recall@10': the share of all hashes within 31 bits that range search finds (the job's measure for multi-hash)")
    log("- order per case: plain faiss build, then the Ray job, then plain faiss's recall check (at the job's nprobe); one process; faiss 2 threads; ray.init(num_cpus=2)")
    log(f"\ncommand: {command}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "reader": args.reader, **cold, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
