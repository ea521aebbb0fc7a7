"""The match service through real HTTP: quality, live banking, hot swap, bad input, auth."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import TURNS, asymmetric, jpeg

PDQ_HEX = "f" * 64


def edit(photo: bytes, which: int) -> bytes:
    """One of the issue's four edits: crop 10%, resize, JPEG q=50, a small text overlay."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = image.size
    if which == 0:
        image = image.crop((w // 20, h // 20, w - w // 20, h - h // 20))
    elif which == 1:
        image = image.resize((max(32, int(w * 0.6)), max(32, int(h * 0.6))))
    elif which == 2:
        return jpeg(image, quality=50)
    else:
        ImageDraw.Draw(image).text((w // 20, h - h // 8), "repost", fill=(255, 0, 0))
    return jpeg(image)


def upload(service, path: str, data: bytes, team: str = "admin", **fields):
    return service.call("POST", path, team, files={"file": ("photo.jpg", data, "image/jpeg")}, data=fields)


def test_photo_match_quality(service, real_photos):
    """Bank 200 real photos, match an edited copy of each and 200 never-banked photos."""
    service.ok("POST", "/v1/banks", json={"name": "quality", "labels": ["eval"]})
    banked, unrelated = real_photos[:200], real_photos[200:400]
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda p: upload(service, "/v1/banks/quality/entries", p).json(), banked))
        queries = [edit(p, i % 4) for i, p in enumerate(banked)] + unrelated
        results = list(pool.map(lambda q: upload(service, "/v1/match", q, banks="quality").json(), queries))
    ids = [e["entry_id"] for e in entries]
    report = {}
    for signal_type in ("pdq", "md5"):
        true_pos = false_pos = 0
        for i, result in enumerate(results):
            found = {m["entry_id"] for m in result["matches"] if m["signal_type"] == signal_type}
            expected = ids[i] if i < len(banked) else None
            true_pos += expected in found
            false_pos += len(found - {expected})
        precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
        report[signal_type] = {"precision": round(precision, 4), "recall": round(true_pos / len(banked), 4)}
    per_edit = {
        name: float(np.mean([ids[i] in {m["entry_id"] for m in results[i]["matches"]} for i in range(k, len(banked), 4)]))
        for k, name in enumerate(("crop10", "resize", "jpeg50", "text"))
    }
    print("\nphoto match quality (200 banked, 200 edited copies, 200 unrelated):", json.dumps(report), "recall per edit:", per_edit)
    # PDQ is robust to re-encoding, resizing and small overlays, not to crops (issue 4's learned
    # descriptor is for those): recall on the 10% crops is reported, not required.
    assert report["pdq"]["precision"] >= 0.98 and report["pdq"]["recall"] >= 0.6
    assert per_edit["jpeg50"] >= 0.95 and per_edit["resize"] >= 0.7 and per_edit["text"] >= 0.8
    assert report["md5"]["precision"] == 1.0  # edited bytes never share an MD5 ...
    exact = upload(service, "/v1/match", banked[0]).json()  # ... the original's do
    assert {("md5", ids[0]), ("pdq", ids[0])} <= {(m["signal_type"], m["entry_id"]) for m in exact["matches"]}
    assert exact["matches"][0]["labels"] == ["eval"] and exact["matches"][0]["score"] == 1.0


def test_turned_and_mirrored_copies_match_naming_the_transform(service, photos):
    """pdq searches a query photo's 8 turns and flips: each copy names the one that made it;
    the photo as it is names none, and its other signals name none either."""
    service.ok("POST", "/v1/banks", json={"name": "dihedral"})
    banked = asymmetric(photos)[:3]
    ids = [upload(service, "/v1/banks/dihedral/entries", jpeg(p)).json()["entry_id"] for p in banked]
    for entry_id, photo in zip(ids, banked):
        for transform, turn in TURNS.items():
            copy = jpeg(photo if turn is None else photo.transpose(turn), quality=80)
            matches = upload(service, "/v1/match", copy, banks="dihedral").json()["matches"]
            assert [(m["entry_id"], m["transform"]) for m in matches if m["signal_type"] == "pdq"] == [(entry_id, transform)], transform
            assert all(m["transform"] is None for m in matches if m["signal_type"] not in ("pdq", "fused"))
            assert all(m["transform"] == transform for m in matches if m["signal_type"] == "fused")  # the pdq form's that found it
    plain = service.ok("POST", "/v1/hash", files={"file": ("p.jpg", jpeg(banked[0]), "image/jpeg")})["signals"]["pdq"]
    assert len(plain) == 64  # banked and hashed photos keep one hash


def test_live_banking_disable_delete(service, photo_corpus):
    service.ok("POST", "/v1/banks", json={"name": "live"})
    photo = photo_corpus[0]
    entry = upload(service, "/v1/banks/live/entries", photo, metadata=json.dumps({"case": 7})).json()
    assert entry["metadata"] == {"case": 7} and set(entry["signals"]) == {"pdq", "image_embedding", "md5", "keypoints"}

    def matched() -> bool:
        result = upload(service, "/v1/match", photo, banks="live").json()
        return any(m["entry_id"] == entry["entry_id"] and m["metadata"] == {"case": 7} for m in result["matches"])

    assert matched()  # the very next request, no reindex
    path = f"/v1/banks/live/entries/{entry['entry_id']}"
    service.ok("PATCH", path, json={"enabled": False})
    assert not matched()
    service.ok("PATCH", path, json={"enabled": True})
    assert matched()
    service.ok("PATCH", "/v1/banks/live", json={"enabled": False})
    assert not matched()
    service.ok("PATCH", "/v1/banks/live", json={"enabled": True})
    assert matched()
    assert service.call("DELETE", path).status_code == 204
    assert not matched()
    assert service.call("GET", path).status_code == 404


def test_verified_photo_matches(service, photos):
    """Copies that PDQ and the descriptor's threshold miss (turned, flipped and cropped, padded,
    shown inside another picture) match through the verifier as `keypoints`, and the photo
    decision (`fused`, the model's calibrated fusion of every photo signal's evidence) takes
    them; other photos match neither way."""
    import random

    from mediamatch.platform.fusion import Fusion
    from mediamatch.platform.models.edits import EVAL_EDITS

    fused_type = next(t for t in service.ok("GET", "/v1/signal-types")["signal_types"] if t["name"] == "fused")
    fusion = Fusion(**fused_type["params"])
    assert fused_type["threshold"] == pytest.approx(1 - fusion.threshold)
    service.ok("POST", "/v1/banks", json={"name": "verified"})
    banked, others = photos[:6], photos[6:12]
    ids = [upload(service, "/v1/banks/verified/entries", jpeg(p)).json()["entry_id"] for p in banked]
    found, decided = {}, {}
    for edit in ("rotate", "flip+crop", "pad", "overlay"):
        for i, image in enumerate(banked):
            result = upload(service, "/v1/match", jpeg(EVAL_EDITS[edit](image, random.Random(i), others)), banks="verified").json()
            verified = [m for m in result["matches"] if m["signal_type"] == "keypoints"]
            assert {m["entry_id"] for m in verified} <= {ids[i]}, (edit, i, verified)
            found[edit] = found.get(edit, 0) + bool(verified)
            assert all(m["distance"] <= m["threshold"] and 0 < m["score"] <= 1 for m in verified)
            assert "keypoints" not in result["signals"]  # the query's features stay in the verifier
            fused = [m for m in result["matches"] if m["signal_type"] == "fused"]
            assert {m["entry_id"] for m in fused} <= {ids[i]}, (edit, i, fused)
            decided[edit] = decided.get(edit, 0) + bool(fused)
            for m in fused:  # the fusion's own score of the evidence it shows, within its threshold
                assert m["score"] == pytest.approx(fusion.scores([m["evidence"]])[0], abs=1e-5) and m["distance"] <= m["threshold"]
    assert min(found.values()) >= 4 and min(decided.values()) >= 4, (found, decided)
    for image in others:
        result = upload(service, "/v1/match", jpeg(image), banks="verified").json()
        assert not [m for m in result["matches"] if m["signal_type"] in ("keypoints", "fused")]
    service.ok("PATCH", "/v1/banks/verified", json={"thresholds": {"fused": 0.01}})  # a bank may ask for more certainty
    strict = [m for m in upload(service, "/v1/match", jpeg(banked[0]), banks="verified").json()["matches"] if m["signal_type"] == "fused"]
    assert [m["entry_id"] for m in strict] == [ids[0]] and strict[0]["threshold"] == 0.01 and strict[0]["distance"] <= 0.01
    only_pdq = upload(service, "/v1/match", jpeg(banked[0]), banks="verified", signal_types="pdq").json()["matches"]
    assert {m["signal_type"] for m in only_pdq} == {"pdq"}  # the fusion weighs every photo signal or none
    flat = upload(service, "/v1/match", jpeg(Image.new("RGB", (200, 200), "gray")), banks="verified")
    assert flat.status_code == 200 and not flat.json()["matches"]  # no keypoints: no evidence, no error


def test_text_and_raw_signal_banking(service, text_corpus):
    service.ok("POST", "/v1/banks", json={"name": "texts"})
    text = text_corpus[5]
    entry = service.ok("POST", "/v1/banks/texts/entries", json={"text": text, "metadata": {"source": "stdlib"}})
    assert {"text_exact", "text_embedding", "md5"} <= set(entry["signals"])
    loud = "  " + text.upper().replace(" ", "  ") + "!!"
    result = service.ok("POST", "/v1/match", json={"text": loud, "banks": ["texts"]})
    kinds = {m["signal_type"] for m in result["matches"] if m["entry_id"] == entry["entry_id"]}
    assert {"text_exact", "text_embedding"} <= kinds and "md5" not in kinds
    shared = service.ok("POST", "/v1/banks/texts/entries", json={"signals": {"pdq": PDQ_HEX.upper()}, "metadata": {"partner": "x"}})
    assert shared["content_type"] == "photo" and shared["signals"] == {"pdq": PDQ_HEX}
    near = "0" + PDQ_HEX[1:]  # 4 bits away
    result = service.ok("POST", "/v1/match", json={"signals": {"pdq": near}})
    (hit,) = [m for m in result["matches"] if m["entry_id"] == shared["entry_id"]]
    assert hit["distance"] == 4 and hit["threshold"] == 31 and hit["score"] == pytest.approx(1 - 4 / 256)
    post = service.ok("POST", "/v1/match", json={"post": {"text": text, "parts": [{"signals": {"pdq": near}}]}})
    assert post["content_type"] == "post" and post["verdict"] == {"matched": True, "parts": ["parts[0]", "text"]}


def test_bank_threshold_override(service):
    service.ok("POST", "/v1/banks", json={"name": "strict", "thresholds": {"pdq": 2}})
    entry = service.ok("POST", "/v1/banks/strict/entries", json={"signals": {"pdq": "0f" * 32}})
    close, far = "0e" + "0f" * 31, "00" + "0f" * 31  # 1 and 4 bits away
    found = lambda q: [m for m in service.ok("POST", "/v1/match", json={"signals": {"pdq": q}, "banks": ["strict"]})["matches"]]  # noqa: E731
    assert [m["entry_id"] for m in found(close)] == [entry["entry_id"]] and found(close)[0]["threshold"] == 2
    assert found(far) == []
    assert service.call("PATCH", "/v1/banks/strict", json={"thresholds": {"nope": 1}}).status_code == 422


def test_hot_swap_under_load(service, photo_corpus):
    """A reindex while a client streams matches: no request fails, and answers move to the new version."""
    service.ok("POST", "/v1/banks", json={"name": "swap"})
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda p: upload(service, "/v1/banks/swap/entries", p).json(), photo_corpus[100:160]))
    before = service.ok("GET", "/v1/indexes")["pdq"]["serving"]
    probe = {"signals": {"pdq": entries[0]["signals"]["pdq"]}, "banks": ["swap"]}
    seen, failures, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            response = service.call("POST", "/v1/match", "matcher", json=probe)
            if response.status_code != 200 or entries[0]["entry_id"] not in {m["entry_id"] for m in response.json()["matches"]}:
                failures.append((response.status_code, response.text[:200]))
            else:
                seen.append(response.json()["index_versions"]["pdq"])

    client = threading.Thread(target=stream)
    client.start()
    try:
        job = service.ok("POST", "/v1/reindex", json={"signal_types": ["pdq"]})["job_id"]
        status = service.wait_job(job)
        assert status["state"] == "succeeded" and status["progress"] == 1.0, status
        service.wait_serving("pdq", status["version"])
        time.sleep(0.5)
    finally:
        stop.set()
        client.join()
    assert failures == [] and len(seen) > 20
    assert seen[0] == before and seen[-1] == status["version"] != before
    indexes = service.ok("GET", "/v1/indexes")["pdq"]
    assert indexes["version"] == status["version"] and indexes["live_delta"] == 0 and indexes["count"] >= 60
    # rollback moves the searchers back
    if before is not None:
        service.ok("POST", "/v1/indexes/pdq/rollback", json={"version": before})
        service.wait_serving("pdq", before)


