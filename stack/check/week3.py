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


# -- health: green, yellow, red mapped to what people do ---------------------------------------
HEALTH_NOTIFY = ("none", "ticket", "page")
HEALTH_DEPLOYS = ("allowed", "hold", "freeze")
HEALTH_STEPS = ("check_dashboard", "restart_replica", "rejoin_db_node", "wait_for_failover",
                "promote_standby_by_hand", "rollback")
_UP = {"api1": 1.0, "api2": 1.0}
_CLEAN = {"5m": 0.0, "30m": 0.0, "1h": 0.0, "6h": 0.0}
_DB = {"postgres": (True, True), "standby": (True, False)}
_BY_COLOR = {"green": ("none", "allowed"), "yellow": ("ticket", "hold"), "red": ("page", "freeze")}

# Hidden cases, each a state computed by the lab's own classifier (stack.analysis.health) from
# numbers like the ones Prometheus gave during week 3's incident:
# (what it proves, hint, classify's arguments, steps it must take, steps it must not take)
HIDDEN_HEALTH_CASES = [
    ("all within objectives: nobody is told, deploys go on, no step",
     "green costs nobody anything: notify none, deploys allowed, no steps",
     dict(error_ratio=_CLEAN, p99_s=0.12, api_up=_UP, probe_success=1.0, db_nodes=_DB),
     set(), set(HEALTH_STEPS)),
    ("no traffic at all (every ratio None) is green, not an alarm",
     "a ratio of None means no requests, not errors: read state.color, do not guess from "
     "missing numbers",
     dict(error_ratio={"5m": None, "30m": None, "1h": None, "6h": None}, p99_s=None,
          api_up=_UP, probe_success=1.0, db_nodes=_DB),
     set(), set(HEALTH_STEPS)),
    ("one replica down (week 3's frozen api2): a ticket, deploys on hold, restart it",
     "nginx already routes around a lost replica: nobody is woken (ticket), no new deploy "
     "until green (hold), and the replica is restarted (restart_replica)",
     dict(error_ratio=_CLEAN, p99_s=0.1, api_up={"api1": 1.0, "api2": 0.0},
          probe_success=1.0, db_nodes=_DB),
     {"restart_replica"}, {"rollback"}),
    ("errors at 2x the budget rate over 5m, far from a page: a ticket, look at the dashboard",
     "a slow burn is yellow: open a ticket and find the cause on the dashboard "
     "(check_dashboard); a rollback or a page is for red",
     dict(error_ratio={**_CLEAN, "5m": 0.002, "1h": 0.0015}, p99_s=0.1, api_up=_UP,
          probe_success=1.0, db_nodes=_DB),
     {"check_dashboard"}, set()),
    ("p99 at 750 ms, over the 500 ms objective: a ticket, look at the dashboard",
     "slow is yellow: the latency and DB connections panels say where the time goes "
     "(check_dashboard)",
     dict(error_ratio=_CLEAN, p99_s=0.75, api_up=_UP, probe_success=1.0, db_nodes=_DB),
     {"check_dashboard"}, set()),
    ("the standby database node is down: a ticket, bring it back",
     "one copy of the data is left: bring the node back (rejoin_db_node); Patroni makes it "
     "a replica again. It is yellow: the primary still takes writes",
     dict(error_ratio=_CLEAN, p99_s=0.1, api_up=_UP, probe_success=1.0,
          db_nodes={"postgres": (True, True), "standby": (False, False)}),
     {"rejoin_db_node"}, set()),
    ("a page-level burn (10% errors over 5m and 2% over 1h): page, freeze, roll back",
     "red wakes the on-call (page), ships nothing but rollbacks (freeze), and undoes the "
     "last change first (rollback)",
     dict(error_ratio={**_CLEAN, "5m": 0.10, "1h": 0.02}, p99_s=0.1, api_up=_UP,
          probe_success=1.0, db_nodes=_DB),
     {"rollback"}, set()),
    ("a slow page-level burn (1% over 30m, 0.7% over 6h): page, freeze, roll back",
     "the 6h/30m pair pages too: any page-level burn asks for a rollback",
     dict(error_ratio={"5m": 0.0005, "30m": 0.01, "1h": 0.008, "6h": 0.007}, p99_s=0.1,
          api_up=_UP, probe_success=1.0, db_nodes=_DB),
     {"rollback"}, set()),
    ("no database primary: page, and let Patroni promote; never promote by hand",
     "with no leader Patroni promotes the standby once the leader key's TTL runs out "
     "(wait_for_failover); a promotion by hand on top of it can leave two primaries",
     dict(error_ratio=_CLEAN, p99_s=0.1, api_up=_UP, probe_success=1.0,
          db_nodes={"postgres": (False, False), "standby": (True, False)}),
     {"wait_for_failover"}, {"promote_standby_by_hand"}),
    ("every replica down: page, restart them",
     "no replica answers: restart them (restart_replica), one at a time",
     dict(error_ratio=_CLEAN, p99_s=None, api_up={"api1": 0.0, "api2": 0.0},
          probe_success=0.0, db_nodes=_DB),
     {"restart_replica"}, set()),
    ("a page-level burn while a replica is down (week 3's incident at its worst): red wins",
     "red with a yellow reason is still red: page (not a ticket), roll back, and restart the "
     "lost replica too",
     dict(error_ratio={**_CLEAN, "5m": 0.05, "1h": 0.03}, p99_s=0.2,
          api_up={"api1": 1.0, "api2": 0.0}, probe_success=1.0, db_nodes=_DB),
     {"rollback", "restart_replica"}, set()),
]


