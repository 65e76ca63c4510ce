"""nginx: the load balancer in front of the API replicas, with nginx.conf rendered from the
topology in one of two presets.

- ``playbook``: the playbook's settings reproduced as printed, so the course can test them.
- ``tuned``: the project's improvement: upstream keep-alive that works, failure counts shared
  by all workers, tighter timeouts, bounded retries (a POST only with an Idempotency-Key), a
  cap on the requests in flight to each replica (an overload is answered 503 at once instead
  of queued into timeouts and retries), and a /health that asks the replicas whether they
  are ready.

nginx runs as the current user: everything it writes (pid file, logs, temp files) lives in the
component's folder, given to nginx as its prefix (``-p``).
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import httpx

from stack.runtime import binaries
from stack.errors import ComponentFailed, UnknownName
from stack.runtime.procfs import children, holds_socket, listening_inodes
from stack.components.base import Component
from stack.runtime.processes import tail
from stack.topology import NginxSpec

log = logging.getLogger(__name__)

UPSTREAM = "api_backend"
HEALTH_UPSTREAM = "api_health"
METHOD_NOT_ALLOWED = "@method_not_allowed"
STATUS_PATH = "/nginx_status"
VERSION_PATH = "/__config_version"

# The playbook's values as printed. They are the object of study, not a setting: the spec's
# tuning fields only shape the 'tuned' preset.
PLAYBOOK = {
    "max_fails": 3, "fail_timeout": "30s", "keepalive": 32,
    "next_upstream": "error timeout http_500 http_502 http_503",
    "connect_timeout": "2s", "send_timeout": "10s", "read_timeout": "10s",
}
# tuned: what a client is told to wait when no replica is live (nginx's own 502 becomes 503)
# A stop (SIGQUIT) lets in-flight requests finish for this long, then the group is killed: the
# lab stops nginx only once its traffic has ended, and the liveness check's restart of a hung
# nginx (whose SIGQUIT waits forever) is back a second later.
NGINX_STOP_TIMEOUT_S = 1.0
NO_LIVE_RETRY_AFTER_S = 1
# tuned: what may be retried on the next replica; POST only with an Idempotency-Key
TUNED_NEXT_UPSTREAM = "error timeout http_502 http_503 http_504"
# a keyed POST is also retried after a 500: the key makes the retry safe, and a replica
# whose own state fails some of its requests is then passed over until it answers again
KEYED_NEXT_UPSTREAM = f"{TUNED_NEXT_UPSTREAM} http_500 non_idempotent"

# What the access log records per request: measurement only, it changes no behaviour.
LOG_FORMAT = ("'$msec $remote_addr \"$request\" $status $body_bytes_sent rt=$request_time '\n"
              "                   'upstream=$upstream_addr ustatus=$upstream_status "
              "urt=$upstream_response_time '\n"
              "                   'req_id=$http_x_request_id idem=$http_idempotency_key'")


def _ms(seconds: float) -> str:
    """nginx takes no fractions ('1.5s' is invalid): render milliseconds."""
    return f"{round(seconds * 1000)}ms"


def worker_user() -> tuple[str, str] | None:
    """The user and group nginx's workers run as: None (nginx's own choice: the current user)
    unless we are root, where nginx would switch to 'nobody', who could not write the temp
    folders in the component's folder; then root's own name and group."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def _upstream(spec: NginxSpec, backends: list[tuple[str, int]], down: frozenset[str]) -> list[str]:
    tuned = spec.preset == "tuned"
    cap = f" max_conns={spec.max_conns}" if tuned and spec.max_conns else ""
    params = (f"max_fails={spec.max_fails} fail_timeout={spec.fail_timeout_s}s{cap}" if tuned else
              f"max_fails={PLAYBOOK['max_fails']} fail_timeout={PLAYBOOK['fail_timeout']}")
    lines = [f"    upstream {UPSTREAM} {{"]
    if tuned:
        lines.append(f"        zone {UPSTREAM} {spec.zone_kb}k;  # failure counts shared by "
                     "all workers")
        if cap:
            lines += ["        # max_conns: at most this many requests in flight per entry, for all",
                      "        # workers; past it, the 503 below at once rather than a queue that",
                      "        # times out and is re-sent to the other replica"]
    lines += _servers(backends, down, params)
    if tuned:
        lines += ["        # the same replicas again, never marked failed: used only while every one",
                  "        # above is marked or full (a slow replica's timeouts and one slow answer",
                  "        # from the other must not turn into 'no live upstreams' for everyone)",
                  *_servers(backends, down, f"max_fails=0{cap} backup")]
    lines.append(f"        keepalive {spec.keepalive if tuned else PLAYBOOK['keepalive']};")
    if tuned:  # close idle upstream connections before the replicas do (API_KEEP_ALIVE_S)
        lines.append(f"        keepalive_timeout {_ms(spec.keepalive_timeout_s)};")
    lines.append("    }")
    if tuned:
        lines += [
            "",
            "    # /health asks the same replicas, without failure accounting: an unready",
            "    # replica's 503 never takes it out of the traffic upstream above, and a",
            "    # replica that turns ready again shows at once",
            f"    upstream {HEALTH_UPSTREAM} {{",
            *_servers(backends, down, "max_fails=0"),
            f"        keepalive {spec.keepalive};",
            f"        keepalive_timeout {_ms(spec.keepalive_timeout_s)};",
            "    }",
        ]
    return lines


