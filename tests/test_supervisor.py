"""The AFTER lab's process supervisor (supervisord): a crashed process is started again with no
human, a hung nginx is restarted by its liveness check, a stop the lab asks for is not a crash,
the memory limit follows the restarted process, and `stackctl down` ends a supervised lab whose
creator died."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stack.components.supervisor import liveness_ini, program_ini
from stack.lab import faults
from stack.lab.lab import Lab, read_state
from stack.topology import AFTER, BEFORE
from stack.runtime.processes import ProcessRecord

TXN = {"customer_id": 7, "amount": 42.5, "merchant_category": "grocery", "country": "US",
       "hour": 14, "is_online": False}
# the smallest supervised lab: one replica and Postgres, nginx in front, under supervisord
SUPERVISED = BEFORE.model_copy(update={"name": "supervised", "supervise": True,
                                       "nginx": AFTER.nginx})


def test_after_is_supervised_and_before_is_not():
    assert AFTER.supervise and not BEFORE.supervise


def test_program_section_escapes_and_keeps_only_the_changed_environment(monkeypatch):
    monkeypatch.setenv("HOME", "/root")
    ini = program_ini("api1", ["/usr/bin/python3", "-m", "x", "--rate", "50%"],
                      Path("/tmp/run/api1/server.log"),
                      env={"HOME": "/root", "STACK_API_SETTINGS": "/tmp/run/api1/s.json"},
                      cwd=None, user=None, stop_signal=signal.SIGQUIT, stop_timeout=7.4)
    assert "command=/usr/bin/python3 -m x --rate 50%%" in ini
    assert "stopsignal=QUIT" in ini and "stopwaitsecs=7" in ini
    assert "autorestart=true" in ini and "killasgroup=true" in ini
    assert 'environment=STACK_API_SETTINGS="/tmp/run/api1/s.json"' in ini
    assert "HOME=" not in ini


def test_liveness_section_restarts_its_program_when_the_url_stops_answering():
    ini = liveness_ini("nginx", "http://127.0.0.1:9/nginx_status", Path("/tmp/run/liveness.log"),
                       username="lab", password="p%w")
    assert ini.startswith("[eventlistener:nginx-liveness]") and "events=TICK_5" in ini
    assert "-m superlance.httpok -p nginx -t 2 -E" in ini and "http://127.0.0.1:9/nginx_status" in ini
    assert 'SUPERVISOR_PASSWORD="p%%w"' in ini  # supervisord would expand a bare %



@pytest.fixture(scope="module")
def lab(runs_root: Path, model_dir: Path):
    with Lab(SUPERVISED, runs_root / "supervised", model_dir=model_dir) as lab:
        yield lab


def _wait(cond, timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.mark.integration
@pytest.mark.slow
def test_a_crashed_replica_is_back_with_no_human(lab: Lab):
    api = lab.apis[0]
    old = api.proc.record.pid
    applied = faults.apply(lab, "crash", "api1")
    back = _wait(lambda: api.proc.alive() and api.ready(), 10)
    assert api.proc.record.pid != old, "a new process, started by the supervisor"
    assert back < 3, f"back in {back:.2f} s"
    faults.undo(lab, applied)  # no on-call restart on top: the same process stays
    assert api.proc.record.pid != old
    assert httpx.post(lab.public_url + "/predict", json=TXN, timeout=10).status_code == 200
    rows = {r["component"]: r for r in lab.status()}
    assert rows["api1"]["pid"] == api.proc.record.pid and rows["api1"]["ready"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_hung_nginx_is_restarted_by_its_liveness_check(lab: Lab):
    nginx = lab.component("nginx")
    old = nginx.proc.record.pid
    applied = faults.apply(lab, "hang", "nginx")
    try:
        # the next tick (5 s), the check's 2 s timeout, the stop's wait before the kill, start
        back = _wait(lambda: nginx.proc.record.pid != old and nginx.ready(), 15)
    finally:
        faults.undo(lab, applied)  # SIGCONT: to the new process, which runs already
    assert httpx.post(lab.public_url + "/predict", json=TXN, timeout=10).status_code == 200
    assert "nginx is in RUNNING state, restarting" in (nginx.dir / "liveness.log").read_text()
    print(f"a hung nginx back in {back:.1f} s")


@pytest.mark.integration
@pytest.mark.slow
def test_a_stop_the_lab_asks_for_is_not_restarted(lab: Lab):
    api = lab.apis[0]
    assert api.stop() == "graceful"
    time.sleep(1.5)  # longer than the supervisor takes to restart a crashed one
    assert not api.proc.alive()
    lab.restart("api1")
    assert api.ready()


@pytest.mark.integration
@pytest.mark.slow
def test_the_memory_limit_follows_the_restarted_replica(lab: Lab):
    api = lab.apis[0]
    faults.apply(lab, "crash", "api1")  # the recorded pid in lab.json is now stale
    _wait(lambda: api.proc.alive() and api.ready(), 10)
    kills = lab.run_dir / "oom-kills.jsonl"
    before = kills.read_text().count("\n") if kills.exists() else 0
    restarted = api.proc.record.pid
    applied = faults.apply(lab, "memory_leak", "api1", mb_per_request=40)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                not kills.exists() or kills.read_text().count("\n") == before):
            try:
                httpx.post(api.url + "/predict", json=TXN, timeout=2)
            except httpx.HTTPError:
                pass
        event = json.loads(kills.read_text().splitlines()[before])
        assert event["component"] == "api1" and event["pid"] == restarted
        _wait(lambda: api.proc.alive() and api.ready(), 10)  # and the supervisor restarts it
    finally:
        faults.undo(lab, applied)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.integration
@pytest.mark.slow
def test_stackctl_down_ends_a_supervised_lab_whose_creator_died(runs_root: Path,
                                                                model_dir: Path):
    run_dir = runs_root / "supervised-orphan"
    code = ("import time; from stack.lab.lab import Lab; from tests.test_supervisor import "
            f"SUPERVISED; Lab(SUPERVISED, {str(run_dir)!r}, model_dir={str(model_dir)!r}).up(); "
            "print('UP', flush=True); time.sleep(120)")
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          cwd=root) as creator:
        try:
            assert creator.stdout.readline().strip() == "UP"
            creator.send_signal(signal.SIGKILL)
            creator.wait(10)
            state = read_state(run_dir)
            api = ProcessRecord(**state["components"]["api1"]["process"])
            api.send(signal.SIGKILL)  # the supervisor restarts it: lab.json's pid goes stale
            _wait(lambda: _ready(state["components"]["api1"]["address"]), 15)
            stackctl = Path(sys.executable).parent / "stackctl"
            out = subprocess.run([str(stackctl), "down", "--run-dir", str(run_dir)],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
        finally:
            if creator.poll() is None:
                creator.kill()
    state = read_state(run_dir)
    for name, comp in state["components"].items():
        port = comp.get("port")
        if port:
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
