"""Durations on the command line: plain seconds or a number with a unit (5, 0.5s, 250ms, 30s,
10m, 1h, 2d), and the same value back as text for verdict lines."""
from __future__ import annotations

import math
import re

from stack.errors import ConfigError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float | int, field: str = "duration") -> float:
    """Seconds in `text`; a ConfigError naming `field` when it is not a duration."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ConfigError(f"not a duration: {text!r} (use seconds or a unit: 5, 0.5s, "
                              "250ms, 30s, 10m, 1h, 2d)", field=field)
        seconds = float(m[1]) * UNITS[m[2] or "s"]
    if not math.isfinite(seconds):
        raise ConfigError(f"not a duration: {text!r}", field=field)
    return seconds


def bounded_duration(text: str | float, field: str, low: float, high: float) -> float:
    """A duration within [low, high] seconds (low excluded when it is 0)."""
    seconds = parse_duration(text, field)
    if not (seconds > low if low == 0 else seconds >= low) or seconds > high:
        lo = "more than 0" if low == 0 else f"at least {format_duration(low)}"
        raise ConfigError(f"must be {lo} and at most {format_duration(high)}, got {text!r}",
                          field=field)
    return seconds


def format_duration(seconds: float) -> str:
    """Short text for seconds: 0.25 -> '250ms', 30 -> '30s', 90 -> '1m30s', 3600 -> '1h'."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out, rest = [], seconds
    for unit in ("d", "h", "m"):
        n = int(rest // UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
            rest -= n * UNITS[unit]
    if rest > 1e-9 or not out:
        out.append(f"{round(rest, 3):g}s")
    return "".join(out)
