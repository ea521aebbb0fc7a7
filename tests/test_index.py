"""Index types chosen from the data, and their search against exact answers."""

import numpy as np
import pytest

from mediamatch.platform.index import ExactTopK, Shard, add_chunks, choose_params, deserialize, merge_results, serialize, train_index
from mediamatch.platform.settings import IndexSettings
from mediamatch.platform.signals import SIGNAL_TYPES

PDQ, EMB = SIGNAL_TYPES["pdq"], SIGNAL_TYPES["text_embedding"]


def test_choose_params_follows_count_and_dimension():
    settings = IndexSettings(flat_max=1000)
    assert choose_params(PDQ, 999, settings).type == "binary_flat"
    multihash = choose_params(PDQ, 10_000, settings)
    assert multihash.type == "binary_postings" and multihash.exact_radius >= 31
    assert choose_params(EMB, 999, settings).type == "flat"
    small, big = choose_params(EMB, 100_000, settings), choose_params(EMB, 10_000_000, settings)
    assert small.type == big.type == "ivfpq" and small.nlist < big.nlist and EMB.dim % small.m == 0
    assert choose_params(SIGNAL_TYPES["md5"], 10**9, settings).type == "exact"


@pytest.mark.parametrize("binary_index", ["postings", "faiss_multihash"])
def test_multihash_finds_everything_within_the_threshold(binary_index):
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 256, size=(20_000, 32), dtype=np.uint8)
    ids = [f"e{i}" for i in range(len(hashes))]
    bits = np.unpackbits(hashes[:200], axis=1)
    for i, row in enumerate(bits):
        row[rng.choice(256, size=i % 32, replace=False)] ^= 1  # 0..31 bits away
    queries = np.packbits(bits, axis=1)
    params = choose_params(PDQ, len(hashes), IndexSettings(flat_max=1000, binary_index=binary_index))
    assert params.type == {"postings": "binary_postings", "faiss_multihash": "binary_multihash"}[binary_index]
    built = Shard.build(params, ids, hashes, None)
    multihash = Shard.of(params, built.entry_ids, index=deserialize(params, serialize(built.index))).search(queries, 100, 31)  # as a searcher loads it
    exact = Shard.build(params.model_copy(update={"type": "binary_flat"}), ids, hashes, None).search(queries, 100, 31)
    assert multihash == exact
    assert all(hits[0][0] == f"e{i}" for i, hits in enumerate(exact))


def test_ivfpq_with_rerank_is_accurate_across_shards():
    rng = np.random.default_rng(2)
    centres = EMB.encode(rng.standard_normal((64, EMB.dim)))
    data = EMB.encode(centres[rng.integers(0, 64, 6000)] + 0.3 * rng.standard_normal((6000, EMB.dim)) / np.sqrt(EMB.dim) * 4)
    ids = [f"e{i}" for i in range(len(data))]
    params = choose_params(EMB, len(data), IndexSettings(flat_max=1000)).model_copy(update={"nprobe": 8})
    trained = train_index(params, data[rng.permutation(len(data))[:3000]])
    shards = [Shard.build(params, ids[i::2], data[i::2], trained) for i in range(2)]
    queries = data[:100]
    merged = merge_results([s.search(queries, 10, 2.0) for s in shards], 10)
    exact = Shard.build(params.model_copy(update={"type": "flat"}), ids, data, None).search(queries, 10, 2.0)
    recall = np.mean([len({e for e, _ in a} & {e for e, _ in b}) / 10 for a, b in zip(merged, exact)])
    assert recall >= 0.9
    assert all(hits[0][0] == f"e{i}" and hits[0][1] < 1e-4 for i, hits in enumerate(merged))


