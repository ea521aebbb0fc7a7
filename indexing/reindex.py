"""The reindex job: catalog snapshot -> signals (Ray Data) -> trained, sharded FAISS index -> publish.

Steps, each visible in the progress callback and timed in the manifest:
1. snapshot the catalog (Parquet) and read it with Ray Data; take each entry's stored signal,
   or compute it from the stored media in `map_batches` (an actor pool for model signals,
   with a GPU each when the cluster has them); stream the signals into Parquet files under
   the build's prefix (`SignalFiles`), so no step holds the whole dataset;
2. choose the index type and parameters from the count and dimension;
3. train on a random sample (a Ray task; GPU when faiss sees one);
4. add vectors in N shards in parallel (Ray tasks spread over the nodes, retried by Ray when a
   node is lost), each reading its row range of the signals files (IVF-PQ: added to one file at
   a time), writing its files to object storage and measuring itself on held-out queries
   against exact search; the manifest names the node that built each shard;
5. merge those measurements into recall@10 and the tuned nprobe, write the manifest, remove
   the signals files and move the `current` pointer. Any failure before that last append
   publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mediamatch.platform.catalog import Catalog, media_key, snapshot_folder
from mediamatch.platform.entries import release_unused_memory
from mediamatch.platform.index import (
    ExactTopK, IndexParams, Shard, add_chunks, choose_params, deserialize, faiss_module, merge_results, row_flags, set_nprobe, train_index,
    write_index,
)
from mediamatch.platform.settings import IndexSettings, Settings
from mediamatch.platform.signals import SIGNAL_TYPES, SignalType, configure_signal_types, get_signal_type
from mediamatch.platform.storage import ObjectStore, sha256_hex
from mediamatch.platform.versions import IndexVersions, Manifest, ShardFile

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
RECALL_K = 10
HASHED = ("binary_postings", "binary_multihash")  # exact within the radius by pigeonhole: recall checked on own rows
FILE_ROWS = 100_000  # rows per signals file at least (100 MB of 256-d floats): what a shard task reads at once
PLATEAU = 0.002  # nprobe stops doubling when recall@10 gains less than this: the re-rank's candidates limit it


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
            store, signal_type, ds, shards or settings.index.shards, settings.index, catalog_seq=seq, banks=banks, progress=share,
            served_k=settings.serve.max_matches,
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


def read_parquet(store: ObjectStore, key: str | list[str]) -> ray.data.Dataset:
    """`ray.data.read_parquet` of a key (or keys), through Ray Data's V1 Parquet reader.

    The V2 reader (the default from Ray 2.5x) lists files in a task that provisions a pool of
    footer-reading actors on every read: about 1 s per read, and 3-4 worker processes started
    and killed, whose start-up competes with the build for the CPUs. The choice is made when the
    dataset is created, so the flag is set only around this call.
    """
    ctx = ray.data.DataContext.get_current()
    v2 = getattr(ctx, "use_datasource_v2", None)
    ctx.use_datasource_v2 = False
    try:
        paths = [store.path(k) for k in key] if isinstance(key, list) else store.path(key)
        return ray.data.read_parquet(paths, filesystem=store.fs)
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
    served_k: int = RECALL_K,
) -> Manifest:
    """Build, measure and publish an index of `ds` (columns entry_id, value[, bank, enabled]);
    `banks` is each bank's enabled flag at `catalog_seq`. Recall@10 is that of the top 10 of a
    `served_k` search, as the service asks (IVF-PQ re-ranks k × refine_k_factor candidates)."""
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
        report(0.02, "writing signals")
        signals = SignalFiles.write(store, f"{prefix}/signals", ds)
        count = entries = signals.rows
        if signal_type.bag and count:  # the index holds rows (frames, landmarks), not entries
            count = int(signals.dataset().map_batches(_row_counts(signal_type), batch_format="pyarrow").sum("n"))
        params = choose_params(signal_type, count, settings)
        lap("signals")
        rng = np.random.default_rng(settings.seed)
        queries, train = sample_for_build(signal_type, signals, count, params, settings, rng)
        queries = perturb_queries(signal_type, queries, rng)
        report(0.3, f"training {params.type} on {len(train)} of {count} vectors" if params.needs_training else "indexing")
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        trained = (
            _train_task.options(num_gpus=1 if use_gpu else 0).remote(params, train) if params.needs_training else None
        )
        del train
        release_unused_memory()  # the sample's copies (the driver holds ~3 GB of them at 10M x 256-d)
        if trained is not None:
            ray.wait([trained], fetch_local=False)
        lap("train")
        parts = signals.split(min(shards, entries))  # by entries: a bag entry's rows stay in one shard
        threads = max(1, (os.cpu_count() or 1) // max(1, len(parts)))
        pending = [
            _shard_task.options(num_gpus=1 if use_gpu and params.type == "ivfpq" else 0, scheduling_strategy="SPREAD").remote(
                store, prefix, number, signal_type, params, trained, part, queries, settings, threads, -(-settings.recall_queries // len(parts)), served_k
            )
            for number, part in enumerate(parts)
        ]
        results = _gather(pending, lambda done: report(0.35 + 0.55 * done / max(1, len(pending)), f"shards {done}/{len(pending)} added"))
        lap("shards")
        recall, nprobe, method = measure_recall(params, results, settings.target_recall, served_k)
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
        signals.delete()  # the shards hold what they need
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


Slice = tuple[str, int, int]  # (key of a signals file, first row, end row) within that file


@dataclass
class SignalFiles:
    """The job's signals, written once as Parquet files under the build's prefix: counted from
    their footers, sampled with Ray Data, and read by each shard task in row ranges of the files.
    The dataset is streamed through, never held whole in the object store or in one process."""

    store: ObjectStore
    folder: str
    files: list[tuple[str, int]]  # (key, rows), in order

    @classmethod
    def write(cls, store: ObjectStore, folder: str, ds: ray.data.Dataset) -> "SignalFiles":
        ds.write_parquet(store.path(folder), filesystem=store.fs, min_rows_per_file=FILE_ROWS)
        keys = [key for key in store.list(folder) if key.endswith(".parquet")]
        files = [(key, pq.read_metadata(store.path(key), filesystem=store.fs).num_rows) for key in keys]
        return cls(store, folder, [(key, rows) for key, rows in files if rows])

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.files)

    def dataset(self) -> ray.data.Dataset:
        return read_parquet(self.store, [key for key, _ in self.files])

    def split(self, parts: int) -> list[list[Slice]]:
        """`parts` contiguous row ranges of (nearly) equal size, as slices of the files."""
        if parts < 1:
            return []
        bounds = [self.rows * i // parts for i in range(parts + 1)]
        out: list[list[Slice]] = [[] for _ in range(parts)]
        start = 0
        for key, rows in self.files:
            for part in range(parts):
                lo, hi = max(bounds[part], start), min(bounds[part + 1], start + rows)
                if lo < hi:
                    out[part].append((key, lo - start, hi - start))
            start += rows
        return out

    def delete(self) -> None:
        self.store.delete_prefix(self.folder)


def read_slices(store: ObjectStore, slices: list[Slice]) -> Iterator[pa.Table]:
    """The rows of each slice, one file's table at a time."""
    for key, lo, hi in slices:
        yield pq.read_table(store.path(key), filesystem=store.fs).slice(lo, hi - lo)


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
    signal_type: SignalType, signals: SignalFiles, count: int, params: IndexParams, settings: IndexSettings, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out queries and a disjoint training sample, drawn at random from the data."""
    n_queries = min(settings.recall_queries, count) if params.type == "ivfpq" else 0  # multi-hash shards draw their own
    need = n_queries + (params.train_size or 0)
    if need == 0:
        return np.zeros((0,)), np.zeros((0,))
    fraction = min(1.0, 1.2 * need / count)
    ds = signals.dataset()
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
    trained = train_index(params, sample)
    release_unused_memory()  # an idle worker keeps what k-means used (GBs at 10M) otherwise
    return trained


@ray.remote(num_cpus=1)
def _shard_task(
    store: ObjectStore,
    prefix: str,
    number: int,
    signal_type: SignalType,
    params: IndexParams,
    trained: bytes | None,
    part: list[Slice],
    queries: np.ndarray,
    settings: IndexSettings,
    threads: int,
    own_queries: int,
    served_k: int,
) -> dict:
    """Build one shard from its rows of the signals files, write it, and measure it against exact search.

    A multi-hash shard draws `own_queries` held-out queries from its own rows: its exactness
    within the radius holds shard by shard, so it needs no pass over all the data to sample."""
    _set_faiss_threads(threads)
    tables = read_slices(store, part)
    if params.type == "ivfpq":
        shard, table, exact = build_streamed(signal_type, params, trained, tables, queries)
    else:
        table, values = explode(signal_type, pa.concat_tables(list(tables) or [signal_table(signal_type, [], [], [], [])]))
        shard = Shard.build(params, table.column("entry_id"), values, trained, **row_flags(table))
        exact = None
        if params.type in HASHED and len(values):
            rng = np.random.default_rng([settings.seed, number])
            queries = perturb_queries(signal_type, values[rng.choice(len(values), min(own_queries, len(values)), replace=False)], rng)
            exact = binary_exact(shard, values, queries, signal_type.index_radius)
    file = write_shard(store, prefix, number, shard, table).model_copy(update={"node": ray.get_runtime_context().get_node_id()})
    measured = evaluate_shard(shard, queries, exact, settings.target_recall, signal_type.index_radius, served_k)
    del shard, table
    release_unused_memory()  # an idle worker keeps its shard's build memory (GBs at 10M) otherwise
    return {"file": file, **measured}


def build_streamed(
    signal_type: SignalType, params: IndexParams, trained: bytes, tables: Iterable[pa.Table], queries: np.ndarray
) -> tuple[Shard, pa.Table, list]:
    """An IVF-PQ shard added to one table of rows at a time, so that no more than one table's float
    values are held beside the index; the exact top-10 of the held-out queries is found on the way.
    Returns the shard, its rows without their values, and those exact answers."""
    exact, kept = ExactTopK(queries, RECALL_K), []

    def chunks() -> Iterator[np.ndarray]:
        for table in tables:
            values = column_values(signal_type, table.column("value"))
            exact.add(values)
            kept.append(table.drop_columns(["value"]))
            yield values

    index = add_chunks(deserialize(params, trained), chunks())
    table = pa.concat_tables(kept or [signal_table(signal_type, [], [], [], []).drop_columns(["value"])])
    shard = Shard.of(params, table.column("entry_id"), index=index, **row_flags(table))
    return shard, table, [[(shard.entry_id(r), d) for r, d in hits] for hits in exact.hits()]


def binary_exact(shard: Shard, values: np.ndarray, queries: np.ndarray, radius: float) -> list:
    """Every row within `radius` of each query by exact search over a copy of the codes (nothing
    shared with the hashed index), as (entry id, distance)."""
    flat = faiss_module().IndexBinaryFlat(shard.params.dim)
    flat.add(np.ascontiguousarray(values))
    view = Shard(shard.params.model_copy(update={"type": "binary_flat"}), shard.entry_ids, index=flat)
    return view.search(queries, 1000, radius)


def _set_faiss_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(max(1, n))


def write_shard(store: ObjectStore, prefix: str, number: int, shard: Shard, table: pa.Table) -> ShardFile:
    """The shard's row columns (Parquet) and its index's file, the index streamed into the store
    and hashed on the way (never a second in-memory copy of a multi-GB index)."""
    ids_key = f"{prefix}/shard-{number:04d}.ids.parquet"
    keep_values = shard.params.type in ("exact", "postings", "stored") or "value" not in table.column_names
    ids = _parquet_bytes(table if keep_values else table.drop_columns(["value"]))
    store.put(ids_key, ids)
    sha256, size = {ids_key: sha256_hex(ids)}, len(ids)
    index_key = None
    if shard.index is not None:
        index_key = f"{prefix}/shard-{number:04d}.{'codes' if shard.params.type == 'binary_postings' else 'faiss'}"
        digest = hashlib.sha256()
        with store.writer(index_key) as f:
            def write(data) -> None:
                nonlocal size
                digest.update(data)
                f.write(data)
                size += len(data)

            write_index(shard.index, write)
        sha256[index_key] = digest.hexdigest()
    return ShardFile(ids=ids_key, index=index_key, count=len(shard), sha256=sha256, bytes=size)


def empty_shard_file(store: ObjectStore, prefix: str, signal_type: SignalType, params: IndexParams) -> ShardFile:
    """An index of nothing is still an index: it lets the service start before anything is banked."""
    table, values = explode(signal_type, signal_table(signal_type, [], []))
    return write_shard(store, prefix, 0, Shard.build(params, [], values, None), table)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# -- measuring recall ---------------------------------------------------------------------------
def evaluate_shard(shard: Shard, queries: np.ndarray, exact: list | None, target: float, radius: float, served_k: int = RECALL_K) -> dict:
    """This shard's hits for the held-out queries, beside their exact answers.

    IVF-PQ: the top 10 of a `served_k` search, at nprobe 1, 2, 4, ... until this shard alone reaches the target recall, or doubling
    gains less than PLATEAU (the merged recall is then measured by the driver). Multi-hash: at its
    one setting.
    """
    params = shard.params
    if exact is None or len(queries) == 0 or len(shard) == 0:
        return {"approx": {}, "exact": []}
    if params.type in HASHED:
        return {"approx": {0: shard.search(queries, 1000, radius)}, "exact": exact}
    approx, nprobe, last = {}, 1, -1.0
    while nprobe <= params.nlist:
        set_nprobe(shard.index, nprobe)
        approx[nprobe] = [hits[:RECALL_K] for hits in shard.search(queries, max(served_k, RECALL_K), 2.0)]
        recall = recall_at_k(approx[nprobe], exact)
        if recall >= target or recall - last < PLATEAU or nprobe == params.nlist:
            break
        last, nprobe = recall, min(params.nlist, nprobe * 2)
    return {"approx": approx, "exact": exact}


def recall_at_k(approx: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> float:
    scores = [
        len({e for e, _ in a} & {e for e, _ in x}) / len(x) for a, x in zip(approx, exact) if x
    ]
    return float(np.mean(scores)) if scores else 1.0


def measure_recall(params: IndexParams, results: list[dict], target: float, served_k: int = RECALL_K) -> tuple[float, int | None, str]:
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
    searched = f"top-{RECALL_K}" + (f" of a top-{served_k} search" if served_k > RECALL_K else "")
    return round(recall_at_k(approx, exact), 4), nprobe, f"{searched} vs exact search, {len(exact)} held-out noisy queries"
