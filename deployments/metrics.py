"""The service's metrics, each defined once here.

A figure is recorded where it is known (requests and matches by the ingress replica that
answered, live delta and index version by the searcher slot that holds them) and goes to two
places: Ray's metrics (`ray.serve.metrics`, which tags it with the replica's deployment,
replica and application), exported on every node's metrics export port: the one scrape target
that carries every replica's figures, under the names `ray_<name>` (what
`grafana/mediamatch.json` queries); and the replica's own Prometheus registry, which
`GET /metrics` serves as the API's contract promises (that ingress replica's figures).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

REGISTRY = CollectorRegistry()
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
RAY_PREFIX = "ray_"  # Ray's exporter puts it before every application metric's name
KINDS = {"counter": PromCounter, "histogram": PromHistogram, "gauge": PromGauge}


class Metric:
    """One metric: its name, description and tag keys, declared up front, for both sinks."""

    def __init__(self, kind: str, name: str, description: str, tags: tuple[str, ...], buckets: tuple[float, ...] = BUCKETS):
        self.kind, self.name, self.description, self.tags, self.buckets = kind, name, description, tags, buckets
        extra = {"buckets": buckets} if kind == "histogram" else {}
        self.local = KINDS[kind](name, description, list(tags), registry=REGISTRY, **extra)
        self._ray: Any = None  # made in the replica at its first record (a driver importing this has no replica)
        self._bound: dict[tuple, Bound] = {}  # per tag values: a request's metrics do no label lookup

    def labels(self, *values: str, **tags: str) -> "Bound":
        key = (values, tuple(tags.items()))
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = Bound(self, {**dict(zip(self.tags, map(str, values))), **{k: str(v) for k, v in tags.items()}})
        return bound

    def ray_metric(self) -> Any:
        if self._ray is None:
            from ray.serve import metrics as serve_metrics

            if self.kind == "counter":
                self._ray = serve_metrics.Counter(self.name, self.description, tag_keys=self.tags)
            elif self.kind == "histogram":
                self._ray = serve_metrics.Histogram(self.name, self.description, boundaries=list(self.buckets), tag_keys=self.tags)
            else:
                self._ray = serve_metrics.Gauge(self.name, self.description, tag_keys=self.tags)
        return self._ray

    def exported_names(self) -> list[str]:
        """The series Ray's Prometheus endpoint carries for this metric."""
        base = RAY_PREFIX + self.name
        return [f"{base}_bucket", f"{base}_count", f"{base}_sum"] if self.kind == "histogram" else [base]


class Bound:
    """A metric with its tag values: `inc`, `observe` or `set` records to both sinks."""

    def __init__(self, metric: Metric, tags: dict[str, str]):
        self.metric, self.tags = metric, tags
        self.local = metric.local.labels(**tags) if metric.tags else metric.local  # prometheus_client: no labels() without tags

    def inc(self, value: float = 1) -> None:
        self.local.inc(value)
        self.metric.ray_metric().inc(value, tags=self.tags)

    def observe(self, value: float) -> None:
        self.local.observe(value)
        self.metric.ray_metric().observe(value, tags=self.tags)

    def set(self, value: float) -> None:
        self.local.set(value)
        self.metric.ray_metric().set(value, tags=self.tags)


REQUESTS = Metric("counter", "mediamatch_requests_total", "HTTP requests", ("endpoint", "method", "status"))
LATENCY = Metric("histogram", "mediamatch_request_seconds", "HTTP request latency", ("endpoint", "method"))
SEARCH_SECONDS = Metric("histogram", "mediamatch_search_seconds", "Fan-out search latency per signal type", ("signal_type",))
MATCHES = Metric("counter", "mediamatch_matches_total", "Matches returned", ("signal_type", "bank"))
SHED = Metric("counter", "mediamatch_shed_total", "Requests refused with 503 overloaded (the ingress replica's queue was full)", ())
INDEX_ENTRIES = Metric("gauge", "mediamatch_index_entries", "Entries in the served index version, per searcher slot", ("signal_type", "slot"))
INDEX_VERSION = Metric("gauge", "mediamatch_index_version", "Served index version number (0: none), per searcher slot", ("signal_type", "slot"))
LIVE_DELTA = Metric("gauge", "mediamatch_live_delta_entries", "Entries banked since the served version, per searcher slot", ("signal_type", "slot"))
METRICS = (REQUESTS, LATENCY, SEARCH_SECONDS, MATCHES, SHED, INDEX_ENTRIES, INDEX_VERSION, LIVE_DELTA)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint, method).observe(seconds)


def index_figures(slot: int, statuses: dict[str, dict]) -> list[tuple[Metric, dict[str, str], float]]:
    """The index gauges of one searcher slot's status (`ShardSearcher.status`)."""
    out = []
    for name, status in statuses.items():
        tags = {"signal_type": name, "slot": str(slot)}
        version = int(status["version"][1:]) if status["version"] else 0
        out += [(INDEX_ENTRIES, tags, status["count"]), (INDEX_VERSION, tags, version), (LIVE_DELTA, tags, status["live_delta"])]
    return out


def record_index(slot: int, statuses: dict[str, dict]) -> None:
    """In a searcher replica: its slot's index gauges, to both sinks."""
    for metric, tags, value in index_figures(slot, statuses):
        metric.labels(**tags).set(value)


def show_index(slot: int, statuses: dict[str, dict]) -> None:
    """In an ingress replica, for its `/metrics`: a slot's index gauges as read from the searcher
    (the searcher itself records them to Ray's metrics; recording them here too would double them)."""
    for metric, tags, value in index_figures(slot, statuses):
        metric.labels(**tags).local.set(value)


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
