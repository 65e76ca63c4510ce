"""Prometheus metrics in a per-app registry, so every app (and test) starts fresh."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)


class PoolCollector(Collector):
    """db_pool_connections{state}, read from the pool's stats at scrape time."""

    def __init__(self, get_pool: Callable[[], Any]):
        self._get_pool = get_pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("db_pool_connections",
                                   "Database pool connections by state", labels=["state"])
        pool = self._get_pool()
        stats = pool.get_stats() if pool is not None else {}
        family.add_metric(["size"], stats.get("pool_size", 0))
        family.add_metric(["available"], stats.get("pool_available", 0))
        family.add_metric(["waiting"], stats.get("requests_waiting", 0))
        yield family


class ApiMetrics:
    """Every metric the API exports."""

    def __init__(self, get_pool: Callable[[], Any] = lambda: None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes shows a leak growing
        self.requests = Counter("http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("http_request_duration_seconds",
                                  "HTTP request latency by route", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("http_requests_in_flight", "HTTP requests being served",
                               registry=r)
        self.model_info = Gauge("model_info", "The loaded model (value 1)",
                                ["version", "sha256"], registry=r)
        self.predictions = Counter("predictions", "Predictions by outcome", ["outcome"],
                                   registry=r)
        self.cache = Counter("cache_requests", "Customer cache lookups by result", ["result"],
                             registry=r)
        r.register(PoolCollector(get_pool))
        for outcome in ("ok", "unknown_customer", "db_error", "model_error"):
            self.predictions.labels(outcome)
        for result in ("hit", "miss", "error", "disabled"):
            self.cache.labels(result)

    def set_model(self, version: str | None, sha256: str | None) -> None:
        """Point model_info at the active model (none: no series)."""
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version=version, sha256=sha256 or "").set(1)
