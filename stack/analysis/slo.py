"""The SLO as Prometheus rules: recording rules and multi-window, multi-burn-rate alerts.

Everything is rendered from one setting, ``time_scale_s``: how many real seconds stand for one
hour of the playbook. With the default 60 the lab's minutes stand for the playbook's hours, so
the SRE workbook's windows 5m, 30m, 1h, 6h and 3d become 5 s, 30 s, 60 s, 6 min and 72 min.

The alerts follow the SRE workbook's pattern for a 99.9% availability SLO:

- page when the error budget burns 14.4x too fast over 1h AND over 5m (2% of a 30-day budget
  gone in an hour), or 6x over 6h AND over 30m (5% in six hours);
- ticket when it burns faster than 1x over 3d AND over 6h.

The long window says "enough budget is gone to care"; the short one says "and it is still
happening", so an alert stops as soon as the errors stop instead of an hour later.

Rule names keep the playbook's windows (``slo:error_ratio:rate1h``) whatever the scale; only the
range in brackets changes. `render_rules()` is a pure function; `write_default_files()` writes
the checked-in files under rules/ that promtool checks and tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stack.errors import ConfigError

ROUTE = "/predict"
# The windows the rules use, in playbook hours.
WINDOWS_H: dict[str, float] = {"5m": 5 / 60, "30m": 0.5, "1h": 1.0, "6h": 6.0, "3d": 72.0,
                               "30d": 720.0}
DEFAULT_TIME_SCALE_S = 60.0


@dataclass(frozen=True)
class BurnAlert:
    """One multi-window burn-rate alert: fires when both windows burn faster than `factor`."""

    name: str
    severity: str
    factor: float
    long: str
    short: str


ALERTS = (
    BurnAlert("SLOErrorBudgetBurnFast", "page", 14.4, "1h", "5m"),
    BurnAlert("SLOErrorBudgetBurnSlow", "page", 6.0, "6h", "30m"),
    BurnAlert("SLOErrorBudgetBurnTicket", "ticket", 1.0, "3d", "6h"),
)


@dataclass(frozen=True)
class SloSettings:
    """What the rules are rendered from (the lab takes them from its PrometheusSpec)."""

    time_scale_s: float = DEFAULT_TIME_SCALE_S
    target: float = 0.999
    latency_objective_s: float = 0.5
    route: str = ROUTE
    alerts: tuple[BurnAlert, ...] = field(default=ALERTS)
    scrape_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale_s > 0:
            raise ConfigError(f"must be > 0, got {self.time_scale_s!r}", field="time_scale_s")
        if not 0.5 < self.target < 1:
            raise ConfigError(f"must be between 0.5 and 1, got {self.target!r}", field="target")

    @classmethod
    def from_spec(cls, spec: object) -> "SloSettings":
        """From a topology's PrometheusSpec."""
        return cls(time_scale_s=spec.time_scale_s, target=spec.slo_target,  # type: ignore[attr-defined]
                   latency_objective_s=spec.latency_objective_s,  # type: ignore[attr-defined]
                   scrape_interval_s=spec.scrape_interval_s)  # type: ignore[attr-defined]

    @property
    def budget(self) -> float:
        """The error budget as a ratio of requests (0.001 for 99.9%)."""
        return round(1.0 - self.target, 12)

    def seconds(self, window: str) -> float:
        """Real seconds a playbook window lasts at this scale."""
        try:
            return WINDOWS_H[window] * self.time_scale_s
        except KeyError:
            raise ConfigError(f"unknown window {window!r}; known: {', '.join(WINDOWS_H)}",
                              field="window") from None

    def duration(self, window: str) -> str:
        """A playbook window as a Prometheus duration at this scale ('5m' -> '5s' at 60)."""
        return prom_duration(self.seconds(window))


def prom_duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds when exact, else milliseconds (at least 1ms)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _num(x: float) -> str:
    return f"{x:.10g}"


# -- the expressions (shared with health, dashboards and the incident timeline) -----------------
def requests_selector(route: str = ROUTE, errors: bool = False) -> str:
    status = ',status=~"5.."' if errors else ""
    return f'http_requests_total{{route="{route}"{status}}}'


def error_ratio_expr(window_range: str, route: str = ROUTE) -> str:
    """5xx over all requests on the route; 0 (not empty) while there are requests but no 5xx."""
    errs = f"sum(rate({requests_selector(route, True)}[{window_range}]))"
    total = f"sum(rate({requests_selector(route)}[{window_range}]))"
    return f"({errs} or vector(0))\n  /\n{total}"


def latency_quantile_expr(q: float, window_range: str, route: str = ROUTE) -> str:
    return (f"histogram_quantile({_num(q)}, sum by (le) (rate("
            f'http_request_duration_seconds_bucket{{route="{route}"}}[{window_range}])))')


def record_name(kind: str, window: str) -> str:
    """The recording rule of a quantity over a playbook window, e.g. slo:error_ratio:rate1h."""
    return {"error_ratio": f"slo:error_ratio:rate{window}",
            "requests": f"slo:requests:rate{window}",
            "p50": f"slo:latency_seconds:p50_rate{window}",
            "p99": f"slo:latency_seconds:p99_rate{window}",
            "probe": f"slo:probe_success:avg{window}"}[kind]


