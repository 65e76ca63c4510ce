"""Integration: the real BEFORE lab (Postgres + uvicorn) end to end."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stack.runtime import ports
from stack.lab.lab import Lab, read_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TXN = {"customer_id": 42, "amount": 120.5, "merchant_category": "electronics", "country": "DE",
       "hour": 3, "is_online": True}


def _lab_processes_gone(state: dict) -> bool:
    from stack.runtime.processes import ProcessRecord

    return not any(ProcessRecord(**c["process"]).group_alive()
                   for c in state["components"].values() if c.get("process"))


def _lab_ports_closed(state: dict) -> list[int]:
    open_ports = []
    for comp in state["components"].values():
        for key in ("port",):
            if ports.is_listening(comp[key]):
                open_ports.append(comp[key])
        if "admin_url" in comp and ports.is_listening(int(comp["admin_url"].rsplit(":", 1)[1])):
            open_ports.append(comp["admin_url"])
    return open_ports


def test_predict_end_to_end_and_recorded_in_postgres(before_lab: Lab):
    r = httpx.post(before_lab.public_url + "/predict", json=TXN, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["score"] <= 1.0 and body["model_version"] == "v1"
    assert r.headers["x-backend"] == "api1"
    with before_lab.db.connect() as conn:
        row = conn.execute("SELECT customer_id, score, model_version, inputs FROM predictions "
                           "WHERE request_id = %s", (body["request_id"],)).fetchone()
    assert row is not None, "an acknowledged prediction must be in Postgres"
    assert row[0] == 42 and abs(row[1] - body["score"]) < 1e-12 and row[2] == "v1"
    assert row[3]["amount"] == 120.5


def test_health_ready_and_metrics(before_lab: Lab):
    url = before_lab.public_url
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/readyz").json()["status"] == "ready"
    metrics = httpx.get(url + "/metrics").text
    for name in ("http_requests_total", "http_request_duration_seconds_bucket",
                 "http_requests_in_flight", "model_info"):
        assert name in metrics


@pytest.mark.parametrize("body,status,needle", [
    (b'{"customer_id": 1, "amount": ', 422, "json"),
    ({k: v for k, v in TXN.items() if k != "amount"}, 422, "amount"),
    ({**TXN, "coupon": "x"}, 422, "coupon"),
    ({**TXN, "amount": "lots"}, 422, "amount"),
    (b'{"customer_id": 1, "amount": NaN, "merchant_category": "fuel", "country": "US", '
     b'"hour": 1, "is_online": false}', 422, "amount"),
    (b'{"customer_id": 1, "amount": Infinity, "merchant_category": "fuel", "country": "US", '
     b'"hour": 1, "is_online": false}', 422, "amount"),
    ({**TXN, "amount": -5}, 422, "amount"),
    ({**TXN, "amount": 1e12}, 422, "amount"),
    ({**TXN, "customer_id": 99_999_999}, 404, "customer"),
    ({**TXN, "hour": 25}, 422, "hour"),
    ([1, 2, 3], 422, ""),
    (b"x" * 1_100_000, 413, "large"),
])
def test_bad_input_gets_4xx_naming_the_problem(before_lab: Lab, body, status, needle):
    url = before_lab.public_url + "/predict"
    if isinstance(body, bytes):
        r = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(url, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert needle.lower() in r.text.lower()
    # the server keeps serving
    assert httpx.post(url, json=TXN, timeout=10).status_code == 200


def test_admin_routes_never_on_public_address(before_lab: Lab):
    api = before_lab.apis[0]
    assert httpx.get(before_lab.public_url + "/admin/faults").status_code == 404
    assert httpx.get(api.admin_url + "/admin/faults").status_code == 401
    assert api.admin("GET", "/admin/faults").status_code == 200


def test_state_file_and_status(before_lab: Lab):
    state = read_state(before_lab.run_dir)
    assert state["status"] == "up" and set(state["components"]) == {"postgres", "api1", "watchdog"}
    rows = {r["component"]: r for r in before_lab.status()}
    assert all(r["ready"] and r["running"] for r in rows.values())
    assert rows["api1"]["address"].startswith("http://127.0.0.1:")


def test_two_labs_side_by_side_then_down_leaves_nothing(runs_root: Path, model_dir: Path,
                                                       before_lab: Lab):
    lab = Lab("before", runs_root / "second", model_dir=model_dir)
    with lab:
        assert lab.public_url != before_lab.public_url
        assert httpx.post(lab.public_url + "/predict", json=TXN, timeout=10).status_code == 200
        state = read_state(lab.run_dir)
    assert _lab_processes_gone(state)
    assert _lab_ports_closed(state) == []
    assert read_state(lab.run_dir)["status"] == "down"
    assert httpx.get(before_lab.public_url + "/readyz").status_code == 200


def test_stackctl_down_after_creator_was_sigkilled(runs_root: Path, model_dir: Path):
    run_dir = runs_root / "orphaned"
    code = ("import sys, time; from stack.lab.lab import Lab; "
            f"Lab('before', {str(run_dir)!r}, model_dir={str(model_dir)!r}).up(); "
            "print('UP', flush=True); time.sleep(120)")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          text=True) as creator:
        _kill_creator_then_down(creator, run_dir)
    assert _lab_processes_gone(read_state(run_dir))
    assert _lab_ports_closed(read_state(run_dir)) == []


def _kill_creator_then_down(creator: subprocess.Popen, run_dir: Path) -> None:
    try:
        assert creator.stdout.readline().strip() == "UP"
        creator.send_signal(signal.SIGKILL)
        creator.wait(10)
        state = read_state(run_dir)
        assert not _lab_processes_gone(state), "the lab outlives its creator"
        stackctl = Path(sys.executable).parent / "stackctl"
        out = subprocess.run([str(stackctl), "down", "--run-dir", str(run_dir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "is down" in out.stdout
    finally:
        if creator.poll() is None:
            creator.kill()
        if (run_dir / "lab.json").exists():
            from stack.lab.lab import down_run
            down_run(run_dir)


def test_failed_start_names_component_and_cleans_up(runs_root: Path, model_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """A replica that cannot load its settings fails fast; the error shows its log."""
    from stack.errors import ComponentFailed

    monkeypatch.setattr("stack.components.apiserver.sys.executable", "/bin/false")
    lab = Lab("before", runs_root / "broken", model_dir=model_dir)
    with pytest.raises(ComponentFailed, match=r"api1 failed: exited with code 1"):
        lab.up()
    state = read_state(lab.run_dir)
    assert state["status"] == "down" and _lab_processes_gone(state)
