"""The reindex job: catalog snapshot -> signals (Ray Data) -> trained, sharded FAISS index -> publish.

Steps, each visible in the progress callback and timed in the manifest:
1. snapshot the catalog (Parquet) and read it with Ray Data; take each entry's stored signal,
   or compute it from the stored media in `map_batches` (an actor pool for model signals,
   with a GPU each when the cluster has them);
2. choose the index type and parameters from the count and dimension;
3. train on a random sample (a Ray task; GPU when faiss sees one);
4. add vectors in N shards in parallel (Ray tasks spread over the nodes, retried by Ray when a
   node is lost), each writing its files to object storage and measuring itself on held-out
   queries against exact search; the manifest names the node that built each shard;
5. merge those measurements into recall@10 and the tuned nprobe, write the manifest and move
   the `current` pointer. Any failure before that last append publishes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mediamatch.platform.catalog import Catalog, media_key, snapshot_folder
from mediamatch.platform.index import IndexParams, Shard, choose_params, faiss_module, merge_results, row_flags, set_nprobe, train_index
from mediamatch.platform.settings import IndexSettings, Settings
from mediamatch.platform.signals import SIGNAL_TYPES, SignalType, configure_signal_types, get_signal_type
from mediamatch.platform.storage import ObjectStore, sha256_hex
from mediamatch.platform.versions import IndexVersions, Manifest, ShardFile

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
RECALL_K = 10
HASHED = ("binary_postings", "binary_multihash")  # exact within the radius by pigeonhole: recall checked on own rows


def reindex(
    settings: Settings,
    signal_types: list[str] | None = None,
    shards: int | None = None,
    progress: Progress | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Manifest]:
    """Rebuild and publish the index of each signal type (all when None) from the catalog."""
    names = signal_types or list(SIGNAL_TYPES)
    types = [get_signal_type(n) for n in names]
    store = store or ObjectStore.from_settings(settings)
    report = progress or (lambda fraction, message: None)
    report(0.0, "snapshotting the catalog")
    catalog = Catalog(store)
    seq = catalog.snapshot()
    banks = {name: bank.get("enabled", True) for name, bank in sorted(catalog.banks.items())}
    published = {}
    for i, signal_type in enumerate(types):
        share = lambda f, msg, i=i: report((i + f) / len(types), f"{signal_type.name}: {msg}")  # noqa: E731
        ds = catalog_signals(store, seq, signal_type, settings)
        published[signal_type.name] = build_index(
            store, signal_type, ds, shards or settings.index.shards, settings.index, catalog_seq=seq, banks=banks, progress=share
        )
    report(1.0, "published " + ", ".join(f"{n} {m.version}" for n, m in published.items()))
    return published


# -- step 1: signals ----------------------------------------------------------------------------
def catalog_signals(store: ObjectStore, seq: int, signal_type: SignalType, settings: Settings) -> ray.data.Dataset:
    """(entry_id, value, bank, enabled) of every entry that has or can get this signal.

    Disabled entries and the entries of disabled banks are indexed too, flagged: the service
    filters them at search time, so enabling them again needs no rebuild. Model signals are
    computed afresh from the media (the model may have changed since banking); a stored value
    is used only for entries banked without media."""
    entries = read_parquet(store, f"{snapshot_folder(seq)}/entries.parquet")
    args = dict(fn_constructor_args=(signal_type.name, store, settings), batch_format="pyarrow")
    if signal_type.needs_model:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return entries.map_batches(SignalExtractor, batch_size=256, compute=_actor_pool(), num_gpus=gpus, **args)
    return entries.map_batches(SignalExtractor, batch_size=4096, compute=_actor_pool(), **args)


def read_parquet(store: ObjectStore, key: str) -> ray.data.Dataset:
    """`ray.data.read_parquet` of a key, through Ray Data's V1 Parquet reader.

    The V2 reader (the default from Ray 2.5x) lists files in a task that provisions a pool of
    footer-reading actors on every read: about 1 s per read, and 3-4 worker processes started
    and killed, whose start-up competes with the build for the CPUs. The choice is made when the
    dataset is created, so the flag is set only around this call.
    """
    ctx = ray.data.DataContext.get_current()
    v2 = getattr(ctx, "use_datasource_v2", None)
    ctx.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(store.path(key), filesystem=store.fs)
    finally:
        if v2 is not None:
            ctx.use_datasource_v2 = v2


def _actor_pool() -> ray.data.ActorPoolStrategy:
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(ray.cluster_resources().get("CPU", 1)) // 2))


class SignalExtractor:
    """Map a batch of catalog rows to (entry_id, value, bank, enabled): the stored signal, else
    computed from the stored media (model signals: from the media whenever there is some)."""

    def __init__(self, signal_type: str, store: ObjectStore, settings: Settings):
        configure_signal_types(settings)
        self.signal_type = get_signal_type(signal_type)
        self.store, self.limits = store, settings.limits
        self.signal_type.warm_up()  # load a model once per actor

    def __call__(self, batch: pa.Table) -> pa.Table:
        st = self.signal_type
        rows, values, missing = [], [], []
        for row in batch.select(["entry_id", "bank", "content_type", "signals", "enabled", "media"]).to_pylist():
            value = json.loads(row["signals"]).get(st.name)
            computable = row["media"] and row["content_type"] in st.content_types
            if computable and (value is None or st.needs_model):
                missing.append(row)
            elif value is not None:
                rows.append(row)
                values.append(value)
        if missing:
            computed = self._compute([self.store.get(media_key(row["media"])) for row in missing])
            for row, signal in zip(missing, computed):
                if signal is not None and signal.value is not None:
                    rows.append(row)
                    values.append(signal.value)
        return signal_table(st, [r["entry_id"] for r in rows], values, [r["bank"] for r in rows], [r["enabled"] for r in rows])

    def _compute(self, contents: list[bytes]) -> list[Any]:
        try:
            return self.signal_type.compute_batch(contents, self.limits)
        except Exception:  # one bad item: fall back to one at a time and skip the bad ones
            out = []
            for content in contents:
                try:
                    out.append(self.signal_type.compute(content, self.limits))
                except Exception as exc:
                    log.warning("skipping media that %s cannot read: %s", self.signal_type.name, exc)
                    out.append(None)
            return out


def signal_table(
    signal_type: SignalType,
    entry_ids: list[str],
    values: list[Any],
    banks: list[str] | None = None,
    enabled: list[bool] | None = None,
) -> pa.Table:
    """The job's signal schema: entry_id + value as fixed-size binary, fixed-size float list or
    string (bag signals: their whole value) (+ bank and enabled, for catalog entries)."""
    if signal_type.index_kind in ("exact", "stored") or signal_type.bag:
        column = pa.array(values, pa.string())
    elif signal_type.index_kind == "binary":
        column = pa.array([bytes.fromhex(v) for v in values], pa.binary(signal_type.dim // 8))
    else:
        flat = signal_type.encode(values).reshape(-1) if values else np.zeros(0, np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), signal_type.dim)
    columns = {"entry_id": pa.array(entry_ids, pa.string()), "value": column}
    if banks is not None:
        columns["bank"] = pa.array(banks, pa.string())
        columns["enabled"] = pa.array(enabled if enabled is not None else [True] * len(banks), pa.bool_())
    return pa.table(columns)


def column_values(signal_type: SignalType, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A value column as the index takes it: (n, bytes) uint8, (n, dim) float32, uint32 keys or
    strings (a bag signal's table is exploded into rows first: `explode`)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if signal_type.index_kind in ("exact", "stored"):
        return np.asarray(array.to_pylist(), dtype=object)
    if signal_type.index_kind == "postings":
        return array.to_numpy(zero_copy_only=False).astype(np.uint32)
    if signal_type.index_kind == "binary":
        width = signal_type.dim // 8
        if pa.types.is_fixed_size_binary(array.type):
            data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
            return data[array.offset * width : (array.offset + len(array)) * width].reshape(-1, width)
        return signal_type.encode([v.hex() for v in array.to_pylist()])
    if isinstance(array, pa.ExtensionArray):  # Ray's tensor columns
        array = array.storage
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(-1, signal_type.dim), dtype=np.float32)


def explode(signal_type: SignalType, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """A table of entries as the index holds it: unchanged, or for a bag signal one row per frame
    or landmark (entry id, bank and enabled repeated, plus each row's time). Returns the table
    and its values as `column_values` gives them."""
    if not signal_type.bag:
        return table, column_values(signal_type, table.column("value"))
    rows, owner, times = signal_type.rows(table.column("value").to_pylist())
    take = pa.array(owner, pa.int64())
    exploded = table.drop_columns(["value"]).take(take).append_column("time", pa.array(times, pa.float32()))
    if signal_type.index_kind == "postings":
        exploded = exploded.append_column("value", pa.array(rows, pa.uint32()))
    return exploded, rows


def _row_counts(signal_type: SignalType):
    def count(batch: pa.Table) -> pa.Table:
        owner = signal_type.rows(batch.column("value").to_pylist())[1]
        return pa.table({"n": [len(owner)]})

    return count


# -- steps 2-5: the index -----------------------------------------------------------------------
def build_index(
    store: ObjectStore,
    signal_type: SignalType,
    ds: ray.data.Dataset,
    shards: int,
    settings: IndexSettings,
    catalog_seq: int | None = None,
    banks: dict[str, bool] | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build, measure and publish an index of `ds` (columns entry_id, value[, bank, enabled]);
    `banks` is each bank's enabled flag at `catalog_seq`."""
    report = progress or (lambda fraction, message: None)
    versions = IndexVersions(store, signal_type.name)
    build_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    prefix = versions.build_prefix(build_id)
    stages: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage] = round(now - clock, 3)
        clock = now

    recorded, pending = None, []
    try:
        report(0.02, "reading signals")
        ds = ds.materialize()
        count = entries = ds.count()
        if signal_type.bag and count:  # the index holds rows (frames, landmarks), not entries
            count = int(ds.map_batches(_row_counts(signal_type), batch_format="pyarrow").sum("n"))
        params = choose_params(signal_type, count, settings)
        lap("signals")
        rng = np.random.default_rng(settings.seed)
        queries, train = sample_for_build(signal_type, ds, count, params, settings, rng)
        queries = perturb_queries(signal_type, queries, rng)
        report(0.3, f"training {params.type} on {len(train)} of {count} vectors" if params.needs_training else "indexing")
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        trained = (
            _train_task.options(num_gpus=1 if use_gpu else 0).remote(params, train) if params.needs_training else None
        )
        if trained is not None:
            ray.wait([trained], fetch_local=False)
        lap("train")
        n_parts = min(shards, entries)  # split by entries: a bag entry's rows stay in one shard
        parts = ds.split_at_indices([entries * i // n_parts for i in range(1, n_parts)]) if n_parts > 1 else [ds] * n_parts
        threads = max(1, (os.cpu_count() or 1) // max(1, len(parts)))
        pending = [
            _shard_task.options(num_gpus=1 if use_gpu and params.type == "ivfpq" else 0, scheduling_strategy="SPREAD").remote(
                store, prefix, number, signal_type, params, trained, part.to_arrow_refs(), queries, settings, threads, -(-settings.recall_queries // n_parts)
            )
            for number, part in enumerate(parts)
        ]
        results = _gather(pending, lambda done: report(0.35 + 0.55 * done / max(1, len(pending)), f"shards {done}/{len(pending)} added"))
        lap("shards")
        recall, nprobe, method = measure_recall(params, results, settings.target_recall)
        manifest = Manifest(
            signal_type=signal_type.name,
            build_id=build_id,
            params=params.model_copy(update={"nprobe": nprobe}),
            count=count,
            shards=[r["file"] for r in results] or [empty_shard_file(store, prefix, signal_type, params)],
            build_seconds=round(time.perf_counter() - started, 3),
            stage_seconds=stages,
            catalog_seq=catalog_seq,
            banks=banks or {},
            recall_at_10=recall,
            recall_method=method,
            gpu=use_gpu,
        )
        report(0.95, "publishing")
        recorded = versions.record(manifest)
        published = versions.point(recorded.version, "publish")
        lap("publish")
        return published.model_copy(update={"stage_seconds": stages})
    except BaseException:
        if recorded is None:  # nothing names these files: remove them (best effort)
            try:
                if pending:  # let shard tasks still writing finish, or their files outlive the cleanup
                    ray.wait(pending, num_returns=len(pending), timeout=120)
                store.delete_prefix(prefix)
            except Exception as exc:
                log.warning("could not remove the failed build's files under %s: %s", prefix, exc)
        raise


def _gather(refs: list, on_done: Callable[[int], None]) -> list[dict]:
    """Wait for every task (in submission order), reporting as each finishes."""
    waiting, done = list(refs), 0
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        ray.get(ready)  # raises the task's error at once
        done += 1
        on_done(done)
    return ray.get(refs)


def sample_for_build(
    signal_type: SignalType, ds, count: int, params: IndexParams, settings: IndexSettings, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out queries and a disjoint training sample, drawn at random from the data."""
    n_queries = min(settings.recall_queries, count) if params.type == "ivfpq" else 0  # multi-hash shards draw their own
    need = n_queries + (params.train_size or 0)
    if need == 0:
        return np.zeros((0,)), np.zeros((0,))
    fraction = min(1.0, 1.2 * need / count)
    sample = ds.random_sample(fraction, seed=settings.seed) if fraction < 1 else ds
    rows = explode(signal_type, pa.concat_tables(ray.get(sample.to_arrow_refs())))[1]
    rows = rows[rng.permutation(len(rows))]
    return rows[:n_queries], rows[n_queries:need]


def perturb_queries(signal_type: SignalType, queries: np.ndarray, rng) -> np.ndarray:
    """Near-duplicate queries, as the service sees them: noisy vectors, or hashes with flipped bits."""
    if len(queries) == 0:
        return queries
    if signal_type.index_kind == "binary":
        bits = np.unpackbits(queries, axis=1)
        for row in bits:
            flips = rng.choice(signal_type.dim, size=rng.integers(0, int(signal_type.index_radius) + 1), replace=False)
            row[flips] ^= 1
        return np.packbits(bits, axis=1)
    noise = rng.standard_normal(queries.shape).astype(np.float32) * (0.3 / np.sqrt(queries.shape[1]))
    return signal_type.encode(queries + noise)


@ray.remote(num_cpus=1)
def _train_task(params: IndexParams, sample: np.ndarray) -> bytes:
    _set_faiss_threads(os.cpu_count() or 1)
    return train_index(params, sample)


@ray.remote(num_cpus=1)
def _shard_task(
    store: ObjectStore,
    prefix: str,
    number: int,
    signal_type: SignalType,
    params: IndexParams,
    trained: bytes | None,
    blocks: list,
    queries: np.ndarray,
    settings: IndexSettings,
    threads: int,
    own_queries: int,
) -> dict:
    """Build one shard from its blocks, write it, and measure it against exact search.

    A multi-hash shard draws `own_queries` held-out queries from its own rows: its exactness
    within the radius holds shard by shard, so it needs no pass over all the data to sample."""
    _set_faiss_threads(threads)
    table = pa.concat_tables(ray.get(blocks)) if blocks else signal_table(signal_type, [], [])
    table, values = explode(signal_type, table)
    shard = Shard.build(params, table.column("entry_id"), values, trained, **row_flags(table))
    file = write_shard(store, prefix, number, shard, table).model_copy(update={"node": ray.get_runtime_context().get_node_id()})
    if params.type in HASHED and len(values):
        rng = np.random.default_rng([settings.seed, number])
        queries = perturb_queries(signal_type, values[rng.choice(len(values), min(own_queries, len(values)), replace=False)], rng)
    return {"file": file, **evaluate_shard(signal_type, shard, values, queries, settings.target_recall)}


def _set_faiss_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(max(1, n))


def write_shard(store: ObjectStore, prefix: str, number: int, shard: Shard, table: pa.Table) -> ShardFile:
    from mediamatch.platform.index import serialize

    ids_key = f"{prefix}/shard-{number:04d}.ids.parquet"
    keep_values = shard.params.type in ("exact", "postings", "stored") or "value" not in table.column_names
    columns = table if keep_values else table.drop_columns(["value"])
    blobs = {ids_key: _parquet_bytes(columns)}
    index_key = None
    if shard.index is not None:
        index_key = f"{prefix}/shard-{number:04d}.{'codes' if shard.params.type == 'binary_postings' else 'faiss'}"
        blobs[index_key] = serialize(shard.index)
    for key, blob in blobs.items():
        store.put(key, blob)
    return ShardFile(
        ids=ids_key,
        index=index_key,
        count=len(shard),
        sha256={k: sha256_hex(b) for k, b in blobs.items()},
        bytes=sum(len(b) for b in blobs.values()),
    )


def empty_shard_file(store: ObjectStore, prefix: str, signal_type: SignalType, params: IndexParams) -> ShardFile:
    """An index of nothing is still an index: it lets the service start before anything is banked."""
    table, values = explode(signal_type, signal_table(signal_type, [], []))
    return write_shard(store, prefix, 0, Shard.build(params, [], values, None), table)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# -- measuring recall ---------------------------------------------------------------------------
def evaluate_shard(signal_type: SignalType, shard: Shard, values: np.ndarray, queries: np.ndarray, target: float) -> dict:
    """This shard's hits for the held-out queries, approximate and exact.

    IVF-PQ: at nprobe 1, 2, 4, ... until this shard alone reaches the target recall (the merged
    recall is then measured by the driver). Multi-hash: at its one setting.
    """
    params = shard.params
    if params.type not in ("ivfpq", *HASHED) or len(queries) == 0 or len(shard) == 0:
        return {"approx": {}, "exact": []}
    if params.type in HASHED:
        radius, k = signal_type.index_radius, 1000
        flat = faiss_module().IndexBinaryFlat(params.dim)
        flat.add(np.ascontiguousarray(values))  # a copy: exact search that shares nothing with the hashed index
        exact = _exact_view(shard, "binary_flat", flat)
        return {"approx": {0: shard.search(queries, k, radius)}, "exact": exact.search(queries, k, radius)}
    exact = _exact_view(shard, "flat", faiss_module().downcast_index(shard.index.refine_index)).search(queries, RECALL_K, 2.0)
    approx = {}
    nprobe = 1
    while nprobe <= params.nlist:
        set_nprobe(shard.index, nprobe)
        approx[nprobe] = shard.search(queries, RECALL_K, 2.0)
        if recall_at_k(approx[nprobe], exact) >= target or nprobe == params.nlist:
            break
        nprobe = min(params.nlist, nprobe * 2)
    return {"approx": approx, "exact": exact}


def _exact_view(shard: Shard, kind: str, flat_index) -> Shard:
    """Exact search over a flat index of the shard's vectors (the re-rank's own, without a copy;
    a copy of the binary codes), with the shard's entry ids."""
    return Shard(shard.params.model_copy(update={"type": kind}), shard.entry_ids, index=flat_index)


def recall_at_k(approx: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> float:
    scores = [
        len({e for e, _ in a} & {e for e, _ in x}) / len(x) for a, x in zip(approx, exact) if x
    ]
    return float(np.mean(scores)) if scores else 1.0


def measure_recall(params: IndexParams, results: list[dict], target: float) -> tuple[float, int | None, str]:
    """Merged recall over all shards, and the nprobe that reaches the target."""
    if params.type in ("exact", "stored", "flat", "binary_flat"):
        return 1.0, params.nprobe, "exact index"
    results = [r for r in results if r["approx"]]  # shards with nothing in them answer nothing
    if not results:
        return 1.0, params.nprobe, "empty index"
    if params.type in HASHED:  # each shard's own queries, on that shard
        exact = [hits for r in results for hits in r["exact"]]
        approx = [hits for r in results for hits in r["approx"][0]]
        method = f"all within distance {params.exact_radius} vs exact search, {len(exact)} held-out queries drawn per shard"
        return round(recall_at_k(approx, exact), 4), None, method
    exact = merge_results([r["exact"] for r in results], RECALL_K)
    nprobe = max(max(r["approx"]) for r in results)
    # a shard that reached the target at a smaller nprobe contributes its results at that nprobe:
    # the merged figure is then a lower bound of the recall at the chosen nprobe
    approx = merge_results([r["approx"][max(r["approx"])] for r in results], RECALL_K)
    return round(recall_at_k(approx, exact), 4), nprobe, f"top-{RECALL_K} vs exact search, {len(exact)} held-out noisy queries"
