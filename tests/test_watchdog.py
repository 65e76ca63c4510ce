"""The memory watchdog's reading of a process group's memory, on real processes."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from stack.runtime.procfs import group_members
from stack.components.watchdog import StateFile, group_rss_mb
from stack.runtime.procfs import rss_mb

# A group leader that starts a child holding 60 MB, then both wait.
_LEADER = ("import subprocess, sys, time; "
           "subprocess.Popen([sys.executable, '-c', "
           "'import time; x = bytearray(60 * 2**20); x[::4096] = b\"1\" * len(x[::4096]); "
           "print(1, flush=True); time.sleep(30)']); time.sleep(30)")


def test_group_rss_counts_the_leader_and_its_children():
    leader = subprocess.Popen([sys.executable, "-c", _LEADER], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(leader.pid)) < 2 or group_rss_mb(leader.pid) < 60:
            assert time.monotonic() < deadline, "the child never held its 60 MB"
            time.sleep(0.1)
        by_scan = sum(rss_mb(pid) for pid in group_members(leader.pid))
        assert abs(group_rss_mb(leader.pid) - by_scan) < 5  # same members as a full scan
    finally:
        for pid in group_members(leader.pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        leader.wait(5)


def test_state_is_parsed_again_only_when_it_changes(tmp_path):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps({"components": {"a": 1}}))
    state = StateFile(path)
    first = state.read()
    assert first == {"components": {"a": 1}} and state.read() is first
    path.write_text(json.dumps({"components": {"b": 22}}))
    assert state.read() == {"components": {"b": 22}}
    path.unlink()
    assert state.read() == {}
