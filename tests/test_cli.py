"""The command line, as a user scripts it: exit codes, one-line errors, nothing half-written."""

import csv
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import CONFORMANCE
from mediamatch.platform.catalog import Catalog
from mediamatch.platform.cli import cli
from mediamatch.platform.storage import ObjectStore

BRIDGE_MODS = CONFORMANCE / "pdq" / "data" / "bridge-mods"


@pytest.fixture
def run(tmp_path):
    storage = str(tmp_path / "store")

    def invoke(*args, input=None):
        return CliRunner().invoke(cli, ["--storage", storage, *map(str, args)], input=input, catch_exceptions=False)

    invoke.catalog = lambda: Catalog(ObjectStore(storage))
    invoke.storage = storage
    return invoke


def mediamatch(storage: str, *args: str) -> subprocess.CompletedProcess:
    """The installed console script, as users run it (errors go through `main`)."""
    return subprocess.run(
        [sys.executable, "-c", "from mediamatch.platform.cli import main; main()", "--storage", storage, *args],
        capture_output=True, text=True,
    )


def test_bank_a_directory_then_list(run):
    assert run("bank", "create", "photos", "--label", "test").exit_code == 0
    result = run("bank", "add", "photos", BRIDGE_MODS)
    assert result.exit_code == 0 and "added 12 entries" in result.output
    assert "photos" in run("bank", "list").output
    entries, _ = run.catalog().list_entries("photos", 100)
    assert len(entries) == 12 and all(len(e.signals["pdq"]) == 64 and e.media for e in entries)


def test_hash_matches_the_reference():
    rows = {r["path"]: r["pdq_hex"] for r in csv.DictReader(open(CONFORMANCE / "pdq" / "expected-pdq.csv"))}
    path = "pdq/data/reg-test-input/labelme-subset/q0122.jpg"
    result = CliRunner().invoke(cli, ["hash", str(CONFORMANCE / path)])
    assert result.exit_code == 0
    assert f"pdq {rows[path]} quality" in result.output and "md5 " in result.output


def test_text_banking_and_entry_changes(run):
    run("bank", "create", "texts")
    result = run("bank", "add", "texts", "--text", "a known caption", "--metadata", '{"case": 7}')
    entry_id = result.output.strip().rsplit(": ", 1)[1]
    entry = run.catalog().get_entry("texts", entry_id)
    assert entry.content_type == "text" and entry.metadata == {"case": 7} and "text_exact" in entry.signals
    assert run("bank", "disable", "texts", entry_id).exit_code == 0
    assert run.catalog().get_entry("texts", entry_id).enabled is False
    assert run("bank", "delete", "texts", entry_id).exit_code == 0
    assert run.catalog().get_bank("texts").entry_count == 0
    assert run("bank", "delete", "texts", input="n\n").exit_code != 0  # asked, refused
    assert run("bank", "delete", "texts", "--yes").exit_code == 0
    assert run.catalog().list_banks() == []


def test_user_errors_are_one_line_and_write_nothing(run, tmp_path):
    run("bank", "create", "photos")
    unknown = mediamatch(run.storage, "bank", "add", "nope", str(BRIDGE_MODS / "aaa-orig.jpg"))
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no bank named 'nope'"

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((BRIDGE_MODS / "aaa-orig.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((BRIDGE_MODS / "aaa-orig.jpg").read_bytes()[:2000])  # truncated
    broken = mediamatch(run.storage, "bank", "add", "photos", str(folder))
    assert broken.returncode == 1 and len(broken.stderr.strip().splitlines()) == 1
    assert "b.jpg" in broken.stderr and "Traceback" not in broken.stderr
    assert run.catalog().get_bank("photos").entry_count == 0
    assert ObjectStore(run.storage).list("media") == []

    assert mediamatch(run.storage, "bank", "create", "Bad Name").returncode == 1
    rollback = mediamatch(run.storage, "index", "rollback", "pdq", "v00000009")
    assert rollback.returncode == 1 and "no pdq index version v00000009" in rollback.stderr
    assert mediamatch(run.storage, "bank", "add", "photos", "--metadata", "[1]", "--text", "x").returncode == 1


def test_index_list_and_reindex(run, ray_session):
    assert "(no index)" in run("index", "list").output
    run("bank", "create", "photos")
    run("bank", "add", "photos", BRIDGE_MODS)
    result = run("reindex", "--signal-type", "pdq", "--signal-type", "md5", "--shards", "2")
    assert result.exit_code == 0 and "v00000001" in result.output
    listing = run("index", "list", "--all").output
    assert "*v00000001" in listing and "12 entries" in listing