ERROR_RATIO_WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")
LATENCY_WINDOWS = ("5m",)
PROBE_WINDOWS = ("5m", "1h")


class _Literal(str):
    """A multi-line string YAML writes as a literal block."""


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                   style="|" if "\n" in data else None)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def rule_groups(s: SloSettings = SloSettings()) -> dict:
    """The rule file as a mapping (what `render_rules` dumps)."""
    recording = []
    for w in ERROR_RATIO_WINDOWS:
        recording.append({"record": record_name("requests", w),
                          "expr": f"sum(rate({requests_selector(s.route)}[{s.duration(w)}]))"})
        recording.append({"record": record_name("error_ratio", w),
                          "expr": _Literal(error_ratio_expr(s.duration(w), s.route))})
    for w in LATENCY_WINDOWS:
        for q, kind in ((0.5, "p50"), (0.99, "p99")):
            recording.append({"record": record_name(kind, w),
                              "expr": latency_quantile_expr(q, s.duration(w), s.route)})
    for w in PROBE_WINDOWS:
        recording.append({"record": record_name("probe", w),
                          "expr": f"avg(avg_over_time(probe_success[{s.duration(w)}]))"})
    # The budget of a whole 30-day window: the errors so far against budget x the requests a
    # month holds at the last hour's rate (a lab younger than the window has not sent a
    # month of requests yet, so a plain 30-day error ratio would overstate what is spent).
    month = s.duration("30d")
    errors = f"(sum(increase({requests_selector(s.route, True)}[{month}])) or vector(0))"
    expected = (f"sum(rate({requests_selector(s.route)}[{s.duration('1h')}])) * "
                f"{_num(s.seconds('30d'))}")
    recording.append({"record": "slo:error_budget_remaining:ratio30d",
                      "expr": f"1 - {errors}\n  /\n({_num(s.budget)} * {expected})"})

    alerts = []
    for a in s.alerts:
        threshold = f"({_num(a.factor)} * {_num(s.budget)})"
        expr = (f"{record_name('error_ratio', a.long)} > {threshold}\n"
                f"and\n{record_name('error_ratio', a.short)} > {threshold}")
        alerts.append({
            "alert": a.name,
            "expr": _Literal(expr),
            "labels": {"severity": a.severity, "slo": f"availability-{_num(s.target * 100)}",
                       "long_window": a.long, "short_window": a.short},
            "annotations": {
                "summary": (f"Error budget burning {_num(a.factor)}x too fast over {a.long} "
                            f"and {a.short} (playbook time; here {s.duration(a.long)} and "
                            f"{s.duration(a.short)})"),
                "description": (f"More than {_num(a.factor * s.budget * 100)}% of {s.route} "
                                "requests failed (5xx) over both windows."),
            },
        })
    return {"groups": [
        {"name": "slo-recording", "rules": recording},
        {"name": "slo-alerts", "rules": alerts},
    ]}


def render_rules(s: SloSettings = SloSettings()) -> str:
    """slo.rules.yml for these settings (a pure function of them)."""
    scale = (f"# time_scale_s={_num(s.time_scale_s)}: one playbook hour lasts "
             f"{_num(s.time_scale_s)} real seconds; windows: "
             + ", ".join(f"{w}={s.duration(w)}" for w in WINDOWS_H))
    header = ("# Rendered by stack.analysis.slo from one setting; do not edit by hand\n"
              "# (regenerate: python -m stack.analysis.slo).\n"
              f"# SLO: {_num(s.target * 100)}% of {s.route} requests answer without a 5xx.\n"
              + scale + "\n")
    return header + yaml.dump(rule_groups(s), Dumper=_Dumper, sort_keys=False, width=100)


# -- promtool unit tests ---------------------------------------------------------------------
def series_values(rate_per_s: list[tuple[float, int]]) -> str:
    """Expanding notation for a counter sampled every second that grows `rate` per second for
    `n` seconds in each segment, e.g. [(8, 3), (10, 2)] -> '0+8x3 32+10x1'."""
    parts, value, first = [], 0.0, True
    for rate, n in rate_per_s:
        if first:
            parts.append(f"{_num(value)}+{_num(rate)}x{n}")
            value += rate * n
            first = False
        else:
            value += rate
            parts.append(f"{_num(value)}+{_num(rate)}x{n - 1}")
            value += rate * (n - 1)
    return " ".join(parts)


