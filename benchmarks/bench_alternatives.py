"""mediamatch's index against off-the-shelf alternatives: same data, same machine, one process.

    python benchmarks/bench_alternatives.py [--n 1000000] [--queries 1000] [--seed 1234]
                                            [--skip lancedb] [--skip milvus] [--only float|pdq]
                                            [--json out.json]

Two cases, data from bench_index.py's generators (seeded):

Float: N 256-d float32 vectors (`float_chunks`: 4,096 Gaussian clusters on the unit sphere,
L2-normalised). Queries: `--queries` random rows made noisy by the job's rule (`perturb_queries`).
Ground truth: exact top-10 by inner product (faiss IndexFlatIP). Systems:
  - mediamatch: `choose_params` -> `train_index` on a random sample of `train_size` rows ->
    `Shard.build`; `Shard.search(q, 10, 2.0)` (IVF-PQ + exact re-rank);
  - LanceDB: a local table, IVF_PQ index (num_partitions = our nlist, 32 sub-vectors, dot);
  - Milvus Lite: a local file-backed MilvusClient, IVF_FLAT index (IP).
Each system's nprobe is the smallest power of two whose recall@10 on the first 200 queries
reaches 0.95 (LanceDB: first without refine, then with refine_factor 16 if that fails); where
none up to 4096 does, the smallest within 0.005 of the best recall seen (the curve is printed).

PDQ: N 256-bit hashes (`pdq_chunks`: uniform, 10% near-duplicates), queries with 0-31 bits
flipped (`perturb_queries`). Ground truth: exact IndexBinaryFlat range search (< 32 bits).
Systems: mediamatch's `Shard` (binary_postings: multi-index hashing over sorted postings,
`Shard.search(q, 1000, 31)`), the configuration ThreatExchange's PDQMultiHashIndex uses
(IndexBinaryIDMap2 over IndexBinaryMultiHash(256, 16, 16), nflip = 31 // 16), faiss's
IndexBinaryIVF (compact, not exact: recall by nprobe) and the exact IndexBinaryFlat. Recall:
share of all true neighbours found.

Per system: build seconds (data already in memory; for mediamatch train + add in this process,
not the Ray Data job), memory (RSS of this process and any children, psutil, sampled every 0.1 s:
peak growth during the build and the growth still resident after it), recall, and queries/s two
ways: the queries sent one at a time from one thread, and as one batch. faiss uses 2 threads
(the machine's cores); LanceDB and Milvus Lite use their own defaults. The machine is shared:
the 1-minute load average is recorded around each system.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shlex
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_index import FLOAT_DATA, PDQ_DATA, THREADS, Float256, TreeMemory, float_chunks, pdq_chunks  # noqa: E402  (imports ray)

from mediamatch.indexing.reindex import perturb_queries  # noqa: E402
from mediamatch.platform.index import Shard, choose_params, set_nprobe, train_index  # noqa: E402
from mediamatch.platform.settings import IndexSettings  # noqa: E402
from mediamatch.platform.signals import SIGNAL_TYPES  # noqa: E402

import faiss  # noqa: E402

K, TARGET, TUNE_QUERIES, MAX_NPROBE = 10, 0.95, 200, 4096
MIB = 2**20


# -- measuring ----------------------------------------------------------------------------------
def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so that one
    system's freed memory is not silently reused by the next and its growth under-counted."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Memory(TreeMemory):
    """RSS of this process plus its children (bench_index's sampler): at the start, the peak while
    inside, and at the end."""

    def __init__(self, interval: float = 0.1):
        super().__init__(interval, pss_every=10**9)  # RSS only: PSS is costly to read this often

    def __enter__(self):
        release_freed_memory()
        super().__enter__()
        self.start = self.idle_rss
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.end = self.sample()[0]
        self.peak = max(self.peak_rss, self.start, self.end)

    def figures(self) -> dict:
        return {"peak_growth_mib": round((self.peak - self.start) / MIB), "resident_growth_mib": round((self.end - self.start) / MIB)}


def throughput(search_one, search_batch, queries) -> dict:
    """queries/s: one query per call from one thread, and all queries in one call (None: no batch API)."""
    t0 = time.perf_counter()
    for q in queries:
        search_one(q)
    out = {"qps_one_at_a_time": round(len(queries) / (time.perf_counter() - t0), 1), "qps_batch": None}
    if search_batch is not None:
        t0 = time.perf_counter()
        search_batch(queries)
        out["qps_batch"] = round(len(queries) / (time.perf_counter() - t0), 1)
    return out


def recall_at_k(found: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(x.tolist())) / K for f, x in zip(found, exact)]))


def tune(search_batch, queries, exact, start: int = 1) -> tuple[int, float, str]:
    """The smallest power-of-two nprobe reaching TARGET recall@10 on the first TUNE_QUERIES queries.

    Where no nprobe up to MAX_NPROBE reaches it (recall plateaus below), the smallest nprobe within
    0.005 of the best recall seen, and a note saying so. Returns (nprobe, recall, note)."""
    nprobe, curve = start, {}
    while True:
        curve[nprobe] = recall_at_k(search_batch(queries[:TUNE_QUERIES], nprobe), exact[:TUNE_QUERIES])
        if curve[nprobe] >= TARGET:
            return nprobe, curve[nprobe], f"recall {curve[nprobe]:.3f} on the first {TUNE_QUERIES} queries"
        if nprobe >= MAX_NPROBE:
            break
        nprobe *= 2
    best = max(curve.values())
    nprobe = min(p for p, r in curve.items() if r >= best - 0.005)
    steps = ", ".join(f"{p}: {r:.3f}" for p, r in curve.items())
    return nprobe, curve[nprobe], f"target {TARGET} NOT reached up to nprobe {MAX_NPROBE}; recall on the first {TUNE_QUERIES} queries by nprobe {{{steps}}}"


def load() -> float:
    return round(os.getloadavg()[0], 1)


def run_system(name: str, fn, log, *args) -> dict:
    """One system, timed and measured; a failure is recorded, not raised."""
    log(f"-- {name} (load {load()})")
    result = {"system": name, "load_start": load()}
    try:
        result.update(fn(*args))
    except Exception as exc:  # noqa: BLE001  (one system failing must not stop the others)
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    result["load_end"] = load()
    log(f"   {json.dumps(result)}")
    release_freed_memory()
    return result


# -- float case ---------------------------------------------------------------------------------
def float_data(n: int, n_queries: int, seed: int):
    rng = np.random.default_rng(seed)
    signal_type = Float256()
    vectors = signal_type.encode(np.concatenate(list(float_chunks(n, rng))))
    queries = perturb_queries(signal_type, vectors[rng.choice(n, n_queries, replace=False)], rng)
    exact_index = faiss.IndexFlatIP(vectors.shape[1])
    exact_index.add(vectors)
    _, exact = exact_index.search(queries, K)
    return np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(queries, dtype=np.float32), exact


def float_mediamatch(vectors, queries, exact, seed: int, workdir: str) -> dict:
    params = choose_params(Float256(), len(vectors), IndexSettings(seed=seed))
    with Memory() as mem:
        t0 = time.perf_counter()
        sample = vectors[np.random.default_rng(seed).choice(len(vectors), params.train_size, replace=False)]
        trained = train_index(params, sample, use_gpu=False)
        del sample
        shard = Shard.build(params, [str(i) for i in range(len(vectors))], vectors, trained)
        seconds = time.perf_counter() - t0

    def search(qs, nprobe=None):
        if nprobe is not None:
            set_nprobe(shard.index, nprobe)
        return [[int(e) for e, _ in hits] for hits in shard.search(qs, K, 2.0)]

    nprobe, tune_recall, tune_note = tune(search, queries, exact)
    set_nprobe(shard.index, nprobe)
    out = {
        "build_seconds": round(seconds, 2),
        **mem.figures(),
        "recall_at_10": round(recall_at_k(search(queries), exact), 4),
        "settings": f"IVF-PQ nlist {params.nlist}, M {params.m}x{params.nbits}b, exact re-rank x{params.refine_k_factor:g}, "
        f"train {params.train_size:,}, nprobe {nprobe} ({tune_note})",
    }
    out.update(throughput(lambda q: search(q[None]), search, queries))
    return out


def float_lancedb(vectors, queries, exact, seed: int, workdir: str) -> dict:
    import lancedb
    import pyarrow as pa

    nlist = choose_params(Float256(), len(vectors), IndexSettings()).nlist
    with Memory() as mem:
        t0 = time.perf_counter()
        db = lancedb.connect(os.path.join(workdir, "lancedb"))
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        table = db.create_table("vectors", pa.table({"id": np.arange(len(vectors)), "vector": column}))
        t_insert = time.perf_counter()
        table.create_index(  # k-means on 64 rows per partition, 25 iterations: as faiss trains ours
            metric="dot", num_partitions=nlist, num_sub_vectors=32, index_type="IVF_PQ", sample_rate=64, max_iterations=25
        )
        seconds = time.perf_counter() - t0
    settings = {"refine_factor": None}

    def query(q, nprobe):
        builder = table.search(q).distance_type("dot").nprobes(nprobe).limit(K).select(["id"])
        if settings["refine_factor"]:
            builder = builder.refine_factor(settings["refine_factor"])
        return builder

    def search_one(q, nprobe=None):
        return query(q, nprobe or settings["nprobe"]).to_arrow().column("id").to_pylist()

    def search_loop(qs, nprobe=None):
        return [search_one(q, nprobe) for q in qs]

    def search_batch(qs, nprobe=None):  # several query vectors in one call: rows carry query_index
        result = query(list(qs), nprobe or settings["nprobe"]).with_row_id(False).to_arrow()
        found = [[] for _ in qs]
        for i, row_id in zip(result.column("query_index").to_pylist(), result.column("id").to_pylist()):
            found[i].append(row_id)
        return found

    try:
        search_batch(queries[:2], 1)
        batched = search_batch
    except Exception as exc:  # noqa: BLE001
        print(f"   LanceDB batched search unavailable: {exc}", flush=True)
        batched = None
    tune_with = batched or search_loop
    nprobe, tune_recall, tune_note = tune(tune_with, queries, exact)
    if tune_recall < TARGET:
        settings["refine_factor"] = 16
        nprobe, tune_recall, tune_note = tune(tune_with, queries, exact)
    settings["nprobe"] = nprobe
    out = {
        "build_seconds": round(seconds, 2),
        "build_stages": {"create_table": round(t_insert - t0, 2), "create_index": round(seconds - (t_insert - t0), 2)},
        **mem.figures(),
        "recall_at_10": round(recall_at_k(search_loop(queries), exact), 4),
        "settings": f"lancedb {lancedb.__version__}, IVF_PQ num_partitions {nlist}, num_sub_vectors 32, 8 bits, dot, "
        f"sample_rate 64, max_iterations 25, nprobes {nprobe}, refine_factor {settings['refine_factor']} ({tune_note})",
    }
    out.update(throughput(search_one, batched, queries))
    return out


def float_milvus(vectors, queries, exact, seed: int, workdir: str) -> dict:
    from pymilvus import DataType, MilvusClient

    import milvus_lite

    segment_rows = min(len(vectors), 100_000)  # Milvus Lite builds one index per segment (~100k rows; 130k seen at 1M)
    nlist = 2 ** round(np.log2(4 * np.sqrt(segment_rows)))
    with Memory() as mem:
        t0 = time.perf_counter()
        client = MilvusClient(os.path.join(workdir, "milvus.db"))
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        client.create_collection("vectors", schema=schema)
        for start in range(0, len(vectors), 10_000):
            rows = vectors[start : start + 10_000]
            client.insert("vectors", [{"id": start + i, "vector": v} for i, v in enumerate(rows)])
        client.flush("vectors")
        t_insert = time.perf_counter()
        index_params = client.prepare_index_params()
        index_params.add_index("vector", index_type="IVF_FLAT", metric_type="IP", params={"nlist": nlist})
        client.create_index("vectors", index_params)
        client.load_collection("vectors")
        seconds = time.perf_counter() - t0
    settings = {}

    def search_batch(qs, nprobe=None):
        params = {"metric_type": "IP", "params": {"nprobe": nprobe or settings["nprobe"]}}
        hits = client.search("vectors", data=[q.tolist() for q in qs], limit=K, search_params=params)
        return [[int(h["id"]) for h in row] for row in hits]

    nprobe, tune_recall, tune_note = tune(search_batch, queries, exact)
    settings["nprobe"] = nprobe
    out = {
        "build_seconds": round(seconds, 2),
        "build_stages": {"insert+flush": round(t_insert - t0, 2), "create_index+load": round(seconds - (t_insert - t0), 2)},
        **mem.figures(),
        "recall_at_10": round(recall_at_k(search_batch(queries), exact), 4),
        "settings": f"milvus-lite {getattr(milvus_lite, '__version__', '?')}, IVF_FLAT nlist {nlist} per segment, IP, "
        f"nprobe {nprobe} ({tune_note})",
    }
    out.update(throughput(lambda q: search_batch(q[None]), search_batch, queries))
    client.close()
    return out


# -- PDQ case -----------------------------------------------------------------------------------
def pdq_data(n: int, n_queries: int, seed: int):
    rng = np.random.default_rng(seed)
    hashes = np.frombuffer(bytes.fromhex("".join(h for chunk in pdq_chunks(n, rng) for h in chunk)), np.uint8).reshape(-1, 32)
    queries = perturb_queries(SIGNAL_TYPES["pdq"], hashes[rng.choice(n, n_queries, replace=False)], rng)
    radius = int(SIGNAL_TYPES["pdq"].default_threshold) + 1  # faiss range search: distance < radius
    exact_index = faiss.IndexBinaryFlat(256)
    exact_index.add(hashes)
    lims, _, ids = exact_index.range_search(queries, radius)
    exact = [set(ids[lims[i] : lims[i + 1]].tolist()) for i in range(len(queries))]
    return np.ascontiguousarray(hashes), np.ascontiguousarray(queries), exact


def pooled_recall(found: list[list[int]], exact: list[set]) -> float:
    """The share of all true neighbours (within 31 bits, over all queries) that were found."""
    return sum(len(set(f) & x) for f, x in zip(found, exact)) / max(1, sum(len(x) for x in exact))


def pdq_measure(build, search, hashes, queries, exact, settings: str, set_search=None) -> dict:
    """`set_search(index)`, where given, sets the index's search parameter after the build (untimed) and describes it."""
    with Memory() as mem:
        t0 = time.perf_counter()
        index = build(hashes)
        seconds = time.perf_counter() - t0
    if set_search is not None:
        settings += set_search(index)
    out = {"build_seconds": round(seconds, 2), **mem.figures(), "recall": round(pooled_recall(search(index, queries), exact), 4), "settings": settings}
    out.update(throughput(lambda q: search(index, q[None]), lambda qs: search(index, qs), queries))
    return out


def faiss_range(index, queries) -> list[list[int]]:
    lims, _, ids = index.range_search(queries, 32)
    return [ids[lims[i] : lims[i + 1]].tolist() for i in range(len(queries))]


def pdq_mediamatch(hashes, queries, exact) -> dict:
    params = choose_params(SIGNAL_TYPES["pdq"], len(hashes), IndexSettings())
    build = lambda h: Shard.build(params, [str(i) for i in range(len(h))], h, None)  # noqa: E731
    search = lambda shard, qs: [[int(e) for e, _ in hits] for hits in shard.search(qs, 1000, 31)]  # noqa: E731
    settings = f"{params.type}: nhash {params.nhash} x {params.dim // params.nhash} bits, nflip {params.nflip}, Shard.search(q, 1000, 31)"
    return pdq_measure(build, search, hashes, queries, exact, settings)


def pdq_threatexchange(hashes, queries, exact) -> dict:
    def build(h):
        index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryMultiHash(256, 16, 16))
        faiss.downcast_IndexBinary(index.index).nflip = 31 // 16  # as PDQMultiHashIndex.search sets it
        index.add_with_ids(h, np.arange(len(h), dtype=np.int64))
        return index

    settings = "IndexBinaryIDMap2(IndexBinaryMultiHash(256, nhash 16, b 16)), nflip 31 // 16 = 1, range_search(q, 32)"
    return pdq_measure(build, faiss_range, hashes, queries, exact, settings)


