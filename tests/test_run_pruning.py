"""Old run directories are pruned when a lab starts under the runs root: only finished ones,
the oldest first, and never a lab that still runs."""
from __future__ import annotations

import json
from pathlib import Path

from stack.lab.lab import STATE_FILE, prune_runs


def _run(root: Path, name: str, status: str | None) -> Path:
    d = root / name
    d.mkdir()
    (d / "records.jsonl").write_text("{}\n")
    if status is not None:
        (d / STATE_FILE).write_text(json.dumps({"status": status}))
    return d


def test_prunes_the_oldest_finished_runs_only(tmp_path: Path):
    old = [_run(tmp_path, f"20261201-10000{i}-after-abc", "down") for i in range(5)]
    live = _run(tmp_path, "20261130-090000-after-live", "up")  # older, but still running
    broken = _run(tmp_path, "20261130-080000-before-xyz", None)  # no state: not a lab's
    torn = _run(tmp_path, "20261130-070000-before-tmp", "down")
    (torn / STATE_FILE).write_text("{not json")
    removed = prune_runs(tmp_path, keep=2)
    assert removed == old[:3]
    assert [d.exists() for d in old] == [False, False, False, True, True]
    assert live.exists() and broken.exists() and torn.exists()
    assert prune_runs(tmp_path, keep=2) == []


def test_keep_zero_removes_every_finished_run(tmp_path: Path):
    runs = [_run(tmp_path, f"2026120{i}-000000-after-abc", "down") for i in range(3)]
    assert prune_runs(tmp_path, keep=0) == runs
    assert not any(d.exists() for d in runs)
