"""`stackctl slo render`: the course's SLO rules and dashboard for a team's real Prometheus.

The lab renders its rules at a compressed time scale (`stack.analysis.slo`: one playbook hour
is a minute there, so `rate(...[5s])`), which would come up empty on a Prometheus that scrapes
every 15 s. Here the windows are the SRE workbook's own (5m, 30m, 1h, 6h, 3d, and 30d for the
budget), the alerts are the same multi-window burn-rate pairs (`stack.analysis.slo.ALERTS`),
the rule names are the same (`slo:error_ratio:rate1h`, ...), and the metric names, the job and
the label matchers are the team's. Every series keeps its `job` label, so several services'
rules can live in one Prometheus.

`check()` runs `promtool check rules` on the rules and on every dashboard panel's PromQL
(written as recording rules into a scratch file), so what this writes is what promtool takes.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from stack.analysis.dashboards import Panel, Target, grafana_json
from stack.analysis.slo import ALERTS, BurnAlert, SloSettings, record_name
from stack.errors import ConfigError, StackError
from stack.runtime import binaries

WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")  # Prometheus durations as they are
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_JOB = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_MATCHER = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:\\.|[^"\\])*"\s*$')


def _matchers(text: str, field: str) -> list[str]:
    """'route="/predict", method!="GET"' -> its matchers; a ConfigError naming a bad one."""
    if not text.strip():
        return []
    parts = re.findall(r'(?:[^,"]|"(?:\\.|[^"\\])*")+', text)
    for p in parts:
        if not _MATCHER.match(p):
            raise ConfigError(f"not a label matcher: {p.strip()!r} (write name=\"value\", "
                              "name=~\"regex\", ...)", field=field)
    return [p.strip() for p in parts]


@dataclass(frozen=True)
class ProdSlo:
    """What the rules and the dashboard are rendered from."""

    job: str
    target: float = 0.999
    requests_metric: str = "http_requests_total"
    errors: str = 'status=~"5.."'  # which of those requests failed
    selector: str = ""  # more matchers on every request series, e.g. route="/predict"
    latency_metric: str | None = "http_request_duration_seconds"  # a histogram, or None
    latency_objective_s: float = 0.5
    probe_job: str | None = None  # the blackbox exporter's job, if the team runs one

    def __post_init__(self) -> None:
        if not _JOB.match(self.job):
            raise ConfigError(f"must be 1-128 letters, digits or _.:/-, got {self.job!r}",
                              field="--job")
        if self.probe_job is not None and not _JOB.match(self.probe_job):
            raise ConfigError(f"must be 1-128 letters, digits or _.:/-, got "
                              f"{self.probe_job!r}", field="--probe-job")
        if not 0.5 < self.target < 1:
            raise ConfigError(f"must be between 0.5 and 1 (e.g. 0.999), got {self.target!r}",
                              field="--target")
        for field_, name in (("--requests-metric", self.requests_metric),
                             ("--latency-metric", self.latency_metric)):
            if name is not None and not _METRIC.match(name):
                raise ConfigError(f"not a Prometheus metric name: {name!r}", field=field_)
        if not _matchers(self.errors, "--errors"):
            raise ConfigError("name the failed requests, e.g. status=~\"5..\"", field="--errors")
        _matchers(self.selector, "--selector")
        if not 0 < self.latency_objective_s <= 60:
            raise ConfigError(f"must be more than 0 and at most 60s, got "
                              f"{self.latency_objective_s!r}", field="--latency-objective")

    @property
    def budget(self) -> float:
        return SloSettings(target=self.target).budget

    def sel(self, errors: bool = False) -> str:
        parts = [f'job="{self.job}"', *_matchers(self.selector, "--selector")]
        if errors:
            parts += _matchers(self.errors, "--errors")
        return "{" + ",".join(parts) + "}"

    def own(self, record: str) -> str:
        """A recorded series of this job."""
        return f'{record}{{job="{self.job}"}}'


def _num(x: float) -> str:
    return f"{x:.10g}"


def _requests(s: ProdSlo, w: str, errors: bool = False) -> str:
    return f"sum by (job) (rate({s.requests_metric}{s.sel(errors)}[{w}]))"


def rule_groups(s: ProdSlo, alerts: tuple[BurnAlert, ...] = ALERTS) -> dict:
    """The rule file as a mapping: recording rules per window, then the burn-rate alerts."""
    rec = []
    for w in WINDOWS:
        total = _requests(s, w)
        rec.append({"record": record_name("requests", w), "expr": total})
        # no failed request at all must read 0, not nothing: "or" the total times zero
        rec.append({"record": record_name("error_ratio", w),
                    "expr": f"(\n  {_requests(s, w, True)}\n  or\n  0 * {total}\n)\n/\n{total}"})
    if s.latency_metric:
        for q, kind in ((0.5, "p50"), (0.99, "p99")):
            rec.append({"record": record_name(kind, "5m"),
                        "expr": f"histogram_quantile({q}, sum by (job, le) (rate("
                                f"{s.latency_metric}_bucket{s.sel()}[5m])))"})
    if s.probe_job:
        for w in ("5m", "1h"):
            rec.append({"record": record_name("probe", w),
                        "expr": f'avg by (job) (avg_over_time(probe_success{{job="'
                                f'{s.probe_job}"}}[{w}]))'})
    rec.append({"record": "slo:error_budget_remaining:ratio30d",
                "expr": f"1 - {s.own(record_name('error_ratio', '30d'))} / {_num(s.budget)}"})
    rules = []
    slo_label = f"availability-{_num(s.target * 100)}"
    for a in alerts:
        threshold = f"({_num(a.factor)} * {_num(s.budget)})"
        rules.append({
            "alert": a.name,
            "expr": (f"{s.own(record_name('error_ratio', a.long))} > {threshold}\nand\n"
                     f"{s.own(record_name('error_ratio', a.short))} > {threshold}"),
            "labels": {"severity": a.severity, "slo": slo_label, "long_window": a.long,
                       "short_window": a.short},
            "annotations": {
                "summary": (f"{s.job}: error budget burning {_num(a.factor)}x too fast over "
                            f"{a.long} and {a.short}"),
                "description": (f"More than {_num(a.factor * s.budget * 100)}% of {s.job}'s "
                                "requests failed over both windows; at this rate the 30-day "
                                f"budget of {_num(s.budget * 100)}% lasts "
                                f"{_num(round(720 / a.factor, 1))} hours."),
            },
        })
    if s.probe_job:
        rules.append({
            "alert": "UptimeProbeFailing",
            "expr": f'min by (instance) (probe_success{{job="{s.probe_job}"}}) == 0',
            "for": "2m",
            "labels": {"severity": "page", "slo": slo_label},
            "annotations": {"summary": "the uptime probe of {{ $labels.instance }} has failed "
                                       "for 2 minutes"},
        })
    return {"groups": [{"name": f"slo-{s.job}-recording", "rules": rec},
                       {"name": f"slo-{s.job}-alerts", "rules": rules}]}


class _Literal(str):
    """A multi-line string YAML writes as a literal block."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, lambda d, v: d.represent_scalar(
    "tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def render_rules(s: ProdSlo) -> str:
    groups = rule_groups(s)
    for g in groups["groups"]:
        for r in g["rules"]:
            r["expr"] = _Literal(r["expr"])
    head = (f"# Rendered by `stackctl slo render` (stack/own/slo_render.py) for job {s.job}.\n"
            f"# SLO: {_num(s.target * 100)}% of {s.requests_metric}{s.sel()} without "
            f"{s.errors}; windows 5m, 30m, 1h, 6h, 3d, 30d (keep 30d of data).\n"
            "# Check: promtool check rules <this file>\n")
    return head + yaml.dump(groups, Dumper=_Dumper, sort_keys=False, width=100)