def pdq_ivf(hashes, queries, exact) -> dict:
    """faiss IndexBinaryIVF: 32 bytes of code + an 8-byte id a hash, but not exact within 31 bits;
    recall by nprobe (powers of two), served at the smallest reaching 0.99, else 256."""
    nlist, sample = 1024, 64 * 1024

    def build(h):
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(256), 256, nlist)
        index.train(h[np.random.default_rng(0).choice(len(h), min(sample, len(h)), replace=False)])
        index.add(h)
        return index

    def set_search(index) -> str:
        curve = {}
        for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            index.nprobe = nprobe
            curve[nprobe] = pooled_recall(faiss_range(index, queries), exact)
            if curve[nprobe] >= 0.99:
                break
        return f", nprobe {index.nprobe}; recall by nprobe {{{', '.join(f'{p}: {r:.3f}' for p, r in curve.items())}}}"

    return pdq_measure(build, faiss_range, hashes, queries, exact, f"IndexBinaryIVF nlist {nlist} (trained on {sample:,}), range_search(q, 32)", set_search)


def pdq_flat(hashes, queries, exact) -> dict:
    def build(h):
        index = faiss.IndexBinaryFlat(256)
        index.add(h)
        return index

    return pdq_measure(build, faiss_range, hashes, queries, exact, "IndexBinaryFlat, range_search(q, 32): exhaustive")


