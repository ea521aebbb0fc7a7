"""FAISS indexes for signals: choosing parameters from the data, building shards, searching them.

Three kinds, chosen from the signal type and the number of vectors:
- float vectors (cosine): exact `IndexFlatIP` below `flat_max`, else IVF-PQ whose candidates
  are re-ranked on a finer copy of the vectors (`IndexRefine`: float16 by default, half the
  exact floats' memory; or 8-bit scalar quantized, or the exact floats), nprobe tuned on
  held-out queries;
- binary hashes (Hamming): exact `IndexBinaryFlat` below `flat_max`, else multi-index hashing
  over sorted postings in numpy (`BinaryPostings`), whose chunking makes every hash within the
  match radius a guaranteed candidate (pigeonhole), so range search stays exact at that radius;
- exact digests (MD5, normalised text): a hash table;
- integer keys (audio landmarks, many per entry): sorted postings searched with numpy;
- stored values (a photo's keypoints, for the verifier): each entry's value, looked up by entry id.
The same code serves the reindex job (build) and the shard searchers (load and search).
A shard holds its per-row columns compactly: entry ids as fixed-width bytes, banks as small
integer codes into a list of names (no Python object per row).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from .entries import id_array, string_array
from .settings import IndexSettings
from .signals import SignalType

# binary_multihash: faiss's IndexBinaryMultiHash, what versions built before binary_postings hold (still loaded)
IndexType = Literal["exact", "postings", "stored", "flat", "ivfpq", "binary_flat", "binary_postings", "binary_multihash"]

CHUNK_BITS = 16  # binary_postings: a chunk's value indexes its postings directly (65,536 lists)
SCAN_BLOCK = 1 << 20  # candidates a range search checks at once: bounds its scratch memory (~100 MB)


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
    refine: Literal["flat", "fp16", "sq8"] | None = None  # the re-rank's copy of the vectors (None: flat, versions before it)
    train_size: int | None = None
    nhash: int | None = None  # binary_postings: chunks of CHUNK_BITS bits
    nflip: int | None = None
    exact_radius: int | None = None  # binary_postings: range search is exact up to this distance

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
        # nhash chunks of CHUNK_BITS bits; flipping up to nflip bits per chunk finds every hash
        # within (nflip + 1) * nhash - 1 bits: a closer hash must match some chunk that closely.
        nhash = dim // CHUNK_BITS
        nflip = max(0, math.ceil((signal_type.index_radius + 1) / nhash) - 1)
        kind = "binary_postings" if settings.binary_index == "postings" else "binary_multihash"
        return IndexParams(type=kind, dim=dim, nhash=nhash, nflip=nflip, exact_radius=(nflip + 1) * nhash - 1)
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
        refine_k_factor=16.0,  # re-rank of 16k PQ candidates: PQ codes alone rank near neighbours poorly
        refine=settings.refine,
        train_size=min(count, settings.train_per_list * nlist),
    )


def empty_index(params: IndexParams):
    if params.type == "binary_postings":
        return BinaryPostings(params.dim, params.nflip)
    faiss = faiss_module()
    if params.type == "flat":
        return faiss.IndexFlatIP(params.dim)
    if params.type == "ivfpq":
        quantizer = faiss.IndexFlatIP(params.dim)
        ivf = faiss.IndexIVFPQ(quantizer, params.dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)
        if params.refine in (None, "flat"):
            index = faiss.IndexRefineFlat(ivf)
        else:
            codec = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[params.refine]
            index = faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(params.dim, codec, faiss.METRIC_INNER_PRODUCT))
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
    buffer = io.BytesIO()
    write_index(index, buffer.write)
    return buffer.getvalue()


def write_index(index, write: Callable[[bytes], object]) -> None:
    """Write an index's file in parts through `write` (a file's or a hash's), never as one copy."""
    if isinstance(index, BinaryPostings):  # its codes: the postings are sorted again on loading
        write(memoryview(index.codes).cast("B"))
        return
    faiss = faiss_module()
    writer = faiss.PyCallbackIOWriter(write)
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, writer)
    else:
        faiss.write_index(index, writer)


def deserialize(params: IndexParams, data: bytes):
    return read_index(params, io.BytesIO(data).read)


def read_index(params: IndexParams, read: Callable[[int], bytes]):
    """An index read from its file in parts (`read(n)`: a stream's), with the served nprobe."""
    if params.type == "binary_postings":
        return BinaryPostings(params.dim, params.nflip, np.frombuffer(read(-1), dtype=np.uint8))
    faiss = faiss_module()
    reader = faiss.PyCallbackIOReader(read)
    if params.type.startswith("binary"):
        return faiss.read_index_binary(reader)
    index = faiss.read_index(reader)
    if params.nprobe:
        set_nprobe(index, params.nprobe)
    return index


