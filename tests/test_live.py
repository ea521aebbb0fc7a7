"""LiveIndex: what a searcher holds follows the catalog commit by commit and swaps versions whole."""

from __future__ import annotations

from conftest import TURNS, asymmetric, jpeg
from mediamatch.indexing.reindex import reindex
from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.settings import IndexSettings, Settings
from mediamatch.platform.signals import SIGNAL_TYPES

PDQ = SIGNAL_TYPES["pdq"]


def hashes(n: int, seed: int = 0) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def found(live: LiveIndex, value: str, banks=None) -> list[str]:
    live.catch_up(live.state)
    _, (hits,) = live.search(PDQ.encode([value]), 10, 31, banks)
    return [entry_id for entry_id, _, _, _ in hits]


def add(catalog: Catalog, bank: str, values: list[str]) -> list[Entry]:
    return catalog.add_entries(bank, [Entry(bank=bank, content_type="photo", signals={"pdq": v}) for v in values])


def test_delta_follows_every_catalog_change(local_store):
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    catalog.create_bank("b")
    live = LiveIndex(local_store, PDQ)
    (x,) = add(catalog, "a", hashes(1, 1))
    (y,) = add(catalog, "b", hashes(1, 2))
    assert found(live, x.signals["pdq"]) == [x.entry_id]
    assert found(live, y.signals["pdq"], banks={"a"}) == []
    catalog.update_entry("a", x.entry_id, enabled=False)
    assert found(live, x.signals["pdq"]) == []
    catalog.update_entry("a", x.entry_id, enabled=True)
    catalog.update_bank("a", enabled=False)
    assert found(live, x.signals["pdq"]) == []
    catalog.update_bank("a", enabled=True)
    assert found(live, x.signals["pdq"]) == [x.entry_id]
    catalog.delete_bank("a")
    catalog.create_bank("a")  # the same name again starts empty
    assert found(live, x.signals["pdq"]) == []
    (z,) = add(catalog, "a", [x.signals["pdq"]])
    assert found(live, x.signals["pdq"]) == [z.entry_id]
    catalog.delete_entry("b", y.entry_id)
    assert found(live, y.signals["pdq"]) == [] and live.status()["live_delta"] == 1


def test_turned_and_mirrored_photos_match_naming_the_transform(local_store, photos):
    """A query photo is searched in its 8 dihedral forms (`compute_query`); a banked photo
    answers with the form nearest it, named. Its plain hash (a client's raw signal) finds only
    the untransformed copy, with no transform named, as before."""
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    banked = asymmetric(photos)[:6]
    entries = add(catalog, "a", [PDQ.compute(jpeg(p)).value for p in banked])
    live = LiveIndex(local_store, PDQ)
    for entry, photo in zip(entries, banked):
        for transform, turn in TURNS.items():
            copy = jpeg(photo if turn is None else photo.transpose(turn), quality=80)
            _, [hits] = live.search_values([PDQ.compute_query(copy).value], 10, 31)
            assert [(h[0], h[3]) for h in hits] == [(entry.entry_id, transform)], (transform, hits)
            _, [plain] = live.search_values([PDQ.compute(copy).value], 10, 31)
            assert [h[0] for h in plain] == ([entry.entry_id] if turn is None else []), transform
            assert plain == live.search(PDQ.encode([PDQ.compute(copy).value]), 10, 31)[1][0]


def test_slots_split_the_delta(local_store):
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    entries = add(catalog, "a", hashes(40, 3))
    slots = [LiveIndex(local_store, PDQ, slot, 2) for slot in range(2)]
    for entry in entries:
        assert sum(found(s, entry.signals["pdq"]) == [entry.entry_id] for s in slots) == 1
    assert sum(s.status()["live_delta"] for s in slots) == 40 and min(s.status()["live_delta"] for s in slots) > 5