def _case(name: str, total_per_s: float, error_shares: list[tuple[float, int]],
          eval_at: int | list[int], firing: set[str], s: SloSettings) -> dict:
    """One promtool test: `total_per_s` requests per second on the route, of which the share
    in each segment fails with a 500; expect exactly the alerts in `firing` at `eval_at`."""
    ok = [(round(total_per_s * (1 - share), 9), n) for share, n in error_shares]
    err = [(round(total_per_s * share, 9), n) for share, n in error_shares]
    sel = f'http_requests_total{{route="{s.route}",method="POST",status="%s"}}'
    tests = []
    rules = {r["alert"]: r for r in rule_groups(s)["groups"][1]["rules"]}
    for at in ([eval_at] if isinstance(eval_at, int) else eval_at):
        for a in s.alerts:
            exp = []
            if a.name in firing:
                exp = [{"exp_labels": dict(rules[a.name]["labels"]),
                        "exp_annotations": dict(rules[a.name]["annotations"])}]
            tests.append({"eval_time": f"{at}s", "alertname": a.name, "exp_alerts": exp})
    return {"name": name, "interval": "1s",
            "input_series": [{"series": sel % "200", "values": series_values(ok)},
                             {"series": sel % "500", "values": series_values(err)}],
            "alert_rule_test": tests}


def promtool_tests(s: SloSettings = SloSettings()) -> dict:
    """promtool unit tests proving when each alert fires and when it stays quiet.

    Every case starts with a clean history of one scaled 3d window plus a little, so the long
    windows see what they would see in production.
    """
    fast, slow, ticket = (a.name for a in s.alerts)
    # promtool evaluates every rule at every step from 0 to the last eval_time; over a 3d window
    # of 1 s samples that is slow, so it steps by the 5m window and every segment is a whole
    # number of steps (the 5m window always holds the latest samples).
    step = max(1, int(round(s.seconds("5m"))))

    def steps(seconds: float) -> int:
        return max(1, int(math.ceil(seconds / step))) * step

    h1 = s.seconds("1h")
    clean = steps(s.seconds("3d") + h1)
    # 15% errors for 1/6 playbook hour: 14.4x over 1h (0.15 * n / 1h = 0.025 > 0.0144) but not
    # yet 6x over 6h (0.15 * n / 6h = 0.0042 < 0.006)
    fast_n = steps(h1 / 6)
    slow_n = steps(5 * h1)  # 1% errors (10x) for 5 playbook hours: 6h at 8.3x, 3d at 0.7x
    blip_n = max(1, int(round(h1 / 30)))  # 30% for 2 playbook minutes: 1h at 10x, < 14.4x
    cases = [
        _case("fast burn (15% errors) pages through the 1h/5m rule", 10,
              [(0, clean), (0.15, fast_n)], clean + fast_n, {fast}, s),
        _case("the fast page stops once the 5m window is clean again", 10,
              [(0, clean), (0.15, fast_n), (0, 2 * step)], clean + fast_n + 2 * step, set(), s),
        _case("slow burn (1% errors, 10x) pages through the 6h/30m rule", 10,
              [(0, clean), (0.01, slow_n)], clean + slow_n, {slow}, s),
        _case("a 1.2x burn over 3d opens a ticket and pages nobody", 1000,
              [(0.0012, clean)], clean, {ticket}, s),
        {**_case("0.05% errors (half the budget rate) fire nothing", 1000,
                 [(0.0005, clean)], clean, set(), s),
         "promql_expr_test": [
             {"expr": record_name("error_ratio", w), "eval_time": f"{clean}s",
              "exp_samples": [{"labels": record_name("error_ratio", w), "value": 0.0005}]}
             for w in ("5m", "1h", "3d")]},
        {**_case("no errors at all: the error ratio is 0, not empty", 10,
                 [(0, steps(h1))], steps(h1), set(), s),
         "promql_expr_test": [
             {"expr": record_name("error_ratio", "5m"), "eval_time": f"{steps(h1)}s",
              "exp_samples": [{"labels": record_name("error_ratio", "5m"), "value": 0}]}]},
        _case("a short blip (30% errors, shorter than the 1h window) does not page", 10,
              [(0, clean), (0.3, blip_n), (0, 2 * step)], [clean + step, clean + 2 * step],
              set(), s),
    ]
    # promtool evaluates rule groups in a random order unless told: the alerts must see the
    # recording rules of the same evaluation step, as they do in time on a live server.
    return {"rule_files": ["../slo.rules.yml"], "evaluation_interval": f"{step}s",
            "group_eval_order": [g["name"] for g in rule_groups(s)["groups"]],
            "tests": cases}


def render_promtool_tests(s: SloSettings = SloSettings()) -> str:
    return ("# Rendered by stack.analysis.slo (python -m stack.analysis.slo); run: promtool test rules "
            "rules/tests/*.yml\n"
            + yaml.dump(promtool_tests(s), Dumper=_Dumper, sort_keys=False, width=100))


def rules_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "rules"


def write_rules(path: Path, s: SloSettings = SloSettings()) -> Path:
    """Render the rules for these settings into a file (a lab writes its own copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_rules(s))
    return path


def write_default_files(root: Path | None = None) -> list[Path]:
    """rules/slo.rules.yml and rules/tests/slo_test.yml at the default settings."""
    root = Path(root) if root else rules_dir()
    (root / "tests").mkdir(parents=True, exist_ok=True)
    rules = root / "slo.rules.yml"
    rules.write_text(render_rules())
    tests = root / "tests" / "slo_test.yml"
    tests.write_text(render_promtool_tests())
    return [rules, tests]


if __name__ == "__main__":  # pragma: no cover
    for p in write_default_files():
        print(p)
