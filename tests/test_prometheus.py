"""prometheus.yml rendering and the query client (against a stand-in HTTP API)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from stack.errors import QueryError
from stack.runtime import ports
from stack.components.prometheus import PrometheusClient, PrometheusServer, render_config
from stack.topology import AFTER, PrometheusSpec, parse_topology

TARGETS = {
    "api": ["api1=127.0.0.1:8001", "api2=127.0.0.1:8002"],
    "nginx": ["127.0.0.1:9113"],
    "postgres": ["127.0.0.1:9187"],
    "redis": ["127.0.0.1:9121"],
    "probe": ["127.0.0.1:9115"],
}


def test_config_has_one_job_per_group_with_replica_labels(tmp_path: Path):
    rules = tmp_path / "slo.rules.yml"
    cfg = yaml.safe_load(render_config(PrometheusSpec(), TARGETS, [rules],
                                       "http://127.0.0.1:9093"))
    assert cfg["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"}
    assert cfg["rule_files"] == [str(rules)]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert list(jobs) == ["api", "nginx", "postgres", "redis", "probe"]
    assert jobs["api"]["static_configs"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"replica": "api1"}},
        {"targets": ["127.0.0.1:8002"], "labels": {"replica": "api2"}}]
    assert jobs["probe"]["static_configs"] == [{"targets": ["127.0.0.1:9115"]}]
    assert all(j["metrics_path"] == "/metrics" for j in jobs.values())
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"]


def test_config_intervals_from_spec_and_no_empty_jobs():
    spec = PrometheusSpec(scrape_interval_s=0.5, evaluation_interval_s=2)
    cfg = yaml.safe_load(render_config(spec, {"api": ["127.0.0.1:1"], "redis": []}))
    assert cfg["global"]["scrape_interval"] == "500ms"
    assert cfg["global"]["evaluation_interval"] == "2s"
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["api"]
    assert cfg["scrape_configs"][0]["static_configs"][0]["labels"] == {"replica": "api1"}
    assert "alerting" not in cfg


def test_only_loopback_targets():
    with pytest.raises(ValueError, match="not on 127.0.0.1"):
        render_config(PrometheusSpec(), {"api": ["0.0.0.0:8000"]})


def test_topology_field_is_optional_and_validated():
    assert AFTER.prometheus is None
    topo = parse_topology({"prometheus": {"time_scale_s": 30}})
    assert topo.prometheus.time_scale_s == 30 and topo.prometheus.slo_target == 0.999
    with pytest.raises(Exception, match="prometheus.scrape_interval_s"):
        parse_topology({"prometheus": {"scrape_interval_s": 0}})


def test_promtool_accepts_the_rendered_config(tmp_path: Path):
    from stack.analysis.slo import write_rules

    rules = write_rules(tmp_path / "slo.rules.yml")
    prom = PrometheusServer("prometheus", tmp_path, 9090, PrometheusSpec(), TARGETS, [rules],
                            "http://127.0.0.1:9093")
    prom.dir.mkdir(parents=True)
    prom.conf_path.write_text(prom.render())
    prom.check_config()


@pytest.fixture
def fake_prom():
    """A stand-in for Prometheus's HTTP API: answers by the query text."""
    answers = {
        "up": {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "api", "replica": "api1"}, "value": [100.0, "1"]},
            {"metric": {"job": "api", "replica": "api2"}, "value": [100.0, "0"]}]}},
        "scalar(1)": {"status": "success", "data": {"resultType": "scalar",
                                                     "result": [100.0, "1"]}},
        "rate(": {"status": "error", "errorType": "bad_data",
                  "error": "1:6: parse error: unexpected end of input"},
        "r": {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"replica": "api1"}, "values": [[10, "1"], [11, "2"]]},
            {"metric": {}, "values": [[10, "5"]]}]}},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            from urllib.parse import parse_qs, urlparse

            q = parse_qs(urlparse(self.path).query)["query"][0]
            body = json.dumps(answers[q]).encode()
            self.send_response(400 if answers[q]["status"] == "error" else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", ports.free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield PrometheusClient(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_query_returns_samples(fake_prom: PrometheusClient):
    res = fake_prom.query("up")
    assert [(s.labels["replica"], s.value) for s in res] == [("api1", 1.0), ("api2", 0.0)]
    assert fake_prom.query("scalar(1)")[0].value == 1.0
    with pytest.raises(QueryError, match="expected one series, got 2"):
        fake_prom.value("up")


def test_query_error_has_prometheus_words(fake_prom: PrometheusClient):
    with pytest.raises(QueryError, match=r"query 'rate\(' failed .*bad_data: 1:6: parse error"):
        fake_prom.query("rate(")


def test_query_range_is_a_long_frame(fake_prom: PrometheusClient):
    df = fake_prom.query_range("r", 10, 11, 1)
    assert list(df.columns) == ["t", "value", "replica"]
    assert df.to_dict("records") == [
        {"t": 10.0, "value": 5.0, "replica": ""}, {"t": 10.0, "value": 1.0, "replica": "api1"},
        {"t": 11.0, "value": 2.0, "replica": "api1"}]


def test_unreachable_prometheus_says_so():
    client = PrometheusClient(f"http://127.0.0.1:{ports.free_port()}", timeout=0.5)
    with pytest.raises(QueryError, match="Prometheus is not reachable"):
        client.query("up")


def test_history_is_one_steady_counter_in_openmetrics():
    from stack.components.prometheus import history_openmetrics

    text = history_openmetrics(1000.0, 1020.0, 40.0, step_s=5.0)
    lines = text.splitlines()
    assert lines[1] == "# TYPE http_requests counter" and lines[-1] == "# EOF"
    samples = [line.rsplit(" ", 2) for line in lines[2:-1]]
    assert [float(t) for _, _, t in samples] == [1000.0, 1005.0, 1010.0, 1015.0, 1020.0]
    assert [float(v) for _, v, _ in samples] == [0.0, 200.0, 400.0, 600.0, 800.0]
    assert all('instance="history"' in s and 'route="/predict"' in s and 'status="200"' in s
               for s, _, _ in samples)
    with pytest.raises(ValueError, match="end > start"):
        history_openmetrics(10.0, 10.0, 40.0)


def test_history_is_written_as_blocks_by_promtool(tmp_path: Path):
    import time

    prom = PrometheusServer("prometheus", tmp_path, 9090, PrometheusSpec(), TARGETS)
    prom.dir.mkdir(parents=True)
    prom.write_history(40.0, 600.0, end=time.time() - 60)
    blocks = [p for p in (prom.dir / "data").iterdir() if (p / "meta.json").is_file()]
    assert blocks, "promtool wrote no block"
    # promtool cuts blocks at 2 h boundaries: ten minutes may span two blocks
    metas = [json.loads((b / "meta.json").read_text()) for b in blocks]
    assert all(m["stats"]["numSeries"] == 1 for m in metas)
    assert sum(m["stats"]["numSamples"] for m in metas) >= 100
