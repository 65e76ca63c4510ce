"""The /proc readers, on real processes."""
from __future__ import annotations

import subprocess
import sys
import time

from stack.runtime.procfs import cpu_seconds, group_cpu_seconds

_SPIN = ("import time\n"
         "t = time.process_time()\n"
         "while time.process_time() - t < 0.3:\n"
         "    pass\n")
# Spins 0.3 s in a child it waits for (reaped), then 0.3 s itself, then waits.
_PARENT = ("import subprocess, sys, time\n"
           f"subprocess.run([sys.executable, '-c', {_SPIN!r}])\n"
           + _SPIN + "time.sleep(30)\n")


def test_cpu_seconds_counts_a_busy_process_and_its_reaped_children():
    leader = subprocess.Popen([sys.executable, "-c", _PARENT], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(leader.pid) < 0.55:  # its own 0.3 s and its reaped child's 0.3 s
            assert time.monotonic() < deadline, cpu_seconds(leader.pid)
            time.sleep(0.1)
        assert group_cpu_seconds(leader.pid) >= cpu_seconds(leader.pid)
    finally:
        leader.kill()
        leader.wait(5)
    assert cpu_seconds(leader.pid) == 0.0  # gone