def test_an_index_added_to_by_chunks_and_its_exact_top_k_by_chunks():
    """The reindex job adds a shard's vectors one file at a time and finds the held-out queries'
    exact top 10 on the way: the same index as one add, the same answers as one flat search."""
    rng = np.random.default_rng(5)
    data = EMB.encode(rng.standard_normal((4000, EMB.dim)))
    params = choose_params(EMB, len(data), IndexSettings(flat_max=1000)).model_copy(update={"nprobe": 4})
    trained = train_index(params, data)
    chunks = np.array_split(data, [700, 1500, 1501, 3999])
    by_chunks = add_chunks(deserialize(params, trained), chunks)
    once = Shard.build(params, [str(i) for i in range(len(data))], data, trained).index
    assert serialize(by_chunks) == serialize(once)

    queries = data[rng.choice(len(data), 50, replace=False)]
    top = ExactTopK(queries, 10)
    for chunk in chunks:
        top.add(chunk)
    flat = Shard.build(params.model_copy(update={"type": "flat"}), [str(i) for i in range(len(data))], data, None)
    assert [[(str(r), round(d, 5)) for r, d in hits] for hits in top.hits()] == [[(e, round(d, 5)) for e, d in hits] for hits in flat.search(queries, 10, 2.0)]


def test_the_rerank_copy_is_float16_by_default():
    """IVF-PQ's re-rank copy of the vectors is float16: half the exact floats' memory, cosine
    distances within 1e-4 of the exact ones (an exact copy's self-distance is 0); the exact
    floats remain a setting."""
    import faiss

    params = choose_params(EMB, 100_000, IndexSettings(flat_max=1000))
    assert params.refine == "fp16"
    rng = np.random.default_rng(6)
    data = EMB.encode(rng.standard_normal((3000, EMB.dim)))
    small = params.model_copy(update={"nlist": 16, "train_size": 3000})
    sizes = {}
    for refine in ("fp16", "flat"):
        shard = Shard.build(small.model_copy(update={"refine": refine}), [str(i) for i in range(len(data))], data, train_index(small.model_copy(update={"refine": refine}), data))
        sizes[refine] = len(serialize(shard.index))
        hits = shard.search(data[:20], 1, 2.0)
        assert all(h[0][0] == str(i) and h[0][1] < 1e-4 for i, h in enumerate(hits))
    assert isinstance(faiss.downcast_index(deserialize(small, serialize(shard.index)).refine_index), faiss.IndexFlat)
    assert sizes["fp16"] < 0.6 * sizes["flat"]


def test_exact_digest_shard():
    shard = Shard.build(choose_params(SIGNAL_TYPES["md5"], 3, IndexSettings()), ["a", "b", "c"], np.array(["x", "y", "x"], dtype=object), None)
    assert shard.search(["x", "z"], 10, 0) == [[("a", 0.0), ("c", 0.0)], []]


# -- binary_postings: exact against brute force, and the shard's compact columns -------------------
POSTINGS = choose_params(PDQ, 10_000, IndexSettings(flat_max=1000))


def near(rng, hashes: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Each hash with flips[i] distinct bits flipped."""
    bits = np.unpackbits(hashes, axis=1)
    for row, n in zip(bits, flips):
        row[rng.choice(256, size=n, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def brute_force(hashes: np.ndarray, queries: np.ndarray, k: int, radius: int, live: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
    """Per query, the k nearest live rows within radius (by distance, then row), by counting every row's bits."""
    out = []
    for q in queries:
        distance = np.unpackbits(hashes ^ q, axis=1).sum(1)
        rows = np.flatnonzero((distance <= radius) & (True if live is None else live))
        rows = rows[np.lexsort((rows, distance[rows]))][:k]
        out.append([(int(r), float(distance[r])) for r in rows])
    return out


def test_binary_postings_is_exact_to_the_radius_on_random_and_near_duplicate_hashes():
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 256, size=(30_000, 32), dtype=np.uint8)
    hashes[20_000:] = near(rng, hashes[rng.integers(0, 20_000, 10_000)], rng.integers(1, 40, 10_000))  # families of near-duplicates
    queries = near(rng, hashes[rng.choice(len(hashes), 300, replace=False)], np.arange(300) % 40)  # 0..39 bits from a banked hash
    shard = Shard.build(POSTINGS, [f"e{i}" for i in range(len(hashes))], hashes, None)
    assert shard.search_rows(queries, 1000, 31) == brute_force(hashes, queries, 1000, 31)
    assert shard.search_rows(queries, 1000, 12) == brute_force(hashes, queries, 1000, 12)  # any radius below the exact one
    assert shard.search_rows(queries[:40], 3, 31) == brute_force(hashes, queries[:40], 3, 31)  # k smaller than the hits: the nearest