def panels(s: ProdSlo) -> list[Panel]:
    b = _num(s.budget)
    out = [
        Panel("Traffic (req/s)", "reqps", (
            Target(s.own(record_name("requests", "5m")), "{{job}}"),)),
        Panel("Error ratio (5m, 1h) and the budget", "percentunit", (
            Target(s.own(record_name("error_ratio", "5m")), "5m"),
            Target(s.own(record_name("error_ratio", "1h")), "1h"),
            Target(f"vector({b})", "budget ({:.1%} SLO)".format(s.target)))),
        Panel("Burn rate (1h, 6h; 14.4 and 6 page)", "short", (
            Target(f"{s.own(record_name('error_ratio', '1h'))} / {b}", "1h"),
            Target(f"{s.own(record_name('error_ratio', '6h'))} / {b}", "6h"))),
        Panel("Error budget left (30d)", "percentunit", (
            Target(s.own("slo:error_budget_remaining:ratio30d"), "budget left"),)),
    ]
    if s.latency_metric:
        out.append(Panel(f"Latency p50 / p99 (objective {_num(s.latency_objective_s)} s)", "s", (
            Target(s.own(record_name("p50", "5m")), "p50"),
            Target(s.own(record_name("p99", "5m")), "p99"),
            Target(f"vector({_num(s.latency_objective_s)})", "objective"))))
    if s.probe_job:
        out.append(Panel("Uptime probe", "short", (
            Target(f'min by (instance) (probe_success{{job="{s.probe_job}"}})', "{{instance}}"),
            Target(f'max by (instance) (probe_duration_seconds{{job="{s.probe_job}"}})',
                   "{{instance}} seconds"))))
    return out


