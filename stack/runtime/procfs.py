"""Every reading of Linux /proc the lab makes: process start times, groups, children, memory,
TCP sockets and the sockets a process holds. One place, so that each is parsed one way.

A /stat line's command name may hold spaces or parentheses: its fields start after the last ')'.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
TCP_LISTEN = "0A"


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if it is gone
    or a zombie (it has finished; only its parent's wait is missing)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, user and system, its reaped children's included (a Postgres
    backend that exited counts for the postmaster that waited for it); 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def own_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process itself, user and system, without its children's (a
    supervisor whose children are measured on their own); 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(f) for f in fields[11:13]) / CLOCK_TICKS


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of a process group and of the descendants that left it."""
    members, descendants = group_and_descendants(pgid)
    return sum(cpu_seconds(pid) for pid in members + descendants)


def pgid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def process_table() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgid) of every live process on the machine."""
    table = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and fields[0] != "Z":
                table.append((int(entry), int(fields[1]), int(fields[2])))
    return table


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in a process group."""
    return [pid for pid, _, group in process_table() if group == pgid]


def group_and_descendants(pgid: int) -> tuple[list[int], list[int]]:
    """The group's members, and their descendants that left the group (Postgres makes each
    backend the leader of a group of its own, so signalling the postmaster's group misses them)."""
    table = process_table()
    members = [pid for pid, _, group in table if group == pgid]
    children: dict[int, list[int]] = {}
    for pid, ppid, group in table:
        if group != pgid:
            children.setdefault(ppid, []).append(pid)
    found, todo = [], list(members)
    while todo:
        for child in children.pop(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return members, found


def children(pid: int) -> list[int]:
    """Live PIDs whose parent is `pid` (nginx's workers under their master)."""
    return [p for p, ppid, _ in process_table() if ppid == pid]


def descendants(pid: int) -> list[int] | None:
    """The process and its descendants, from /proc/<pid>/task/<tid>/children: a few small
    reads, where a scan of the process table reads every process on the machine. None where
    the kernel has no such files (CONFIG_PROC_CHILDREN)."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return None
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


class TcpSocket(NamedTuple):
    local_port: int
    remote_port: int
    state: str  # the kernel's hex code: "0A" listen, "01" established, ...
    inode: str


def tcp_sockets() -> Iterator[TcpSocket]:
    """The machine's IPv4 TCP sockets (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        yield TcpSocket(int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3], f[9])


def listening_inodes(ports: set[int]) -> set[str]:
    """Socket inodes of the TCP sockets listening on these ports."""
    return {s.inode for s in tcp_sockets() if s.state == TCP_LISTEN and s.local_port in ports}


def holds_socket(pid: int, inodes: set[str]) -> bool:
    """The process holds one of these sockets open (False if it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False