def add_vectors(index, vectors: np.ndarray, use_gpu: bool | None = None):
    """Add vectors (ids = row order); on the GPU when faiss sees one and the index allows it."""
    return add_chunks(index, [vectors], use_gpu)


def add_chunks(index, chunks: Iterable[np.ndarray], use_gpu: bool | None = None):
    """Add chunks of vectors in turn (ids = row order), never needing them all at once. With a GPU
    (when faiss sees one), an IVF-PQ index's assignment and encoding run there, the index copied
    over once for all the chunks; its re-rank copy stays on the CPU. Returns the index (a new one
    after the GPU)."""
    faiss = faiss_module()
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0 and not isinstance(index, faiss.IndexBinary)
    if not (use_gpu and isinstance(index, faiss.IndexRefine)):
        for chunk in chunks:
            index.add(np.ascontiguousarray(chunk))
        return index
    gpu_ivf = faiss.index_cpu_to_all_gpus(faiss.downcast_index(index.base_index))
    refine = faiss.downcast_index(index.refine_index)
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk)
        gpu_ivf.add(chunk)
        refine.add(chunk)
    cpu_ivf = faiss.index_gpu_to_cpu(gpu_ivf)
    out = faiss.IndexRefine(cpu_ivf, refine)
    index.own_refine_index = False  # the new index owns both parts now
    out.own_fields = out.own_refine_index = True
    cpu_ivf.this.disown()
    refine.this.disown()
    out.k_factor = index.k_factor
    return out


