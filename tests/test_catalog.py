"""The bank catalog: commits land whole, concurrent writers lose nothing, state survives reloads."""

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest

from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.errors import Conflict, InvalidInput, NotFound
from mediamatch.platform.storage import ObjectStore


def entry(i: int, bank: str = "b") -> Entry:
    return Entry(bank=bank, content_type="photo", signals={"md5": f"{i:032x}"}, metadata={"i": i})


def test_banks_and_entries_round_trip(store):
    catalog = Catalog(store)
    catalog.create_bank("terror-imagery", description="d", labels=["terrorism"])
    with pytest.raises(Conflict):
        catalog.create_bank("terror-imagery")
    with pytest.raises(InvalidInput):
        catalog.create_bank("Bad Name!")
    with pytest.raises(NotFound):
        catalog.add_entries("missing", [entry(0)])
    added = catalog.add_entries("terror-imagery", [entry(i) for i in range(5)])
    catalog.update_entry("terror-imagery", added[0].entry_id, enabled=False)
    catalog.delete_entry("terror-imagery", added[1].entry_id)
    catalog.update_bank("terror-imagery", description="new", enabled=False)

    fresh = Catalog(store)  # another process's view, from the log alone
    bank = fresh.get_bank("terror-imagery")
    assert (bank.description, bank.enabled, bank.labels, bank.entry_count) == ("new", False, ["terrorism"], 4)
    assert fresh.get_entry("terror-imagery", added[0].entry_id).enabled is False
    with pytest.raises(NotFound):
        fresh.get_entry("terror-imagery", added[1].entry_id)
    page, cursor = fresh.list_entries("terror-imagery", limit=3)
    rest, end = fresh.list_entries("terror-imagery", limit=3, cursor=cursor)
    assert len(page) == 3 and len(rest) == 1 and end is None
    assert {e.entry_id for e in page + rest} == {e.entry_id for e in added} - {added[1].entry_id}

    fresh.delete_bank("terror-imagery")
    assert Catalog(store).list_banks() == []


def test_snapshot_then_log(store):
    catalog = Catalog(store)
    catalog.create_bank("b")
    catalog.add_entries("b", [entry(i) for i in range(10)])
    seq = catalog.snapshot()
    catalog.add_entries("b", [entry(i) for i in range(10, 15)])
    reloaded = Catalog(store)
    assert reloaded.refresh() == seq + 1
    assert reloaded.get_bank("b").entry_count == 15
    assert reloaded.get_entry("b", catalog.list_entries("b", 1)[0][0].entry_id).metadata == {"i": 0}


def test_media_is_content_addressed(store):
    catalog = Catalog(store)
    digest = catalog.put_media(b"some bytes")
    assert catalog.put_media(b"some bytes") == digest
    assert catalog.get_media(digest) == b"some bytes"
    assert len(store.list("media")) == 1


def test_concurrent_writers_threads(store):
    Catalog(store).create_bank("b")

    def writer(w):
        catalog = Catalog(store)  # each writer its own view, as separate processes would have
        for i in range(10):
            catalog.add_entries("b", [entry(w * 100 + i)])

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(writer, range(6)))
    assert Catalog(store).get_bank("b").entry_count == 60


def _process_writer(args):
    root, w = args
    catalog = Catalog(ObjectStore(root))
    for i in range(10):
        catalog.add_entries("b", [entry(w * 100 + i), entry(w * 100 + 50 + i)])


def test_concurrent_writers_processes(tmp_path):
    root = str(tmp_path / "store")
    Catalog(ObjectStore(root)).create_bank("b")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_process_writer, [(root, w) for w in range(4)])
    catalog = Catalog(ObjectStore(root))
    assert catalog.get_bank("b").entry_count == 80
    assert catalog.refresh() == 41  # one create + 40 batches: nothing lost, nothing doubled


