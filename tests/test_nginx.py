"""nginx: the rendered presets, and a real nginx in front of two tiny stdlib backends."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from stack.runtime import ports
from stack.errors import ComponentFailed, UnknownName
from stack.components.nginx import NginxServer, check_config, render_config, worker_user
from stack.topology import NginxSpec

BACKENDS = [("api1", 18001), ("api2", 18002)]
ALLOW = {"/predict": "POST", "/readyz": "GET"}  # what the tiny backends' paths take


def _render(preset: str, **spec) -> str:
    return render_config(NginxSpec(preset=preset, **spec), port=18080, status_port=18081,
                         backends=BACKENDS)


def _block(text: str, head: str) -> str:
    """The text of a `head { ... }` block, without its indentation (no nested braces)."""
    start = text.index(head + " {")
    body = text[start:text.index("}", start) + 1]
    return "\n".join(ln.strip() for ln in body.splitlines())


# -- rendering ------------------------------------------------------------------------------
def test_playbook_is_rendered_as_printed():
    text = _render("playbook")
    assert _block(text, "upstream api_backend") == (
        "upstream api_backend {\n"
        "server 127.0.0.1:18001 max_fails=3 fail_timeout=30s;  # api1\n"
        "server 127.0.0.1:18002 max_fails=3 fail_timeout=30s;  # api2\n"
        "keepalive 32;\n"
        "}")
    assert _block(text, "location /") == (
        "location / {\n"
        "proxy_pass http://api_backend;\n"
        "proxy_next_upstream error timeout http_500 http_502 http_503;\n"
        "proxy_connect_timeout 2s;\n"
        "proxy_send_timeout 10s;\n"
        "proxy_read_timeout 10s;\n"
        "}")
    assert _block(text, "location /health") == (
        'location /health {\naccess_log off;\nreturn 200 "healthy\\n";\n}')
    # as printed: nothing that would make upstream keep-alive work, no shared zone
    for absent in ("proxy_http_version", "Connection", "zone ", "non_idempotent",
                   "X-Upstream", "keepalive_timeout", "error_page", "proxy_method"):
        assert absent not in text
    # the tuning fields do not touch the playbook
    assert _render("playbook", max_fails=7, connect_timeout_s=0.1) == text


def test_tuned_renders_the_spec():
    text = _render("tuned")
    for line in ("zone api_backend 64k;", "keepalive 32;", "keepalive_timeout 30000ms;",
                 "server 127.0.0.1:18001 max_fails=1 fail_timeout=1s max_conns=64;  # api1",
                 "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                 "proxy_connect_timeout 500ms;", "proxy_send_timeout 1500ms;",
                 "proxy_read_timeout 1500ms;",
                 "proxy_next_upstream error timeout http_502 http_503 http_504;",
                 "proxy_next_upstream_tries 2;", "proxy_next_upstream_timeout 3000ms;",
                 "add_header X-Upstream $upstream_addr always;",
                 "proxy_next_upstream error timeout http_502 http_503 http_504 http_500 non_idempotent;",
                 "upstream api_health {", "server 127.0.0.1:18002 max_fails=0;  # api2",
                 "proxy_pass http://api_health/readyz;",
                 "error_page 405 = @method_not_allowed;", "proxy_method OPTIONS;",
                 "proxy_pass_request_body off;"):
        assert line in text, line
    assert "location @method_not_allowed {" in text
    # both upstreams close idle connections before the replicas would (API_KEEP_ALIVE_S)
    assert text.count("keepalive_timeout 30000ms;") == 2
    # non_idempotent only in the location an Idempotency-Key leads to
    assert text.count("non_idempotent") == 1
    assert "location @predict_idempotent" in text and "error_page 418 = @predict_idempotent;" \
        in text
    # every entry of the traffic upstream, backups included, is capped; /health's is not
    backend = _block(text, "upstream api_backend")
    assert backend.count(" max_conns=64") == 4, backend
    assert "max_conns" not in _block(text, "upstream api_health")
    assert "max_conns=" not in _render("tuned", max_conns=0)
    assert "max_conns" not in _render("playbook")
    custom = _render("tuned", connect_timeout_s=0.25, read_timeout_s=4, max_fails=2,
                     fail_timeout_s=9, keepalive=8, next_upstream_tries=3, zone_kb=128,
                     max_conns=5)
    for line in ("proxy_connect_timeout 250ms;", "proxy_read_timeout 4000ms;",
                 "max_fails=2 fail_timeout=9s max_conns=5;", "keepalive 8;", "proxy_next_upstream_tries 3;",
                 "zone api_backend 128k;"):
        assert line in custom, line


@pytest.mark.parametrize("preset", ["playbook", "tuned"])
def test_both_presets_share_the_frame(preset: str):
    text = render_config(NginxSpec(preset=preset, workers=3), port=18080, status_port=18081,
                         backends=BACKENDS, down=frozenset({"api2"}), generation=7)
    for line in ("worker_processes 3;", "daemon off;", "master_process on;", "pid nginx.pid;",
                 "error_log error.log warn;", "access_log access.log lab;",
                 "client_body_temp_path client_body_temp;", "proxy_temp_path proxy_temp;",
                 "listen 127.0.0.1:18080;", "listen 127.0.0.1:18081;",
                 "location = /nginx_status { stub_status; }",
                 'location = /__config_version { return 200 "7\\n"; }'):
        assert line in text, line
    for var in ("$upstream_addr", "$upstream_status", "$request_time", "$upstream_response_time"):
        assert var in text
    assert re.search(r"server 127\.0\.0\.1:18002 .* down;  # api2 \(drained\)", text)
    assert "user " not in text  # only rendered when asked (running as root)
    assert not re.search(r"listen (?!127\.0\.0\.1:)", text)


@pytest.mark.parametrize("preset", ["playbook", "tuned"])
def test_nginx_t_accepts_both_presets(tmp_path: Path, preset: str):
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_config(NginxSpec(preset=preset), port=18080, status_port=18081,
                                  backends=BACKENDS, user=worker_user()))
    check_config(conf, tmp_path)


def test_nginx_t_rejection_shows_nginx_words(tmp_path: Path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { proxy_read_timeout 1.5s; }\n")
    with pytest.raises(ComponentFailed, match=r"nginx -t rejected[\s\S]*invalid value"):
        check_config(conf, tmp_path)


# -- tiny backends --------------------------------------------------------------------------
class Backend:
    """A stdlib HTTP/1.1 server standing in for an API replica: /predict answers with its name
    in X-Backend (optionally after ?delay=s, with `predict_status`), /readyz with 200 or 503.
    It counts the TCP connections it accepts and the requests it serves."""

    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.ready = True
        self.predict_status = 200
        self.readyz_delay = 0.0  # seconds /readyz takes (a frozen replica: long)
        self.connections = 0
        self.requests = 0
        self.options = 0  # OPTIONS requests: how nginx asks which methods a path takes
        self.in_flight = 0
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self, status: int, body: dict, **headers: str) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("X-Backend", backend.name)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                url = urlsplit(self.path)
                with backend.lock:
                    backend.requests += 1
                if url.path == "/readyz":
                    time.sleep(backend.readyz_delay)
                    self._answer(200 if backend.ready else 503, {"ready": backend.ready})
                elif url.path == "/predict":
                    delay = float(parse_qs(url.query).get("delay", ["0"])[0])
                    with backend.lock:
                        backend.in_flight += 1
                    try:
                        time.sleep(delay)
                        self._answer(backend.predict_status, {"backend": backend.name})
                    finally:
                        with backend.lock:
                            backend.in_flight -= 1
                else:
                    self._answer(404, {"path": url.path})

            do_GET = do_POST = _serve

            def do_OPTIONS(self) -> None:  # as the API answers a method a route does not take
                with backend.lock:
                    backend.options += 1
                allow = ALLOW.get(urlsplit(self.path).path)
                if allow is None:
                    self._answer(404, {"error": "not_found"})
                else:
                    self._answer(405, {"error": "method_not_allowed"}, Allow=allow)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def start(self) -> "Backend":
        backend = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                conn, addr = super().get_request()
                with backend.lock:
                    backend.connections += 1
                    backend.socks.append(conn)
                return conn, addr

            def handle_error(self, request, client_address) -> None:
                pass  # a peer that hangs up is part of the tests

        self.server = Server(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        """Dead: stop listening and cut every open connection."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for sock in self.socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.socks.clear()
        self.thread.join(5)
        self.server = None

    def reset_counts(self) -> None:
        with self.lock:
            self.connections = self.requests = 0