class ExactTopK:
    """The exact top k of some queries by inner product, over vectors that arrive chunk by chunk
    (a shard's, while it is built): the ground truth of a recall check without the vectors kept."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k, self.rows = np.ascontiguousarray(queries, dtype=np.float32), k, 0
        self.heap = faiss_module().ResultHeap(len(queries), k, keep_max=True)

    def add(self, vectors: np.ndarray) -> None:
        if len(self.queries) and len(vectors):
            sims, rows = faiss_module().knn(self.queries, np.ascontiguousarray(vectors, dtype=np.float32), min(self.k, len(vectors)), metric=faiss_module().METRIC_INNER_PRODUCT)
            self.heap.add_result(sims, np.where(rows >= 0, rows + self.rows, -1))
        self.rows += len(vectors)

    def hits(self) -> list[list[tuple[int, float]]]:
        """Per query, (row, cosine distance) nearest first."""
        self.heap.finalize()
        return [[(int(r), float(1.0 - s)) for s, r in zip(srow, rrow) if r >= 0] for srow, rrow in zip(self.heap.D.tolist(), self.heap.I.tolist())]


class BinaryPostings:
    """Multi-index hashing for Hamming range search, exact within `(nflip + 1) * nhash - 1` bits.

    Each hash is cut into chunks of CHUNK_BITS bits; a hash that close to a query agrees with it
    to within `nflip` bits in some chunk (pigeonhole), so probing each chunk's value and its
    flips finds it. Per chunk, the rows sorted by their chunk value (int32) and where each value's
    rows start; the codes kept once; every candidate's distance counted exactly. Rows added after
    the sort are scanned until there are enough of them to sort again. The interface is faiss's
    (`add`, `range_search`), which the shard uses for its other binary index."""

    def __init__(self, dim: int, nflip: int, codes: np.ndarray | None = None):
        if dim % 64:
            raise ValueError(f"binary_postings takes hashes of a multiple of 64 bits, not {dim}")
        self.dim, self.nflip = dim, nflip
        self.codes = np.ascontiguousarray(np.zeros(0, np.uint8) if codes is None else codes, dtype=np.uint8).reshape(-1, dim // 8)
        masks = np.arange(1 << CHUNK_BITS, dtype=np.uint32)
        self.flips = masks[np.bitwise_count(masks) <= nflip].astype(np.uint16)  # every mask of at most nflip bits (0: the value)
        self._sort()

    def _sort(self) -> None:
        chunks = self.codes.view(np.uint16)  # (n, nhash) chunk values
        n, nhash = chunks.shape
        self.sorted = n
        self.rows = np.empty((nhash, n), dtype=np.int32)  # per chunk, the rows in order of their value
        self.starts = np.zeros((nhash, (1 << CHUNK_BITS) + 1), dtype=np.int64)  # into rows.ravel()
        for c in range(nhash):
            self.rows[c] = np.argsort(chunks[:, c], kind="stable")
            np.cumsum(np.bincount(chunks[:, c], minlength=1 << CHUNK_BITS), out=self.starts[c, 1:])
            self.starts[c] += c * n

    @property
    def ntotal(self) -> int:
        return len(self.codes)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.rows.nbytes + self.starts.nbytes

    def add(self, codes: np.ndarray) -> None:
        self.codes = np.concatenate([self.codes, np.asarray(codes, dtype=np.uint8).reshape(-1, self.dim // 8)])
        if self.ntotal - self.sorted > max(4096, self.sorted // 16):
            self._sort()

    def range_search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As faiss's: every row at distance < radius of each query, as (lims, distances, rows),
        query i's hits at lims[i]:lims[i + 1] (in no particular order)."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, self.dim // 8)
        probes = (queries.view(np.uint16)[:, :, None] ^ self.flips).astype(np.intp)  # (query, chunk, flip)
        chunk = np.arange(probes.shape[1])[:, None]
        lo = self.starts[chunk, probes].reshape(len(queries), -1)
        hi = self.starts[chunk, probes + 1].reshape(len(queries), -1)
        unsorted = np.arange(self.sorted, self.ntotal)
        before = np.concatenate([[0], np.cumsum((hi - lo).sum(1) + len(unsorted))])  # candidates of the queries before each
        found, start = [], 0
        while start < len(queries):  # blocks of at most SCAN_BLOCK candidates (or one query)
            end = max(start + 1, int(np.searchsorted(before, before[start] + SCAN_BLOCK, "right")) - 1)
            query, distance, rows = self._scan(queries[start:end], lo[start:end], hi[start:end], unsorted, radius)
            found.append((query + start, distance, rows))
            start = end
        query, distance, rows = (np.concatenate(column) for column in zip(*found)) if found else (np.zeros(0, np.int64),) * 3
        return np.searchsorted(query, np.arange(len(queries) + 1)), distance.astype(np.int32), rows

    def _scan(self, queries: np.ndarray, lo: np.ndarray, hi: np.ndarray, unsorted: np.ndarray, radius: int):
        """(query, distance, row) of the distinct candidates within radius of these queries: the
        rows of their probed postings (lo:hi per query and probe) and the unsorted rows."""
        which, positions = gather_ranges(lo.ravel(), hi.ravel())
        query = np.concatenate([which // lo.shape[1], np.repeat(np.arange(len(queries)), len(unsorted))])
        rows = np.concatenate([np.take(self.rows.ravel(), positions), np.tile(unsorted, len(queries))])
        differ = np.take(self.codes.view(np.uint64), rows, axis=0)  # take: 2x faster than indexing here
        differ ^= np.take(queries.view(np.uint64), query, axis=0)
        bits = np.bitwise_count(differ)
        distance = bits[:, 0].astype(np.int32)
        for word in range(1, bits.shape[1]):  # a column at a time: 2x faster than sum(1) over 4 words
            distance += bits[:, word]
        near = distance < radius
        pairs, first = np.unique(query[near] * self.ntotal + rows[near], return_index=True)  # a row found in several chunks once
        return pairs // self.ntotal, distance[near][first], pairs % self.ntotal


def gather_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position lo[i] <= p < hi[i], range after range, and the range each came from."""
    counts = hi - lo
    which = np.repeat(np.arange(len(lo)), counts)
    return which, np.arange(counts.sum()) + np.repeat(lo - np.cumsum(counts) + counts, counts)


