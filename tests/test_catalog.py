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