@pytest.fixture
def backends():
    taken: set[int] = set()
    started = [Backend(f"api{i}", ports.free_port(taken=taken)).start() for i in (1, 2)]
    try:
        yield started
    finally:
        for b in started:
            b.close()


@pytest.fixture
def make_nginx(tmp_path: Path, backends: list[Backend]):
    """Start nginx in front of the backends; every nginx started is stopped afterwards."""
    started: list[NginxServer] = []

    def make(preset: str, **spec: object) -> NginxServer:
        taken: set[int] = {b.port for b in backends}
        server = NginxServer(f"nginx-{len(started)}", tmp_path, ports.free_port(taken=taken),
                             ports.free_port(taken=taken), [(b.name, b.port) for b in backends],
                             NginxSpec(preset=preset, **spec))
        started.append(server)
        server.start()
        server.wait_ready()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


def _get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=10, **kw)


def _poll(fn, want, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# -- a real nginx ---------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("preset", ["playbook", "tuned"])
def test_balances_over_both_replicas(make_nginx, backends, preset: str):
    nginx = make_nginx(preset)
    seen = [_get(nginx.url + "/predict").headers["x-backend"] for _ in range(20)]
    assert set(seen) == {"api1", "api2"}
    assert abs(seen.count("api1") - seen.count("api2")) <= 4


@pytest.mark.integration
def test_tuned_health_follows_replica_readiness(make_nginx, backends):
    nginx = make_nginx("tuned")
    health = nginx.url + "/health"
    assert _get(health).status_code == 200
    for b in backends:
        b.ready = False
    assert [_get(health).status_code for _ in range(4)] == [503] * 4
    backends[1].ready = True  # one ready replica is enough, at once (no failure accounting)
    assert [_get(health).status_code for _ in range(4)] == [200] * 4
    # readiness probes did not take api1 out of the traffic upstream
    assert {_get(nginx.url + "/predict").headers["x-backend"] for _ in range(6)} == \
        {"api1", "api2"}
    backends[1].close()  # one dead, one unready
    assert _get(health).status_code == 503
    backends[0].ready = True  # one dead, one ready: retried past the dead one
    assert [_get(health).status_code for _ in range(4)] == [200] * 4
    backends[0].close()  # all dead: nginx's own 502 becomes 503
    resp = _get(health)
    assert (resp.status_code, resp.text) == (503, "no ready backend\n")


@pytest.mark.integration
def test_tuned_health_answers_in_time_with_one_replica_frozen(make_nginx, backends):
    """A frozen replica holds its connections and answers nothing: /health must still answer
    within the uptime probe's timeout (0.8 s), from the other replica, every time."""
    nginx = make_nginx("tuned")
    backends[1].readyz_delay = 5.0  # frozen for longer than any probe waits
    times = []
    for _ in range(6):  # round robin: every other try reaches the frozen one first
        t0 = time.monotonic()
        assert _get(nginx.url + "/health").status_code == 200
        times.append(time.monotonic() - t0)
    assert max(times) < 0.8, times


@pytest.mark.integration
def test_tuned_answers_trace_as_the_replica_would(make_nginx, backends):
    """nginx refuses TRACE before any location; tuned asks a replica with OPTIONS instead, so
    the answer is the replica's JSON 405 with its Allow header. TRACE never reaches it."""
    nginx = make_nginx("tuned")
    for path, allow in ALLOW.items():
        response = httpx.request("TRACE", nginx.url + path, timeout=10)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == allow
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": "method_not_allowed"}
    unknown = httpx.request("TRACE", nginx.url + "/nope", timeout=10)
    assert unknown.status_code == 404 and unknown.json() == {"error": "not_found"}
    assert sum(b.options for b in backends) == 3
    assert sum(b.requests for b in backends) == 0  # no TRACE (or anything else) went through
    assert _get(nginx.url + "/predict").status_code == 200  # the server goes on as before


@pytest.mark.integration
def test_tuned_never_says_no_live_upstreams_when_every_replica_was_marked_failed(
        make_nginx, backends):
    """nginx 1.22: once every server of an upstream has reached max_fails, nginx has no live
    upstream ('no live upstreams', its own 502) and asks none of them until fail_timeout has
    passed, even if they have recovered meanwhile. tuned lists the same replicas again as
    `backup` servers that are never marked failed: while every primary is marked, the backups
    are asked, so a replica's own answer reaches the client and a recovered replica serves the
    very next request. (nginx's own 502 would still become a JSON 503 with Retry-After.)"""
    nginx = make_nginx("tuned", fail_timeout_s=2)
    for b in backends:
        b.predict_status = 503  # e.g. the shared database is down: both replicas say 503
    responses = [_get(nginx.url + "/predict") for _ in range(3)]
    assert [r.status_code for r in responses] == [503, 503, 503]
    for b in backends:
        b.predict_status = 200  # recovered
        b.reset_counts()
    t0 = time.monotonic()
    assert _get(nginx.url + "/predict").status_code == 200
    assert time.monotonic() - t0 < 1.0, "no wait for fail_timeout"
    assert sum(b.requests for b in backends) == 1
    assert "no live upstreams" not in (nginx.dir / "error.log").read_text()


@pytest.mark.integration
def test_tuned_answers_503_at_once_past_max_conns(make_nginx, backends):
    """max_conns caps the requests in flight to each entry (a replica and its backup entry),
    for all workers together. Past the cap nginx queues nothing: the next request gets the
    JSON 503 with Retry-After at once, no replica sees it, and once the slow ones are answered
    requests go through again."""
    nginx = make_nginx("tuned", max_conns=2)
    slow: list[int] = []

    def send_slow() -> None:
        slow.append(_get(nginx.url + "/predict?delay=1.2").status_code)

    threads = [threading.Thread(target=send_slow, daemon=True)
               for _ in range(8)]  # 2 entries x 2 replicas
    for t in threads:
        t.start()
    try:
        assert _poll(lambda: sum(b.in_flight for b in backends), 8) == 8
        served = sum(b.requests for b in backends)
        t0 = time.monotonic()
        full = _get(nginx.url + "/predict")
        waited = time.monotonic() - t0
        assert full.status_code == 503 and full.json()["error"] == "no_replica_available"
        assert full.headers["retry-after"] == "1"
        assert waited < 0.5, waited
        # a keyed POST reaches its location by error_page; its 502 must become the same 503
        keyed = httpx.post(nginx.url + "/predict", json={}, timeout=10,
                           headers={"Idempotency-Key": "00000000-0000-4000-8000-000000000001"})
        assert keyed.status_code == 503 and keyed.json()["error"] == "no_replica_available"
        assert keyed.headers["retry-after"] == "1"
        assert sum(b.requests for b in backends) == served  # no replica was asked
        assert max(b.in_flight for b in backends) == 4
    finally:  # the slow requests end (1.2 s) before the fixture stops nginx and the backends
        for t in threads:
            t.join(10)
    assert slow == [200] * 8
    assert _get(nginx.url + "/predict").status_code == 200


@pytest.mark.integration
def test_playbook_health_says_healthy_with_every_replica_dead(make_nginx, backends):
    nginx = make_nginx("playbook")
    for b in backends:
        b.close()
    assert _get(nginx.url + "/predict").status_code == 502
    resp = _get(nginx.url + "/health")
    assert (resp.status_code, resp.text) == (200, "healthy\n")  # the audit point


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["playbook", "tuned"])
def test_upstream_keepalive(make_nginx, backends, preset: str):
    nginx = make_nginx(preset)
    _get(nginx.url + "/predict")  # warm up: workers started, first connections made
    for b in backends:
        b.reset_counts()
    with httpx.Client(timeout=10) as client:
        for _ in range(50):
            assert client.get(nginx.url + "/predict").status_code == 200
    conns = sum(b.connections for b in backends)
    assert sum(b.requests for b in backends) == 50
    if preset == "playbook":
        assert conns == 50  # HTTP/1.0 with 'Connection: close': keepalive 32 does nothing
    else:
        assert conns <= nginx.spec.workers * len(backends)


