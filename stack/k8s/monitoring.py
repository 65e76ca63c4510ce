"""A typed model of the prometheus-operator objects the renderer writes (monitoring.coreos.com/v1:
PrometheusRule, ServiceMonitor, Probe).

No package on the registries the project uses ships these CRDs' schemas in a form a test can
load without side effects, so the project checks its objects against this model: the subset of
fields the renderer uses, with the types, required fields and duration pattern of the
operator's published CRDs. Every model forbids unknown fields, so a misspelt key fails here
instead of being dropped by the API server's pruning.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the CRDs' pattern for a Prometheus duration
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Rule(_Strict):
    record: str | None = None
    alert: str | None = None
    expr: int | str
    for_: str | None = Field(None, alias="for", pattern=DURATION)
    keep_firing_for: str | None = Field(None, pattern=DURATION)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_kind(self) -> "Rule":
        if (self.record is None) == (self.alert is None):
            raise ValueError("exactly one of record and alert must be set")
        if self.record is not None and (self.annotations or self.for_):
            raise ValueError("annotations and for are only valid for alerting rules")
        return self


class RuleGroup(_Strict):
    name: str = Field(min_length=1)
    interval: str | None = Field(None, pattern=DURATION)
    rules: list[Rule] = []


class PrometheusRuleSpec(_Strict):
    groups: list[RuleGroup] = []

    @model_validator(mode="after")
    def _unique_names(self) -> "PrometheusRuleSpec":
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        return self


class LabelSelector(_Strict):
    matchLabels: dict[str, str] = {}


class Endpoint(_Strict):
    port: str | None = None
    path: str | None = None
    scheme: Literal["http", "https"] | None = None
    interval: str | None = Field(None, pattern=DURATION)
    scrapeTimeout: str | None = Field(None, pattern=DURATION)


class ServiceMonitorSpec(_Strict):
    selector: LabelSelector
    endpoints: list[Endpoint]
    jobLabel: str | None = None


class Prober(_Strict):
    url: str = Field(min_length=1)
    scheme: Literal["http", "https"] | None = None
    path: str | None = None


class StaticConfig(_Strict):
    static: list[str] = []
    labels: dict[str, str] = {}


class Targets(_Strict):
    staticConfig: StaticConfig | None = None


class ProbeSpec(_Strict):
    prober: Prober | None = None
    module: str | None = None
    jobName: str | None = None
    interval: str | None = Field(None, pattern=DURATION)
    scrapeTimeout: str | None = Field(None, pattern=DURATION)
    targets: Targets | None = None


class _Object(_Strict):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    metadata: Metadata


class PrometheusRule(_Object):
    kind: Literal["PrometheusRule"]
    spec: PrometheusRuleSpec


class ServiceMonitor(_Object):
    kind: Literal["ServiceMonitor"]
    spec: ServiceMonitorSpec


class Probe(_Object):
    kind: Literal["Probe"]
    spec: ProbeSpec


MODELS: dict[str, type[_Object]] = {"PrometheusRule": PrometheusRule,
                                    "ServiceMonitor": ServiceMonitor, "Probe": Probe}
