"""Scenario files: a YAML timeline of faults, validated with errors that name the line and field.

    name: production_week
    duration_s: 120
    on_call_response_s: 12        # BEFORE: how long until a human restarts what broke
    traffic: {rate: 40, probe_interval_s: 0.5}
    events:
      - {at: 8, fault: crash, target: api1}
      - {at: 30, fault: hang, target: api1, duration: 6}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stack.errors import ConfigError, EventFieldError


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


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    duration_s: float = Field(gt=0, le=3600)
    on_call_response_s: float = Field(15.0, ge=0, le=3600)
    traffic: TrafficSpec = TrafficSpec()
    events: list[Event] = Field(default_factory=list)

    @model_validator(mode="after")
    def _events_fit(self) -> "Scenario":
        for i, ev in enumerate(self.events):
            if ev.at >= self.duration_s:
                raise EventFieldError(i, "at", f"at {ev.at:g} s is after the scenario ends "
                                  f"(duration_s {self.duration_s:g})")
        return self

    def end_of(self, ev: Event) -> float:
        """When an event's fault is undone."""
        return ev.at + (ev.duration if ev.duration is not None else self.on_call_response_s)

    def scaled(self, factor: float) -> "Scenario":
        """The same timeline stretched (factor > 1) or compressed in time."""
        data = self.model_dump()
        data["duration_s"] *= factor
        for ev in data["events"]:
            ev["at"] *= factor
            if ev["duration"] is not None:
                ev["duration"] *= factor
        data["on_call_response_s"] *= factor
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
                   fault_targets: Mapping[str, Sequence[str]] | None = None) -> Scenario:
    """Validate scenario YAML; a ConfigError names the file, the line and the field.

    With `components` (name -> kind, of the topology it will run on) and `fault_targets`
    (fault -> the kinds it applies to), every event's target is checked too, before any lab
    starts."""
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
    return scenario


def load_scenario(path: str | Path, known_faults: list[str] | None = None,
                  components: Mapping[str, str] | None = None,
                  fault_targets: Mapping[str, Sequence[str]] | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read scenario file: {exc.strerror}", source=str(path)) from None
    return parse_scenario(text, source=str(path), known_faults=known_faults,
                          components=components, fault_targets=fault_targets)
