"""Metrics: every replica's figures on Ray's metrics export port, and a Grafana dashboard that
queries only metrics the code defines."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mediamatch.deployments import metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deployments" / "grafana" / "mediamatch.json"
SERVE_TAGS = {"deployment", "replica", "application", "le"}  # added by ray.serve.metrics, and histograms' buckets


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_dashboard_queries_every_defined_metric_and_nothing_else():
    exported = {name: metric for metric in metrics.METRICS for name in metric.exported_names()}
    queried = set()
    for expr in dashboard_queries():
        names = set(re.findall(r"\bray_mediamatch_\w+", expr))
        assert names, f"a panel queries no mediamatch metric: {expr}"
        assert names <= set(exported), f"{sorted(names - set(exported))} are not defined in deployments/metrics.py"
        tags = set().union(*(exported[n].tags for n in names)) | SERVE_TAGS
        used = {label for group in re.findall(r"by \(([^)]*)\)", expr) for label in re.split(r"\s*,\s*", group.strip())}
        used |= set(re.findall(r"(\w+)\s*=~?\s*\"", expr))
        assert used <= tags, f"{expr} uses tags {sorted(used - tags)} that its metrics do not have"
        queried |= {exported[n].name for n in names}
    assert queried == {m.name for m in metrics.METRICS}  # a metric without a panel is drift too


def test_metric_names_and_tag_keys_are_valid_for_ray_and_prometheus():
    valid = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    for metric in metrics.METRICS:
        assert valid.match(metric.name) and all(valid.match(tag) for tag in metric.tags)
        assert not set(metric.tags) & {"deployment", "replica", "application"}  # reserved by Serve


def ray_series(port: int) -> list[tuple[str, dict[str, str], float]]:
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples if s.name.startswith("ray_mediamatch_")]


def test_every_replicas_figures_reach_rays_metrics_export_port(service):
    """After a banking and a match, the node's metrics export port carries the ingress's request,
    latency and match series and the searcher's live delta and index version, each tagged with
    its deployment and replica."""
    import ray

    service.ok("POST", "/v1/banks", json={"name": "metered-bank"})
    service.ok("POST", "/v1/banks/metered-bank/entries", json={"signals": {"pdq": "3c" * 32}})
    matched = service.ok("POST", "/v1/match", json={"signals": {"pdq": "3c" * 32}, "banks": ["metered-bank"]})
    assert matched["matches"]
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    from mediamatch.deployments.app import in_ingress

    searching = "Ingress" if "pdq" in in_ingress(service.settings) else "Searcher-0"  # the layout's choice

    def found(series) -> dict[str, bool]:
        def has(name: str, **tags) -> bool:
            return any(n == name and tags.items() <= labels.items() for n, labels, _ in series)

        return {
            "requests": has("ray_mediamatch_requests_total", endpoint="/v1/match", method="POST", status="200", deployment="Ingress", application="mediamatch"),
            "latency": has("ray_mediamatch_request_seconds_bucket", endpoint="/v1/match", deployment="Ingress"),
            "matches": has("ray_mediamatch_matches_total", signal_type="pdq", bank="metered-bank", deployment="Ingress"),
            "live delta": any(n == "ray_mediamatch_live_delta_entries" and labels.get("signal_type") == "pdq" and labels.get("slot") == "0"
                              and labels.get("deployment") == searching and value >= 1 for n, labels, value in series),
            "index version": has("ray_mediamatch_index_version", signal_type="pdq", slot="0", deployment=searching),
        }

    deadline = time.time() + 60  # Ray's metrics agent exports what replicas recorded every few seconds
    while not all((state := found(ray_series(node["MetricsExportPort"]))).values()):
        if time.time() > deadline:
            pytest.fail(f"not on Ray's metrics export port after 60 s: {[k for k, v in state.items() if not v]}")
        time.sleep(1)
    replicas = {labels["replica"] for _, labels, _ in ray_series(node["MetricsExportPort"]) if labels.get("application") == "mediamatch"}
    assert len(replicas) >= 2  # the ingress's and the searcher's, at least
