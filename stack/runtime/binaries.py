"""Find the real programs the lab runs, or say how to install them."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from stack.errors import MissingBinary

_APT = {
    "nginx": "nginx-light",
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "etcd": "etcd-server",
}
_POSTGRES_TOOLS = {"postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_isready", "psql"}


def _hint(name: str) -> str:
    pkg = "postgresql" if name in _POSTGRES_TOOLS else _APT.get(name, name)
    return f"run `make setup` (or `apt-get install {pkg}`; on macOS `brew install {pkg}`)"


@lru_cache(maxsize=None)
def _pg_bindirs() -> tuple[str, ...]:
    """Postgres server tools live outside PATH on Debian: ask pg_config, then look in
    /usr/lib/postgresql/*/bin (newest first)."""
    dirs: list[str] = []
    env_dir = os.environ.get("STACK_PG_BINDIR")
    if env_dir:
        dirs.append(env_dir)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            if out:
                dirs.append(out)
        except (OSError, subprocess.SubprocessError):
            pass
    found = glob.glob("/usr/lib/postgresql/*/bin")
    found.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
               reverse=True)
    dirs.extend(found)
    return tuple(dict.fromkeys(dirs))


def find(name: str) -> str:
    """Absolute path of a program the lab needs; MissingBinary says how to install it."""
    if name in _POSTGRES_TOOLS:
        for d in _pg_bindirs():
            cand = Path(d) / name
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path:
        return path
    raise MissingBinary(name, _hint(name))


def version(name: str) -> str:
    """The first line a program prints of its own version (for doctor and notes)."""
    exe = find(name)
    flag = "-v" if name == "nginx" else "--version"
    res = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10)
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else "unknown"