def _health_answer(out: Any, claim: str) -> tuple[str, str, list[str]]:
    notify, deploys, steps = (getattr(out, k, None) for k in ("notify", "deploys", "steps"))
    if notify is None or deploys is None or steps is None:
        raise ExerciseFailed(f"respond() returned {type(out).__name__}, without .notify, "
                             f".deploys and .steps ({claim})",
                             "return the starter's Response(notify, deploys, steps)")
    steps = list(steps)
    if notify not in HEALTH_NOTIFY or deploys not in HEALTH_DEPLOYS:
        raise ExerciseFailed(f"respond() answered notify={notify!r}, deploys={deploys!r} "
                             f"({claim})",
                             f"notify is one of {', '.join(HEALTH_NOTIFY)}; deploys one of "
                             f"{', '.join(HEALTH_DEPLOYS)}")
    unknown = [s for s in steps if s not in HEALTH_STEPS]
    if unknown:
        raise ExerciseFailed(f"respond() named the step(s) {', '.join(map(str, unknown))}, "
                             f"which are not in STEPS ({claim})",
                             f"use only {', '.join(HEALTH_STEPS)}")
    return str(notify), str(deploys), steps


@task("week3", "health", ("respond.py",))
def check_health(folder: Path) -> str:
    from stack.analysis.health import classify
    from stack.check.core import call_with_deadline, expect_raised, get_function, load_module

    path = folder / "respond.py"
    func = get_function(load_module(path), "respond", path)
    failed: list[tuple[str, str]] = []
    colors: dict[str, int] = {}
    for claim, hint, kw, must, must_not in HIDDEN_HEALTH_CASES:
        state = classify(**kw)
        colors[state.color] = colors.get(state.color, 0) + 1
        done, out, _ = call_with_deadline(func, state, deadline_s=5.0)
        if not done:
            raise ExerciseFailed(f"respond() did not return within 5 s ({claim})",
                                 "respond() only reads the state: no network, no sleeping")
        expect_raised(out, f"respond() on a {state.color} state")
        notify, deploys, steps = _health_answer(out, claim)
        want_notify, want_deploys = _BY_COLOR[state.color]
        wrong = []
        if notify != want_notify:
            wrong.append(f"notify {notify}")
        if deploys != want_deploys:
            wrong.append(f"deploys {deploys}")
        if must - set(steps):
            wrong.append(f"no {', '.join(sorted(must - set(steps)))}")
        if set(steps) & must_not:
            wrong.append(f"steps {', '.join(sorted(set(steps) & must_not))}")
        if "promote_standby_by_hand" in steps and "promote_standby_by_hand" not in must_not:
            wrong.append("steps promote_standby_by_hand")
        if wrong:
            failed.append((f"{claim} (got {'; '.join(wrong)})", hint))
    if failed:
        raise ExerciseFailed(f"{len(failed)} of {len(HIDDEN_HEALTH_CASES)} hidden states get "
                             "the wrong response: " + "; ".join(c for c, _ in failed[:3])
                             + ("; ..." if len(failed) > 3 else ""), failed[0][1])
    return (f"{len(HIDDEN_HEALTH_CASES)} hidden states from the lab's classifier "
            f"({', '.join(f'{n} {c}' for c, n in sorted(colors.items()))}) each get the "
            "right people, deploy rule and first steps")
