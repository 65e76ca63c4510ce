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
    from stack.lab import faults

    scenario = load_scenario(path, known_faults=faults.names())
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
                       components=kinds, **faults.scenario_checks())
    assert words in str(err.value)
    assert "week.yaml, line 9, field 'events.1.target'" in str(err.value)
    ok = parse_scenario(TARGETS.format(target="standby"), components=kinds)
    assert ok.events[1].target == "standby"


PARAMS = """name: params
duration_s: 30
events:
  - at: 2
    fault: {fault}
    target: api1
    params:
      {param}
"""


@pytest.mark.parametrize("fault, param, field, words", [
    ("bad_model", "kind: shuffled", "events.0.params.kind",
     "'shuffled' is not one of: truncated, garbage"),
    ("error_rate", "rate: 1.5", "events.0.params.rate", "1.5 is outside 0..1"),
    ("slow_db", "delay_ms: slow", "events.0.params.delay_ms", "not a number: 'slow'"),
    ("memory_leak", "mb: 3", "events.0.params.mb", "fault 'memory_leak' has no parameter 'mb'; it takes: "
     "mb_per_request"),
])
def test_fault_parameters_are_checked_before_anything_starts(fault, param, field, words):
    from stack.lab import faults

    with pytest.raises(ConfigError) as err:
        parse_scenario(PARAMS.format(fault=fault, param=param), source="p.yaml",
                       **faults.scenario_checks())
    assert f"p.yaml, line 8, field '{field}': {words}" == str(err.value)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_course_incident_says_what_it_stands_for_in_a_real_week(path):
    scenario = load_scenario(path)
    assert scenario.represents == 7 * 86400
    assert all(ev.real_duration for ev in scenario.events)
    assert sum(scenario.real_duration_of(ev) for ev in scenario.events) < scenario.represents


@pytest.mark.parametrize("name, hits", [
    ("week_b", {"api2", "nginx", "redis", "postgres"}),
    ("week_c", {"api2", "nginx", "redis", "postgres"}),
    ("week_d", {"api1", "nginx", "redis", "postgres"}),
])
def test_the_other_weeks_fit_the_after_topology(name, hits):
    from stack.lab import faults
    from stack.lab.lab import component_kinds

    scenario = load_scenario(SCENARIOS / f"{name}.yaml", components=component_kinds("after"),
                             **faults.scenario_checks())
    assert hits <= {ev.target for ev in scenario.events}


REAL = """name: real
duration_s: 20
represents: {represents}
events:
  - at: 2
    fault: crash
    target: api1
    real_duration: {first}
  - at: 8
    fault: hang
    target: api1
    duration: 4
"""


@pytest.mark.parametrize("text, seconds", [
    ("25m", 1500.0), ("2h", 7200.0), ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0),
    ("600", 600.0), ("0.5d", 43200.0), ("250ms", 0.25),
])
def test_real_durations_take_units(text, seconds):
    scenario = parse_scenario(REAL.format(represents="7d", first=text))
    assert scenario.events[0].real_duration == pytest.approx(seconds)
    assert scenario.represents == 7 * 86400


def test_an_event_without_a_real_duration_stands_for_its_share_of_the_replay():
    scenario = parse_scenario(REAL.format(represents="1d", first="1h"))
    assert scenario.real_duration_of(scenario.events[1]) == pytest.approx(4 / 20 * 86400)
    assert parse_scenario(REAL.format(represents=3600, first=60)).represents == 3600


def test_scaling_keeps_the_real_week():
    scenario = parse_scenario(REAL.format(represents="7d", first="25m")).scaled(0.6)
    assert scenario.events[0].at == pytest.approx(1.2)
    assert scenario.events[0].real_duration == 1500.0 and scenario.represents == 7 * 86400
    assert scenario.real_duration_of(scenario.events[1]) == pytest.approx(4 / 20 * 7 * 86400)


