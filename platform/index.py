"""FAISS indexes for signals: choosing parameters from the data, building shards, searching them.

Three kinds, chosen from the signal type and the number of vectors:
- float vectors (cosine): exact `IndexFlatIP` below `flat_max`, else IVF-PQ with an exact
  re-rank of its candidates (`IndexRefineFlat`), nprobe tuned on held-out queries;
- binary hashes (Hamming): exact `IndexBinaryFlat` below `flat_max`, else a multi-hash
  index whose chunking makes every hash within the match radius a guaranteed candidate
  (pigeonhole), so range search stays exact at that radius;
- exact digests (MD5, normalised text): a hash table;
- integer keys (audio landmarks, many per entry): sorted postings searched with numpy;
- stored values (a photo's keypoints, for the verifier): each entry's value, looked up by entry id.
The same code serves the reindex job (build) and the shard searchers (load and search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel

from .settings import IndexSettings
from .signals import SignalType

IndexType = Literal["exact", "postings", "stored", "flat", "ivfpq", "binary_flat", "binary_multihash"]


def faiss_module():
    try:
        import faiss
    except ImportError as exc:  # neither extra installed
        raise ImportError("faiss is missing: install mediamatch[cpu] (faiss-cpu) or mediamatch[gpu] (faiss-gpu)") from exc
    return faiss


class IndexParams(BaseModel):
    type: IndexType
    dim: int = 0
    nlist: int | None = None
    m: int | None = None
    nbits: int | None = None
    nprobe: int | None = None
    refine_k_factor: float | None = None
    train_size: int | None = None
    nhash: int | None = None
    nflip: int | None = None
    exact_radius: int | None = None  # multi-hash: range search is exact up to this distance

    @property
    def needs_training(self) -> bool:
        return self.type == "ivfpq"


def choose_params(signal_type: SignalType, count: int, settings: IndexSettings) -> IndexParams:
    """Index type and parameters from the signal's kind and dimension and the vector count."""
    kind, dim = signal_type.index_kind, signal_type.dim
    if kind in ("exact", "postings", "stored"):
        return IndexParams(type=kind)
    if kind == "binary":
        if count < settings.flat_max:
            return IndexParams(type="binary_flat", dim=dim)
        # nhash chunks of dim/nhash bits; flipping up to nflip bits per chunk finds every hash
        # within (nflip + 1) * nhash - 1 bits: a closer hash must match some chunk that closely.
        nhash = 16
        nflip = max(0, math.ceil((signal_type.index_radius + 1) / nhash) - 1)
        return IndexParams(type="binary_multihash", dim=dim, nhash=nhash, nflip=nflip, exact_radius=(nflip + 1) * nhash - 1)
    if count < settings.flat_max:
        return IndexParams(type="flat", dim=dim)
    nlist = 2 ** round(math.log2(4 * math.sqrt(count)))
    nlist = int(min(max(nlist, 16), 65536, max(16, count // 39)))
    m = next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)
    return IndexParams(
        type="ivfpq",
        dim=dim,
        nlist=nlist,
        m=m,
        nbits=8,
        nprobe=max(1, nlist // 64),  # replaced by the tuned value after the build
        refine_k_factor=16.0,  # exact re-rank of 16k PQ candidates: PQ codes alone rank near neighbours poorly
        train_size=min(count, settings.train_per_list * nlist),
    )


def empty_index(params: IndexParams):
    faiss = faiss_module()
    if params.type == "flat":
        return faiss.IndexFlatIP(params.dim)
    if params.type == "ivfpq":
        quantizer = faiss.IndexFlatIP(params.dim)
        ivf = faiss.IndexIVFPQ(quantizer, params.dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = params.refine_k_factor
        return index
    if params.type == "binary_flat":
        return faiss.IndexBinaryFlat(params.dim)
    if params.type == "binary_multihash":
        index = faiss.IndexBinaryMultiHash(params.dim, params.nhash, params.dim // params.nhash)
        index.nflip = params.nflip
        return index
    raise ValueError(f"no faiss index for type {params.type}")


def set_nprobe(index, nprobe: int) -> None:
    faiss_module().ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))


def train_index(params: IndexParams, sample: np.ndarray, use_gpu: bool | None = None) -> bytes:
    """An empty, trained index (serialized), trained on the GPU when faiss sees one."""
    faiss = faiss_module()
    index = empty_index(params)
    if params.needs_training:
        if use_gpu is None:
            use_gpu = faiss.get_num_gpus() > 0
        ivf = faiss.extract_index_ivf(index)
        gpu_flat = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(params.dim)) if use_gpu else None
        if gpu_flat is not None:  # the coarse k-means, the costly part, runs on the GPU
            ivf.clustering_index = gpu_flat
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        ivf.clustering_index = None
    return serialize(index)


def serialize(index) -> bytes:
    faiss = faiss_module()
    if isinstance(index, faiss.IndexBinary):
        return faiss.serialize_index_binary(index).tobytes()
    return faiss.serialize_index(index).tobytes()


def deserialize(params: IndexParams, data: bytes):
    faiss = faiss_module()
    array = np.frombuffer(data, dtype=np.uint8)
    if params.type.startswith("binary"):
        return faiss.deserialize_index_binary(array)
    index = faiss.deserialize_index(array)
    if params.nprobe:
        set_nprobe(index, params.nprobe)
    return index


def add_vectors(index, vectors: np.ndarray, use_gpu: bool | None = None):
    """Add vectors (ids = row order); on the GPU when faiss sees one and the index allows it."""
    faiss = faiss_module()
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0 and not isinstance(index, faiss.IndexBinary)
    if use_gpu and isinstance(index, faiss.IndexRefineFlat):
        # IVF-PQ assignment and encoding on the GPU; the re-rank keeps exact vectors on the CPU
        gpu_ivf = faiss.index_cpu_to_all_gpus(faiss.downcast_index(index.base_index))
        gpu_ivf.add(vectors)
        refined = faiss.IndexRefineFlat(faiss.index_gpu_to_cpu(gpu_ivf), faiss.swig_ptr(vectors))
        refined.k_factor = index.k_factor
        return refined
    index.add(vectors)
    return index


@dataclass
class Shard:
    """One loaded shard: a faiss index (or a digest table) and, per row (= faiss id), the entry
    id, its bank and whether the entry is enabled; for bag signals (many rows per entry), each
    row's time too.

    Rows stay in the index when an entry or a bank is disabled: the flags are filtered at search
    time, so the service can flip them as the catalog changes and re-enabling needs no rebuild.
    """

    params: IndexParams
    entry_ids: np.ndarray  # object array of str
    index: object = None
    table: dict[str, list[int]] | None = None  # exact kind: digest -> rows
    keys: np.ndarray | None = None  # postings kind: uint32 key per row
    values: np.ndarray | None = None  # stored kind: each row's value (object array)
    _sorted: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (keys sorted, their rows)
    banks: np.ndarray | None = None  # object array of bank names; None: rows have no bank
    enabled: np.ndarray | None = None  # bool per row; None: all enabled
    bank_enabled: dict[str, bool] = field(default_factory=dict)  # a bank not named here is enabled
    times: np.ndarray | None = None  # bag signals: float32 per row
    _by_id: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (ids sorted, their rows)

    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray]:
        if self._by_id is None:
            ids = self.entry_ids.astype(str)
            order = np.argsort(ids, kind="stable")
            self._by_id = (ids[order], order)
        return self._by_id

    def rows_of(self, entry_id: str) -> np.ndarray:
        """The rows of one entry (bag signals: many), found by binary search."""
        ids, order = self._sorted_ids()
        return order[np.searchsorted(ids, entry_id, "left") : np.searchsorted(ids, entry_id, "right")]

    def entry_rows(self) -> dict[str, int]:
        """Rows per entry (bag signals aggregate over them)."""
        ids, _ = self._sorted_ids()
        unique, counts = np.unique(ids, return_counts=True)
        return dict(zip(unique.tolist(), counts.tolist()))

    def __len__(self) -> int:
        return len(self.entry_ids)

    @classmethod
    def build(
        cls,
        params: IndexParams,
        entry_ids: Sequence[str],
        values: np.ndarray,
        trained: bytes | None,
        banks: Sequence[str] | None = None,
        enabled: Sequence[bool] | None = None,
        times: Sequence[float] | None = None,
    ) -> "Shard":
        ids = np.asarray(entry_ids, dtype=object)
        flags = dict(
            banks=None if banks is None else np.asarray(banks, dtype=object),
            enabled=None if enabled is None else np.asarray(enabled, dtype=bool),
            times=None if times is None else np.asarray(times, dtype=np.float32),
        )
        if params.type == "exact":
            return cls(params, ids, table=digest_table(values), **flags)
        if params.type == "postings":
            return cls(params, ids, keys=np.asarray(values, dtype=np.uint32), **flags)
        if params.type == "stored":
            return cls(params, ids, values=np.asarray(values, dtype=object).reshape(len(ids)), **flags)
        index = deserialize(params, trained) if trained else empty_index(params)
        if len(ids):
            index = add_vectors(index, np.ascontiguousarray(values))
        return cls(params, ids, index=index, **flags)

    @classmethod
    def empty(cls, params: IndexParams) -> "Shard":
        """A shard to append to: the service's live delta (flat or exact)."""
        return cls.build(params, [], [], None, banks=[], enabled=[], times=[])

    def add(self, entry_ids: Sequence[str], banks: Sequence[str], values: np.ndarray, times: Sequence[float] | None = None) -> None:
        """Append enabled rows (with their times, for bag signals)."""
        if self.params.type == "exact":
            for row, value in enumerate(values, len(self)):
                self.table.setdefault(value, []).append(row)
        elif self.params.type == "postings":
            self.keys, self._sorted = np.concatenate([self.keys, np.asarray(values, dtype=np.uint32)]), None
        elif self.params.type == "stored":
            self.values = np.concatenate([self.values, np.asarray(values, dtype=object).reshape(len(entry_ids))])
        else:
            self.index = add_vectors(self.index, np.ascontiguousarray(values))
        self.entry_ids = np.concatenate([self.entry_ids, np.asarray(entry_ids, dtype=object)])
        self.banks = np.concatenate([self.banks, np.asarray(banks, dtype=object)])
        self.enabled = np.concatenate([self.enabled, np.ones(len(entry_ids), dtype=bool)])
        self.times = np.concatenate([self.times, np.asarray(times if times is not None else np.zeros(len(entry_ids)), dtype=np.float32)])
        self._by_id = None

    def live(self, row: int, only_banks: set[str] | None = None) -> bool:
        """Whether a row may match: its entry and bank enabled (and its bank among `only_banks`)."""
        if self.enabled is not None and not self.enabled[row]:
            return False
        if self.banks is None:
            return only_banks is None
        bank = self.banks[row]
        return self.bank_enabled.get(bank, True) and (only_banks is None or bank in only_banks)

    def live_rows(self, rows: np.ndarray, only_banks: set[str] | None = None) -> np.ndarray:
        """`live` of many rows at once (a bool mask)."""
        ok = np.ones(len(rows), dtype=bool) if self.enabled is None else self.enabled[rows]
        if self.banks is None:
            return ok & (only_banks is None)
        banks = self.banks[rows]
        for bank in set(banks[ok].tolist()):
            if not self.bank_enabled.get(bank, True) or (only_banks is not None and bank not in only_banks):
                ok &= banks != bank
        return ok

    def search_pairs(self, queries: np.ndarray, k: int, radius: float, only_banks: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, row, distance) hit within `radius` as three arrays (bag signals search
        many rows at once); postings are gathered without a Python loop."""
        if self.params.type != "postings" or len(self) == 0:
            lists = self.search_rows(queries, k, radius, only_banks)
            query = np.repeat(np.arange(len(lists)), [len(hits) for hits in lists])
            flat = [hit for hits in lists for hit in hits]
            return query, np.asarray([r for r, _ in flat], dtype=np.int64), np.asarray([d for _, d in flat], dtype=np.float32)
        keys, order = self._postings()
        lo, hi = np.searchsorted(keys, queries, "left"), np.searchsorted(keys, queries, "right")
        counts = hi - lo
        query = np.repeat(np.arange(len(queries)), counts)
        position = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        rows = order[position]
        ok = self.live_rows(rows, only_banks)
        return query[ok], rows[ok], np.zeros(int(ok.sum()), dtype=np.float32)

    def _postings(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            order = np.argsort(self.keys, kind="stable")
            self._sorted = (self.keys[order], order)
        return self._sorted

    def search(self, queries: np.ndarray, k: int, radius: float) -> list[list[tuple[str, float]]]:
        """Per query, up to k (entry_id, distance) pairs within `radius`, nearest first.

        Distances are in the signal's unit: Hamming bits, cosine distance, or 0 for equal digests.
        """
        return [[(self.entry_ids[r], d) for r, d in hits] for hits in self.search_rows(queries, k, radius)]

    def search_rows(self, queries: np.ndarray, k: int, radius: float, only_banks: set[str] | None = None) -> list[list[tuple[int, float]]]:
        """As `search`, with row numbers; rows that may not match (`live`) are skipped."""
        if len(self.entry_ids) == 0 or self.params.type == "stored":
            return [[] for _ in range(len(queries))]
        if self.params.type == "exact":
            return [[(r, 0.0) for r in self.table.get(q, []) if self.live(r, only_banks)][:k] for q in queries]
        if self.params.type == "postings":  # search_pairs gathers postings; grouped per query here
            query, rows, _ = self.search_pairs(queries, k, radius, only_banks)
            out: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
            for q, r in zip(query.tolist(), rows.tolist()):
                if len(out[q]) < k:
                    out[q].append((r, 0.0))
            return out
        if self.params.type.startswith("binary"):
            lims, dist, rows = self.index.range_search(np.ascontiguousarray(queries), int(radius) + 1)
            out = []
            for i in range(len(queries)):
                hits = sorted(zip(dist[lims[i] : lims[i + 1]].tolist(), rows[lims[i] : lims[i + 1]].tolist()))
                out.append([(r, float(d)) for d, r in hits if self.live(r, only_banks)][:k])
            return out
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        fetch = min(k, len(self.entry_ids))
        while True:  # fetch more when disabled rows took places in the top k
            sims, rows = self.index.search(queries, fetch)
            out = [
                [(r, float(1.0 - s)) for s, r in zip(srow, rrow) if r >= 0 and 1.0 - s <= radius and self.live(r, only_banks)][:k]
                for srow, rrow in zip(sims.tolist(), rows.tolist())
            ]
            short = any(len(o) < k and rrow[-1] >= 0 and 1.0 - srow[-1] <= radius for o, srow, rrow in zip(out, sims.tolist(), rows.tolist()))
            if not short or fetch >= len(self.entry_ids):
                return out
            fetch = min(fetch * 4, len(self.entry_ids))


def row_flags(table) -> dict[str, np.ndarray | None]:
    """The bank, enabled and time columns of a signal or shard-ids table (pyarrow), as `Shard` takes them."""
    return {
        name: table.column(column).to_numpy(zero_copy_only=False) if column in table.column_names else None
        for name, column in (("banks", "bank"), ("enabled", "enabled"), ("times", "time"))
    }


def digest_table(values: Sequence[str]) -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for row, value in enumerate(values):
        table.setdefault(value, []).append(row)
    return table


def merge_results(per_shard: Sequence[list[list[tuple[str, float]]]], k: int) -> list[list[tuple[str, float]]]:
    """Merge each query's hits from every shard into one nearest-first top k."""
    if not per_shard:
        return []
    return [sorted((hit for shard in per_shard for hit in shard[q]), key=lambda h: h[1])[:k] for q in range(len(per_shard[0]))]
