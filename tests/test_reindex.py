"""The reindex job end to end, on a local directory and on S3: build, publish, search, fail, roll back."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

from conftest import CONFORMANCE, jpeg
from mediamatch.indexing.reindex import SignalFiles, evaluate_shard, perturb_queries, recall_at_k, reindex
from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.errors import NotFound, StorageError
from mediamatch.platform.index import ExactTopK, Shard, choose_params, merge_results, set_nprobe, train_index
from mediamatch.platform.settings import IndexSettings, Settings
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.storage import ObjectStore
from mediamatch.platform.versions import IndexVersions

PDQ, EMB, TEXT_EXACT = SIGNAL_TYPES["pdq"], SIGNAL_TYPES["text_embedding"], SIGNAL_TYPES["text_exact"]
BRIDGE = CONFORMANCE / "pdq" / "data" / "bridge-mods" / "aaa-orig.jpg"


def settings_for(store: ObjectStore, **index) -> Settings:
    # flat_max below the bank sizes, so the approximate index types (multi-hash, IVF-PQ) are built
    index = {"flat_max": 500, "shards": 2, "recall_queries": 100, **index}
    return Settings(storage=store.uri, s3_endpoint=store.endpoint, index=IndexSettings(**index))


def search(store: ObjectStore, signal_type, queries, k: int, radius: float, version: str | None = None):
    """Query every shard of the published (or a given) version and merge, as the searchers will."""
    versions = IndexVersions(store, signal_type.name)
    manifest = versions.get(version) if version else versions.current()
    shards = [versions.load_shard(manifest, i) for i in range(len(manifest.shards))]
    return merge_results([s.search(signal_type.encode(queries), k, radius) for s in shards], k)


@lru_cache(maxsize=1)
def pdq_of(photos: tuple[bytes, ...]) -> tuple:
    return tuple(PDQ.compute(p).value for p in photos)


def bank_photos(catalog: Catalog, bank: str, photos: list[bytes]) -> list[Entry]:
    hashes = pdq_of(tuple(photos))
    entries = [Entry(bank=bank, content_type="photo", signals={"pdq": h}) for h in hashes if h]
    return catalog.add_entries(bank, entries)



def test_faiss_multihash_by_setting_is_built_checked_and_searched(tmp_path, ray_session, photo_corpus):
    """`index.binary_index: faiss_multihash` builds PDQ shards with faiss's multi-hash (exact
    within the radius, as the default postings), and the job checks its recall the same way."""
    store = ObjectStore(str(tmp_path))
    catalog = Catalog(store)
    catalog.create_bank("photos")
    entries = bank_photos(catalog, "photos", photo_corpus)
    pdq = reindex(settings_for(store, binary_index="faiss_multihash"), ["pdq"], store=store)["pdq"]
    assert pdq.params.type == "binary_multihash" and pdq.recall_at_10 == 1.0 and "vs exact search" in pdq.recall_method
    hits = search(store, PDQ, [e.signals["pdq"] for e in entries], 100, 31)
    assert all(e.entry_id in {h for h, _ in row} for e, row in zip(entries, hits))

def test_round_trip(store, ray_session, photo_corpus, text_corpus):
    catalog = Catalog(store)
    catalog.create_bank("photos", labels=["test"])
    catalog.create_bank("texts")
    photo_entries = bank_photos(catalog, "photos", photo_corpus)
    bridge = catalog.add_entries("photos", [Entry(bank="photos", content_type="photo", signals={"pdq": PDQ.compute(BRIDGE.read_bytes()).value})])[0]
    text_entries = catalog.add_entries(
        "texts",
        # text_embedding is left out on purpose: the job computes it from the stored media
        [Entry(bank="texts", content_type="text", signals={"text_exact": TEXT_EXACT.compute(t).value}, media=catalog.put_media(t.encode())) for t in text_corpus],
    )
    assert len(photo_entries) == 1000 and len(text_entries) == 1000

    manifests = reindex(settings_for(store), store=store)

    pdq, emb = manifests["pdq"], manifests["text_embedding"]
    assert (pdq.params.type, pdq.count, len(pdq.shards)) == ("binary_postings", len(photo_entries) + 1, 2)
    assert (emb.params.type, emb.count, len(emb.shards)) == ("ivfpq", 1000, 2)
    assert pdq.recall_at_10 == 1.0 and emb.recall_at_10 >= 0.95 and emb.params.nprobe >= 1
    assert manifests["text_exact"].count == 1000 and manifests["md5"].count == 1000  # md5 of the text media
    assert all(m.version == "v00000001" for m in manifests.values())
    assert emb.params.refine == "fp16"
    assert not [k for k in store.list("indexes") if "/signals/" in k]  # the job's signals files are gone once published

    hits = search(store, PDQ, [e.signals["pdq"] for e in photo_entries], 100, 31)
    assert all(e.entry_id in {h for h, _ in row} for e, row in zip(photo_entries, hits))
    hits = search(store, TEXT_EXACT, [e.signals["text_exact"] for e in text_entries], 10, 0)
    assert all(e.entry_id in {h for h, _ in row} for e, row in zip(text_entries, hits))
    vectors = [s.value for s in EMB.compute_batch(text_corpus)]
    hits = search(store, EMB, vectors, 10, EMB.default_threshold)
    found = np.mean([e.entry_id in {h for h, _ in row} for e, row in zip(text_entries, hits)])
    assert found == 1.0

    image = Image.open(BRIDGE).convert("RGB")
    edited = jpeg(image.resize((image.width // 2, image.height // 2)), quality=50)
    (row,) = search(store, PDQ, [PDQ.compute(edited).value], 10, 31)
    assert bridge.entry_id in {h for h, _ in row}


def test_disabled_entries_are_indexed_flagged_and_deleted_ones_leave(local_store, ray_session, photo_corpus):
    catalog = Catalog(local_store)
    for bank in ("live", "off"):
        catalog.create_bank(bank)
    live = bank_photos(catalog, "live", photo_corpus[:30])
    bank_photos(catalog, "off", photo_corpus[30:40])
    catalog.update_bank("off", enabled=False)
    catalog.update_entry("live", live[0].entry_id, enabled=False)
    catalog.delete_entry("live", live[1].entry_id)
    manifest = reindex(settings_for(local_store), ["pdq"], store=local_store)["pdq"]
    # disabled rows stay in the index, flagged, so enabling them again needs no rebuild
    assert manifest.params.type == "binary_flat" and manifest.count == len(live) - 1 + 10
    assert manifest.banks == {"live": True, "off": False}
    hits = search(local_store, PDQ, [e.signals["pdq"] for e in live[:3]], 100, 0)
    assert [live[2].entry_id] == [h for h, _ in hits[2]] and not any(h == live[0].entry_id for h, _ in hits[0])
    off = search(local_store, PDQ, [pdq_of(tuple(photo_corpus[30:40]))[0]], 100, 0)
    assert off == [[]]
    found = 0
    for number in range(len(manifest.shards)):
        shard = IndexVersions(local_store, "pdq").load_shard(manifest, number)
        shard.bank_enabled["off"] = True  # as the service does when the bank is enabled again
        found += len(shard.search(PDQ.encode([pdq_of(tuple(photo_corpus[30:40]))[0]]), 10, 0)[0])
    assert found == 1


def test_empty_catalog_publishes_empty_indexes(local_store, ray_session):
    manifests = reindex(settings_for(local_store), store=local_store)
    assert {m.count for m in manifests.values()} == {0}
    assert search(local_store, PDQ, ["00" * 32], 10, 31) == [[]]


class FaultyStore(ObjectStore):
    """A store whose writes to keys matching `fail` raise, as a store dying mid-job would.

    It travels to the job's Ray workers by pickling, so the fault strikes wherever the write runs.
    """

    def __init__(self, base: ObjectStore, fail: str):
        super().__init__(base.uri, endpoint=base.endpoint, region=base.region)
        self.fail = fail

    def _check(self, key: str) -> None:
        if re.search(self.fail, key):
            raise StorageError(f"injected fault writing {key}")

    def put(self, key: str, data: bytes) -> None:
        self._check(key)
        super().put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._check(key)
        return super().put_if_absent(key, data)


@pytest.mark.parametrize("fail", ["shard-0001", "/versions/", "/current/"])
def test_failed_job_publishes_nothing(store, ray_session, photo_corpus, fail):
    catalog = Catalog(store)
    catalog.create_bank("b")
    first = bank_photos(catalog, "b", photo_corpus[:600])
    settings = settings_for(store)
    v1 = reindex(settings, ["pdq"], store=store)["pdq"]
    bank_photos(catalog, "b", photo_corpus[600:700])

    with pytest.raises(StorageError, match="injected"):
        reindex(settings, ["pdq"], store=FaultyStore(store, fail))

    versions = IndexVersions(store, "pdq")
    assert versions.current_version() == v1.version
    hits = search(store, PDQ, [first[0].signals["pdq"]], 10, 0)
    assert hits[0][0][0] == first[0].entry_id
    builds = {k.split("/")[3] for k in store.list("indexes/pdq/builds")}
    if fail == "/current/":  # recorded as v2 but never published: its files stay, named by its manifest
        assert [m.version for m in versions.list()] == ["v00000001", "v00000002"] and len(builds) == 2
    else:
        assert [m.version for m in versions.list()] == ["v00000001"] and builds == {v1.build_id}


def test_rollback(local_store, ray_session, photo_corpus):
    catalog = Catalog(local_store)
    catalog.create_bank("b")
    old = bank_photos(catalog, "b", photo_corpus[:20])
    settings = settings_for(local_store)
    v1 = reindex(settings, ["pdq"], store=local_store)["pdq"]
    catalog.delete_entry("b", old[0].entry_id)
    v2 = reindex(settings, ["pdq"], store=local_store)["pdq"]
    versions = IndexVersions(local_store, "pdq")
    assert versions.current_version() == v2.version == "v00000002"
    assert search(local_store, PDQ, [old[0].signals["pdq"]], 10, 0) == [[]]
    versions.rollback(v1.version)
    assert versions.current_version() == "v00000001"
    assert search(local_store, PDQ, [old[0].signals["pdq"]], 10, 0)[0][0][0] == old[0].entry_id
    with pytest.raises(NotFound):
        versions.rollback("v00000099")


def test_signal_files_split_into_contiguous_row_ranges_of_equal_size():
    """Each shard task reads its rows as slices of the signals files: every row once, in order."""
    files = SignalFiles(None, "f", [("a", 5), ("b", 1), ("c", 7), ("d", 3)])
    for parts in range(1, 18):
        split = files.split(parts)
        rows = [(key, row) for slices in split for key, lo, hi in slices for row in range(lo, hi)]
        assert rows == [(key, row) for key, n in files.files for row in range(n)]
        sizes = [sum(hi - lo for _, lo, hi in slices) for slices in split]
        assert len(split) == parts and max(sizes) - min(sizes) <= 1
    assert files.split(0) == []


def test_nprobe_tuning_stops_where_recall_stops_rising():
    """Where the re-rank's candidates cap recall below the target, doubling nprobe up to nlist
    only slows every search: the tuning stops once a doubling gains less than PLATEAU."""
    rng = np.random.default_rng(7)
    centres = EMB.encode(rng.standard_normal((64, EMB.dim)))
    data = EMB.encode(centres[rng.integers(0, 64, 20_000)] + rng.standard_normal((20_000, EMB.dim)) / np.sqrt(EMB.dim))
    params = choose_params(EMB, len(data), IndexSettings(flat_max=1000))
    shard = Shard.build(params, [str(i) for i in range(len(data))], data, train_index(params, data[: params.train_size]))
    queries = perturb_queries(EMB, data[rng.choice(len(data), 200, replace=False)], rng)
    top = ExactTopK(queries, 10)
    top.add(data)
    exact = [[(str(r), d) for r, d in hits] for hits in top.hits()]

    tuned = evaluate_shard(shard, queries, exact, 1.0, 2.0)["approx"]
    set_nprobe(shard.index, params.nlist)
    best = recall_at_k(shard.search(queries, 10, 2.0), exact)
    print(f"recall@10 by nprobe {[(p, round(recall_at_k(hits, exact), 3)) for p, hits in tuned.items()]}; at nlist {params.nlist}: {best:.3f}")
    assert best < 1.0 and max(tuned) < params.nlist
    assert recall_at_k(tuned[max(tuned)], exact) >= best - 0.02


@pytest.mark.parametrize("flat_max, damage", [(50_000, "truncate"), (500, "flip")])
def test_a_damaged_index_file_is_refused_while_it_streams_in(local_store, ray_session, photo_corpus, flat_max, damage):
    """Index files are read and hashed in parts, never held whole beside the index: a file that
    no longer matches its manifest is refused, whether faiss can parse it (a flipped byte in
    postings' codes) or not (a truncated faiss file)."""
    from mediamatch.platform.versions import IndexChecksumError

    catalog = Catalog(local_store)
    catalog.create_bank("b")
    bank_photos(catalog, "b", photo_corpus[:600])
    manifest = reindex(settings_for(local_store, flat_max=flat_max, shards=1), ["pdq"], store=local_store)["pdq"]
    versions = IndexVersions(local_store, "pdq")
    assert manifest.params.type == ("binary_flat" if damage == "truncate" else "binary_postings")
    assert len(versions.load_shard(manifest, 0)) == manifest.count == 600
    path = local_store.path(manifest.shards[0].index)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 1
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(IndexChecksumError, match="does not match"):
        versions.load_shard(manifest, 0)
