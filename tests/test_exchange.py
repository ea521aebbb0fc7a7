"""Hash-list exchange: import partners' lists (CSV, JSON Lines, Parquet; ThreatExchange / HMA
names), bad rows by line, batches whole, re-runs idempotent; export and re-import round trips."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediamatch.platform import exchange
from mediamatch.platform.catalog import INLINE_MAX, Catalog, Entry
from mediamatch.platform.errors import InvalidInput, StorageError
from mediamatch.platform.exchange import export_chunks, import_stream, open_source
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import SIGNAL_TYPES
from mediamatch.platform.storage import ObjectStore

BAD_ROWS = Path(__file__).parent / "data" / "bad-rows.csv"
# what each bad line of bad-rows.csv must be reported for (line 1 is the header)
BAD_REASONS = {
    3: "64-character hex", 4: "unknown signal type 'sha1'", 5: "metadata is not valid JSON", 6: "metadata must be a JSON object",
    7: "the signal is empty", 8: "duplicate pdq value (line 2)", 9: "4 fields where the header has 6", 10: "must be hexadecimal",
    11: "label 'not ok'", 12: "pdq describes photo, not video", 13: "give a content_type column", 15: "content_type 'image'",
    16: "vpdq frame 0", 18: "duplicate external_id 'tx-1' (line 14)", 19: "list of 256 finite numbers", 20: "7 fields where the header has 6",
    21: "label ''",
}


def hashes(n: int, seed: int = 0, nbytes: int = 32) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def import_text(catalog: Catalog, bank: str, text: str, fmt: str | None = None, **kwargs) -> exchange.ImportReport:
    return import_stream(catalog, bank, io.BytesIO(text.encode()), fmt, **kwargs)


def entries(catalog: Catalog, bank: str) -> list[dict]:
    catalog.refresh()
    return list(catalog.entries[bank].iter_entries())


def mediamatch(storage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from mediamatch.platform.cli import main; main()", "--storage", storage, *args],
                          capture_output=True, text=True)


def test_every_kind_of_bad_row_is_reported_by_line_and_never_banked(tmp_path):
    storage = str(tmp_path / "store")
    Catalog(ObjectStore(storage)).create_bank("partners")
    result = mediamatch(storage, "bank", "import", "partners", str(BAD_ROWS))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {len(BAD_REASONS)} bad rows not banked; 3 entries added to partners (20 rows, 1 commits, " + errors[0].split(", 1 commits, ")[1]]
    reported = {int(line.split(":")[0].split()[1]): line for line in result.stderr.splitlines() if line.startswith("line ")}
    assert set(reported) == set(BAD_REASONS)
    for line, reason in BAD_REASONS.items():
        assert reason in reported[line], (line, reported[line])
    banked = entries(Catalog(ObjectStore(storage)), "partners")
    good_lines = [2, 14, 17]  # only these, each whole
    rows = BAD_ROWS.read_text().splitlines()
    assert sorted(e["signals"][next(iter(e["signals"]))] for e in banked) == sorted(rows[n - 1].split(",")[1] for n in good_lines)
    first = next(e for e in banked if "pdq" in e["signals"] and e["labels"])
    assert first["labels"] == ["csam", "partner:ncmec"] and first["metadata"] == {"case": 1} and first["content_type"] == "photo"
    video = next(e for e in banked if e["external_id"] == "tx-1")
    assert video["content_type"] == "video" and "md5" in video["signals"] and video["labels"] == ["terror"]
    # the same file again: nothing is added twice (the rows that repeated a good row's value or
    # external_id now find it in the bank: skipped, like the good rows themselves)
    again = mediamatch(storage, "bank", "import", "partners", str(BAD_ROWS))
    assert again.returncode == 1 and f"error: {len(BAD_REASONS) - 2} bad rows not banked; 0 entries added to partners, 5 already banked" in again.stderr
    assert len(entries(Catalog(ObjectStore(storage)), "partners")) == 3


def test_file_level_errors_stop_before_anything_is_banked(tmp_path):
    storage = str(tmp_path / "store")
    Catalog(ObjectStore(storage)).create_bank("b")
    (tmp_path / "nohead.csv").write_text(f"{hashes(1)[0]},pdq\n")
    (tmp_path / "nosignal.csv").write_text("signal_type,value\npdq,00\n")
    (tmp_path / "empty.csv").write_text("")
    for name, message in (("nohead.csv", "line 1: unknown column"), ("nosignal.csv", "line 1: unknown column 'value'"), ("empty.csv", "the file is empty")):
        result = mediamatch(storage, "bank", "import", "b", str(tmp_path / name))
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), result.stderr
    unknown = mediamatch(storage, "bank", "import", "nope", str(BAD_ROWS))
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no bank named 'nope'"
    assert entries(Catalog(ObjectStore(storage)), "b") == []


def test_threatexchange_and_hma_names_and_json_lines(local_store):
    catalog = Catalog(local_store)
    catalog.create_bank("hma")
    pdq, pdq2, vmd5 = hashes(1, 1)[0], hashes(1, 2)[0], hashes(1, 3, 16)[0]
    hma_vpdq = json.dumps([f"{pdq},100,0.000", f"{pdq2},90,1.000"])  # HMA's vPDQ serialisation
    lines = [
        {"signal_type": "pdq", "signal": pdq.upper(), "labels": ["a", "b"], "external_id": "1"},
        {"signal_type": "HASH_PDQ", "signal": pdq2, "metadata": {"source": "te"}},
        {"signal_type": "video_md5", "signal": vmd5, "labels": "x;y"},
        {"signal_type": "vpdq", "signal": hma_vpdq},
        {"signal_type": "raw_text", "signal": "a caption shared as text by a partner"},
    ]
    report = import_text(catalog, "hma", "\n".join(json.dumps(line) for line in lines) + "\n")
    assert report.format == "jsonl" and report.added == 5 and report.bad_count == 0
    banked = entries(catalog, "hma")
    by_type = {tuple(sorted(e["signals"])): e for e in banked}
    assert by_type[("pdq",)]["signals"]["pdq"] in (pdq, pdq2)  # hex is lower-cased by the parser
    assert {e["signals"]["pdq"] for e in banked if "pdq" in e["signals"]} == {pdq, pdq2}
    assert by_type[("md5",)]["content_type"] == "video" and by_type[("md5",)]["labels"] == ["x", "y"]
    assert by_type[("vpdq",)]["signals"]["vpdq"] == SIGNAL_TYPES["vpdq"].parse(f"{pdq}:100:0.000,{pdq2}:90:1.000")
    text = next(e for e in banked if e["content_type"] == "text")
    assert text["signals"]["text_exact"] == SIGNAL_TYPES["text_exact"].compute("A caption shared as text by a partner!").value


def test_an_entry_with_a_bad_row_is_not_banked_at_all(local_store):
    catalog = Catalog(local_store)
    catalog.create_bank("b")
    pdq, md5 = hashes(1, 11)[0], hashes(1, 12, 16)[0]
    rows = ["signal_type,signal,content_type,external_id",
            "pdq,00ff,photo,e1", f"md5,{md5},photo,e1",          # a bad row first, then a good one of the same entry
            f"pdq,{pdq},photo,e2", "md5,xyz,photo,e2",            # a good row first, then a bad one
            f"pdq,{hashes(1, 13)[0]},photo,e3", f"md5,{md5},video,e3",  # rows of one entry that disagree
            f"pdq,{hashes(1, 14)[0]},photo,e4", f"md5,{hashes(1, 15, 16)[0]},photo,e4"]  # good: one entry, two signals
    report = import_text(catalog, "b", "\n".join(rows) + "\n")
    assert [(b.line, b.reason.split(":")[0]) for b in report.bad] == [
        (2, "pdq must be a 64-character hex string"), (3, "not banked"), (4, "not banked"), (5, "md5 must be a 32-character hex string"),
        (6, "not banked"), (7, "content_type, labels or metadata differ from line 6, an earlier row of external_id 'e3'")]
    (entry,) = entries(catalog, "b")
    assert entry["external_id"] == "e4" and set(entry["signals"]) == {"pdq", "md5"}


def test_an_interrupted_import_can_be_run_again(local_store, monkeypatch):
    catalog = Catalog(local_store)
    catalog.create_bank("b")
    csv = "signal_type,signal\n" + "".join(f"pdq,{h}\n" for h in hashes(10, 4))
    real, calls = catalog.add_entry_records, []

    def failing(bank, records):
        calls.append(len(records))
        if len(calls) == 3:
            raise StorageError("the store went away")
        real(bank, records)

    monkeypatch.setattr(catalog, "add_entry_records", failing)
    with pytest.raises(StorageError):
        import_text(catalog, "b", csv, batch_size=3)
    assert len(entries(Catalog(local_store), "b")) == 6  # two whole batches, nothing of the third
    monkeypatch.setattr(catalog, "add_entry_records", real)
    report = import_text(catalog, "b", csv, batch_size=3)
    assert (report.added, report.already_banked) == (4, 6)
    assert len(entries(Catalog(local_store), "b")) == 10


def mixed_bank(catalog: Catalog, bank: str) -> None:
    """Entries of every shape an export must carry: labels, metadata, external ids, several
    signals in one entry, a float vector, a text, and a disabled entry (never exported)."""
    catalog.create_bank(bank, labels=["bank-label"])
    pdqs, md5s = hashes(6, 5), hashes(3, 6, 16)
    vector = np.random.default_rng(7).normal(size=256).tolist()
    catalog.add_entries(bank, [
        Entry(bank=bank, content_type="photo", signals={"pdq": pdqs[0]}, labels=["a"], metadata={"case": 1, "tags": ["x, y"]}, external_id="p0"),
        Entry(bank=bank, content_type="photo", signals={"pdq": pdqs[1], "md5": md5s[0]}, metadata={"quote": 'say "hi"\nbye'}),
        Entry(bank=bank, content_type="video", signals={"md5": md5s[1]}, labels=["v", "w"]),
        Entry(bank=bank, content_type="photo", signals={"image_embedding": SIGNAL_TYPES["image_embedding"].parse(vector)}),
        Entry(bank=bank, content_type="text", signals={"text_exact": hashes(1, 8)[0]}),
        Entry(bank=bank, content_type="photo", signals={"pdq": pdqs[2]}),
    ])
    catalog.update_entry(bank, entries(catalog, bank)[-1]["entry_id"], enabled=False)
    import_text(catalog, bank, "signal_type,signal\n" + "".join(f"pdq,{h}\n" for h in pdqs[3:]))


def answers(store: ObjectStore, bank: str, queries: dict[str, list]) -> list:
    """Every query's matches (their signals, labels, metadata and distance), through what a searcher holds."""
    catalog = Catalog(store)
    catalog.refresh()
    out = []
    for name, values in queries.items():
        live = LiveIndex(store, SIGNAL_TYPES[name])
        _, hits = live.search(SIGNAL_TYPES[name].encode(values), 10, SIGNAL_TYPES[name].default_threshold)
        for value_hits in hits:
            found = [catalog.entries[b][e] for e, b, *_ in value_hits]
            out.append(sorted((json.dumps(e["signals"], sort_keys=True), e["labels"], json.dumps(e["metadata"]), d)
                              for e, (_, _, d, _) in zip(found, value_hits)))
    return out


