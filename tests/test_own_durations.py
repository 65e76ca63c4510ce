"""Durations on the command line: plain seconds or units, one clear error otherwise."""
from __future__ import annotations

import pytest

from stack.errors import ConfigError
from stack.own.durations import bounded_duration, format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("5", 5.0), ("0.5s", 0.5), ("30s", 30.0), ("1h", 3600.0), ("250ms", 0.25), ("10m", 600.0),
    ("2d", 172800.0), (" 1.5 s ", 1.5), (".5", 0.5), (7, 7.0)])
def test_plain_seconds_or_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "-5", "5 hours", "1h30", "nan", "s"])
def test_bad_durations_name_the_field(text):
    with pytest.raises(ConfigError, match="field '--for': not a duration"):
        parse_duration(text, "--for")


def test_bounds():
    assert bounded_duration("30s", "--interval", 0.1, 3600) == 30
    with pytest.raises(ConfigError, match="at least 100ms and at most 1h"):
        bounded_duration("2h", "--interval", 0.1, 3600)
    with pytest.raises(ConfigError, match="more than 0"):
        bounded_duration("0", "--timeout", 0, 60)


@pytest.mark.parametrize("seconds,text", [(0.25, "250ms"), (30, "30s"), (90, "1m30s"),
                                          (3600, "1h"), (86400 + 1.5, "1d1.5s")])
def test_format(seconds, text):
    assert format_duration(seconds) == text