def _servers(backends: list[tuple[str, int]], down: frozenset[str], params: str) -> list[str]:
    lines = []
    for name, port in backends:
        flag, note = (" down", f"{name} (drained)") if name in down else ("", name)
        lines.append(f"        server 127.0.0.1:{port} {params}{flag};  # {note}")
    return lines


def _playbook_server(port: int) -> list[str]:
    p = PLAYBOOK
    return [
        "    server {",
        "        # As printed the server listens on 443 with TLS and HTTP/2; the lab serves",
        "        # plain HTTP on loopback. Everything below is the playbook's, unchanged.",
        f"        listen 127.0.0.1:{port};",
        "",
        "        location / {",
        f"            proxy_pass http://{UPSTREAM};",
        f"            proxy_next_upstream {p['next_upstream']};",
        f"            proxy_connect_timeout {p['connect_timeout']};",
        f"            proxy_send_timeout {p['send_timeout']};",
        f"            proxy_read_timeout {p['read_timeout']};",
        "        }",
        "",
        "        location /health {",
        "            access_log off;",
        '            return 200 "healthy\\n";',
        "        }",
        "    }",
    ]


def _tuned_server(spec: NginxSpec, port: int) -> list[str]:
    up = f"http://{UPSTREAM}"
    return [
        "    server {",
        f"        listen 127.0.0.1:{port};",
        "",
        "        # upstream keep-alive needs HTTP/1.1 and no 'Connection: close'",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        f"        proxy_connect_timeout {_ms(spec.connect_timeout_s)};",
        f"        proxy_send_timeout {_ms(spec.send_timeout_s)};",
        f"        proxy_read_timeout {_ms(spec.read_timeout_s)};",
        f"        proxy_next_upstream {TUNED_NEXT_UPSTREAM};",
        f"        proxy_next_upstream_tries {spec.next_upstream_tries};",
        f"        proxy_next_upstream_timeout {_ms(spec.next_upstream_timeout_s)};",
        "        add_header X-Upstream $upstream_addr always;",
        "",
        "        # nginx refuses TRACE itself (405, an HTML page, no Allow). Ask a replica",
        "        # instead which methods the path takes: an OPTIONS without the body gets its",
        "        # JSON 405 with Allow (or its JSON 404 for a path it does not serve).",
        f"        error_page 405 = {METHOD_NOT_ALLOWED};",
        "",
        "        # nginx's own 502 (no live upstream: every replica failed, was marked failed",
        "        # or has max_conns requests in flight) becomes a JSON 503 with Retry-After, as",
        "        # a replica's own 503 for an unavailable database is: a client with an",
        "        # Idempotency-Key retries after it.",
        "        location / {",
        "            error_page 502 = @no_live_replica;",
        f"            proxy_pass {up};",
        "        }",
        "",
        "        # A POST is retried on another replica only when it carries an",
        "        # Idempotency-Key (the API deduplicates on it). 'return' is the one safe use",
        "        # of 'if' in a location.",
        "        location = /predict {",
        "            # set where the first error_page is taken: without it, the 502 of the",
        "            # location that error_page led to would reach the client as nginx's HTML",
        "            recursive_error_pages on;",
        "            error_page 418 = @predict_idempotent;",
        "            error_page 502 = @no_live_replica;",
        '            if ($http_idempotency_key != "") {',
        "                return 418;",
        "            }",
        f"            proxy_pass {up};",
        "        }",
        "",
        "        location @predict_idempotent {",
        "            error_page 502 = @no_live_replica;",
        f"            proxy_pass {up};",
        f"            proxy_next_upstream {KEYED_NEXT_UPSTREAM};",
        "        }",
        "",
        "        # healthy means: some replica says it is ready (every replica may be asked)",
        "        location = /health {",
        f"            proxy_pass http://{HEALTH_UPSTREAM}/readyz;",
        "            proxy_next_upstream_tries 0;",
        "            # a frozen replica costs this long, then the next one is asked",
        f"            proxy_connect_timeout {_ms(spec.health_timeout_s)};",
        f"            proxy_send_timeout {_ms(spec.health_timeout_s)};",
        f"            proxy_read_timeout {_ms(spec.health_timeout_s)};",
        "            error_page 502 504 = @no_ready_backend;",
        "        }",
        "",
        f"        location {METHOD_NOT_ALLOWED} {{",
        "            proxy_method OPTIONS;",
        "            proxy_pass_request_body off;",
        '            proxy_set_header Content-Length "";',
        '            proxy_set_header Connection "";  # set here, the server\'s is not inherited',
        f"            proxy_pass {up};",
        "        }",
        "",
        "        location @no_ready_backend {",
        '            return 503 "no ready backend\\n";',
        "        }",
        "",
        "        location @no_live_replica {",
        "            default_type application/json;",
        f'            add_header Retry-After {NO_LIVE_RETRY_AFTER_S} always;',
        '            return 503 \'{"error": "no_replica_available", "detail": "no replica '
        'can take the request now"}\';',
        "        }",
        "    }",
    ]


