"""The exercise checks of week 3: monitoring that pages before users notice."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from stack.errors import ExerciseFailed
from stack.check.core import task, read_yaml, read_mapping

ALERT_NAME = "SLOErrorBudgetBurnFast"
# Hidden promtool cases, at the lab's scale (60 real seconds stand for one playbook hour, so
# the 1h window is 60s and the 5m window 5s), 10 requests per second on /predict.
CLEAN_S = 70


def _series_values(segments: list[tuple[float, int]], rps: float) -> tuple[str, str]:
    """promtool values of the 200 and 500 counters, sampled each second, for segments of
    (error share, seconds)."""
    from stack.analysis.slo import series_values

    ok = [(round(rps * (1 - share), 9), n) for share, n in segments]
    err = [(round(rps * share, 9), n) for share, n in segments]
    return series_values(ok), series_values(err)


def _hidden_case(name: str, segments: list[tuple[float, int]], firing: dict[int, bool],
                 rps: float = 10.0) -> dict:
    ok, err = _series_values(segments, rps)
    sel = 'http_requests_total{route="/predict",method="POST",status="%s"}'
    expr = f'max(ALERTS{{alertname="{ALERT_NAME}",alertstate="firing",severity="page"}})'
    return {"name": name, "interval": "1s",
            "input_series": [{"series": sel % "200", "values": ok},
                             {"series": sel % "500", "values": err}],
            "promql_expr_test": [
                {"expr": expr, "eval_time": f"{at}s",
                 "exp_samples": [{"labels": "{}", "value": 1}] if fire else []}
                for at, fire in firing.items()]}


HIDDEN_ALERT_CASES = [
    # (what it proves, the hint when it fails, the case)
    ("a fast burn (15% errors) pages within 15 s (15 playbook minutes)",
     "the page must fire on a real, fast burn: the 1h window crosses 14.4x the budget after "
     "about 6 s of 15% errors; a long `for:` delays it",
     _hidden_case("fast burn", [(0, CLEAN_S), (0.15, 25)], {CLEAN_S + 15: True})),
    ("the page resolves within 15 s of the errors stopping",
     "a rule on the 1h window alone keeps paging for an hour after the fix: AND it with a "
     "short (5m) window",
     _hidden_case("resolves", [(0, CLEAN_S), (0.15, 20), (0, 20)], {CLEAN_S + 35: False})),
    ("a short blip (30% errors for 2 s) does not page",
     "a blip spends almost no budget: compare the 1h window against 14.4x the budget, not "
     "the 5m window against 1x",
     _hidden_case("blip", [(0, CLEAN_S), (0.3, 2), (0, 20)],
                  {CLEAN_S + t: False for t in (1, 2, 3, 4, 6, 10, 15)})),
    ("0.05% errors (half the budget rate) never page",
     "the SLO allows 0.1% errors: spending half of it must stay quiet",
     _hidden_case("half the budget", [(0.0005, CLEAN_S + 20)],
                  {CLEAN_S: False, CLEAN_S + 20: False}, rps=1000.0)),
    ("a sustained 3% error rate (30x) pages within 40 s",
     "the threshold is 14.4 x 0.001 = 1.44% errors over both windows; a higher one misses "
     "a burn that empties the month's budget in a day",
     _hidden_case("sustained 3%", [(0, CLEAN_S), (0.03, 40)], {CLEAN_S + 40: True})),
]


def _promtool(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    from stack.runtime import binaries

    return subprocess.run([binaries.find("promtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _tool_output(res: subprocess.CompletedProcess, lines: int = 4) -> str:
    text = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    return " | ".join(text[-lines:])


def _alert_tests_of(doc: Any) -> tuple[int, int]:
    """(cases expecting the alert to fire, cases expecting silence) in a promtool test file."""
    fire = quiet = 0
    for test in (doc or {}).get("tests") or []:
        for t in test.get("alert_rule_test") or []:
            if t.get("alertname") == ALERT_NAME:
                if t.get("exp_alerts"):
                    fire += 1
                else:
                    quiet += 1
    return fire, quiet


@task("week3", "alert", ("alert.rules.yml", "alert.test.yml"))
def check_alert(folder: Path) -> str:
    rules_doc = read_yaml(folder / "alert.rules.yml")
    alerts = [r for g in (rules_doc or {}).get("groups") or [] for r in g.get("rules") or []
              if r.get("alert") == ALERT_NAME]
    if len(alerts) != 1 or (alerts[0].get("labels") or {}).get("severity") != "page":
        raise ExerciseFailed(f"alert.rules.yml needs one alert named {ALERT_NAME} with the "
                             f"label severity: page (found {len(alerts)})",
                             "keep the starter's alert name and labels, change its expr")
    with tempfile.TemporaryDirectory(prefix="exercise-alert-") as tmp:
        work = Path(tmp)
        shutil.copy2(folder / "alert.rules.yml", work / "alert.rules.yml")
        shutil.copy2(folder / "alert.test.yml", work / "alert.test.yml")
        res = _promtool("check", "rules", "alert.rules.yml", cwd=work)
        if res.returncode != 0:
            raise ExerciseFailed(f"promtool check rules: {_tool_output(res)}",
                                 "fix what promtool names: a PromQL syntax error or a bad key")
        # the learner's groups in file order (recording rules first, as promtool needs them
        # to be evaluated before the alerts that read them; unordered, it picks at random)
        groups = [g.get("name") for g in rules_doc.get("groups") or [] if g.get("name")]
        failed = []
        for i, (claim, hint, case) in enumerate(HIDDEN_ALERT_CASES):
            doc = {"rule_files": ["alert.rules.yml"], "evaluation_interval": "1s",
                   "group_eval_order": groups, "tests": [case]}
            (work / f"hidden_{i}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
            # one promtool run per case, so that each failure is named
            res = _promtool("test", "rules", f"hidden_{i}.yml", cwd=work)
            if res.returncode != 0:
                failed.append((claim, hint))
        if failed:
            raise ExerciseFailed(f"{len(failed)} of {len(HIDDEN_ALERT_CASES)} hidden cases "
                                 "fail: " + "; ".join(claim for claim, _ in failed),
                                 failed[0][1])
        fire, quiet = _alert_tests_of(read_yaml(work / "alert.test.yml"))
        res = _promtool("test", "rules", "alert.test.yml", cwd=work)
        if res.returncode != 0:
            raise ExerciseFailed(f"the hidden cases pass, but your own promtool tests fail: "
                                 f"{_tool_output(res, 6)}",
                                 "update the test's expectations (exp_labels and "
                                 "exp_annotations must match the alert exactly)")
        if not fire or not quiet:
            raise ExerciseFailed(f"the hidden cases pass, but alert.test.yml has {fire} case(s) "
                                 f"where {ALERT_NAME} must fire and {quiet} where it must stay "
                                 "quiet",
                                 "add a case of each: a real burn that pages, and a blip (or "
                                 "a low error rate) that does not")
    return (f"promtool: rules valid, your {fire + quiet} alert tests pass, and "
            f"{len(HIDDEN_ALERT_CASES)} hidden cases pass")


ROUTING_ALERTS = {
    # name: labels
    "page": {"alertname": "SLOErrorBudgetBurnFast", "severity": "page",
             "slo": "availability-99.9"},
    "ticket, same SLO": {"alertname": "SLOErrorBudgetBurnTicket", "severity": "ticket",
                         "slo": "availability-99.9"},
    "ticket, other SLO": {"alertname": "LatencyBudgetBurnTicket", "severity": "ticket",
                          "slo": "latency-p99"},
    "no severity": {"alertname": "ReplicaDown", "replica": "api2"},
}


def _amtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    from stack.runtime import binaries

    return subprocess.run([binaries.find("amtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def _live_alerts(config_text: str, alerts: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Start the real Alertmanager with this config, send the alerts, and return each one's
    receivers and state ('active' or 'suppressed') as Alertmanager reports them."""
    from stack.runtime import ports
    from stack.components.alerting import Alertmanager
    from stack.lab.lab import runs_root

    class LearnerAlertmanager(Alertmanager):
        def render(self) -> str:
            return config_text

    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="exercise-routing-", dir=root) as tmp:
        am = LearnerAlertmanager("alertmanager", Path(tmp), ports.free_port(),
                                 "http://127.0.0.1:9/unused")
        am.start()
        try:
            am.wait_ready()
            now = time.time()
            body = [{"labels": labels,
                     "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5)),
                     "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 300))}
                    for labels in alerts.values()]
            httpx.post(am.url + "/api/v2/alerts", json=body, timeout=5).raise_for_status()
            found: dict[str, dict] = {}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                got = httpx.get(am.url + "/api/v2/alerts", timeout=5).json()
                found = {}
                for a in got:
                    for key, labels in alerts.items():
                        if all(a["labels"].get(k) == v for k, v in labels.items()):
                            found[key] = {"receivers": sorted(r["name"] for r in a["receivers"]),
                                          "state": a["status"]["state"]}
                if len(found) == len(alerts) and all(f["state"] != "unprocessed"
                                                     for f in found.values()):
                    break
                time.sleep(0.1)
            return found
        finally:
            am.stop()


@task("week3", "routing", ("alertmanager.yml",))
def check_routing(folder: Path) -> str:
    path = folder / "alertmanager.yml"
    read_mapping(path)
    res = _amtool("check-config", path.name, cwd=folder)
    if res.returncode != 0:
        raise ExerciseFailed(f"amtool check-config: {_tool_output(res)}",
                             "fix what amtool names (a receiver a route uses must be defined)")
    found = _live_alerts(path.read_text(), ROUTING_ALERTS)
    missing = [k for k in ROUTING_ALERTS if k not in found]
    if missing:
        raise ExerciseFailed(f"Alertmanager did not report the alert(s): {', '.join(missing)}",
                             "check the config loads: amtool check-config alertmanager.yml")
    page, same, other, plain = (found[k] for k in ROUTING_ALERTS)
    if page["receivers"] != ["pager"]:
        raise ExerciseFailed(f"the page went to {page['receivers']}, not only to pager",
                             "route severity=\"page\" to the receiver pager")
    for key, got in (("ticket, other SLO", other), ("no severity", plain)):
        if got["receivers"] != ["tickets"]:
            raise ExerciseFailed(f"the alert '{key}' went to {got['receivers']}, not to tickets",
                                 "pages wake a person: everything that is not severity=\"page\" "
                                 "goes to tickets (the default route)")
    if same["state"] != "suppressed":
        raise ExerciseFailed("the SLO's ticket still notifies while its page fires "
                             f"(state {same['state']})",
                             "add an inhibit rule: a firing page mutes the ticket of the same "
                             "slo (equal: [slo])")
    if other["state"] == "suppressed":
        raise ExerciseFailed("the latency SLO's ticket was muted by the availability page",
                             "the inhibit rule must compare the slo label (equal: [slo])")
    return ("amtool accepts it; in a live Alertmanager the page went to pager, tickets to "
            "tickets, and the SLO's ticket was muted while its page fired")
