"""Prometheus: scrapes the replicas, nginx, the databases' exporters and the uptime probe, and
evaluates the SLO rules; plus a small query client that returns lists and data frames.

prometheus.yml is rendered from the topology's PrometheusSpec: one job per target group
(``api``, ``nginx``, ``postgres``, ``redis``, ``probe``), every target on loopback, the API's
targets labelled with their replica's name. The TSDB lives in the component's folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import httpx
import pandas as pd
import yaml

from stack.runtime import binaries
from stack.errors import ComponentFailed, QueryError
from stack.components.base import HttpComponent
from stack.analysis.slo import prom_duration
from stack.topology import PrometheusSpec

log = logging.getLogger(__name__)

JOBS = ("api", "nginx", "postgres", "redis", "probe")


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float
    t: float


def _target_host(target: str) -> str:
    """The replica name a target stands for: 'api1=127.0.0.1:8001' -> ('api1', addr)."""
    return target.split("=", 1)[0] if "=" in target else ""


def render_config(spec: PrometheusSpec, scrape_targets: Mapping[str, Sequence[str]],
                  rule_files: Sequence[Path] = (), alertmanager_url: str | None = None,
                  job_options: Mapping[str, Mapping[str, object]] | None = None) -> str:
    """prometheus.yml (a pure function of its arguments).

    `scrape_targets` maps a job to its "127.0.0.1:PORT" targets. An ``api`` target may be
    written "NAME=127.0.0.1:PORT" to give it the label replica="NAME" (else api1, api2, ...).
    `job_options` adds scrape settings to a job (the blackbox exporter's metrics_path and
    params).
    """
    interval = prom_duration(spec.scrape_interval_s)
    cfg: dict = {
        "global": {"scrape_interval": interval,
                   "scrape_timeout": interval,
                   "evaluation_interval": prom_duration(spec.evaluation_interval_s)},
        "rule_files": [str(Path(p)) for p in rule_files],
        "scrape_configs": [],
    }
    if alertmanager_url:
        hostport = alertmanager_url.split("://", 1)[-1].rstrip("/")
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [hostport]}]}]}
    for job, targets in scrape_targets.items():
        if not targets:
            continue
        if job == "api":
            static = []
            for i, t in enumerate(targets, 1):
                name = _target_host(t) or f"api{i}"
                static.append({"targets": [t.split("=", 1)[-1]], "labels": {"replica": name}})
        else:
            static = [{"targets": [t.split("=", 1)[-1] for t in targets]}]
        for group in static:
            for t in group["targets"]:
                if not t.startswith("127.0.0.1:"):
                    raise ValueError(f"job {job}: target {t!r} is not on 127.0.0.1")
        cfg["scrape_configs"].append({"job_name": job, "metrics_path": "/metrics",
                                      **(job_options or {}).get(job, {}),
                                      "static_configs": static})
    return "# rendered by the lab from its topology\n" + yaml.safe_dump(cfg, sort_keys=False)


HISTORY_LABELS = {"job": "api", "instance": "history", "replica": "history",
                  "route": "/predict", "method": "POST", "status": "200"}


def history_openmetrics(start: float, end: float, rate_per_s: float, step_s: float = 5.0,
                        labels: Mapping[str, str] = HISTORY_LABELS) -> str:
    """A healthy past as OpenMetrics text (a pure function): one counter series of /predict
    requests answered 200 at `rate_per_s`, one sample every `step_s` from start to end (unix
    seconds). Its labels are its own (instance "history"), so it never collides with a live
    replica's series; the SLO rules sum over every series, so it fills their long windows."""
    if not end > start or not rate_per_s > 0 or not step_s > 0:
        raise ValueError(f"history needs end > start, rate > 0 and step > 0, got "
                         f"start={start}, end={end}, rate={rate_per_s}, step={step_s}")
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    lines = ["# HELP http_requests Requests, by route and status (backfilled history).",
             "# TYPE http_requests counter"]
    n = int((end - start) // step_s)
    for i in range(n + 1):
        t = start + i * step_s
        lines.append(f"http_requests_total{{{sel}}} {rate_per_s * i * step_s:.3f} {t:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class PrometheusClient:
    """The HTTP API's instant and range queries, with errors that say what went wrong."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, expr: str, params: dict) -> dict:
        try:
            resp = httpx.get(self.url + path, params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise QueryError(expr, f"Prometheus is not reachable ({exc.__class__.__name__}: "
                             f"{exc}); is it running?", self.url) from None
        try:
            body = resp.json()
        except ValueError:
            raise QueryError(expr, f"HTTP {resp.status_code}, not JSON: {resp.text[:200]}",
                             self.url) from None
        if body.get("status") != "success":
            raise QueryError(expr, f"{body.get('errorType', 'error')}: "
                             f"{body.get('error', resp.text[:200])}", self.url)
        return body["data"]

    def query(self, expr: str, time: float | None = None) -> list[Sample]:
        """An instant query: one Sample per series (a scalar gives one without labels)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self._get("/api/v1/query", expr, params)
        if data["resultType"] in ("scalar", "string"):
            t, v = data["result"]
            return [Sample({}, float(v), float(t))]
        return [Sample(dict(r["metric"]), float(r["value"][1]), float(r["value"][0]))
                for r in data["result"]]

    def value(self, expr: str, default: float | None = None) -> float | None:
        """The value of a query that gives at most one series (default when it gives none)."""
        res = self.query(expr)
        if len(res) > 1:
            raise QueryError(expr, f"expected one series, got {len(res)}", self.url)
        return res[0].value if res else default

    def query_range(self, expr: str, start: float, end: float, step: float) -> pd.DataFrame:
        """A range query as a long frame: one row per (series, time) with columns t (unix
        seconds), value, and one column per label (missing labels are '')."""
        if end < start:
            raise QueryError(expr, f"end {end} is before start {start}", self.url)
        data = self._get("/api/v1/query_range", expr,
                         {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                          "step": f"{max(step, 0.001):.3f}"})
        rows = []
        for r in data["result"]:
            for t, v in r["values"]:
                rows.append({"t": float(t), "value": float(v), **r["metric"]})
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame({"t": pd.Series(dtype="float64"),
                                 "value": pd.Series(dtype="float64")})
        labels = [c for c in df.columns if c not in ("t", "value")]
        df[labels] = df[labels].fillna("")
        return df.sort_values(["t", *labels]).reset_index(drop=True)

    def targets(self) -> list[dict]:
        """Active scrape targets: job, instance, labels, health ('up'/'down'), lastError."""
        data = self._get("/api/v1/targets", "(targets)", {"state": "active"})
        return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"),
                 "labels": t["labels"], "health": t["health"], "error": t.get("lastError", "")}
                for t in data["activeTargets"]]

    def alerts(self) -> list[dict]:
        """Alerts Prometheus holds now (pending and firing)."""
        return self._get("/api/v1/alerts", "(alerts)", {})["alerts"]