def comparable(catalog: Catalog, bank: str) -> list:
    """Enabled entries, float vectors to 6 decimals (a re-import normalises them again: the last float32 bit may move)."""
    rounded = lambda signals: {n: [round(x, 6) for x in v] if isinstance(v, list) else v for n, v in signals.items()}  # noqa: E731
    return sorted((e["content_type"], json.dumps(rounded(e["signals"]), sort_keys=True), e["labels"], json.dumps(e["metadata"], sort_keys=True))
                  for e in entries(catalog, bank) if e["enabled"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_then_import_into_a_fresh_store_gives_the_same_entries_and_matches(tmp_path, fmt):
    source, target = ObjectStore(str(tmp_path / "a")), ObjectStore(str(tmp_path / "b"))
    mixed_bank(Catalog(source), "src")
    data = b"".join(export_chunks(Catalog(source), "src", fmt, rows_per_chunk=2))
    fresh = Catalog(target)
    fresh.create_bank("copy", labels=["bank-label"])
    report = import_stream(fresh, "copy", io.BytesIO(data), name=f"export.{fmt}")
    assert report.bad_count == 0 and report.format == fmt
    assert comparable(Catalog(target), "copy") == comparable(Catalog(source), "src")
    assert len(comparable(Catalog(target), "copy")) == 8  # the disabled entry stayed behind
    near = [h[:-2] + format(int(h[-2:], 16) ^ 0x07, "02x") for h in (e["signals"]["pdq"] for e in entries(Catalog(source), "src") if "pdq" in e["signals"])]
    queries = {"pdq": near, "md5": [e["signals"]["md5"] for e in entries(Catalog(source), "src") if "md5" in e["signals"]]}
    assert answers(target, "copy", queries) == answers(source, "src", queries)
    again = import_stream(Catalog(target), "copy", io.BytesIO(data), fmt)  # idempotent
    assert (again.added, again.already_banked) == (0, 8)


def test_a_large_batch_is_one_commit_searchers_read_column_by_column(local_store):
    catalog = Catalog(local_store)
    catalog.create_bank("big")
    live = LiveIndex(local_store, SIGNAL_TYPES["pdq"])
    values = hashes(INLINE_MAX + 500, 9)
    report = import_text(catalog, "big", "signal_type,signal,labels\n" + "".join(f"pdq,{h},l{i % 3}\n" for i, h in enumerate(values)))
    assert report.batches == 1
    record = catalog.log.read(catalog.seq)
    assert record["count"] == len(values) and local_store.exists(record["entries_file"]) and "entries" not in record
    live.catch_up(live.state)
    _, hits = live.search(SIGNAL_TYPES["pdq"].encode(values[-3:]), 5, 31)
    assert [len(h) for h in hits] == [1, 1, 1]
    assert comparable(Catalog(local_store), "big") == comparable(catalog, "big")  # a fresh reader folds the file the same
    md5_live = LiveIndex(local_store, SIGNAL_TYPES["md5"])  # a searcher of another signal reads no rows
    assert len(md5_live.state.delta) == 0
    catalog.snapshot()
    assert comparable(Catalog(local_store), "big") == comparable(catalog, "big")


def test_import_from_s3_into_an_s3_store(s3_endpoint):
    from conftest import new_s3_store

    store = new_s3_store(s3_endpoint)
    catalog = Catalog(store)
    catalog.create_bank("b")
    values = hashes(5, 10)
    store.put("incoming/list.csv", ("signal_type,signal\n" + "".join(f"pdq,{h}\n" for h in values)).encode())
    settings = Settings(storage=store.uri, s3_endpoint=s3_endpoint)
    with open_source(settings, f"s3://{store.bucket}/{store.prefix}/incoming/list.csv") as (stream, size):
        report = import_stream(catalog, "b", stream, name="list.csv", size=size)
    assert report.added == 5
    assert sorted(e["signals"]["pdq"] for e in entries(Catalog(store), "b")) == sorted(values)
    with pytest.raises(InvalidInput, match="no such object"):
        with open_source(settings, f"s3://{store.bucket}/nothing.csv"):
            pass


def test_cli_export_and_import_round_trip(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    mixed_bank(Catalog(ObjectStore(a)), "src")
    Catalog(ObjectStore(b)).create_bank("dst", labels=["bank-label"])
    out = tmp_path / "src.parquet"
    assert mediamatch(a, "bank", "export", "src", "--format", "parquet", "--out", str(out)).returncode == 0
    result = mediamatch(b, "bank", "import", "dst", str(out))
    assert result.returncode == 0 and result.stdout.startswith("8 entries added to dst"), result.stderr
    assert comparable(Catalog(ObjectStore(b)), "dst") == comparable(Catalog(ObjectStore(a)), "src")
    csv_out = mediamatch(a, "bank", "export", "src")
    assert csv_out.returncode == 0 and csv_out.stdout.splitlines()[0] == "signal_type,signal,content_type,labels,metadata,external_id"