def test_bad_input_gets_precise_4xx(service, photo_corpus):
    service.ok("POST", "/v1/banks", json={"name": "bad"})
    photo = photo_corpus[1]
    bomb = io.BytesIO()
    Image.new("RGB", (3000, 3000)).save(bomb, "PNG")  # 9 Mpx, over the test limit of 4 Mpx, 30 kB
    cases = [
        (upload(service, "/v1/match", b"\xff" * 2_100_000), 413, "too_large"),
        (upload(service, "/v1/match", bomb.getvalue()), 413, "too_large"),
        (upload(service, "/v1/match", photo[: len(photo) // 2]), 422, "unsupported_media"),  # a JPEG, cut short
        (upload(service, "/v1/match", b"\x00\x01 not an image", content_type="photo"), 422, "media_mismatch"),
        (upload(service, "/v1/banks/bad/entries", photo[:300]), 422, "media_mismatch"),  # too little to be told for a JPEG
        (service.call("POST", "/v1/match", data=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported_content_type"),
        (service.call("POST", "/v1/match", data=b'{"text": ', headers={"Content-Type": "application/json"}), 400, "malformed_request"),
        (service.call("POST", "/v1/match", json={"text": "x", "signals": {}}), 422, "invalid_request"),
        (service.call("POST", "/v1/match", json={"text": "x" * 20_001}), 413, "too_large"),
        (service.call("POST", "/v1/match", json={"signals": {"nope": "00"}}), 422, "invalid_input"),
        (service.call("POST", "/v1/match", json={"signals": {"pdq": "xyz"}}), 422, "invalid_input"),
        (service.call("POST", "/v1/match", json={"text": "hello there", "banks": ["no-such-bank"]}), 404, "not_found"),
        (upload(service, "/v1/banks/no-such-bank/entries", photo), 404, "not_found"),
        (service.call("POST", "/v1/banks", json={"name": "Bad Name!"}), 422, "invalid_input"),
        (service.call("POST", "/v1/banks", json={"name": "bad"}), 409, "conflict"),
        (service.call("POST", "/v1/match", files={"other": ("x", b"y")}), 422, "invalid_input"),
        (service.call("GET", "/v1/nothing-here"), 404, "not_found"),
        (service.call("GET", "/v1/reindex/r_nope"), 404, "not_found"),
        (service.call("POST", "/v1/indexes/pdq/rollback", json={"version": "v99999999"}), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
        assert response.json()["error"]["message"]
    assert service.ok("GET", "/v1/banks/bad")["entry_count"] == 0  # nothing half-written
    assert service.call("GET", "/healthz").status_code == 200
    assert upload(service, "/v1/match", photo).status_code == 200  # and it still answers


def test_auth_roles(service):
    assert service.call("GET", "/v1/banks", team=None).status_code == 401
    assert service.call("GET", "/v1/banks", team=None, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert service.call("POST", "/v1/banks", "matcher", json={"name": "nope"}).status_code == 403
    assert service.call("POST", "/v1/reindex", "writer").status_code == 403
    assert service.call("DELETE", "/v1/banks/quality", "writer").status_code == 403
    assert service.call("POST", "/v1/match", "team-a", json={"text": "hello world"}).status_code == 403
    assert service.call("POST", "/v1/banks", "team-a", json={"name": "team-b"}).status_code == 403
    service.call("DELETE", "/v1/banks/team-a")  # the exchange tests may have made it: team-a's own creation is checked here
    assert service.call("POST", "/v1/banks", "team-a", json={"name": "team-a"}).status_code == 201
    assert service.call("POST", "/v1/banks/team-a/entries", "team-a", json={"text": "banked by team a"}).status_code == 201
    assert service.call("POST", "/v1/match", "matcher", json={"text": "banked by team a"}).status_code == 200
    assert service.call("GET", "/v1/indexes", "admin").status_code == 200
    error = service.call("GET", "/v1/banks", team=None).json()["error"]
    assert error["code"] == "unauthorized" and "Bearer" in error["message"]


def test_bank_grants_limit_what_a_team_sees_matches_and_writes(service):
    service.ok("POST", "/v1/banks", json={"name": "secret"})
    shared = {"signals": {"pdq": "3c" * 32}}
    if service.call("GET", "/v1/banks/team-a").status_code == 404:  # made by test_auth_roles when run with it
        service.ok("POST", "/v1/banks", json={"name": "team-a"})
    a = service.ok("POST", "/v1/banks/team-a/entries", "team-a", json=shared)
    service.ok("POST", "/v1/banks/secret/entries", json=shared)
    assert [b["name"] for b in service.ok("GET", "/v1/banks", "team-a")["banks"]] == ["team-a"]
    for path in ("/v1/banks/secret", "/v1/banks/secret/entries"):
        assert service.call("GET", path, "team-a").status_code == 403
    assert service.call("POST", "/v1/banks/secret/entries", "team-a", json=shared).status_code == 403
    everything = service.ok("POST", "/v1/match", "matcher", json=shared)["matches"]
    assert {"team-a", "secret"} <= {m["bank"] for m in everything}
    granted = service.ok("POST", "/v1/match", "matcher-a", json=shared)["matches"]
    assert {m["bank"] for m in granted} == {"team-a"} and a["entry_id"] in {m["entry_id"] for m in granted}
    refused = service.call("POST", "/v1/match", "matcher-a", json={**shared, "banks": ["secret"]})
    assert refused.status_code == 403 and "not granted" in refused.json()["error"]["message"]


def test_rate_limit_per_team(service):
    codes = [service.call("GET", "/v1/signal-types", "limited") for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200] and codes[-1].status_code == 429
    assert int(codes[-1].headers["Retry-After"]) >= 1 and codes[-1].json()["error"]["code"] == "rate_limited"
    assert service.call("GET", "/v1/signal-types", "matcher").status_code == 200  # other teams are not held back


def test_operations_endpoints(service):
    assert service.ok("GET", "/readyz", team=None)["ready"] is True
    openapi = service.ok("GET", "/openapi.json", team=None)
    body = openapi["paths"]["/v1/match"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "MatchJSON" in openapi["components"]["schemas"]
    service.ok("POST", "/v1/banks", json={"name": "listed"})
    with ThreadPoolExecutor(4) as pool:
        banked = set(pool.map(lambda i: service.ok("POST", "/v1/banks/listed/entries", json={"signals": {"md5": f"{i:032x}"}, "content_type": "photo"})["entry_id"], range(200)))
    listing = service.ok("GET", "/v1/banks/listed/entries?limit=150")
    assert len(listing["entries"]) == 150 and listing["next_cursor"]
    rest = service.ok("GET", f"/v1/banks/listed/entries?limit=150&cursor={listing['next_cursor']}")
    assert len(rest["entries"]) == 50 and rest["next_cursor"] is None
    assert [e["entry_id"] for e in listing["entries"] + rest["entries"]] == sorted(banked)
    (hit,) = service.ok("POST", "/v1/match", json={"signals": {"md5": f"{7:032x}"}, "content_type": "photo", "banks": ["listed"]})["matches"]
    assert hit["entry_id"] in banked
    types = {t["name"] for t in service.ok("GET", "/v1/signal-types", "matcher")["signal_types"]}
    assert types == {"pdq", "image_embedding", "md5", "vpdq", "video_embedding", "audio_fingerprint", "text_exact", "text_minhash", "text_embedding", "keypoints", "fused"}
    metrics = service.call("GET", "/metrics", team=None).text
    assert 'mediamatch_requests_total{endpoint="/v1/match",method="POST",status="200"}' in metrics
    assert "mediamatch_index_entries" in metrics and "mediamatch_request_seconds_bucket" in metrics
