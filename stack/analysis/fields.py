"""The traffic record's format, shared by the load client that writes records and the analysis
that reads them: one JSON object per request with these fields, the error kinds, and when a
record means that the client itself, not the server, fell behind."""
from __future__ import annotations

LATE_S = 0.1  # a request leaving this late means the client, not the server, fell behind
CLIENT_BEHIND_FRACTION = 0.01  # more late requests than this: the run proves nothing
RECORD_FIELDS = ("kind", "t", "wall", "latency_s", "lag_s", "status", "error", "backend",
                 "request_id")
ERROR_KINDS = ("http_4xx", "http_5xx", "timeout", "connect", "read", "protocol",
               "client_overload")


def behind_note(late: int, sent: int) -> str:
    """"" when the client kept its schedule, else the line that makes a verdict INCONCLUSIVE:
    more than 1% of the load requests left LATE_S late or not at all."""
    if late <= CLIENT_BEHIND_FRACTION * max(sent, 1):
        return ""
    return (f"the load client fell behind: {late} of {sent} requests left {LATE_S:g} s late "
            "or not at all, so the failures may be the client's")