class PrometheusServer(HttpComponent):
    """One Prometheus in the lab's run directory. Ready when GET /-/ready answers 200 (the
    TSDB is open and the rules are loaded)."""

    kind = "prometheus"
    stop_order = -2  # first: it scrapes everything else
    ready_path = "/-/ready"
    ready_interval_s = 0.05

    def __init__(self, name: str, run_dir: Path, port: int, spec: PrometheusSpec,
                 scrape_targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = (),
                 alertmanager_url: str | None = None,
                 job_options: Mapping[str, Mapping[str, object]] | None = None):
        super().__init__(name, run_dir, port, start_deadline_s=spec.start_deadline_s,
                         stop_timeout_s=10.0)
        self.spec = spec
        self.scrape_targets = {k: list(v) for k, v in scrape_targets.items()}
        self.rule_files = [Path(p) for p in rule_files]
        self.alertmanager_url = alertmanager_url
        self.job_options = {k: dict(v) for k, v in (job_options or {}).items()}
        self._client = PrometheusClient(self.url)

    @property
    def url(self) -> str:
        return self.address

    @property
    def conf_path(self) -> Path:
        return self.dir / "prometheus.yml"

    def render(self) -> str:
        return render_config(self.spec, self.scrape_targets, self.rule_files,
                             self.alertmanager_url, self.job_options)

    def check_config(self) -> None:
        """`promtool check config` (which also checks the rule files)."""
        import subprocess

        res = subprocess.run([binaries.find("promtool"), "check", "config", str(self.conf_path)],
                             capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise ComponentFailed(self.name, f"promtool rejected {self.conf_path}",
                                  str(self.conf_path), (res.stdout + res.stderr).strip())

    def prepare(self) -> None:
        super().prepare()
        self.conf_path.write_text(self.render())
        self.check_config()

    def argv(self) -> list[str]:
        return [binaries.find("prometheus"), f"--config.file={self.conf_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--storage.tsdb.retention.time={self.spec.retention}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle", "--log.level=warn"]

    def reload(self) -> None:
        """Re-render the config and ask the running server to load it (and the rule files)."""
        self.conf_path.write_text(self.render())
        self.check_config()
        resp = httpx.post(self.url + "/-/reload", timeout=10.0)
        if resp.status_code != 200:
            raise ComponentFailed(self.name, f"reload failed: HTTP {resp.status_code} "
                                  f"{resp.text.strip()}", str(self.dir / "server.log"))

    def write_history(self, rate_per_s: float, seconds: float, *, step_s: float = 5.0,
                      end: float | None = None) -> Path:
        """Backfill a healthy past into the TSDB with `promtool tsdb create-blocks-from
        openmetrics`: `seconds` of /predict traffic at `rate_per_s`, all answered, ending at
        `end` (default now). A fresh Prometheus holds seconds of data, so its long SLO windows
        (6h, 3d) would hold only the incident; with this history they hold what they say.

        Call it while Prometheus is stopped; it loads the new blocks when it starts."""
        import subprocess
        import time

        if self.proc is not None and self.proc.alive():
            raise ComponentFailed(self.name, "stop Prometheus before writing history into its "
                                  "TSDB (it loads new blocks when it starts)",
                                  str(self.dir / "data"))
        end = time.time() if end is None else end
        path = self.dir / "history.om"
        path.write_text(history_openmetrics(end - seconds, end, rate_per_s, step_s))
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([binaries.find("promtool"), "tsdb", "create-blocks-from",
                              "openmetrics", "--quiet", str(path), str(data)],
                             capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise ComponentFailed(self.name, f"promtool could not backfill {path}", str(path),
                                  (res.stdout + res.stderr).strip())
        log.info("backfilled %.0f s of history at %g req/s into %s", seconds, rate_per_s, data)
        return path

    # -- queries ------------------------------------------------------------------------------
    def client(self, timeout: float = 5.0) -> PrometheusClient:
        return PrometheusClient(self.url, timeout)

    def query(self, expr: str, time: float | None = None) -> list[Sample]:
        return self._client.query(expr, time)

    def value(self, expr: str, default: float | None = None) -> float | None:
        return self._client.value(expr, default)

    def query_range(self, expr: str, start: float, end: float, step: float) -> pd.DataFrame:
        return self._client.query_range(expr, start, end, step)

    def targets(self) -> list[dict]:
        return self._client.targets()

    def alerts(self) -> list[dict]:
        return self._client.alerts()
