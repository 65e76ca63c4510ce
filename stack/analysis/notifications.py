"""The pages the lab's webhook receiver got from Alertmanager: one JSON line per alert in
`<run_dir>/<receiver>/notifications.jsonl`, read back as a frame."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

NOTIFICATIONS = "notifications.jsonl"

NOTIFICATION_COLUMNS = ("received", "status", "alertname", "severity", "startsAt", "endsAt",
                        "labels", "fingerprint")


def notification_rows(payload: dict, received: float) -> list[dict]:
    """One row per alert of an Alertmanager webhook payload."""
    rows = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        rows.append({"received": received, "status": alert.get("status", payload.get("status")),
                     "alertname": labels.get("alertname", ""),
                     "severity": labels.get("severity", ""),
                     "startsAt": alert.get("startsAt", ""), "endsAt": alert.get("endsAt", ""),
                     "labels": labels, "fingerprint": alert.get("fingerprint", "")})
    return rows


def read_notifications(run_dir: str | Path, name: str = "webhook") -> pd.DataFrame:
    """Every alert the receiver named `name` got, in arrival order (empty frame: none)."""
    path = Path(run_dir) / name / NOTIFICATIONS
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s: a torn line skipped", path)
    df = pd.DataFrame(rows, columns=list(NOTIFICATION_COLUMNS))
    return df.astype({"received": "float64"})
