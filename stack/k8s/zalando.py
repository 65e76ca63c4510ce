"""A typed model of the part of Zalando's `postgresql` custom resource (acid.zalan.do/v1) that
the renderer writes.

No package on a registry ships this CRD's schema, so the project checks its Postgres cluster
against this model instead. It covers only the fields the renderer uses, with the types,
patterns and enums of the operator's published CRD (manifests/postgresql.crd.yaml of
zalando/postgres-operator, v1.15 era: Postgres 14 to 18). Every model forbids unknown fields, so a
misspelt key fails here instead of being dropped by the operator.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the CRD's patterns for quantities
MEMORY = r"^(\d+(e\d+)?|\d+(\.\d+)?(e\d+)?[EPTGMK]i?)$"
CPU = r"^(\d+m|\d+(\.\d{1,3})?)$"
ROLE_FLAG = Literal["bypassrls", "BYPASSRLS", "nobypassrls", "NOBYPASSRLS", "createdb",
                    "CREATEDB", "nocreatedb", "NOCREATEDB", "createrole", "CREATEROLE",
                    "nocreaterole", "NOCREATEROLE", "inherit", "INHERIT", "noinherit",
                    "NOINHERIT", "login", "LOGIN", "nologin", "NOLOGIN", "replication",
                    "REPLICATION", "noreplication", "NOREPLICATION", "superuser", "SUPERUSER",
                    "nosuperuser", "NOSUPERUSER"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Volume(_Strict):
    size: str = Field(pattern=MEMORY)
    storageClass: str | None = None


class PostgresqlParams(_Strict):
    version: Literal["14", "15", "16", "17", "18"]
    parameters: dict[str, str] = {}  # the CRD takes every value as a string


class Patroni(_Strict):
    """Patroni's dynamic configuration, as the operator passes it to Spilo."""

    ttl: int | None = Field(None, ge=0, le=2**31 - 1)
    loop_wait: int | None = Field(None, ge=0, le=2**31 - 1)
    retry_timeout: int | None = Field(None, ge=0, le=2**31 - 1)
    maximum_lag_on_failover: int | None = Field(None, ge=0)
    synchronous_mode: bool | None = None
    synchronous_mode_strict: bool | None = None
    synchronous_node_count: int | None = Field(None, ge=0, le=2**31 - 1)
    failsafe_mode: bool | None = None
    pg_hba: list[str] | None = None
    initdb: dict[str, str] | None = None


class Quantities(_Strict):
    cpu: str | None = Field(None, pattern=CPU)
    memory: str | None = Field(None, pattern=MEMORY)


class Resources(_Strict):
    requests: Quantities | None = None
    limits: Quantities | None = None


class Spec(_Strict):
    teamId: str
    numberOfInstances: int = Field(ge=0, le=2**31 - 1)
    volume: Volume
    postgresql: PostgresqlParams
    patroni: Patroni | None = None
    users: dict[str, list[ROLE_FLAG] | None] = {}
    databases: dict[str, str] = {}
    resources: Resources | None = None


class PostgresqlCluster(_Strict):
    """One `postgresql` object: a Patroni-run Postgres cluster the operator creates."""

    apiVersion: Literal["acid.zalan.do/v1"]
    kind: Literal["postgresql"]
    metadata: Metadata
    spec: Spec

    @model_validator(mode="after")
    def _operator_rules(self) -> "PostgresqlCluster":
        # the operator refuses a cluster whose name does not start with "<teamId>-"
        if not self.metadata.name.startswith(f"{self.spec.teamId.lower()}-"):
            raise ValueError(f"metadata.name {self.metadata.name!r} must start with the "
                             f"teamId {self.spec.teamId!r} and a dash")
        # a database's owner must be one of the declared users
        for db, owner in self.spec.databases.items():
            if owner not in self.spec.users:
                raise ValueError(f"spec.databases.{db}: owner {owner!r} is not in spec.users")
        return self
