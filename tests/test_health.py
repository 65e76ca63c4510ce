"""Green, yellow, red from synthetic query results."""
from __future__ import annotations

import pytest

from stack.analysis.health import ACTIONS, classify, state
from stack.components.prometheus import Sample
from stack.analysis.slo import SloSettings

UP = {"api1": 1.0, "api2": 1.0}
CLEAN = {"5m": 0.0, "30m": 0.0, "1h": 0.0, "6h": 0.0}


def test_green_when_all_within_objectives():
    st = classify(CLEAN, 0.12, UP, 1.0)
    assert st.color == "green" and st.reasons == () and st.action == ACTIONS["green"]
    assert str(st).startswith("GREEN: all within objectives")


def test_no_traffic_is_not_an_alarm():
    assert classify({"5m": None, "1h": None}, None, UP, 1.0).color == "green"


@pytest.mark.parametrize("ratios,p99,up,probe,reason", [
    ({**CLEAN, "5m": 0.002}, 0.1, UP, 1.0, "burning faster than 1x"),
    (CLEAN, 0.1, {"api1": 1.0, "api2": 0.0}, 1.0, "replica down: api2"),
    (CLEAN, 0.75, UP, 1.0, "p99 latency 750 ms over the 500 ms objective"),
])
def test_yellow(ratios, p99, up, probe, reason):
    st = classify(ratios, p99, up, probe)
    assert st.color == "yellow"
    assert any(reason in r for r in st.reasons), st.reasons
    assert st.action == ACTIONS["yellow"]


@pytest.mark.parametrize("ratios,up,probe,reason", [
    ({**CLEAN, "5m": 0.2, "1h": 0.02}, UP, 1.0, "page-level burn"),
    ({**CLEAN, "30m": 0.01, "6h": 0.007}, UP, 1.0, "page-level burn"),
    (CLEAN, UP, 0.0, "the uptime probe fails"),
    (CLEAN, {"api1": 0.0, "api2": 0.0}, None, "no replica answers"),
])
def test_red(ratios, up, probe, reason):
    st = classify(ratios, 0.1, up, probe)
    assert st.color == "red"
    assert any(reason in r for r in st.reasons), st.reasons
    assert "runbook" in st.action


def test_fast_burn_needs_both_windows():
    # a blip: the 5m window burns hot but the 1h window has not spent enough budget
    st = classify({**CLEAN, "5m": 0.2, "1h": 0.01}, 0.1, UP, 1.0)
    assert st.color == "yellow"


def test_latency_objective_comes_from_settings():
    assert classify(CLEAN, 0.75, UP, 1.0, SloSettings(latency_objective_s=1.0)).color == "green"


class FakeProm:
    def __init__(self, answers: dict[str, list[Sample]]):
        self.answers = answers
        self.asked: list[str] = []

    def query(self, expr: str) -> list[Sample]:
        self.asked.append(expr)
        return self.answers.get(expr, [])


def test_state_queries_prometheus():
    prom = FakeProm({
        "slo:error_ratio:rate5m": [Sample({}, 0.5, 0)],
        "slo:error_ratio:rate1h": [Sample({}, 0.1, 0)],
        "slo:latency_seconds:p99_rate5m": [Sample({}, float("nan"), 0)],
        'up{job="api"}': [Sample({"replica": "api1"}, 1, 0), Sample({"replica": "api2"}, 0, 0)],
        'min(probe_success{job="probe"})': [Sample({}, 1, 0)],
    })
    st = state(prom)
    assert st.color == "red"
    assert st.values["p99_s"] is None  # NaN: no data
    assert any("api2" in r for r in st.reasons)


def test_database_nodes_from_patroni():
    both = {"pg1": (True, True), "pg2": (True, False)}
    assert classify(CLEAN, 0.12, UP, 1.0, db_nodes=both).color == "green"
    one_lost = {"pg1": (True, True), "pg2": (False, False)}
    st = classify(CLEAN, 0.12, UP, 1.0, db_nodes=one_lost)
    assert st.color == "yellow" and "database node down: pg2" in str(st)
    no_leader = {"pg1": (False, False), "pg2": (True, False)}
    st = classify(CLEAN, 0.12, UP, 1.0, db_nodes=no_leader)
    assert st.color == "red" and "no database primary" in str(st)


def test_database_nodes_read_over_the_last_scrapes():
    """Patroni's node is judged on its last three scrapes (max_over_time), so one missed scrape
    of a busy agent is not a lost primary; the window follows the scrape interval."""
    def prom(window: str, leader_up: float) -> FakeProm:
        lookback = {"3s": "30s", "1500ms": "15s"}[window]

        def q(metric: str) -> str:
            return (f'max_over_time({metric}{{job="patroni"}}[{window}]) '
                    f'or last_over_time({metric}{{job="patroni"}}[{lookback}])')
        return FakeProm({
            q("up"): [Sample({"instance": "pg1"}, leader_up, 0), Sample({"instance": "pg2"}, 1, 0)],
            q("patroni_postgres_running"): [Sample({"instance": "pg1"}, 1, 0),
                                            Sample({"instance": "pg2"}, 1, 0)],
            q("patroni_primary"): [Sample({"instance": "pg1"}, 1, 0),
                                   Sample({"instance": "pg2"}, 0, 0)],
            'up{job="api"}': [Sample({"replica": "api1"}, 1, 0)],
        })
    assert state(prom("3s", 1)).values["db_nodes"] == {"pg1": (True, True), "pg2": (True, False)}
    st = state(prom("3s", 0))  # no scrape of the leader answered in the window
    assert st.color == "red" and "no database primary" in str(st)
    slow = SloSettings(scrape_interval_s=0.5)
    assert state(prom("1500ms", 1), slow).color == "green"
    assert state(prom("3s", 1), slow).values["db_nodes"] == {}  # asked for 1500ms, not 3s
