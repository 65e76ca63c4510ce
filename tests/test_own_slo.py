"""`stackctl slo render`: rules and a dashboard at real windows and the team's metric names;
promtool accepts the rules and every dashboard query, and its unit tests show the fast-burn
page firing at real windows (1 h of history sampled every minute)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from stack.cli import main
from stack.errors import ConfigError, StackError
from stack.own.slo_render import ProdSlo, check_dashboard, dashboard_exprs, rule_groups, write
from stack.runtime import binaries

SLO = ProdSlo(job="fraud-api", selector='route="/predict"', probe_job="blackbox")


def test_windows_are_real_and_names_are_the_teams():
    rec = {r["record"]: r["expr"] for r in rule_groups(SLO)["groups"][0]["rules"]}
    assert "[5m]" in rec["slo:error_ratio:rate5m"] and "[3d]" in rec["slo:error_ratio:rate3d"]
    assert 'http_requests_total{job="fraud-api",route="/predict",status=~"5.."}[1h]' in \
        rec["slo:error_ratio:rate1h"]
    custom = ProdSlo(job="shop", requests_metric="nginx_http_requests_total",
                     errors='code=~"5..|429"', latency_metric=None)
    rec = {r["record"]: r["expr"] for r in rule_groups(custom)["groups"][0]["rules"]}
    assert 'nginx_http_requests_total{job="shop",code=~"5..|429"}[30m]' in \
        rec["slo:error_ratio:rate30m"]
    assert "slo:latency_seconds:p99_rate5m" not in rec
    alerts = {a["alert"]: a for a in rule_groups(SLO)["groups"][1]["rules"]}
    assert set(alerts) == {"SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow",
                           "SLOErrorBudgetBurnTicket", "UptimeProbeFailing"}
    assert alerts["SLOErrorBudgetBurnFast"]["expr"].startswith(
        'slo:error_ratio:rate1h{job="fraud-api"} > (14.4 * 0.001)')


def test_written_files_pass_promtool(tmp_path: Path):
    lines = write(SLO, tmp_path)
    assert lines[2].startswith("promtool check rules:") and "SUCCESS" in lines[2]
    dash = json.loads((tmp_path / "fraud-api.dashboard.json").read_text())
    exprs = [e for _, e in dashboard_exprs(dash)]
    assert all("[5s]" not in e for e in exprs)
    assert check_dashboard(tmp_path / "fraud-api.dashboard.json") == len(exprs) >= 10


def test_a_bad_dashboard_query_is_named(tmp_path: Path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"panels": [{"title": "Broken", "targets": [
        {"refId": "A", "expr": "sum(rate(x[5m]"}]}]}))
    with pytest.raises(StackError, match="panel 'Broken' target A .*unclosed left paren"):
        check_dashboard(path)


@pytest.mark.parametrize("kw,field", [
    ({"job": "a b"}, "--job"), ({"job": "a", "target": 1.5}, "--target"),
    ({"job": "a", "requests_metric": "9bad"}, "--requests-metric"),
    ({"job": "a", "errors": "status=5xx"}, "--errors"),
    ({"job": "a", "selector": 'route="/x", oops'}, "--selector")])
def test_bad_settings_name_the_option(kw, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        ProdSlo(**kw)


def test_the_fast_burn_pages_at_real_windows(tmp_path: Path):
    write(SLO, tmp_path, check=False)
    fast = rule_groups(SLO)["groups"][1]["rules"][0]
    # 10 req/s for an hour without errors, then 15% errors for 10 minutes: the 1h window burns
    # 0.15 * 10/60 / 0.001 = 25x, over 14.4; the 5m window 150x. (The longer windows hold only
    # these 70 minutes, so they fire too: a real Prometheus has their history.)
    ok = "0+600x60 36000+510x10"  # per minute: 600 ok, then 510 ok (85%)
    err = "0+0x60 0+90x10"
    sel = 'http_requests_total{job="fraud-api",route="/predict",status="%s"}'
    tests = {"rule_files": ["fraud-api.rules.yml"], "evaluation_interval": "1m",
             "group_eval_order": [g["name"] for g in rule_groups(SLO)["groups"]],
             "tests": [{"interval": "1m",
                        "input_series": [{"series": sel % "200", "values": ok},
                                         {"series": sel % "500", "values": err}],
                        "alert_rule_test": [
                            {"eval_time": "55m", "alertname": "SLOErrorBudgetBurnFast",
                             "exp_alerts": []},
                            {"eval_time": "70m", "alertname": "SLOErrorBudgetBurnFast",
                             "exp_alerts": [{"exp_labels": {
                                 "job": "fraud-api", "severity": "page",
                                 "slo": "availability-99.9", "long_window": "1h",
                                 "short_window": "5m"},
                                 "exp_annotations": fast["annotations"]}]},
                            {"eval_time": "55m", "alertname": "SLOErrorBudgetBurnTicket",
                             "exp_alerts": []}],
                        "promql_expr_test": [
                            {"expr": 'slo:error_ratio:rate5m{job="fraud-api"}',
                             "eval_time": "50m",
                             "exp_samples": [{"labels": 'slo:error_ratio:rate5m{job="fraud-api"}',
                                              "value": 0}]}]}]}
    path = tmp_path / "slo_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    res = subprocess.run([binaries.find("promtool"), "test", "rules", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli(tmp_path: Path, capsys):
    assert main(["slo", "render", "--job", "api", "-o", str(tmp_path), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "promtool check rules:" in out and (tmp_path / "api.rules.yml").exists()
    assert main(["slo", "render", "--job", "a b", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "stackctl: field '--job': must be 1-128 letters, digits or _.:/-, got 'a b'"]
    with pytest.raises(SystemExit) as exc:  # argparse: usage, then one line naming it
        main(["slo", "render", "--job", "api", "--target", "x", "-o", str(tmp_path)])
    assert exc.value.code == 2
    assert "argument --target: not a number: 'x'" in capsys.readouterr().err
