"""The layouts of the match graph: which deployments each makes, and the co-located search."""

from mediamatch.deployments.app import build_app, deployment_names, in_ingress
from mediamatch.platform.settings import Settings

from conftest import jpeg, wait_until

TYPES = ["pdq", "md5", "image_embedding", "keypoints"]


def test_each_layout_names_its_deployments(local_store):
    names = {layout: deployment_names(Settings(storage=local_store.uri, serve={"signal_types": TYPES, "layout": layout}))
             for layout in ("compact", "co_located", "per_signal_type")}
    assert names["compact"] == ["Ingress", "Hasher", "Embedder", "Searcher-0", "Verifier"]
    assert names["co_located"] == names["compact"]  # its Searcher holds only the model type
    assert names["per_signal_type"] == ["Ingress", "Hasher", "Embedder-image_embedding",
                                        "Searcher-pdq-0", "Searcher-md5-0", "Searcher-image_embedding-0", "Verifier"]
    rated = [{"team": "t", "token_sha256": "0" * 64, "roles": ["match"], "rate_per_second": 5}]
    assert deployment_names(Settings(storage=local_store.uri, tokens=rated, serve={"signal_types": TYPES}))[:3] == ["Ingress", "RateLimits", "Hasher"]
    assert build_app(Settings(storage=local_store.uri, serve={"signal_types": TYPES}))._bound_deployment.init_args[3] is None  # no token has a rate
    co_located = Settings(storage=local_store.uri, serve={"signal_types": TYPES, "layout": "co_located"})
    assert in_ingress(co_located) == ["pdq", "md5"]
    ingress = build_app(co_located)._bound_deployment
    searchers = ingress.init_args[2]
    assert [types for types, _ in searchers] == [["image_embedding"], ["pdq", "md5"]]
    assert searchers[1][1] is None  # searched by the ingress itself


def test_co_located_ingress_searches_itself(service, photos):
    """Beside the session's application: a co_located one, whose ingress searches pdq and md5
    itself (no Searcher deployment at all): raw hash lookups, photo uploads (hashed by the
    Hasher, then searched here), entries banked after it started, readiness and /v1/indexes."""
    import requests
    from ray import serve

    one = {"min_replicas": 1, "max_replicas": 1}
    small = {"signal_types": ["pdq", "md5"], "layout": "co_located", "poll_seconds": 0.2, "ingress": one, "hasher": one}
    serve.run(build_app(Settings(**{**service.settings.model_dump(), "serve": small})), name="co-located", route_prefix="/co-located")
    try:
        status = serve.status().applications["co-located"]
        assert set(status.deployments) == {"Ingress", "RateLimits", "Hasher"}
        url, auth = service.url + "/co-located", {"Authorization": f"Bearer {service.token('admin')}"}
        # serve.run returns once the replicas are up; HAProxy routes the new prefix a moment later
        wait_until(lambda: requests.get(url + "/readyz", timeout=30).status_code == 200, timeout=60)
        assert requests.get(url + "/readyz", timeout=30).json()["ready"] is True
        assert requests.post(url + "/v1/banks", json={"name": "colocated"}, headers=auth, timeout=30).status_code == 201
        photo = jpeg(photos[0])
        entry = requests.post(url + "/v1/banks/colocated/entries", files={"file": ("p.jpg", photo, "image/jpeg")}, headers=auth, timeout=60).json()
        near = format(int(entry["signals"]["pdq"], 16) ^ 0b1011, "064x")  # 3 bits away
        by_hash = requests.post(url + "/v1/match", json={"signals": {"pdq": near}, "banks": ["colocated"]}, headers=auth, timeout=30).json()
        assert [(m["entry_id"], m["distance"]) for m in by_hash["matches"]] == [(entry["entry_id"], 3)]
        by_photo = requests.post(url + "/v1/match", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"banks": "colocated"},
                                 headers=auth, timeout=60).json()
        assert {m["signal_type"] for m in by_photo["matches"] if m["entry_id"] == entry["entry_id"]} == {"pdq", "md5"}
        indexes = requests.get(url + "/v1/indexes", headers=auth, timeout=30).json()
        assert indexes["pdq"]["live_delta"] >= 1
    finally:
        serve.delete("co-located")