@pytest.mark.integration
def test_post_retried_only_with_an_idempotency_key(make_nginx, backends):
    nginx = make_nginx("tuned", max_fails=0)  # no failure accounting: round robin stays even
    backends[0].predict_status = 503
    with httpx.Client(timeout=10) as client:
        plain = [client.post(nginx.url + "/predict", json={}).status_code for _ in range(10)]
        backends[0].reset_counts()
        keyed = [client.post(nginx.url + "/predict", json={},
                             headers={"Idempotency-Key": f"00000000-0000-4000-8000-{i:012d}"})
                 for i in range(10)]
    assert plain.count(503) == 5 and plain.count(200) == 5  # a POST is never retried bare
    assert [r.status_code for r in keyed] == [200] * 10
    assert {r.headers["x-backend"] for r in keyed} == {"api2"}
    assert backends[0].requests == 5  # tried, then retried on api2
    assert any("," in r.headers["x-upstream"] for r in keyed)  # both upstreams in the header


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["playbook", "tuned"])
def test_set_backends_down_drains_one(make_nginx, backends, preset: str):
    nginx = make_nginx(preset)
    gen = nginx.generation
    nginx.set_backends_down({"api2"})
    assert nginx.generation == gen + 1 and nginx.live_generation() == gen + 1
    backends[1].reset_counts()
    seen = {_get(nginx.url + "/predict").headers["x-backend"] for _ in range(20)}
    assert seen == {"api1"} and backends[1].requests == 0
    nginx.set_backends_down(set())
    seen = {_get(nginx.url + "/predict").headers["x-backend"] for _ in range(20)}
    assert seen == {"api1", "api2"}
    with pytest.raises(UnknownName, match="unknown backend 'api9'; known: api1, api2"):
        nginx.set_backends_down({"api9"})


