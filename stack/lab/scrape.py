"""Scrape each API replica's /metrics into the lab's records (week 1, before a Prometheus
server arrives in week 3): one JSON line per sample, on the traffic's clock."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# the series the notebooks draw; the rest of /metrics stays on the replicas
KEEP = {
    "process_resident_memory_bytes", "http_requests_in_flight", "db_pool_connections",
    "http_requests_total", "model_info", "cache_requests_total", "predictions_total",
}


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the kept samples in a Prometheus text page."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in KEEP:
                out.append((sample.name, dict(sample.labels), float(sample.value)))
    return out


class Scraper:
    """A background thread that GETs every target's /metrics once per interval."""

    def __init__(self, targets: Callable[[], dict[str, str]], path: str | Path, *,
                 interval: float = 1.0, clock: Callable[[], float] | None = None):
        self.targets = targets  # called each round: replicas may come and go
        self.path = Path(path)
        self.interval = interval
        t0 = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - t0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def __enter__(self) -> "Scraper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with open(self.path, "a") as fh, httpx.Client(timeout=0.5, trust_env=False) as client:
            while not self._stop.is_set():
                t = self.clock()
                for target, url in self.targets().items():
                    try:
                        samples = parse(client.get(url + "/metrics").text)
                        up = 1.0
                    except (httpx.HTTPError, ValueError):
                        samples, up = [], 0.0
                    fh.write(json.dumps({"t": t, "target": target, "name": "up", "labels": {},
                                         "value": up}) + "\n")
                    for name, labels, value in samples:
                        fh.write(json.dumps({"t": t, "target": target, "name": name,
                                             "labels": labels, "value": value}) + "\n")
                fh.flush()
                self._stop.wait(self.interval)


def load_metrics(path: str | Path) -> pd.DataFrame:
    """The scraped samples as a frame: t, target, name, labels, value."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=["t", "target", "name", "labels", "value"])
    return pd.read_json(path, lines=True)


def series(df: pd.DataFrame, name: str, **labels: str) -> pd.DataFrame:
    """One metric as a wide frame: index t, one column per target (labels summed over)."""
    sel = df[df["name"] == name]
    for key, value in labels.items():
        sel = sel[sel["labels"].map(lambda lab: lab.get(key) == value)]
    if sel.empty:
        return pd.DataFrame()
    return sel.pivot_table(index="t", columns="target", values="value", aggfunc="sum")
