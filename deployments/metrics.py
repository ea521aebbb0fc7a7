"""Prometheus metrics of an ingress replica (`GET /metrics`)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)

REQUESTS = Counter("mediamatch_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("mediamatch_request_seconds", "HTTP request latency", ["endpoint", "method"], buckets=BUCKETS, registry=REGISTRY)
SEARCH_SECONDS = Histogram("mediamatch_search_seconds", "Fan-out search latency per signal type", ["signal_type"], buckets=BUCKETS, registry=REGISTRY)
MATCHES = Counter("mediamatch_matches_total", "Matches returned", ["signal_type"], registry=REGISTRY)
INDEX_ENTRIES = Gauge("mediamatch_index_entries", "Entries in the served index version", ["signal_type"], registry=REGISTRY)
INDEX_VERSION = Gauge("mediamatch_index_version", "Served index version number (0: none)", ["signal_type"], registry=REGISTRY)
LIVE_DELTA = Gauge("mediamatch_live_delta_entries", "Entries banked since the served version", ["signal_type"], registry=REGISTRY)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint, method).observe(seconds)


def set_index_gauges(statuses: dict[str, dict]) -> None:
    for name, status in statuses.items():
        INDEX_ENTRIES.labels(name).set(status["count"])
        INDEX_VERSION.labels(name).set(int(status["version"][1:]) if status["version"] else 0)
        LIVE_DELTA.labels(name).set(status["live_delta"])


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