@pytest.mark.integration
def test_reload_keeps_an_in_flight_request(make_nginx, backends):
    nginx = make_nginx("tuned", read_timeout_s=10)  # the request below takes 3 s
    result: dict[str, object] = {}

    def slow() -> None:
        try:
            result["resp"] = _get(nginx.url + "/predict?delay=3.0")
        except httpx.HTTPError as exc:
            result["error"] = exc

    t = threading.Thread(target=slow)
    t.start()
    assert _poll(lambda: sum(b.in_flight for b in backends), 1) == 1
    took = nginx.reload()
    assert took < 2.5  # did not wait for the in-flight request (3 s)
    assert nginx.live_generation() == 2
    # the old worker that has the request is still finishing it...
    assert nginx.wait_retired(0.1)[0] is False and nginx.retiring
    # ...and exits once it has answered
    gone, waited = nginx.wait_retired(10)
    assert gone and not nginx.retiring
    t.join(10)
    assert "error" not in result and result["resp"].status_code == 200
    assert nginx.wait_retired(0) == (True, pytest.approx(0, abs=0.05))  # nothing to wait for


@pytest.mark.integration
def test_a_rejected_config_leaves_the_running_one(make_nginx, backends, monkeypatch):
    nginx = make_nginx("tuned")
    before = nginx.conf_path.read_text()
    monkeypatch.setattr("stack.components.nginx.render_config", lambda *a, **kw: "http { nonsense; }\n")
    with pytest.raises(ComponentFailed, match="nginx -t rejected"):
        nginx.reload()
    assert nginx.conf_path.read_text() == before
    assert nginx.generation == 1 and nginx.live_generation() == 1
    assert _get(nginx.url + "/predict").status_code == 200


@pytest.mark.integration
def test_stop_leaves_no_process_and_closes_the_ports(make_nginx, backends):
    from stack.runtime.procfs import group_members

    nginx = make_nginx("tuned", workers=2)
    record = nginx.proc.record
    assert len(group_members(record.pgid)) == 3  # master and two workers
    assert _get(nginx.status_url + "/nginx_status").text.startswith("Active connections:")
    assert nginx.stop() == "graceful"
    assert not record.group_alive() and group_members(record.pgid) == []
    assert not ports.is_listening(nginx.port) and not ports.is_listening(nginx.status_port)
    assert not nginx.ready()


@pytest.mark.integration
def test_refuses_a_taken_port(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        nginx = NginxServer("nginx", tmp_path, sock.getsockname()[1], ports.free_port(),
                            BACKENDS, NginxSpec())
        with pytest.raises(ComponentFailed, match="already in use"):
            nginx.start()
    assert nginx.proc is None
