"""Scenario files: the course's own load, and a bad file names the file, the line and the field."""
from __future__ import annotations

from pathlib import Path

import pytest

from stack.errors import ConfigError
from stack.scenario import load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

_LATE_EVENT = """name: late
duration_s: 10
events:
  - at: 2
    fault: crash
    target: api1
  - at: 12
    fault: hang
    target: api1
"""


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_course_scenarios_load(path):
    scenario = load_scenario(path, known_faults=["crash", "hang", "slow_db", "memory_leak",
                                                 "connection_exhaustion", "error_rate",
                                                 "bad_model", "restart"])
    assert scenario.events and all(ev.at < scenario.duration_s for ev in scenario.events)


def test_an_event_after_the_end_names_its_line_and_field():
    with pytest.raises(ConfigError) as info:
        parse_scenario(_LATE_EVENT, source="late.yaml")
    message = str(info.value)
    assert message.startswith("late.yaml, line 7, field 'events.1.at': at 12 s is after")
    assert info.value.field == "events.1.at" and info.value.line == 7


def test_an_unknown_fault_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"line 5, field 'events.0.fault': unknown fault 'crash'"):
        parse_scenario(_LATE_EVENT.replace("at: 12", "at: 8"), source="s.yaml",
                       known_faults=["hang"])


TARGETS = """name: t
duration_s: 10
events:
  - at: 1
    fault: crash
    target: api2
  - at: 3
    fault: node_loss
    target: {target}
"""


@pytest.mark.parametrize("target, words", [
    ("redis", "applies to patroni components, not redis (redis)"),
    ("pg3", "no component 'pg3' in this topology"),
])
def test_targets_are_checked_against_the_topology_before_anything_starts(target, words):
    from stack.lab import faults
    from stack.lab.lab import component_kinds

    kinds = component_kinds("after")
    assert kinds["standby"] == "patroni" and kinds["api"] == "api"
    with pytest.raises(ConfigError) as err:
        parse_scenario(TARGETS.format(target=target), source="week.yaml",
                       known_faults=faults.names(), components=kinds,
                       fault_targets={n: f.targets for n, f in faults.REGISTRY.items()})
    assert words in str(err.value)
    assert "week.yaml, line 9, field 'events.1.target'" in str(err.value)
    ok = parse_scenario(TARGETS.format(target="standby"), known_faults=faults.names(),
                        components=kinds)
    assert ok.events[1].target == "standby"