def test_binary_postings_scans_many_queries_in_blocks(monkeypatch):
    """A batch whose candidates exceed SCAN_BLOCK is scanned in blocks (one query alone may exceed it)."""
    from mediamatch.platform import index

    rng = np.random.default_rng(8)
    hashes = np.repeat(rng.integers(0, 256, size=(50, 32), dtype=np.uint8), 40, axis=0)  # 40 copies of each: big posting lists
    queries = near(rng, hashes[rng.choice(len(hashes), 64)], rng.integers(0, 32, 64))
    shard = Shard.build(POSTINGS, [f"e{i}" for i in range(len(hashes))], hashes, None)
    whole = shard.search_rows(queries, 100, 31)
    blocks = []
    scan = index.BinaryPostings._scan
    monkeypatch.setattr(index.BinaryPostings, "_scan", lambda self, q, *rest: blocks.append(len(q)) or scan(self, q, *rest))
    monkeypatch.setattr(index, "SCAN_BLOCK", 1000)  # a query has up to ~640 candidates here: 1 or 2 a block
    assert shard.search_rows(queries, 100, 31) == whole == brute_force(hashes, queries, 100, 31)
    assert sum(blocks) == 64 and 32 <= len(blocks) < 64
    blocks.clear()
    monkeypatch.setattr(index, "SCAN_BLOCK", 100)  # less than one query's
    assert shard.search_rows(queries, 100, 31) == whole and blocks == [1] * 64


def test_binary_postings_edge_cases():
    empty = Shard.build(POSTINGS, [], np.zeros((0, 32), np.uint8), None)
    assert empty.search(np.zeros((2, 32), np.uint8), 10, 31) == [[], []]
    assert empty.index.range_search(np.zeros((2, 32), np.uint8), 32)[0].tolist() == [0, 0, 0]

    same = np.full((3000, 32), 0xA5, np.uint8)  # every row in one posting list of every chunk
    shard = Shard.build(POSTINGS, [f"e{i}" for i in range(len(same))], same, None)
    assert shard.search_rows(same[:1], 5000, 31) == [[(r, 0.0) for r in range(3000)]]  # each row once
    assert shard.search_rows(same[:1], 4, 31) == [[(r, 0.0) for r in range(4)]]
    far = near(np.random.default_rng(0), same[:2], [31, 32])
    assert [len(hits) for hits in shard.search_rows(far, 5000, 31)] == [3000, 0]

    serialized = Shard.of(POSTINGS, shard.entry_ids, index=deserialize(POSTINGS, serialize(shard.index)))  # as a shard file holds it
    assert serialized.search_rows(far, 5000, 31) == shard.search_rows(far, 5000, 31)


def test_binary_postings_rows_added_after_the_sort_are_found():
    """Appended rows are scanned until there are enough to sort again; both are exact."""
    rng = np.random.default_rng(4)
    hashes = rng.integers(0, 256, size=(12_000, 32), dtype=np.uint8)
    hashes[6000:] = near(rng, hashes[:6000], rng.integers(0, 32, 6000))
    shard = Shard.build(POSTINGS, [f"e{i}" for i in range(2000)], hashes[:2000], None, banks=["a"] * 2000, enabled=[True] * 2000, times=[0.0] * 2000)
    queries = near(rng, hashes[rng.choice(len(hashes), 200, replace=False)], rng.integers(0, 32, 200))
    for start, end in ((2000, 2100), (2100, 6000), (6000, 12_000)):
        shard.add([f"e{i}" for i in range(start, end)], ["b"] * (end - start), hashes[start:end])
        assert shard.search_rows(queries, 1000, 31) == brute_force(hashes[:end], queries, 1000, 31), (start, end, shard.index.sorted)
    assert shard.index.sorted == 12_000 and shard.bank_names == ["a", "b"]


