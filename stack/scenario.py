"""Scenario files: a YAML timeline of faults, validated with errors that name the line and field.

    name: production_week
    duration_s: 120
    represents: 7d                # the real week the replay stands for (default 7d)
    on_call_response_s: 12        # BEFORE: how long until a human restarts what broke
    traffic: {rate: 40, probe_interval_s: 0.5}
    events:
      - {at: 8, fault: crash, target: api1, real_duration: 25m}
      - {at: 30, fault: hang, target: api1, duration: 6, real_duration: 1h}

Replay times (`at`, `duration`, `duration_s`) are seconds of the compressed run; `represents`
and each event's `real_duration` are real time (`90s`, `25m`, `2h`, `1h30m`, `7d`, or plain
seconds): how long the incident lasts in the week the replay stands for. A real duration is
the incident's, the same whichever topology replays it; what differs between topologies is
the share of requests that fail while it lasts.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from stack.errors import ConfigError, EventFieldError

WEEK_S = 7 * 86400.0
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def real_seconds(value: Any) -> float:
    """Seconds in a real-time duration: a number of seconds, or text with units (`90s`, `25m`,
    `2h`, `1h30m`, `7d`); a ValueError says what is accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a duration: {value!r} (use 90s, 25m, 2h, 1h30m, 7d or seconds)")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"not a duration: {value!r} (use 90s, 25m, 2h, 1h30m, 7d "
                                 "or seconds)") from None
        else:
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be more than 0, got {value!r}")
    return seconds