def grafana_dashboard(s: ProdSlo) -> dict:
    """Importable Grafana JSON; the data source is a variable, like dashboards/uptime.json."""
    uid = re.sub(r"[^a-zA-Z0-9_-]", "-", f"slo-{s.job}")[:40]
    return grafana_json(panels(s), title=f"SLO: {s.job} ({_num(s.target * 100)}%)", uid=uid,
                        refresh="1m", time_from="now-24h",
                        alerts_expr=f'ALERTS{{alertstate="firing",job="{s.job}"}}')


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every query in a Grafana dashboard JSON: panels and annotations."""
    out = []
    for p in dashboard.get("panels", []):
        for t in p.get("targets", []):
            out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')!r}", a["expr"]))
    return out


def promtool_check(rules: Path) -> str:
    """`promtool check rules`; a StackError with promtool's own words when it refuses."""
    res = subprocess.run([binaries.find("promtool"), "check", "rules", str(rules)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    said = (res.stdout + res.stderr).strip()
    if res.returncode != 0:
        raise StackError(f"promtool rejected {rules}: {said}")
    return said


def check_dashboard(path: Path) -> int:
    """Every query of a dashboard JSON through promtool (as recording rules in a scratch file);
    returns how many were checked."""
    exprs = dashboard_exprs(json.loads(Path(path).read_text()))
    rules = [{"record": f"dashboard:check_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.TemporaryDirectory(prefix="stackctl-slo-") as tmp:
        scratch = Path(tmp) / "dashboard-queries.rules.yml"
        scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        try:
            promtool_check(scratch)
        except StackError as exc:
            m = re.search(r'"dashboard:check_(\d+)": (.*)', str(exc))
            if not m:
                raise
            where, expr = exprs[int(m[1])]
            raise StackError(f"{path}: promtool rejects the query of {where} ({expr!r}): "
                             f"{m[2].strip()}") from None
    return len(exprs)


def write(s: ProdSlo, out_dir: str | Path, check: bool = True) -> list[str]:
    """Write <job>.rules.yml and <job>.dashboard.json into out_dir; check both with promtool.
    Returns the lines the command prints."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the folder: {exc.strerror}", field="-o") from None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", s.job)
    rules = out / f"{safe}.rules.yml"
    dash = out / f"{safe}.dashboard.json"
    rules.write_text(render_rules(s))
    dash.write_text(json.dumps(grafana_dashboard(s), indent=2) + "\n")
    groups = rule_groups(s)["groups"]
    lines = [f"rules:     {rules} ({len(groups[0]['rules'])} recording rules, "
             f"{len(groups[1]['rules'])} alerts)",
             f"dashboard: {dash} ({len(grafana_dashboard(s)['panels'])} panels)"]
    if check:
        said = promtool_check(rules).splitlines()
        lines.append(f"promtool check rules: {said[-1] if said else 'SUCCESS'}")
        lines.append(f"promtool check of the dashboard's queries: {check_dashboard(dash)} "
                     "queries, SUCCESS")
    return lines
