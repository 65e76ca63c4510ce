"""Integration: the AFTER lab keeps 99.9% over the week on weeks the course's notebooks never
replay (scenarios/week_b.yaml, week_c.yaml: api2, Redis, the primary and nginx hit in other
orders than production_week; week_d.yaml: the primary's machine lost in a window shorter than
Patroni's failover, which the runner lengthens), with the notebooks' client settings
(Idempotency-Keys on) at the CI time scale, and every failed request falls in a fault
window."""
from __future__ import annotations

from pathlib import Path

import pytest

from stack.analysis.week import unexplained
from stack.lab import faults
from stack.lab.lab import Lab, component_kinds
from stack.lab.runner import run_scenario
from stack.scenario import load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
CI_TIME_SCALE = 0.6  # the notebooks' CI parameter: a 100 s week replays in 60 s


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["week_b", "week_c", "week_d"])
def test_after_keeps_the_slo_over_a_week_it_never_rehearsed(name, runs_root: Path,
                                                            model_dir: Path):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml", components=component_kinds("after"),
                             **faults.scenario_checks()).scaled(CI_TIME_SCALE)
    with Lab("after", runs_root / f"after-{name}", model_dir=model_dir) as lab:
        result = run_scenario(lab, scenario, idempotency_keys=True, progress=False)
        roles = {n: lab.component(n).role for n in ("postgres", "standby")}
    week = result.week()
    explained = result.explain_failures()
    report = "\n".join([
        f"{name}: {week.headline()}",
        week.table().to_string(),
        explained.to_string(index=False) if len(explained) else "no failed request",
        *(f"fault error: {f['fault']} on {f['target']}: {f['error']}"
          for f in result.faults if f["error"]),
        *(f"window lengthened: {note}" for note in result.stretched),
    ])
    print(report)
    assert not result.client_note, result.client_note
    assert not [f for f in result.faults if f["error"]], report
    assert unexplained(explained) == 0, f"failures outside every fault window\n{report}"
    assert week.meets(0.999), report
    if name == "week_d":  # the lost primary's standby took over, and the lab healed itself
        assert roles == {"postgres": "standby", "standby": "primary"}, report
        loss = week.incidents[week.incidents["fault"] == "node_loss"].iloc[0]
        assert len(result.stretched) == 1 and loss["self_healed"], report
