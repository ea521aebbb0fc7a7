"""The command line, as a user scripts it: exit codes, one-line errors, nothing half-written."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

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
    entry_id = re.search(r"\be_\w+", result.output).group()  # (stderr, mixed in, says why a short text has no text_minhash)
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
    disguised = tmp_path / "note.jpg"
    disguised.write_text("a text dressed as a photo by its name " * 10)
    refused = mediamatch(run.storage, "bank", "add", "photos", str(disguised))
    assert refused.returncode == 1 and "declared photo by its file extension .jpg" in refused.stderr
    assert run.catalog().get_bank("photos").entry_count == 0

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


def test_http_mode_bank_add_and_match(service, photo_corpus, tmp_path):
    """`bank add --url` and `match --url` against the running service, with a token from the env."""
    service.ok("POST", "/v1/banks", json={"name": "cli-http"})
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_corpus[7])
    env = {"MEDIAMATCH_TOKEN": service.token("writer")}
    runner = CliRunner(env=env)
    added = runner.invoke(cli, ["bank", "add", "cli-http", str(photo), "--url", service.url, "--metadata", '{"n": 1}'], catch_exceptions=False)
    assert added.exit_code == 0 and "added 1 entries to cli-http: e_" in added.output
    entry_id = added.output.strip().rsplit(" ", 1)[1]
    matched = runner.invoke(cli, ["match", str(photo), "--url", service.url, "--banks", "cli-http"], catch_exceptions=False)
    assert matched.exit_code == 0 and entry_id in matched.output and "5 matches" in matched.output  # pdq, md5, image_embedding, keypoints, fused
    text = runner.invoke(cli, ["match", "--text", "nothing like it was ever banked", "--url", service.url, "--json"], catch_exceptions=False)
    assert text.exit_code == 0 and '"content_type": "text"' in text.output
    # errors from the service are one line and exit 1; nothing is banked into an unknown bank
    result = subprocess.run(
        [sys.executable, "-c", "from mediamatch.platform.cli import main; main()", "bank", "add", "no-such-bank", str(photo), "--url", service.url],
        capture_output=True, text=True, env={**os.environ, **env},
    )
    assert result.returncode == 1 and result.stderr.startswith("error: no bank named 'no-such-bank' (HTTP 404 not_found)")
    refused = subprocess.run(
        [sys.executable, "-c", "from mediamatch.platform.cli import main; main()", "match", str(photo), "--url", service.url],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MEDIAMATCH_TOKEN"},
    )
    assert refused.returncode == 1 and "HTTP 401 unauthorized" in refused.stderr


def test_token_create_prints_a_usable_settings_entry():
    import json

    from mediamatch.platform.auth import Authenticator
    from mediamatch.platform.settings import TeamToken

    result = CliRunner().invoke(cli, ["token", "create", "--team", "t1", "--role", "bank_write", "--bank", "b1"], catch_exceptions=False)
    lines = result.output.splitlines()
    token = lines[0].split(": ", 1)[1]
    entry = TeamToken(**json.loads(lines[2].strip()[2:]))
    assert token not in lines[2] and entry.banks == ["b1"]
    principal = Authenticator([entry]).authenticate(f"Bearer {token}", "10.0.0.1")
    assert principal.team == "t1" and principal.allows("bank_write", "b1") and not principal.allows("bank_write", "b2")


def test_serve_config_is_valid_for_serve_and_names_every_deployment():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from mediamatch.deployments.app import app_builder, deployment_names
    from mediamatch.platform.settings import load_settings

    path = Path(__file__).resolve().parents[1] / "deployments" / "serve_config.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (application,) = config.applications
    named = {d.name for d in application.deployments}
    assert named == set(deployment_names(load_settings(**application.args)))
    assert app_builder(dict(application.args)) is not None


def test_serve_refuses_a_busy_port(tmp_path):
    """Serve's proxy would share a busy port silently (two services answering in turn)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = mediamatch(str(tmp_path / "store"), "serve", "--port", str(busy.getsockname()[1]))
    assert result.returncode == 1 and "is in use (another mediamatch serve?)" in result.stderr
