"""promtool checks the rule files and runs the unit tests that prove when each alert fires.

The unit tests (rules/tests/*.yml) are rendered by stack.analysis.slo and checked in; promtool exits
non-zero when an alert fires where it should not or stays quiet where it should fire, and so
does this test. A mutation check shows the tests would catch a broken rule.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stack.runtime import binaries
from stack.analysis.slo import BurnAlert, SloSettings, render_promtool_tests, render_rules, rules_dir

RULES = rules_dir()


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run([binaries.find("promtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_check_rules():
    files = sorted(p.name for p in RULES.glob("*.yml"))
    assert files == ["slo.rules.yml"]
    res = promtool("check", "rules", *files)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 20 rules found" in res.stdout


def test_promtool_cases_cover_the_brief():
    doc = yaml.safe_load((RULES / "tests" / "slo_test.yml").read_text())
    names = [t["name"] for t in doc["tests"]]
    assert len(names) == 7
    for words in ("fast burn", "slow burn", "1.2x burn", "0.05% errors", "short blip",
                  "5m window is clean"):
        assert any(words in n for n in names), words


@pytest.mark.slow
def test_alert_unit_tests_pass():
    tests = sorted(str(p.relative_to(RULES)) for p in (RULES / "tests").glob("*.yml"))
    res = promtool("test", "rules", *tests)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.slow
def test_unit_tests_catch_an_alert_without_its_long_window(tmp_path: Path):
    """Mutation: a fast-burn rule that forgets the long window pages on the short blip, and
    promtool must fail."""
    s = SloSettings()
    broken = SloSettings(alerts=(BurnAlert("SLOErrorBudgetBurnFast", "page", 14.4, "5m", "5m"),
                                 *s.alerts[1:]))
    (tmp_path / "tests").mkdir()
    text = render_rules(broken)
    # keep the labels the tests expect, so only the behaviour differs
    text = text.replace("long_window: 5m", "long_window: 1h").replace(
        "over 5m and 5m (playbook time; here 5s and 5s)",
        "over 1h and 5m (playbook time; here 60s and 5s)")
    (tmp_path / "slo.rules.yml").write_text(text)
    doc = yaml.safe_load(render_promtool_tests(s))
    doc["tests"] = [t for t in doc["tests"] if "blip" in t["name"]]
    (tmp_path / "tests" / "blip.yml").write_text(yaml.safe_dump(doc))
    res = promtool("test", "rules", "tests/blip.yml", cwd=tmp_path)
    assert res.returncode != 0, res.stdout
    assert "SLOErrorBudgetBurnFast" in res.stdout + res.stderr


def test_promtool_is_installed():
    assert shutil.which(binaries.find("promtool"))