# -- report -------------------------------------------------------------------------------------
def table(results: list[dict], recall_label: str) -> str:
    lines = [
        f"| system | build s | peak RSS growth MiB | resident after build MiB | {recall_label} | q/s one at a time | q/s batched | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r and "build_seconds" not in r:
            status = r["error"] if r["error"].startswith("skipped") else f"failed: {r['error'][:200]}"
            lines.append(f"| {r['system']} | {status} | | | | | | |")
            continue
        lines.append(
            f"| {r['system']} | {r.get('build_seconds')} | {r.get('peak_growth_mib')} | {r.get('resident_growth_mib')} | "
            f"{r.get('recall_at_10', r.get('recall'))} | {r.get('qps_one_at_a_time')} | {r.get('qps_batch') or 'n/a'} | {r.get('settings', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--only", choices=["float", "pdq"])
    parser.add_argument("--skip", action="append", default=[], choices=["mediamatch", "lancedb", "milvus"])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])
    log = lambda message: print(message, flush=True)  # noqa: E731
    faiss.omp_set_num_threads(THREADS)
    out = {"command": command, "n": args.n, "queries": args.queries, "cores": os.cpu_count(), "faiss_threads": THREADS}

    if args.only in (None, "pdq"):
        t0 = time.perf_counter()
        hashes, queries, exact = pdq_data(args.n, args.queries, args.seed)
        log(f"PDQ data ({PDQ_DATA}) + exact range search: {time.perf_counter() - t0:.1f} s (untimed); "
            f"{sum(map(len, exact)):,} true neighbours within 31 bits for {len(queries):,} queries")
        results = [
            run_system("mediamatch binary_postings", pdq_mediamatch, log, hashes, queries, exact),
            run_system("ThreatExchange PDQMultiHashIndex config", pdq_threatexchange, log, hashes, queries, exact),
            run_system("faiss IndexBinaryIVF", pdq_ivf, log, hashes, queries, exact),
            run_system("faiss IndexBinaryFlat (exact)", pdq_flat, log, hashes, queries, exact),
        ]
        out["pdq"] = {"data": PDQ_DATA, "true_neighbours": sum(map(len, exact)), "results": results}
        write_json(args.json, out)
        del hashes, queries, exact

    if args.only in (None, "float"):
        t0 = time.perf_counter()
        vectors, queries, exact = float_data(args.n, args.queries, args.seed)
        log(f"float data ({FLOAT_DATA}) + exact top-10: {time.perf_counter() - t0:.1f} s (untimed)")
        systems = [("mediamatch", float_mediamatch), ("LanceDB", float_lancedb), ("Milvus Lite", float_milvus)]
        results = []
        for name, fn in systems:
            if name.split()[0].lower() in args.skip:
                results.append({"system": name, "error": "skipped (--skip)"})
                continue
            with tempfile.TemporaryDirectory(prefix="bench-alt-") as workdir:
                results.append(run_system(name, fn, log, vectors, queries, exact, args.seed, workdir))
        out["float"] = {"data": FLOAT_DATA, "results": results}
        write_json(args.json, out)
        del vectors, queries, exact
        gc.collect()

    if "float" in out:
        log(f"\nFloat: {args.n:,} x 256-d, {args.queries:,} queries, recall@10 vs exact IndexFlatIP\n")
        log(table(out["float"]["results"], "recall@10"))
    if "pdq" in out:
        log(f"\nPDQ: {args.n:,} x 256-bit, {args.queries:,} queries, recall = share of all hashes within 31 bits found\n")
        log(table(out["pdq"]["results"], "recall (<= 31 bits)"))
    log(f"\ncommand: {command}")
    write_json(args.json, out)


def write_json(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
