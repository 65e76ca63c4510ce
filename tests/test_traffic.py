"""Traffic against a real HTTP server on 127.0.0.1: open loop, probes, error kinds, stop."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack.errors import ConfigError, StackError
from stack.analysis.fields import RECORD_FIELDS
from stack.lab.traffic import Traffic, TrafficResult, run_traffic


class FakeAPI(ThreadingHTTPServer):
    """A tiny predict API that can be told to stall or to answer 503."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"  # ok | stall | 503
        self.stall_s = 3.0
        self.released = threading.Event()
        self.idempotency_keys: list[str] = []
        self.drop_posts = 0  # close this many POSTs' connections without an answer
        self.unavailable_posts = 0  # answer this many POSTs 503 with Retry-After: 0.2
        self.n = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # clients that gave up
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAPI

    def log_message(self, format, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Backend", "b1")
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        mode = self.server.mode
        if mode == "stall":
            self.server.released.wait(self.server.stall_s)
        if mode == "503":
            self._reply(503, {"detail": "unavailable"})
            return
        self.server.n += 1
        self._reply(200, {"request_id": f"r{self.server.n}", "score": 0.1,
                          "model_version": "v1", "replica": "b1"})

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        assert set(body) == {"customer_id", "amount", "merchant_category", "country", "hour",
                             "is_online"}
        key = self.headers.get("Idempotency-Key")
        if key:
            self.server.idempotency_keys.append(key)
        if self.server.drop_posts > 0:
            self.server.drop_posts -= 1
            self.close_connection = True  # like a reloading nginx worker: no answer, closed
            return
        if self.server.unavailable_posts > 0:  # like the API with no database primary
            self.server.unavailable_posts -= 1
            data = b'{"error": "database_unavailable"}'
            self.send_response(503)
            self.send_header("Retry-After", "0.2")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._serve()


@pytest.fixture
def api():
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_have_all_fields_and_probe_count(api, tmp_path):
    result = run_traffic(api.url, tmp_path, rate=40, duration=2.0, probe_interval=0.25,
                         name="ok")
    assert isinstance(result, TrafficResult)
    assert result.path == tmp_path / "traffic-ok.jsonl"
    records = _records(result.path)
    load = [r for r in records if r["kind"] == "load"]
    probes = [r for r in records if r["kind"] == "probe"]
    assert len(load) == result.load_sent == 80
    assert len(probes) == result.probes_sent == 8  # duration / interval
    assert result.load_ok == 80 and result.probes_ok == 8
    assert result.load_late == 0
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        assert r["status"] == 200 and r["error"] == "" and r["backend"] == "b1"
        assert 0 < r["latency_s"] < 2 and r["lag_s"] < 0.5  # room for a slow machine
    assert all(r["request_id"].startswith("r") for r in load)
    assert all(r["request_id"] == "" for r in probes)
    # read from a fine clock, not the event loop's cached milliseconds
    assert any(abs(r["latency_s"] * 1000 - round(r["latency_s"] * 1000)) > 1e-3 for r in load)
    assert [r["t"] for r in sorted(probes, key=lambda r: r["t"])] == pytest.approx(
        [i * 0.25 for i in range(8)])


def test_stall_does_not_slow_the_schedule(api, tmp_path):
    rate = 50
    traffic = Traffic(api.url, tmp_path, rate=rate, duration=3.0, timeout=0.5,
                      probe_timeout=0.5, probe_interval=0.25, name="stall").start()
    while traffic.elapsed < 1.0:
        time.sleep(0.01)
    api.mode, stall_start = "stall", traffic.elapsed
    time.sleep(1.0)
    stall_end, api.mode = traffic.elapsed, "ok"
    result = traffic.wait(10)
    records = _records(result.path)
    load = [r for r in records if r["kind"] == "load"]
    assert len(load) == 150
    in_stall = [r for r in load if stall_start <= r["t"] < stall_end]
    assert len(in_stall) == pytest.approx(rate * (stall_end - stall_start), abs=3)
    inner = [r for r in load if stall_start + 0.15 <= r["t"] < stall_end - 0.15]
    assert len(inner) > 25
    assert [r for r in inner if r["error"] != "timeout" or r["status"] != 0] == []
    # each gave up at its own 0.5 s timeout, not when the server let go (3 s later); the
    # bounds leave room for a slow machine, they are no benchmark
    assert all(0.45 <= r["latency_s"] < 1.5 for r in inner)
    # requests left on time during the stall: a client waiting on stalled requests would
    # send each one at least a timeout (0.5 s) late
    lags = sorted(r["lag_s"] for r in in_stall)
    assert lags[len(lags) // 2] < 0.1 and lags[-1] < 0.5, lags[-5:]
    assert all(r["error"] == "" for r in load if r["t"] >= stall_end + 0.15)
    probes = [r for r in records if r["kind"] == "probe"]
    assert any(r["error"] == "timeout" for r in probes)


def test_503_is_http_5xx(api, tmp_path):
    api.mode = "503"
    result = run_traffic(api.url, tmp_path, rate=20, duration=1.0, probe_interval=0.5)
    records = _records(result.path)
    assert result.load_ok == 0 and result.probes_ok == 0
    assert all(r["status"] == 503 and r["error"] == "http_5xx" for r in records)
    assert all(r["backend"] == "b1" and r["request_id"] == "" for r in records)


def test_connection_refused_is_connect(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_traffic(f"http://127.0.0.1:{port}", tmp_path, rate=20, duration=1.0,
                         probe_interval=0.5)
    records = _records(result.path)
    assert len(records) == 22
    assert all(r["error"] == "connect" and r["status"] == 0 for r in records)


def test_in_flight_cap_records_client_overload(api, tmp_path):
    api.mode = "stall"
    result = run_traffic(api.url, tmp_path, rate=50, duration=1.0, timeout=0.5,
                         max_in_flight=5)
    load = [r for r in _records(result.path) if r["kind"] == "load"]
    errors = {r["error"] for r in load}
    assert errors == {"timeout", "client_overload"}
    overload = [r for r in load if r["error"] == "client_overload"]
    assert len(overload) > 20 and all(r["latency_s"] == 0 for r in overload)
    assert result.load_late >= len(overload)


def test_stop_ends_early_and_bounded(api, tmp_path):
    traffic = Traffic(api.url, tmp_path, rate=50, duration=30.0, progress=False)
    began = time.monotonic()
    with traffic:
        time.sleep(0.5)
    assert time.monotonic() - began < 3.0
    result = traffic.wait()
    assert result.duration_s < 1.5
    records = _records(result.path)
    assert max(r["t"] for r in records) < 1.0
    assert len(records) == result.load_sent + result.probes_sent


def test_idempotency_keys_are_unique_uuids(api, tmp_path):
    run_traffic(api.url, tmp_path, rate=20, duration=0.5, idempotency_keys=True)
    keys = api.idempotency_keys
    assert len(keys) == 10 and len(set(keys)) == 10
    assert all(uuid.UUID(k).version == 4 for k in keys)


def test_keyed_post_is_resent_when_its_connection_closes_unanswered(api, tmp_path):
    api.drop_posts = 2  # two closed connections in a row: the request still succeeds
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5, idempotency_keys=True)
    assert (result.load_sent, result.load_ok) == (1, 1)
    assert len(api.idempotency_keys) == 3 and len(set(api.idempotency_keys)) == 1


def test_keyed_post_is_retried_after_a_503s_retry_after(api, tmp_path):
    api.unavailable_posts = 2
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5, idempotency_keys=True)
    assert (result.load_sent, result.load_ok, result.retried) == (1, 1, 2)
    [load] = [r for r in _records(result.path) if r["kind"] == "load"]
    assert load["latency_s"] >= 0.4  # it waited as told, twice
    api.unavailable_posts = 1  # without a key a POST is never sent twice
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5)
    assert (result.load_sent, result.load_ok) == (1, 0)


