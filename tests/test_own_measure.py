"""`stackctl probe` and `stackctl load`: bad input is one line and starts nothing; against a
tiny server on loopback (started and stopped here) the figures are the week-1 ones."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack.cli import main
from stack.errors import ConfigError, StackError
from stack.own import measure
from stack.runtime import ports


@pytest.mark.parametrize("argv,message", [
    (["probe", "ftp://example.com/"], "field 'URL': 'ftp://example.com/' is not an http:// or "
                                       "https:// URL (scheme 'ftp')"),
    (["probe", "http://127.0.0.1:8/", "--interval", "0.01s"], "field '--interval': must be "
                                                                "between 100ms and 1h"),
    (["probe", "http://127.0.0.1:8/", "--for", "30d"], "field '--for': must be more than 0 "
                                                        "and at most 7d"),
    (["probe", "http://127.0.0.1:8/", "--for", "soon"], "field '--for': not a duration"),
    (["load", "http://127.0.0.1:8/", "--rate", "10"], "field '--duration': a load run needs "
                                                       "both bounds"),
    (["load", "http://127.0.0.1:8/", "--duration", "5"], "field '--rate': a load run needs"),
    (["load", "http://127.0.0.1:8/", "--rate", "0", "--duration", "5"],
     "field '--rate': must be more than 0 and at most 2000 req/s, got 0"),
    (["load", "http://127.0.0.1:8/", "--rate", "2000", "--duration", "1h"],
     "field '--duration': 7,200,000 requests; at most 1,000,000"),
    (["load", "http://127.0.0.1:8/", "--rate", "5", "--duration", "2h"],
     "field '--duration': must be more than 0 and at most 1h"),
    (["load", "http://127.0.0.1:8/", "--rate", "5", "--duration", "1", "--method", "BREW"],
     "field '--method': unknown method 'BREW'"),
    (["load", "http://127.0.0.1:8/", "--rate", "5", "--duration", "1", "--header", "X"],
     "field '--header': expected 'Name: value', got 'X'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path: Path):
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stackctl: " + message), err
    assert not (tmp_path / "run").exists()  # nothing started, nothing written


def test_a_url_that_does_not_answer(capsys, tmp_path: Path):
    dead = f"http://127.0.0.1:{ports.free_port()}/health"
    assert main(["probe", dead, "--for", "5", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"stackctl: {dead} does not answer: Connection refused (127.0.0.1:" \
                  f"{dead.split(':')[2].split('/')[0]})"
    assert not (tmp_path / "run").exists()


def test_a_body_that_is_not_json(tmp_path: Path):
    body = tmp_path / "body.json"
    body.write_text('{"amount": 12,\n "customer_id": }\n')
    with pytest.raises(ConfigError, match=r"body.json, line 2: not JSON: Expecting value"):
        measure.read_body(body)
    body.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        measure.read_body(body)
    with pytest.raises(ConfigError, match="cannot read the body file"):
        measure.read_body(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="takes no body"):
        measure.load("http://127.0.0.1:8/", 1, 1, method="GET", body="{}")


class _Api(BaseHTTPRequestHandler):
    """GET /health: 200, except while `down`; POST /score: 200 with the body's length, 500
    for every 10th; records what it received."""

    down = False
    posts: list = []

    def do_GET(self) -> None:  # noqa: N802
        self._answer(503 if _Api.down else 200, b"ok\n")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Api.posts.append((body, self.headers.get("Content-Type"), self.headers.get("X-Team")))
        self._answer(500 if len(_Api.posts) % 10 == 0 else 200, b'{"ok": true}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", ports.free_port()), _Api)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Api.down, _Api.posts = False, []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_probe_sees_an_outage_and_draws_its_timeline(api: str, tmp_path: Path):
    def outage() -> None:
        time.sleep(1.0)
        _Api.down = True
        time.sleep(1.0)
        _Api.down = False

    threading.Thread(target=outage, daemon=True).start()
    m = measure.probe(api + "/health", 0.2, 3.0, out_dir=tmp_path, progress=False)
    s = m.summary
    assert s["requests"] == 0 and s["probes"] == 15
    assert 3 <= s["probes"] - s["probes_ok"] <= 7
    outages = m.outages()
    assert len(outages) == 1 and 0.8 <= outages[0].start_t <= 1.4
    lines = measure.report_lines(m)
    assert any(ln.startswith("    at ") and "failed probes (http_5xx" in ln for ln in lines)
    assert lines[-1].startswith("probe: meets a 99.9% availability objective: FAIL")


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_load_sends_the_teams_request_on_schedule(api: str, tmp_path: Path, capsys):
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"amount": 12.5}))
    assert main(["load", api + "/score", "--rate", "20", "--duration", "2s", "--body",
                 str(body), "--header", "X-Team: payments", "-q", "--out",
                 str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert len(_Api.posts) == 40
    assert set(_Api.posts) == {(b'{"amount": 12.5}', "application/json", "payments")}
    assert "  requests sent                    40" in out
    assert "  failed requests                  4" in out
    assert "    http_5xx         4" in out
    assert "status codes                     200: 36, 500: 4" in out
    assert "late requests (client behind)    0" in out
    assert "load: meets a 99.9% availability objective: FAIL (90.000% of requests" in out
    records = (tmp_path / "run" / "traffic-load.jsonl").read_text().splitlines()
    assert len(records) == 40 and all(json.loads(r)["kind"] == "load" for r in records)


def test_the_course_traffic_is_unchanged(tmp_path: Path):
    """Without the new arguments the client is told what it always was."""
    from stack.lab.traffic import Traffic

    cfg = Traffic("http://127.0.0.1:8000", tmp_path).config()
    assert cfg["predict_url"] == "http://127.0.0.1:8000/predict"
    assert cfg["probe_url"] == "http://127.0.0.1:8000/readyz"
    assert (cfg["fixed"], cfg["load"], cfg["probe"]) == (False, True, True)
    with pytest.raises(StackError, match="both load and probe are off"):
        Traffic("http://127.0.0.1:8000", tmp_path, load=False, probe=False)
