"""Exchange and HMA compatibility through the running service: imports as jobs (streamed by the
Python client, raw or multipart bodies), streamed exports, grants, and the /hma endpoints driven
the way HMA's documentation drives them, answering what /v1/match answers."""

from __future__ import annotations

import io
import json
import time

import numpy as np
from click.testing import CliRunner

from mediamatch.platform.cli import cli
from mediamatch.platform.client import ApiError, Client

import pytest


def hashes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def near(value: str, bits: int = 5) -> str:
    """`value` with its lowest `bits` bits flipped (Hamming distance `bits`)."""
    return format(int(value, 16) ^ ((1 << bits) - 1), "064x")


def wait_import(service, bank: str, job_id: str, team: str = "writer") -> dict:
    deadline = time.time() + 120
    while time.time() < deadline:
        job = service.ok("GET", f"/v1/banks/{bank}/import/{job_id}", team)
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job_id)


def test_import_over_http_is_a_job_and_matches_at_once(service):
    client = Client(service.url, service.token("writer"))
    client.create_bank("exchange-http", labels=["partner"])
    values = hashes(300, 1)
    rows = ["signal_type,signal,labels,external_id"] + [f"pdq,{h},l{i % 2},x{i}" for i, h in enumerate(values)] + ["pdq,00ff,,bad", "sha1,abc,,worse"]
    progress = []
    report = client.import_file("exchange-http", io.BytesIO(("\n".join(rows) + "\n").encode()), "csv", progress=progress.append)
    assert (report.added, report.bad_count, [b.line for b in report.bad]) == (300, 2, [302, 303])
    assert progress[-1] == 1.0 and progress == sorted(progress)
    result = client.match_signals({"pdq": near(values[7])}, banks=["exchange-http"])
    assert [(m.distance, m.labels) for m in result.matches] == [(5.0, ["partner", "l1"])]
    entry = client.get_entry("exchange-http", result.matches[0].entry_id)
    assert entry.external_id == "x7" and entry.labels == ["l1"]
    again = client.import_file("exchange-http", io.BytesIO(("\n".join(rows[:50]) + "\n").encode()), "csv")
    assert (again.added, again.already_banked) == (0, 49)
    assert client.get_bank("exchange-http").entry_count == 300


def test_raw_and_multipart_bodies_and_grants(service):
    if service.call("GET", "/v1/banks/team-a").status_code == 404:  # other tests may have made it
        service.ok("POST", "/v1/banks", json={"name": "team-a"})
    values = hashes(3, 2)
    jsonl = "".join(json.dumps({"signal_type": "HASH_PDQ", "signal": h}) + "\n" for h in values)
    accepted = service.call("POST", "/v1/banks/team-a/import", "team-a", data=jsonl, headers={"Content-Type": "application/x-ndjson"})
    assert accepted.status_code == 202
    job = wait_import(service, "team-a", accepted.json()["job_id"], "team-a")
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["report"]["added"] == 3 and job["report"]["format"] == "jsonl"
    more = hashes(2, 3)
    multipart = service.call("POST", "/v1/banks/team-a/import", "team-a", files={"file": ("list.csv", "signal_type,signal\n" + "".join(f"pdq,{h}\n" for h in more))})
    assert multipart.status_code == 202
    assert wait_import(service, "team-a", multipart.json()["job_id"], "team-a")["report"]["added"] == 2
    # a team granted one bank imports there only; a matcher imports nowhere; an unknown bank is 404
    service.ok("POST", "/v1/banks", json={"name": "exchange-other"})
    assert service.call("POST", "/v1/banks/exchange-other/import", "team-a", data=jsonl).status_code == 403
    assert service.call("POST", "/v1/banks/team-a/import", "matcher", data=jsonl).status_code == 403
    assert service.call("POST", "/v1/banks/no-such/import", "writer", data=jsonl).json()["error"]["code"] == "not_found"
    assert service.call("GET", "/v1/banks/team-a/import/i_1_00000000", "team-a").status_code == 404
    assert service.call("GET", "/v1/banks/team-a/export", "matcher-a").status_code == 200
    assert service.call("GET", "/v1/banks/exchange-other/export", "matcher-a").status_code == 403
    assert service.call("POST", "/v1/banks/team-a/import?format=xml", "team-a", data=jsonl).status_code == 422