def test_a_retry_after_past_the_deadline_is_not_waited_for(api, tmp_path):
    api.unavailable_posts = 100
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5, idempotency_keys=True,
                         timeout=0.5)
    [load] = [r for r in _records(result.path) if r["kind"] == "load"]
    assert load["status"] == 503 and load["latency_s"] < 0.5  # the 503, not a timeout


def test_resending_is_bounded_and_needs_a_key(api, tmp_path):
    api.drop_posts = 3  # every try closed: the request fails, it is not sent forever
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5, idempotency_keys=True)
    assert (result.load_sent, result.load_ok) == (1, 0)
    assert len(api.idempotency_keys) == 3
    api.drop_posts = 1  # without a key a POST is never sent twice
    result = run_traffic(api.url, tmp_path, rate=2, duration=0.5)
    assert (result.load_sent, result.load_ok) == (1, 0)
    [load] = [r for r in _records(result.path) if r["kind"] == "load"]
    assert load["error"] in {"read", "protocol"}


def test_probe_url_can_differ(api, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_traffic(f"http://127.0.0.1:{port}", tmp_path, rate=10, duration=1.0,
                         probe_url=api.url, probe_path="/healthz", probe_interval=0.5)
    assert result.load_ok == 0 and result.probes_ok == result.probes_sent == 2


def test_progress_bar_runs(api, tmp_path, capsys):
    result = run_traffic(api.url, tmp_path, rate=10, duration=1.5, progress=True, name="bar")
    assert result.load_ok == 15
    assert "bar" in capsys.readouterr().err


def test_client_runs_in_its_own_process(api, tmp_path):
    traffic = Traffic(api.url, tmp_path, rate=20, duration=1.0, name="own").start()
    pid = traffic._proc.pid
    assert pid != os.getpid() and Path(f"/proc/{pid}").exists()
    result = traffic.wait(10)
    assert result.load_ok == 20 and result.client_cpu_s > 0
    assert traffic._proc.returncode == 0


def test_client_that_dies_is_an_error_naming_it(api, tmp_path):
    traffic = Traffic(api.url, tmp_path, rate=20, duration=30.0, name="dies", progress=False).start()
    os.kill(traffic._proc.pid, signal.SIGKILL)
    with pytest.raises(StackError, match="load client 'dies' failed.*traffic-dies.log"):
        traffic.wait(10)


def test_client_stops_when_its_caller_goes_away(api, tmp_path):
    """A caller that died closes the client's stdin: the client ends by itself, early."""
    traffic = Traffic(api.url, tmp_path, rate=20, duration=30.0, name="orphan", progress=False).start()
    began = time.monotonic()
    traffic._proc.stdin.close()
    result = traffic.wait(10)
    assert time.monotonic() - began < 5.0 and result.duration_s < 5.0


def test_client_behind_is_more_than_one_percent_late(tmp_path):
    def result(late: int) -> TrafficResult:
        return TrafficResult("r", tmp_path / "r.jsonl", 1000, 990, 10, 10, 10.0, late)

    assert not result(10).client_behind and result(10).client_note() == ""
    assert result(11).client_behind
    assert "load client fell behind: 11 of 1000" in result(11).client_note()


@pytest.mark.parametrize("kw, field", [({"rate": 0}, "rate"), ({"duration": -1}, "duration"),
                                       ({"timeout": 0}, "timeout")])
def test_bad_settings_name_the_field(tmp_path, kw, field):
    with pytest.raises(ConfigError, match=field):
        Traffic("http://127.0.0.1:1", tmp_path, **kw)


def test_bad_url_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="base_url"):
        Traffic("127.0.0.1:8000", tmp_path)