@dataclass
class Shard:
    """One loaded shard: an index (faiss's, `BinaryPostings` or a digest table) and, per row
    (= index id), the entry id, its bank and whether the entry is enabled; for bag signals (many
    rows per entry), each row's time too. The per-row columns are compact: entry ids as
    fixed-width UTF-8 bytes (`id_array`), banks as codes into `bank_names` (`bank_column`);
    `entry_id`, `bank`, `ids_of` and `banks_of` give them back as str. `Shard.of` takes them in
    any sequence form (list, numpy, Arrow).

    Rows stay in the index when an entry or a bank is disabled: the flags are filtered at search
    time, so the service can flip them as the catalog changes and re-enabling needs no rebuild.
    """

    params: IndexParams
    entry_ids: np.ndarray  # fixed-width UTF-8 bytes (numpy 'S'), one per row
    index: object = None
    table: dict[str, list[int]] | None = None  # exact kind: digest -> rows
    keys: np.ndarray | None = None  # postings kind: uint32 key per row
    values: np.ndarray | None = None  # stored kind: each row's value (object array)
    _sorted: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (keys sorted, their rows)
    bank_codes: np.ndarray | None = None  # each row's bank, an index into bank_names; None: rows have no bank
    bank_names: list[str] = field(default_factory=list)
    enabled: np.ndarray | None = None  # bool per row; None: all enabled
    bank_enabled: dict[str, bool] = field(default_factory=dict)  # a bank not named here is enabled
    times: np.ndarray | None = None  # bag signals: float32 per row
    _by_id: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (ids sorted, their rows)

    @classmethod
    def of(cls, params: IndexParams, entry_ids, banks=None, enabled=None, times=None, **index) -> "Shard":
        """A shard of these rows (ids, banks, flags as lists, numpy or Arrow arrays) and its index parts."""
        codes, names = (None, []) if banks is None else bank_column(banks)
        return cls(
            params, id_array(entry_ids), bank_codes=codes, bank_names=names,
            enabled=None if enabled is None else np.asarray(enabled, dtype=bool),
            times=None if times is None else np.asarray(times, dtype=np.float32), **index,
        )

    # -- the per-row columns, as str ------------------------------------------------------------
    def entry_id(self, row: int) -> str:
        return self.entry_ids[row].decode()

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        return np.strings.decode(self.entry_ids[rows]).astype(object)

    def bank(self, row: int) -> str:
        return "" if self.bank_codes is None else self.bank_names[self.bank_codes[row]]

    def banks_of(self, rows: np.ndarray) -> np.ndarray:
        if self.bank_codes is None:
            return np.full(len(rows), "", dtype=object)
        return np.asarray(self.bank_names, dtype=object)[self.bank_codes[rows]]

    def in_bank(self, name: str) -> np.ndarray:
        """A bool mask of the rows of one bank."""
        if self.bank_codes is None or name not in self.bank_names:
            return np.zeros(len(self), dtype=bool)
        return self.bank_codes == self.bank_names.index(name)

    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray]:
        if self._by_id is None:
            order = np.argsort(self.entry_ids, kind="stable")
            self._by_id = (self.entry_ids[order], order)
        return self._by_id

    def rows_of(self, entry_id: str) -> np.ndarray:
        """The rows of one entry (bag signals: many), found by binary search."""
        ids, order = self._sorted_ids()
        key = entry_id.encode()
        if len(key) > ids.dtype.itemsize:  # longer than every id here (numpy would cut it to that width)
            return order[:0]
        return order[np.searchsorted(ids, key, "left") : np.searchsorted(ids, key, "right")]

    def entry_rows(self) -> dict[str, int]:
        """Rows per entry (bag signals aggregate over them)."""
        ids, _ = self._sorted_ids()
        unique, counts = np.unique(ids, return_counts=True)
        return dict(zip(np.strings.decode(unique).tolist(), counts.tolist()))

    def __len__(self) -> int:
        return len(self.entry_ids)

    @classmethod
    def build(
        cls,
        params: IndexParams,
        entry_ids,
        values: np.ndarray,
        trained: bytes | None,
        banks=None,
        enabled: Sequence[bool] | None = None,
        times: Sequence[float] | None = None,
    ) -> "Shard":
        """A shard of these rows and their values (ids and banks as lists, numpy or Arrow arrays)."""
        flags = dict(banks=banks, enabled=enabled, times=times)
        if params.type == "exact":
            return cls.of(params, entry_ids, table=digest_table(values), **flags)
        if params.type == "postings":
            return cls.of(params, entry_ids, keys=np.asarray(values, dtype=np.uint32), **flags)
        if params.type == "stored":
            return cls.of(params, entry_ids, values=np.asarray(values, dtype=object).reshape(len(values)), **flags)
        if params.type == "binary_postings":
            return cls.of(params, entry_ids, index=BinaryPostings(params.dim, params.nflip, values), **flags)
        index = deserialize(params, trained) if trained else empty_index(params)
        if len(values):
            index = add_vectors(index, np.ascontiguousarray(values))
        return cls.of(params, entry_ids, index=index, **flags)

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
        self.entry_ids = np.concatenate([self.entry_ids, id_array(entry_ids)])
        codes, names = bank_column(banks)
        self.bank_names += [name for name in names if name not in self.bank_names]
        recoded = np.asarray([self.bank_names.index(name) for name in names], dtype=np.int64)[codes]
        self.bank_codes = np.concatenate([self.bank_codes, recoded]).astype(code_type(len(self.bank_names)))
        self.enabled = np.concatenate([self.enabled, np.ones(len(entry_ids), dtype=bool)])
        self.times = np.concatenate([self.times, np.asarray(times if times is not None else np.zeros(len(entry_ids)), dtype=np.float32)])
        self._by_id = None

    def live_rows(self, rows: np.ndarray, only_banks: set[str] | None = None) -> np.ndarray:
        """Which rows may match (a bool mask): their entry and bank enabled (and their bank among `only_banks`)."""
        ok = np.ones(len(rows), dtype=bool) if self.enabled is None else self.enabled[rows]
        if self.bank_codes is None:
            return ok & (only_banks is None)
        allowed = [self.bank_enabled.get(name, True) and (only_banks is None or name in only_banks) for name in self.bank_names]
        return ok & np.asarray(allowed, dtype=bool)[self.bank_codes[rows]]

    def search_pairs(self, queries: np.ndarray, k: int, radius: float, only_banks: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, row, distance) hit within `radius` as three arrays (bag signals search
        many rows at once); postings are gathered without a Python loop."""
        if self.params.type != "postings" or len(self) == 0:
            lists = self.search_rows(queries, k, radius, only_banks)
            query = np.repeat(np.arange(len(lists)), [len(hits) for hits in lists])
            flat = [hit for hits in lists for hit in hits]
            return query, np.asarray([r for r, _ in flat], dtype=np.int64), np.asarray([d for _, d in flat], dtype=np.float32)
        keys, order = self._postings()
        query, positions = gather_ranges(np.searchsorted(keys, queries, "left"), np.searchsorted(keys, queries, "right"))
        rows = order[positions]
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
        return [[(self.entry_id(r), d) for r, d in hits] for hits in self.search_rows(queries, k, radius)]

    def search_rows(self, queries: np.ndarray, k: int, radius: float, only_banks: set[str] | None = None) -> list[list[tuple[int, float]]]:
        """As `search`, with row numbers; rows that may not match (`live`) are skipped."""
        if len(self.entry_ids) == 0 or self.params.type == "stored":
            return [[] for _ in range(len(queries))]
        if self.params.type == "exact":
            found = [np.asarray(self.table.get(q, []), dtype=np.int64) for q in queries]
            return [[(r, 0.0) for r in rows[self.live_rows(rows, only_banks)][:k].tolist()] for rows in found]
        if self.params.type == "postings":  # search_pairs gathers postings; grouped per query here
            query, rows, _ = self.search_pairs(queries, k, radius, only_banks)
            out: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
            for q, r in zip(query.tolist(), rows.tolist()):
                if len(out[q]) < k:
                    out[q].append((r, 0.0))
            return out
        if self.params.type.startswith("binary"):
            lims, dist, rows = self.index.range_search(np.ascontiguousarray(queries), int(radius) + 1)
            ok = self.live_rows(rows, only_banks)
            out = []
            for i in range(len(queries)):
                mine = slice(lims[i], lims[i + 1])
                hits = sorted(zip(dist[mine][ok[mine]].tolist(), rows[mine][ok[mine]].tolist()))[:k]
                out.append([(r, float(d)) for d, r in hits])
            return out
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        fetch = min(k, len(self.entry_ids))
        while True:  # fetch more when disabled rows took places in the top k
            sims, rows = self.index.search(queries, fetch)
            ok = (rows >= 0) & (1.0 - sims <= radius) & self.live_rows(np.maximum(rows, 0).ravel(), only_banks).reshape(rows.shape)
            out = [
                [(r, float(1.0 - s)) for s, r, keep in zip(srow, rrow, krow) if keep][:k]
                for srow, rrow, krow in zip(sims.tolist(), rows.tolist(), ok.tolist())
            ]
            short = any(len(o) < k and rrow[-1] >= 0 and 1.0 - srow[-1] <= radius for o, srow, rrow in zip(out, sims.tolist(), rows.tolist()))
            if not short or fetch >= len(self.entry_ids):
                return out
            fetch = min(fetch * 4, len(self.entry_ids))


def row_flags(table: pa.Table) -> dict:
    """The bank, enabled and time columns of a signal or shard-ids table, as `Shard.of` takes them."""
    has = table.column_names
    return {
        "banks": table.column("bank") if "bank" in has else None,
        **{name: table.column(column).to_numpy() if column in has else None for name, column in (("enabled", "enabled"), ("times", "time"))},
    }


def bank_column(banks) -> tuple[np.ndarray, list[str]]:
    """A bank name per row (a list, numpy or Arrow array) as small integer codes into the list of names."""
    encoded = string_array(banks).dictionary_encode()
    names = encoded.dictionary.to_pylist()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(code_type(len(names))), names


def code_type(names: int) -> np.dtype:
    """The smallest unsigned integer type that numbers this many names."""
    return np.min_scalar_type(max(names - 1, 0))


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
