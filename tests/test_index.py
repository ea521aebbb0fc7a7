"""Index types chosen from the data, and their search against exact answers."""

import numpy as np

from mediamatch.platform.index import Shard, choose_params, merge_results, train_index
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


def test_multihash_finds_everything_within_the_threshold():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 256, size=(20_000, 32), dtype=np.uint8)
    ids = [f"e{i}" for i in range(len(hashes))]
    bits = np.unpackbits(hashes[:200], axis=1)
    for i, row in enumerate(bits):
        row[rng.choice(256, size=i % 32, replace=False)] ^= 1  # 0..31 bits away
    queries = np.packbits(bits, axis=1)
    params = choose_params(PDQ, len(hashes), IndexSettings(flat_max=1000))
    multihash = Shard.build(params, ids, hashes, None).search(queries, 100, 31)
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


def test_exact_digest_shard():
    shard = Shard.build(choose_params(SIGNAL_TYPES["md5"], 3, IndexSettings()), ["a", "b", "c"], np.array(["x", "y", "x"], dtype=object), None)
    assert shard.search(["x", "z"], 10, 0) == [[("a", 0.0), ("c", 0.0)], []]