def test_published_version_swaps_in_and_flags_survive(local_store, ray_session):
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    entries = add(catalog, "a", hashes(30, 4))
    catalog.update_entry("a", entries[0].entry_id, enabled=False)
    live = LiveIndex(local_store, PDQ)
    assert live.status() == {"version": None, "count": 0, "live_delta": 29, "catalog_seq": catalog.seq}
    settings = Settings(storage=local_store.uri, index=IndexSettings(shards=2))
    manifest = reindex(settings, ["pdq"], store=local_store)["pdq"]
    (later,) = add(catalog, "a", hashes(1, 5))
    assert live.refresh() is True and live.refresh() is False
    assert live.status() == {"version": manifest.version, "count": 30, "live_delta": 1, "catalog_seq": catalog.seq}
    assert found(live, later.signals["pdq"]) == [later.entry_id]
    assert found(live, entries[0].signals["pdq"]) == []
    catalog.update_entry("a", entries[0].entry_id, enabled=True)  # indexed, flagged: no rebuild needed
    assert found(live, entries[0].signals["pdq"]) == [entries[0].entry_id]
    old = live.state
    catalog.update_entry("a", entries[1].entry_id, enabled=False)
    live.versions.rollback(manifest.version)  # the pointer moves (to the same version): nothing to swap
    assert live.refresh() is False and live.state is old and found(live, entries[1].signals["pdq"]) == []


def test_published_postings_answer_dihedral_queries_as_exact_search(local_store):
    """A published binary_postings shard beside the live delta answers queries of 8 dihedral
    forms as an exact (binary_flat) shard of the same rows does: per entry its nearest form,
    named, nearest first, k of them; disabled rows and banks skipped."""
    import numpy as np

    from mediamatch.platform.index import Shard, choose_params

    rng = np.random.default_rng(6)
    banked = rng.integers(0, 256, (4000, 32), dtype=np.uint8)
    bits = np.unpackbits(banked[rng.integers(0, 4000, 8 * 30)], axis=1)  # 30 queries of 8 forms, each near some banked row
    for row in bits:
        row[rng.choice(256, size=rng.integers(0, 40), replace=False)] ^= 1
    forms = np.packbits(bits, axis=1)
    values = [",".join(h.tobytes().hex() for h in forms[i : i + 8]) for i in range(0, len(forms), 8)]
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    add(catalog, "a", [forms[8 * i + 3].tobytes().hex() for i in range(5)])  # banked since: in the delta
    banks, enabled, answers = np.asarray(["a", "off"])[np.arange(4000) % 2], rng.random(4000) > 0.2, []
    for kind in ("binary_postings", "binary_flat"):
        params = choose_params(PDQ, len(banked), IndexSettings(flat_max=1000)).model_copy(update={"type": kind})
        shard = Shard.build(params, [f"p{i}" for i in range(len(banked))], banked, None, banks=banks, enabled=enabled)
        shard.bank_enabled = {"off": False}
        live = LiveIndex(local_store, PDQ)
        live.state.shards.append(shard)  # as `LiveIndex.load` does with a published version's shards
        answers.append(live.search_values(values, 3, 31)[1])
    assert answers[0] == answers[1]
    hits = [h for row in answers[0] for h in row]
    assert {h[3] for h in hits} - {None} and any(h[0].startswith("e_") for h in hits) and any(h[0].startswith("p") for h in hits)
    assert all(h[2] <= 31 and int(h[0][1:]) % 2 == 0 for h in hits if h[0].startswith("p"))


def test_quick_searches_are_hash_indexes_that_need_no_catch_up(local_store):
    """What a searcher may search on its event loop (`ShardSearcher._on_loop`): hash indexes
    caught up with the request's commit; a float index, a bag, or a catch-up go to a thread."""
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    live = {name: LiveIndex(local_store, SIGNAL_TYPES[name]) for name in ("pdq", "md5", "image_embedding", "vpdq")}
    seq = catalog.seq
    assert [name for name, index in live.items() if index.quick(seq)] == ["pdq", "md5"]
    (x,) = add(catalog, "a", hashes(1, 3))
    assert not live["pdq"].quick(catalog.seq)  # behind the write: the search would read the log first
    assert found(live["pdq"], x.signals["pdq"]) == [x.entry_id] and live["pdq"].quick(catalog.seq)
