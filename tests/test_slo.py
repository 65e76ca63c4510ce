"""SLO rules rendered from one time scale, and the checked-in files kept in sync."""
from __future__ import annotations

import pytest
import yaml

from stack.errors import ConfigError
from stack.analysis.slo import (SloSettings, prom_duration, render_promtool_tests, render_rules,
                       rules_dir)


def test_checked_in_files_match_the_rendering():
    """Regenerate with `python -m stack.analysis.slo` when this fails."""
    assert (rules_dir() / "slo.rules.yml").read_text() == render_rules()
    assert (rules_dir() / "tests" / "slo_test.yml").read_text() == render_promtool_tests()


@pytest.mark.parametrize("scale,expected", [
    (60, {"5m": "5s", "30m": "30s", "1h": "60s", "6h": "360s", "3d": "4320s"}),
    (12, {"5m": "1s", "30m": "6s", "1h": "12s", "6h": "72s", "3d": "864s"}),
    (3600, {"5m": "300s", "1h": "3600s", "3d": "259200s"}),
    (1, {"5m": "83ms", "1h": "1s"}),
])
def test_windows_scale_with_one_setting(scale, expected):
    s = SloSettings(time_scale_s=scale)
    for w, d in expected.items():
        assert s.duration(w) == d


def _rules(scale=60):
    doc = yaml.safe_load(render_rules(SloSettings(time_scale_s=scale)))
    return {r.get("record") or r.get("alert"): r for g in doc["groups"] for r in g["rules"]}


def test_recording_rules_cover_every_window():
    rules = _rules(24)
    for w, rng in (("5m", "2s"), ("30m", "12s"), ("1h", "24s"), ("6h", "144s"), ("3d", "1728s")):
        expr = rules[f"slo:error_ratio:rate{w}"]["expr"]
        assert f'http_requests_total{{route="/predict",status=~"5.."}}[{rng}]' in expr
        assert f'http_requests_total{{route="/predict"}}[{rng}]' in expr
        assert f"slo:requests:rate{w}" in rules
    assert "histogram_quantile(0.99" in rules["slo:latency_seconds:p99_rate5m"]["expr"]
    assert "histogram_quantile(0.5" in rules["slo:latency_seconds:p50_rate5m"]["expr"]
    assert "probe_success[2s]" in rules["slo:probe_success:avg5m"]["expr"]


def test_burn_rate_alerts_follow_the_workbook():
    rules = _rules()
    fast, slow, ticket = (rules[n] for n in ("SLOErrorBudgetBurnFast", "SLOErrorBudgetBurnSlow",
                                             "SLOErrorBudgetBurnTicket"))
    assert fast["expr"] == ("slo:error_ratio:rate1h > (14.4 * 0.001)\nand\n"
                            "slo:error_ratio:rate5m > (14.4 * 0.001)")
    assert "rate6h > (6 * 0.001)" in slow["expr"] and "rate30m > (6 * 0.001)" in slow["expr"]
    assert "rate3d > (1 * 0.001)" in ticket["expr"] and "rate6h > (1 * 0.001)" in ticket["expr"]
    assert [r["labels"]["severity"] for r in (fast, slow, ticket)] == ["page", "page", "ticket"]
    assert "for" not in fast  # the short window is the guard against blips, not a delay


def test_target_changes_the_budget():
    doc = render_rules(SloSettings(target=0.99))
    assert "(14.4 * 0.01)" in doc and "(0.01 * sum(rate(" in doc


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="time_scale_s"):
        SloSettings(time_scale_s=0)
    with pytest.raises(ConfigError, match="window"):
        SloSettings().duration("2w")


def test_prom_duration():
    assert prom_duration(60) == "60s" and prom_duration(0.5) == "500ms"
    assert prom_duration(0.0001) == "1ms"