def render_config(spec: NginxSpec, *, port: int, status_port: int,
                  backends: list[tuple[str, int]], down: frozenset[str] = frozenset(),
                  generation: int = 1, user: tuple[str, str] | None = None) -> str:
    """nginx.conf for one load balancer (a pure function of its arguments).

    `backends` are (replica name, port) pairs; the names in `down` are rendered `down`
    (drained). Paths are relative to the prefix nginx is started with (``-p``)."""
    lines = [f"# rendered by the lab from its topology: preset {spec.preset}, "
             f"generation {generation}",
             "# paths are relative to the prefix (-p): the component's folder"]
    if user:
        lines.append(f"user {user[0]} {user[1]};  # running as root: keep workers as this user")
    lines += [
        f"worker_processes {spec.workers};",
        "daemon off;  # the lab supervises the master in the foreground",
        "master_process on;",
        "pid nginx.pid;",
        "error_log error.log warn;",
        f"worker_shutdown_timeout {_ms(spec.shutdown_timeout_s)};",
        "",
        f"events {{ worker_connections {spec.worker_connections}; }}",
        "",
        "http {",
        f"    log_format lab {LOG_FORMAT};",
        "    access_log access.log lab;",
        "    client_body_temp_path client_body_temp;",
        "    proxy_temp_path proxy_temp;",
        "    fastcgi_temp_path fastcgi_temp;",
        "    uwsgi_temp_path uwsgi_temp;",
        "    scgi_temp_path scgi_temp;",
        "",
        *_upstream(spec, backends, down),
        "",
        *(_tuned_server(spec, port) if spec.preset == "tuned" else _playbook_server(port)),
        "",
        "    # the lab's own server: stub_status for the exporter, and which config is live",
        "    server {",
        f"        listen 127.0.0.1:{status_port};",
        "        access_log off;",
        f"        location = {STATUS_PATH} {{ stub_status; }}",
        f'        location = {VERSION_PATH} {{ return 200 "{generation}\\n"; }}',
        "        location / { return 404; }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def check_config(conf: Path, prefix: Path, name: str = "nginx") -> None:
    """`nginx -t`: raise ComponentFailed with nginx's own words when it rejects the config."""
    res = subprocess.run([binaries.find("nginx"), "-t", "-p", f"{prefix}/", "-c", str(conf)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if res.returncode != 0:
        raise ComponentFailed(name, f"nginx -t rejected {conf}", str(conf),
                              (res.stderr + res.stdout).strip())


class NginxServer(Component):
    """The load balancer: one nginx master and its workers in the lab's run directory."""

    kind = "nginx"
    stop_order = 0  # the front door closes first
    stop_signal = signal.SIGQUIT  # graceful quit: finish in-flight requests, then exit

    def __init__(self, name: str, run_dir: Path, port: int, status_port: int,
                 backends: list[tuple[str, int]], spec: NginxSpec):
        names = [n for n, _ in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique, got {names}")
        super().__init__(name, run_dir, port, start_deadline_s=spec.start_deadline_s,
                         stop_timeout_s=NGINX_STOP_TIMEOUT_S)
        self.status_port = status_port
        self.backends = list(backends)
        self.spec = spec
        self.down: frozenset[str] = frozenset()
        self.generation = 0
        self.retiring: set[int] = set()  # workers of earlier generations, finishing up
        self.user = worker_user()

    @property
    def url(self) -> str:
        return self.address

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def liveness_url(self) -> str:
        """nginx's own status page: it answers while the master and a worker do, whatever
        the replicas behind it are doing (a hung nginx is restarted, a sick replica is not)."""
        return self.status_url + STATUS_PATH

    @property
    def conf_path(self) -> Path:
        return self.dir / "nginx.conf"

    def render(self, generation: int) -> str:
        return render_config(self.spec, port=self.port, status_port=self.status_port,
                             backends=self.backends, down=self.down, generation=generation,
                             user=self.user)

    def write_config(self) -> Path:
        """Render the next generation, have `nginx -t` accept it, then put it in place (a
        rejected config never replaces the one the running master uses)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        candidate = self.dir / "nginx.conf.new"
        candidate.write_text(self.render(self.generation + 1))
        check_config(candidate, self.dir, self.name)
        os.replace(candidate, self.conf_path)
        self.generation += 1
        return self.conf_path

    def own_ports(self) -> list[int]:
        return [self.port, self.status_port]

    def prepare(self) -> None:
        self.write_config()

    def argv(self) -> list[str]:
        return [binaries.find("nginx"), "-p", f"{self.dir}/", "-c", str(self.conf_path)]

    def extra_state(self) -> dict[str, object]:
        return {"status_port": self.status_port}

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(self.status_url + path, timeout=self.spec.http_timeout_s)

    def ready(self) -> bool:
        """The status server answers GET /nginx_status with 200 (the public port is bound
        before any worker serves, so it is up too)."""
        try:
            return self._get(STATUS_PATH).status_code == 200
        except httpx.HTTPError:
            return False

    def live_generation(self) -> int | None:
        """The generation of the config that answers new connections (None: no answer)."""
        try:
            resp = self._get(VERSION_PATH)
            return int(resp.text) if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def reload(self) -> float:
        """Apply a new config without dropping a request. Returns the seconds it took.

        1. render and `nginx -t` the next generation; 2. SIGHUP the master, which starts new
        workers and asks the old ones to finish their in-flight requests and exit; 3. wait
        until the new generation answers and no old worker accepts connections any more."""
        if self.proc is None or not self.proc.alive():
            raise ComponentFailed(self.name, "cannot reload: nginx is not running",
                                  str(self.dir / "error.log"), tail(self.dir / "error.log"))
        t0 = time.monotonic()
        old_workers = children(self.proc.record.pid)
        self.retiring.update(old_workers)
        self.write_config()
        self.proc.record.signal_leader(signal.SIGHUP)
        inodes = listening_inodes({self.port, self.status_port})
        deadline = t0 + self.spec.reload_deadline_s
        while time.monotonic() < deadline:
            if (self.live_generation() == self.generation
                    and not any(holds_socket(w, inodes) for w in old_workers)):
                took = time.monotonic() - t0
                log.info("%s: generation %d live in %.2f s", self.name, self.generation, took)
                return took
            time.sleep(0.02)
        raise ComponentFailed(self.name, f"generation {self.generation} not live within "
                              f"{self.spec.reload_deadline_s:g} s after reload",
                              str(self.dir / "error.log"), tail(self.dir / "error.log"))

    def wait_retired(self, deadline_s: float) -> tuple[bool, float]:
        """Wait until the workers that earlier reloads retired have exited. A retired worker
        still finishes the requests it had read, proxied by its old upstream list, so a
        drained replica may get one until then; worker_shutdown_timeout bounds the wait.
        Returns (all gone, seconds waited)."""
        t0 = time.monotonic()
        while True:
            if self.proc is None or not self.proc.alive():
                self.retiring.clear()
            else:
                self.retiring &= set(children(self.proc.record.pid))  # exited ones drop out
            if not self.retiring:
                return True, time.monotonic() - t0
            if time.monotonic() - t0 > deadline_s:
                return False, time.monotonic() - t0
            time.sleep(0.02)

    def set_backends_down(self, names: set[str]) -> float:
        """Drain these replicas (`down` in the upstream; the others come back) and reload:
        in-flight requests finish, new ones go elsewhere."""
        known = [n for n, _ in self.backends]
        for n in names:
            if n not in known:
                raise UnknownName("backend", n, known)
        self.down = frozenset(names)
        if self.proc is None:
            return 0.0  # not started yet: start() renders it
        return self.reload()