def test_entries_columnar_across_segments_overlay_and_snapshots(store, monkeypatch):
    """Entries kept as Arrow segments + an overlay: small commits fold into segments, big ones
    (batch files) are segments, changes and deletes of segment rows win, in every view."""
    from mediamatch.platform import entries as entries_module

    monkeypatch.setattr(entries_module, "FOLD_AT", 8)  # fold small commits often
    catalog = Catalog(store)
    catalog.create_bank("b")
    small = [e for i in range(30) for e in catalog.add_entries("b", [entry(i)])]  # 30 commits: folds and merges
    big = catalog.add_entries("b", [entry(1000 + i) for i in range(1500)])  # > INLINE_MAX: a batch file
    everything = small + big
    loaded = catalog.entries["b"]
    assert len(loaded.segments) < 8 and len(loaded.overlay) < 8
    catalog.update_entry("b", small[3].entry_id, enabled=False)  # a row of a folded segment
    catalog.update_entry("b", big[7].entry_id, metadata={"changed": True})  # a row of the batch file
    catalog.delete_entry("b", big[9].entry_id)
    catalog.delete_entry("b", small[29].entry_id)
    alive = [e.entry_id for e in everything if e.entry_id not in (big[9].entry_id, small[29].entry_id)]

    def check(view: Catalog) -> None:
        assert view.get_bank("b").entry_count == len(alive)
        bank = view.entries["b"]
        assert len(bank) == len(alive)
        assert [e["entry_id"] for e in bank.iter_entries()] == sorted(alive)
        assert bank.get(big[9].entry_id) is None and big[9].entry_id not in bank
        assert view.get_entry("b", small[3].entry_id).enabled is False
        assert view.get_entry("b", big[7].entry_id).metadata == {"changed": True}
        assert view.get_entry("b", big[8].entry_id).signals == {"md5": f"{1008:032x}"}
        assert bank.disabled_count() == 1
        pages, cursor = [], None
        while True:
            page, cursor = view.list_entries("b", limit=400, cursor=cursor)
            pages += [e.entry_id for e in page]
            if cursor is None:
                break
        assert pages == sorted(alive)

    check(catalog)
    check(Catalog(store))  # from the log alone
    catalog.snapshot()
    check(Catalog(store))  # from the snapshot


def test_batch_file_signals_round_trip_exactly(store):
    """A large batch's signal columns become each entry's signals JSON in Arrow's kernels:
    values that need escaping, vectors, unicode and missing signals come back as banked."""
    catalog = Catalog(store)
    catalog.create_bank("b")
    odd = ['quote " and backslash \\', "new\nline\ttab\x01", "ünïcødé ✓", ""]
    batch = []
    for i in range(1200):
        signals = {"md5": f"{i:032x}"} if i % 3 else {"text_minhash": odd[i % 4] + str(i)}
        if i % 5 == 0:
            signals["image_embedding"] = [i / 7, -0.5, 1e-9]
        batch.append(Entry(bank="b", content_type="photo", signals=signals, metadata={"i": i} if i % 2 else {}, labels=["x"] * (i % 2)))
    catalog.add_entries("b", batch)
    for view in (catalog, Catalog(store)):
        for e in batch[::7]:
            got = view.get_entry("b", e.entry_id)
            assert (got.signals, got.metadata, got.labels) == (e.signals, e.metadata, e.labels)


def test_coalesced_refresh_sees_every_change_made_before_the_call():
    """The ingress's per-request catalog refresh (`Coalesced`): calls that arrive while a run
    goes on share the next run, and every call sees each change made before it was made."""
    import asyncio
    import time

    from mediamatch.deployments.ingress import Coalesced

    state = {"changes": 0, "runs": 0}

    def refresh() -> int:
        seen = state["changes"]
        time.sleep(0.02)  # a store read
        state["runs"] += 1
        return seen

    coalesced = Coalesced(refresh)

    async def request(delay: float) -> tuple[int, int]:
        await asyncio.sleep(delay)
        state["changes"] += 1  # committed before this request asks
        return state["changes"], await coalesced()

    async def requests() -> list[tuple[int, int]]:
        return await asyncio.gather(*(request(i * 0.003) for i in range(60)))

    answers = asyncio.run(requests())
    assert all(seen >= made for made, seen in answers)
    assert 3 <= state["runs"] <= 20  # ~0.18 s of arrivals, 20 ms runs: shared, yet never one stale