def test_disabled_rows_and_banks_do_not_match():
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
    hashes[1:] = near(rng, np.repeat(hashes[:1], 4999, axis=0), rng.integers(0, 32, 4999))  # all near row 0
    banks = np.asarray(["a", "b", "c"], dtype=object)[np.arange(5000) % 3]
    enabled = rng.random(5000) > 0.3
    for params in (POSTINGS, POSTINGS.model_copy(update={"type": "binary_flat"})):
        shard = Shard.build(params, [f"e{i}" for i in range(5000)], hashes, None, banks=banks, enabled=enabled)
        shard.bank_enabled = {"b": False}
        live = enabled & (banks != "b")
        assert shard.search_rows(hashes[:3], 50, 31) == brute_force(hashes, hashes[:3], 50, 31, live)
        assert shard.search_rows(hashes[:3], 50, 31, {"a"}) == brute_force(hashes, hashes[:3], 50, 31, live & (banks == "a"))
        assert shard.search_rows(hashes[:3], 50, 31, {"b"}) == [[], [], []]


def test_shard_columns_are_compact_and_give_back_str():
    ids = ["e_1", "ü-long-id-ünïcode", "e_1", "x"]
    shard = Shard.build(POSTINGS.model_copy(update={"type": "binary_flat"}), ids, np.zeros((4, 32), np.uint8), None,
                        banks=["n1", "n2", "n1", "n2"], enabled=[True] * 4, times=[0.0] * 4)
    assert shard.entry_ids.dtype.kind == "S" and shard.bank_codes.dtype == np.uint8 and shard.bank_names == ["n1", "n2"]
    assert [shard.entry_id(r) for r in range(4)] == ids and shard.ids_of(np.arange(4)).tolist() == ids
    assert [shard.bank(r) for r in range(4)] == shard.banks_of(np.arange(4)).tolist() == ["n1", "n2", "n1", "n2"]
    assert shard.rows_of("e_1").tolist() == [0, 2] and shard.rows_of("e_") .tolist() == []
    assert shard.rows_of("x" * 100).tolist() == []  # longer than the column's width: not cut to it
    assert shard.entry_rows() == {"e_1": 2, "ü-long-id-ünïcode": 1, "x": 1}
    assert shard.search(np.zeros((1, 32), np.uint8), 2, 0) == [[("e_1", 0.0), ("ü-long-id-ünïcode", 0.0)]]
    names = [f"bank-{i}" for i in range(300)]  # more banks than one byte numbers
    shard.add([f"n{i}" for i in range(300)], names, np.zeros((300, 32), np.uint8))
    assert shard.bank_codes.dtype == np.uint16 and shard.banks_of(np.arange(304)).tolist() == ["n1", "n2", "n1", "n2", *names]
    assert shard.in_bank("bank-7").nonzero()[0].tolist() == [11] and not shard.in_bank("nowhere").any()
    assert shard.entry_id(303) == "n299" and shard.rows_of("n299").tolist() == [303]


def test_versions_built_with_faiss_multihash_still_load_and_search():
    """A shard file written before binary_postings (faiss IndexBinaryMultiHash) answers as it did."""
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 256, size=(3000, 32), dtype=np.uint8)
    legacy = POSTINGS.model_copy(update={"type": "binary_multihash"})
    written = Shard.build(legacy, [f"e{i}" for i in range(3000)], hashes, None)
    loaded = Shard.of(legacy, written.entry_ids, index=deserialize(legacy, serialize(written.index)))
    queries = near(rng, hashes[:50], rng.integers(0, 32, 50))
    assert loaded.search_rows(queries, 10, 31) == brute_force(hashes, queries, 10, 31)