def format_real(seconds: float) -> str:
    """Short text for a real duration: 1500 -> '25m', 5400 -> '1h30m', 604800 -> '7d'."""
    out, rest = [], float(seconds)
    for unit in ("d", "h", "m"):
        n = int(rest // _UNIT_S[unit])
        if n:
            out.append(f"{n}{unit}")
            rest -= n * _UNIT_S[unit]
    if rest > 1e-6 or not out:
        out.append(f"{round(rest, 1):g}s")
    return "".join(out)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrafficSpec(_Strict):
    rate: float = Field(40.0, gt=0, le=2000)
    probe_interval_s: float = Field(0.5, gt=0, le=60)
    timeout_s: float = Field(5.0, gt=0, le=60)


class Event(_Strict):
    at: float = Field(ge=0, description="seconds after the scenario starts")
    fault: str
    target: str = "api1"
    duration: float | None = Field(None, gt=0, description="seconds until the fault is undone "
                                   "(default: the on-call response time)")
    params: dict[str, Any] = Field(default_factory=dict)
    real_duration: float | None = Field(None, description="seconds the incident lasts in the "
                                        "real week (text with units in YAML: 25m, 2h, 90s); "
                                        "default: its replay window's share of the week")

    @field_validator("real_duration", mode="before")
    @classmethod
    def _real(cls, value: Any) -> float | None:
        return None if value is None else real_seconds(value)


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    duration_s: float = Field(gt=0, le=3600)
    represents: float = Field(WEEK_S, le=366 * 86400.0, description="seconds of real time "
                              "the replay stands for (text with units in YAML: 7d)")
    on_call_response_s: float = Field(15.0, ge=0, le=3600)
    traffic: TrafficSpec = TrafficSpec()
    events: list[Event] = Field(default_factory=list)

    @field_validator("represents", mode="before")
    @classmethod
    def _represents(cls, value: Any) -> float:
        return real_seconds(value)

    @model_validator(mode="after")
    def _events_fit(self) -> "Scenario":
        for i, ev in enumerate(self.events):
            if ev.at >= self.duration_s:
                raise EventFieldError(i, "at", f"at {ev.at:g} s is after the scenario ends "
                                  f"(duration_s {self.duration_s:g})")
        total = 0.0
        for i, ev in enumerate(self.events):
            total += self.real_duration_of(ev)
            if ev.real_duration is not None and total > self.represents * (1 + 1e-9):
                raise EventFieldError(i, "real_duration", "the events' real durations add up "
                                      f"to {format_real(total)} here, more than the "
                                      f"{format_real(self.represents)} the scenario "
                                      "represents")
        return self

    def end_of(self, ev: Event) -> float:
        """When an event's fault is undone."""
        return ev.at + (ev.duration if ev.duration is not None else self.on_call_response_s)

    def real_duration_of(self, ev: Event) -> float:
        """Seconds the event's incident lasts in the real week: its `real_duration`, or else
        its replay window stretched as the whole replay is (no claim beyond the replay)."""
        if ev.real_duration is not None:
            return ev.real_duration
        window = min(self.end_of(ev), self.duration_s) - ev.at
        return window * self.represents / self.duration_s

    def scaled(self, factor: float) -> "Scenario":
        """The same timeline stretched (factor > 1) or compressed in time; the real week and
        each incident's real duration stay as they are."""
        data = self.model_dump()
        data["duration_s"] *= factor
        for ev in data["events"]:
            ev["at"] *= factor
            if ev["duration"] is not None:
                ev["duration"] *= factor
        data["on_call_response_s"] *= factor
        return Scenario.model_validate(data)

    def stretched(self, min_windows: dict[int, float]) -> tuple["Scenario", list[str]]:
        """The same scenario with each listed event's window lengthened to at least its
        minimum (seconds), and every later event and the end moved back by as much, so that
        the faults keep their order and their gaps. Returns it and one line per change.

        A replay compresses a week; a window shorter than the lab needs to heal by itself
        (Patroni's failover after a lost machine takes its leader key's TTL) would show an
        outage the real week does not have."""
        data = self.model_dump()
        events = data["events"]
        notes = []
        for i in sorted(min_windows):
            ev = events[i]
            end = ev["at"] + (ev["duration"] if ev["duration"] is not None
                              else data["on_call_response_s"])
            window = min(end, data["duration_s"]) - ev["at"]
            want = float(min_windows[i])
            if window >= want:
                continue
            shift = max(0.0, ev["at"] + want - min(end, data["duration_s"]))
            for later in events:
                if later is not ev and later["at"] >= end - 1e-9:
                    later["at"] += shift
            data["duration_s"] += shift
            ev["duration"] = want
            notes.append(f"{ev['fault']} {ev['target']} at {ev['at']:g} s: its window "
                         f"lengthened from {window:.1f} s to {want:.1f} s, long enough to "
                         f"see the lab heal by itself; what follows starts {shift:.1f} s "
                         "later")
        return Scenario.model_validate(data), notes

    def at_rate(self, rate: float | None) -> "Scenario":
        """The same scenario under another request rate (None: the file's own)."""
        if rate is None:
            return self
        data = self.model_dump()
        data["traffic"]["rate"] = rate
        return Scenario.model_validate(data)


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (or its nearest parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
            if nxt is None:  # a missing or extra key: point at the mapping or the key itself
                keyn = next((k for k, _ in node.value if k.value == str(key)), None)
                return keyn.start_mark.line + 1 if keyn is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_scenario(text: str, source: str = "scenario", known_faults: list[str] | None = None,
                   components: Mapping[str, str] | None = None,
                   fault_targets: Mapping[str, Sequence[str]] | None = None,
                   fault_params: Mapping[str, Callable[[dict], Any]] | None = None
                   ) -> Scenario:
    """Validate scenario YAML; a ConfigError names the file, the line and the field.

    With `components` (name -> kind, of the topology it will run on) and `fault_targets`
    (fault -> the kinds it applies to), every event's target is checked too, and with
    `fault_params` (fault -> a check that raises ConfigError with field 'params.<name>'), its
    parameters: all before any lab starts."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                          source=source, line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise ConfigError("a scenario is a mapping with name, duration_s and events",
                          source=source, line=1)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, EventFieldError):
            loc, msg = ctx_err.loc, str(ctx_err)
        elif err["type"] == "value_error":  # our own validators' words name the value
            msg = str(err["msg"]).removeprefix("Value error, ")
        else:
            msg = err["msg"]
            if "input" in err and err["type"] != "missing":
                msg += f" (got {err['input']!r})"
        field = ".".join(str(p) for p in loc) or None
        raise ConfigError(msg, field=field, line=_line_of(node, loc), source=source) from None
    if known_faults is not None:
        for i, ev in enumerate(scenario.events):
            if ev.fault not in known_faults:
                raise ConfigError(f"unknown fault '{ev.fault}'; known: "
                                  f"{', '.join(sorted(known_faults))}",
                                  field=f"events.{i}.fault",
                                  line=_line_of(node, ("events", i, "fault")), source=source)
    if components is not None:
        for i, ev in enumerate(scenario.events):
            kind = components.get(ev.target)
            where = {"field": f"events.{i}.target", "source": source,
                     "line": _line_of(node, ("events", i, "target"))}
            if kind is None:
                raise ConfigError(f"no component '{ev.target}' in this topology; it has: "
                                  f"{', '.join(sorted(components))}", **where)
            allowed = (fault_targets or {}).get(ev.fault)
            if allowed is not None and kind not in allowed:
                raise ConfigError(f"fault '{ev.fault}' applies to {', '.join(allowed)} "
                                  f"components, not {ev.target} ({kind})", **where)
    for i, ev in enumerate(scenario.events):
        check = (fault_params or {}).get(ev.fault)
        if check is None:
            continue
        try:
            check(ev.params)
        except ConfigError as exc:
            path = tuple((exc.field or "params").split("."))
            raise ConfigError(exc.message, field=".".join(
                ("events", str(i)) + path), line=_line_of(node, ("events", i) + path),
                source=source) from None
    return scenario


def load_scenario(path: str | Path, known_faults: list[str] | None = None,
                  components: Mapping[str, str] | None = None,
                  fault_targets: Mapping[str, Sequence[str]] | None = None,
                  fault_params: Mapping[str, Callable[[dict], Any]] | None = None
                  ) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read scenario file: {exc.strerror}", source=str(path)) from None
    return parse_scenario(text, source=str(path), known_faults=known_faults,
                          components=components, fault_targets=fault_targets,
                          fault_params=fault_params)
