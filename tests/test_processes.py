import os
import signal
import sys
import time
from pathlib import Path

import pytest

from stack.errors import ComponentFailed
from stack.runtime.processes import ManagedProcess, ProcessRecord


def _sleeper(tmp_path: Path, name: str = "sleeper", code: str = "import time; time.sleep(60)"):
    return ManagedProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")


def test_start_records_own_group_and_stops(tmp_path: Path):
    p = _sleeper(tmp_path)
    rec = p.start()
    try:
        assert rec.pgid == rec.pid and rec.is_ours() and rec.group_alive()
    finally:
        assert p.stop() in ("graceful", "terminated")
    assert not rec.group_alive()


def test_child_that_exits_fails_at_once_with_log_tail(tmp_path: Path):
    p = _sleeper(tmp_path, "crasher", "import sys; print('boom: no config'); sys.exit(3)")
    p.start()
    t0 = time.monotonic()
    with pytest.raises(ComponentFailed) as err:
        p.wait_ready(lambda: False, deadline_s=30)
    assert time.monotonic() - t0 < 5
    assert "crasher" in str(err.value) and "code 3" in str(err.value)
    assert "boom: no config" in str(err.value)


def test_deadline_stops_the_process_and_names_it(tmp_path: Path):
    p = _sleeper(tmp_path, "slowpoke")
    rec = p.start()
    with pytest.raises(ComponentFailed, match=r"slowpoke failed: not ready within 0.3 s"):
        p.wait_ready(lambda: False, deadline_s=0.3)
    assert not rec.group_alive()


def test_process_ignoring_term_is_killed(tmp_path: Path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    p = ManagedProcess("stubborn", [sys.executable, "-c", code], tmp_path / "s.log",
                       stop_timeout=0.3)
    rec = p.start()
    time.sleep(0.3)
    assert p.stop() == "killed"
    assert not rec.group_alive()


def test_pause_and_resume(tmp_path: Path):
    p = _sleeper(tmp_path)
    rec = p.start()
    try:
        def state() -> str:
            return Path(f"/proc/{rec.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

        def settles(want: str) -> bool:
            deadline = time.monotonic() + 2
            while state() != want and time.monotonic() < deadline:
                time.sleep(0.01)
            return state() == want

        assert p.pause() and settles("T")
        assert p.resume() and settles("S")
    finally:
        p.stop()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_pause_reaches_children_that_left_the_group(tmp_path: Path):
    # like a Postgres backend: the postmaster's child makes itself a group (and session) leader
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            "start_new_session=True); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    p = _sleeper(tmp_path, "postmaster-like", code)
    rec = p.start()
    child = 0
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        child = int(pidfile.read_text())

        def settle(want: str) -> list[str]:
            end = time.monotonic() + 2
            while {_state(rec.pid), _state(child)} != {want} and time.monotonic() < end:
                time.sleep(0.01)
            return [_state(rec.pid), _state(child)]

        assert p.pause() and settle("T") == ["T", "T"]
        assert p.resume() and settle("S") == ["S", "S"]
    finally:
        p.stop()  # the child left the group: stop it by its own PID, also if it came late
        if not child and pidfile.exists() and pidfile.read_text():
            child = int(pidfile.read_text())
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_record_of_another_process_is_never_signalled(tmp_path: Path):
    p = _sleeper(tmp_path)
    rec = p.start()
    try:
        wrong = ProcessRecord("x", rec.pid, rec.pgid, rec.start_time + 1, "")
        assert not wrong.is_ours() and not wrong.group_alive()
        assert not wrong.send(signal.SIGKILL)
        assert rec.group_alive()
    finally:
        p.stop()
