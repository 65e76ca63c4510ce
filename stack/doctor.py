"""`stackctl doctor`: a pre-flight check for a workshop machine. One line per check, and what
to do when one fails."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from stack.runtime import binaries, ports
from stack.errors import StackError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.name:<26} {self.detail}"
        return head if self.ok or not self.fix else f"{head}\n     -> {self.fix}"


PROGRAMS = ["postgres", "initdb", "pg_basebackup", "nginx", "redis-server", "prometheus",
            "promtool", "prometheus-alertmanager", "prometheus-nginx-exporter",
            "prometheus-postgres-exporter", "prometheus-redis-exporter",
            "prometheus-blackbox-exporter", "etcd"]
MIN_MEMORY_GB = 2.0
MIN_DISK_GB = 2.0
# The course's timings and verdicts were measured on 2 cores: the load client runs in a
# process of its own beside the lab, and with less than that it falls behind its schedule
# (its runs then say INCONCLUSIVE).
MIN_CPUS = 2


def check_programs() -> list[Check]:
    out = []
    for name in PROGRAMS:
        try:
            path = binaries.find(name)
            try:
                ver = binaries.version(name)
            except (OSError, StackError):
                ver = "version unknown"
            out.append(Check(name, True, f"{ver} ({path})"))
        except StackError as exc:
            out.append(Check(name, False, "missing", str(exc).split(": ", 1)[-1]))
    return out


def check_memory() -> Check:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        avail = int(info["MemAvailable"].split()[0]) / 1024 / 1024
    except (OSError, KeyError, ValueError):
        return Check("free memory", True, "unknown (no /proc/meminfo)")
    return Check("free memory", avail >= MIN_MEMORY_GB, f"{avail:.1f} GB available",
                 f"close programs: the labs need about {MIN_MEMORY_GB:g} GB")


def check_cpus(available: int | None = None) -> Check:
    """The cores this process may run on (its affinity, which containers and taskset set)."""
    if available is None:
        try:
            available = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # macOS has no affinity
            available = os.cpu_count() or 1
    return Check("CPU cores", available >= MIN_CPUS, f"{available} available",
                 f"the course needs {MIN_CPUS} cores: the load client runs beside the lab "
                 "and falls behind on fewer (its runs then say INCONCLUSIVE)")


def check_disk(path: Path) -> Check:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free / 1e9
    return Check("free disk", free >= MIN_DISK_GB, f"{free:.1f} GB free under {path}",
                 f"free space or set STACK_RUNS_DIR to a disk with {MIN_DISK_GB:g} GB free")


def check_ports(n: int = 20) -> Check:
    try:
        taken: set[int] = set()
        for _ in range(n):
            ports.free_port(taken=taken)
        return Check("free loopback ports", True, f"{n} picked on 127.0.0.1")
    except OSError as exc:
        return Check("free loopback ports", False, str(exc),
                     "something holds the ephemeral port range: stop other servers")


def check_patroni() -> Check:
    """Patroni in the virtual environment, runnable by the user Postgres runs as (it starts
    Postgres itself, so as root it runs as that user too)."""
    import subprocess
    import sys

    try:
        import patroni  # noqa: F401
    except ImportError:
        return Check("patroni", False, "not installed in this Python", "run `make setup`")
    from stack.components.postgres import os_user

    try:
        user = os_user()
    except StackError as exc:
        return Check("patroni", False, str(exc), "run `make setup`")
    fix = ("remove .venv and run `make setup` (scripts/pick-python.sh picks a Python that "
           "user can run)")
    try:
        res = subprocess.run([sys.executable, "-c", "import patroni, psycopg"], user=user,
                             capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return Check("patroni", False, f"user '{user}' cannot run {sys.executable}: {exc}", fix)
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:]
        return Check("patroni", False, f"user '{user or 'you'}' cannot import Patroni with "
                     f"{sys.executable}: {' '.join(last)}", fix)
    from patroni.version import __version__
    return Check("patroni", True, f"{__version__} runs as '{user or 'you'}'")


def check_postgres_user() -> Check:
    if os.geteuid() != 0:
        return Check("postgres user", True, "not root: Postgres runs as you")
    from stack.components.postgres import os_user

    try:
        return Check("postgres user", True, f"root: Postgres runs as '{os_user()}'")
    except StackError as exc:
        return Check("postgres user", False, str(exc), "run `make setup`")


def check_smoke_lab(seconds: float = 10.0) -> Check:
    """Start the BEFORE lab, score requests for a few seconds, tear it down."""
    from stack.lab.lab import Lab
    from stack.lab.traffic import Traffic

    t0 = time.monotonic()
    try:
        with Lab("before") as lab:
            up = time.monotonic() - t0
            with Traffic(lab.public_url, lab.run_dir, rate=20, duration=max(1.0, seconds - up),
                         progress=False, name="doctor") as traffic:
                res = traffic.wait()
        ok = res.load_sent > 0 and res.load_ok == res.load_sent
        return Check("smoke lab", ok, f"up in {up:.1f} s, {res.load_ok} of {res.load_sent} "
                     f"requests ok, down in {lab.timings.get('down', 0):.1f} s",
                     "read the log named in the error above; `stackctl down` cleans up")
    except StackError as exc:
        return Check("smoke lab", False, str(exc).splitlines()[0],
                     "read the component's log in the message; run `stackctl down`")


def run(smoke: bool = True) -> list[Check]:
    from stack.lab.lab import runs_root

    checks = check_programs()
    checks += [check_cpus(), check_memory(), check_disk(runs_root()), check_ports(), check_postgres_user(),
               check_patroni()]
    if smoke:
        checks.append(check_smoke_lab())
    return checks