def test_export_streams_and_reimports_to_the_same_entries(service, tmp_path):
    client = Client(service.url, service.token("writer"))
    client.create_bank("exchange-src", labels=["s"])
    client.add_signals("exchange-src", {"pdq": hashes(1, 4)[0]}, metadata={"case": 3})
    client.add_text("exchange-src", "a caption a partner shared with the team", metadata={"kind": "text"})
    disabled = client.add_signals("exchange-src", {"pdq": hashes(1, 5)[0]})
    client.update_entry("exchange-src", disabled.entry_id, enabled=False)
    for fmt in ("csv", "jsonl", "parquet"):
        data = b"".join(client.export("exchange-src", fmt))
        client.create_bank(f"exchange-copy-{fmt}", labels=["s"])
        report = client.import_file(f"exchange-copy-{fmt}", io.BytesIO(data), fmt)
        assert report.bad_count == 0 and report.added == 2
        same = lambda bank: sorted((e.content_type, json.dumps(e.signals, sort_keys=True), e.metadata == {"case": 3} or e.metadata) for e in client.iter_entries(bank) if e.enabled)  # noqa: E731
        assert same(f"exchange-copy-{fmt}") == same("exchange-src")
    query = client.match_text("A caption a partner shared with the team!")
    banks = {m.bank for m in query.matches}
    assert {"exchange-src", "exchange-copy-csv", "exchange-copy-jsonl", "exchange-copy-parquet"} <= banks
    # the CLI in --url mode: export to a file, import it back
    runner = CliRunner(env={"MEDIAMATCH_TOKEN": service.token("writer")})
    out = tmp_path / "src.jsonl"
    exported = runner.invoke(cli, ["bank", "export", "exchange-src", "--format", "jsonl", "--out", str(out), "--url", service.url], catch_exceptions=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported.exit_code == 0 and len({r["external_id"] for r in rows}) == 2 < len(rows)  # a row per signal, an id per entry
    client.create_bank("exchange-cli")
    imported = runner.invoke(cli, ["bank", "import", "exchange-cli", str(out), "--url", service.url], catch_exceptions=False)
    assert imported.exit_code == 0 and "2 entries added to exchange-cli" in imported.output


def test_hma_lookups_answer_what_v1_match_answers(service, photo_corpus):
    """The calls of HMA's README and blueprints: create a bank, add content by file and by
    signal, list banks, then look hashes up raw, by signal type and by uploaded file."""
    hma = lambda method, path, team="writer", **kw: service.call(method, "/hma" + path, team, **kw)  # noqa: E731
    created = hma("POST", "/c/banks", json={"name": "HMA_BANK"})
    assert created.status_code == 201 and created.json() == {"name": "HMA_BANK", "matching_enabled_ratio": 1.0}
    assert hma("POST", "/c/banks", json={"name": "HMA_BANK"}).json() == {"message": "Bank already exists"}
    assert {"name": "HMA_BANK", "matching_enabled_ratio": 1.0} in hma("GET", "/c/banks").json()
    assert hma("GET", "/c/bank/HMA_BANK").json()["name"] == "HMA_BANK"
    assert hma("GET", "/c/bank/NOPE").status_code == 404 and "message" in hma("GET", "/c/bank/NOPE").json()
    photo = photo_corpus[11]
    added = hma("POST", "/c/bank/HMA_BANK/content", files={"photo": ("a.jpg", photo)}, params={"metadata": json.dumps({"content_id": "c1"})})
    assert added.status_code == 200, added.text
    content = added.json()
    assert set(content) == {"id", "signals"} and len(content["signals"]["pdq"]) == 64
    value = hashes(1, 6)[0]
    signal = hma("POST", "/c/bank/HMA_BANK/signal", json={"pdq": value})
    assert signal.status_code == 200 and signal.json()["signals"] == {"pdq": value}
    hashed = hma("POST", "/h/hash", files={"photo": ("a.jpg", photo)}).json()
    assert hashed["pdq"] == content["signals"]["pdq"] and "md5" in hashed

    query = near(value, 3)
    raw = hma("GET", "/m/raw_lookup", params={"signal_type": "pdq", "signal": query}).json()
    assert raw == {"matches": [signal.json()["id"]]}
    with_distance = hma("GET", "/m/raw_lookup", params={"signal_type": "pdq", "signal": query, "include_distance": "true"}).json()
    assert with_distance == {"matches": [{"bank_content_id": signal.json()["id"], "distance": "3"}]}
    by_type = hma("GET", "/m/lookup", params={"signal_type": "pdq", "signal": query, "banks": "HMA_BANK"}).json()
    v1 = service.ok("POST", "/v1/match", "writer", json={"signals": {"pdq": query}})
    assert by_type == {"HMA_BANK": [{"bank_content_id": signal.json()["id"], "distance": "3"}]}
    expected = {}
    for m in v1["matches"]:
        expected.setdefault(m["bank"].upper(), []).append({"bank_content_id": m["entry_id"], "distance": f"{m['distance']:g}"})
    everywhere = hma("GET", "/m/lookup", params={"signal_type": "pdq", "signal": query}).json()
    assert everywhere == expected
    uploaded = hma("POST", "/m/lookup", files={"photo": ("q.jpg", photo)}).json()
    v1_file = service.ok("POST", "/v1/match", "writer", files={"file": ("q.jpg", photo)})
    for name in ("pdq", "md5"):
        found = sorted((bank, m["bank_content_id"], m["distance"]) for bank, ms in uploaded[name].items() for m in ms)
        assert found == sorted((m["bank"].upper(), m["entry_id"], f"{m['distance']:g}") for m in v1_file["matches"] if m["signal_type"] == name)
        assert ("HMA_BANK", content["id"], "0") in found
    # our auth and grants; HMA's error shape
    assert service.call("GET", "/hma/m/lookup", None, params={"signal_type": "pdq", "signal": query}).status_code == 401
    assert hma("GET", "/m/lookup", "matcher-a", params={"signal_type": "pdq", "signal": query, "banks": "HMA_BANK"}).status_code == 403
    assert hma("POST", "/c/banks", "matcher", json={"name": "X"}).status_code == 403
    bad = hma("GET", "/m/raw_lookup", params={"signal_type": "pdq", "signal": "abc"})
    assert bad.status_code == 422 and bad.json()["message"].startswith("invalid signal: pdq must be")
    assert hma("GET", "/m/lookup", params={"url": "http://example.com/a.jpg"}).status_code == 422
    disabled = hma("POST", "/c/banks", json={"name": "HMA_OFF", "enabled_ratio": 0.0}).json()
    assert disabled == {"name": "HMA_OFF", "matching_enabled_ratio": 0.0}
    with pytest.raises(ApiError):
        Client(service.url, service.token("writer")).get_bank("hma_nope")