@pytest.mark.parametrize("represents, first, line, field, words", [
    ("7d", "25 minutes", 8, "events.0.real_duration", "not a duration: '25 minutes'"),
    ("7d", "-5m", 8, "events.0.real_duration", "not a duration: '-5m'"),
    ("7d", "0", 8, "events.0.real_duration", "more than 0"),
    ("7d", "8d", 8, "events.0.real_duration", "add up to 8d"),
    ("a week", "25m", 3, "represents", "not a duration: 'a week'"),
    ("400d", "25m", 3, "represents", "less than or equal"),
])
def test_a_bad_real_duration_names_the_file_the_line_and_the_field(represents, first, line,
                                                                   field, words):
    with pytest.raises(ConfigError) as err:
        parse_scenario(REAL.format(represents=represents, first=first), source="real.yaml")
    assert str(err.value).startswith(f"real.yaml, line {line}, field '{field}': ")
    assert words in str(err.value)
    assert err.value.line == line and err.value.field == field


def test_a_bad_replay_duration_names_the_line_and_the_field():
    with pytest.raises(ConfigError) as err:
        parse_scenario(REAL.format(represents="7d", first="25m").replace("duration: 4",
                                                                         "duration: soon"),
                       source="real.yaml")
    assert str(err.value).startswith("real.yaml, line 12, field 'events.1.duration': ")


@pytest.mark.parametrize("line, field", [
    ("    real_duration: soon", "events.0.real_duration"),
    ("    fault: explode", "events.0.fault"),
    ("    target: api3", "events.0.target"),
])
def test_stackctl_scenario_refuses_bad_input_in_one_line_before_any_lab(tmp_path, capsys,
                                                                        monkeypatch, line,
                                                                        field):
    import stack.cli as cli

    monkeypatch.setattr(cli, "Lab", lambda *a, **kw: pytest.fail("a lab was started"))
    text = ("name: x\nduration_s: 10\nevents:\n  - at: 1\n    fault: crash\n"
            "    target: api1\n    real_duration: 5m\n")
    key = line.split(":")[0]
    text = "\n".join(line if ln.startswith(key + ":") else ln for ln in text.splitlines())
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    assert cli.main(["scenario", str(path), "--topology", "after"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"field '{field}'" in err and str(path) in err


@pytest.mark.parametrize("topology, front", [("before", "api"), ("after", "nginx")])
def test_production_week_fits_every_topology_with_its_edge(topology, front):
    """'edge' names what clients connect to: nginx in AFTER, the API itself in BEFORE."""
    from stack.lab import faults
    from stack.lab.lab import EDGE, component_kinds

    kinds = component_kinds(topology)
    assert kinds[EDGE] == front
    scenario = load_scenario(SCENARIOS / "production_week.yaml", components=kinds,
                             **faults.scenario_checks())
    assert [ev.fault for ev in scenario.events if ev.target == EDGE] == ["crash"]
    assert scenario.events[-1].at + 8 <= scenario.duration_s  # the on-call restart fits


STRETCH = """name: s
duration_s: 40
represents: 7d
on_call_response_s: 5
events:
  - {at: 2, fault: crash, target: api1, real_duration: 25m}
  - {at: 10, fault: node_loss, target: postgres, duration: 8, real_duration: 25m}
  - {at: 20, fault: hang, target: api2, duration: 4, real_duration: 45m}
  - {at: 36, fault: node_loss, target: standby, real_duration: 25m}
"""


def test_a_window_too_short_to_show_healing_is_lengthened_and_what_follows_moves_back():
    scenario = parse_scenario(STRETCH)
    longer, notes = scenario.stretched({1: 56.0, 3: 56.0})
    at = [ev.at for ev in longer.events]
    # node_loss at 10 ran 8 s: 48 s more, so the hang at 20 and the last loss move back 48 s
    assert at == [2, 10, 68, 84] and longer.events[1].duration == 56.0
    # the last one was cut by the end (36 + 4 s): its 56 s push the end out to 84 + 56
    assert longer.events[3].duration == 56.0 and longer.duration_s == pytest.approx(140)
    assert longer.events[0].duration is None and longer.events[2].duration == 4
    assert [ev.real_duration for ev in longer.events] == [
        ev.real_duration for ev in scenario.events]  # the week stays the week
    assert len(notes) == 2 and "from 8.0 s to 56.0 s" in notes[0] and "48.0 s later" in notes[0]


def test_a_window_long_enough_already_is_left_as_it_is():
    scenario = parse_scenario(STRETCH)
    same, notes = scenario.stretched({0: 3.0, 2: 4.0})
    assert notes == [] and same == scenario
