"""The bodies the API takes and gives, validated at the edge.

Every rule a request must meet is a constraint of its field (ge, gt, le, a pattern, a Literal),
never a validator's code: the OpenAPI document states it in JSON Schema, so a client generated
from the document checks exactly what the server checks.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from stack.model.features import MerchantCategory

MAX_AMOUNT = 1_000_000.0
MAX_CUSTOMER_ID = 2**31 - 1  # the customers table's key is a Postgres integer
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
UUID_PATTERN = (r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{12}$")


def uuid_string(schema: dict[str, Any]) -> None:
    """The JSON Schema of an optional header that holds a UUID: a string, never null (a
    header is absent or a string), in the 8-4-4-4-12 form."""
    schema.pop("anyOf", None)
    schema.update(type="string", format="uuid", pattern=UUID_PATTERN)


def _integral(value: object) -> object:
    """5.0 is an integer in JSON Schema: take it as 5 (a string or a boolean stays refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# JSON Schema's integer: 5 or 5.0, never "5", true or 5.5 (pydantic's lax int would take the
# first two, its strict int would refuse 5.0).
Integer = Annotated[int, Strict(), BeforeValidator(_integral)]


# -- requests -------------------------------------------------------------------------------
class Transaction(BaseModel):
    """A card transaction to score."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    customer_id: Integer = Field(ge=1, le=MAX_CUSTOMER_ID)
    amount: float = Field(gt=0, le=MAX_AMOUNT, description="in the card's currency, > 0")
    merchant_category: MerchantCategory
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2, e.g. GB")
    hour: Integer = Field(ge=0, le=23, description="local hour of the transaction")
    is_online: bool


class ReloadRequest(BaseModel):
    """Which model version to activate; null means the latest."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: str | None = Field(default=None, pattern=VERSION_PATTERN)


class ModelVersion(BaseModel):
    """The model version to stage or activate (blue/green)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: str = Field(pattern=VERSION_PATTERN,
                         description="a version in the model manifest, e.g. v2")


class Faults(BaseModel):
    """In-process fault knobs; a PUT replaces all of them (omitted ones reset to 0)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    db_delay_ms: Integer = Field(default=0, ge=0, le=600_000)
    leak_mb_per_request: Integer = Field(default=0, ge=0, le=1024)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)


# -- answers --------------------------------------------------------------------------------
class Alive(BaseModel):
    status: Literal["alive"]
    replica: str


class Ready(BaseModel):
    status: Literal["ready"]
    replica: str
    model_version: str | None


class NotReady(BaseModel):
    status: Literal["not_ready"]
    replica: str
    reasons: list[str] = Field(description="why, e.g. 'database unreachable: ...'")


class FaultsState(Faults):
    """The fault knobs, and how much memory the leak fault holds."""

    leaked_mb: int = Field(ge=0)


# -- errors: every error is {"error": <code>, "detail": ...} --------------------------------
class FieldError(BaseModel):
    field: str = Field(description="the field at fault, e.g. amount, or body")
    message: str


class InvalidRequest(BaseModel):
    """422: the request does not meet the schema; every problem is listed."""

    error: Literal["invalid_request"]
    detail: list[FieldError]


class ErrorBody(BaseModel):
    """Any other error: a code a client can switch on, and a sentence for a human."""

    error: str
    detail: str | None = None


def error_body(name: str, *codes: str) -> type[BaseModel]:
    """An ErrorBody whose `error` is one of `codes` (an enum in the document)."""
    return create_model(name, __base__=ErrorBody,
                        error=(Literal[codes], ...))  # type: ignore[valid-type]


def doc(description: str, model: type[BaseModel] | None = None, **extra: Any
        ) -> dict[str, Any]:
    """One entry of a route's `responses=`: when it happens, and the body's model."""
    return {"description": description, **({"model": model} if model else {}), **extra}


BodyTooLarge = error_body("BodyTooLarge", "body_too_large")
Unauthorized = error_body("Unauthorized", "unauthorized")
InternalError = error_body("InternalError", "internal_error")

INVALID = doc("the request does not meet the schema: each field at fault and why",
              InvalidRequest)
TOO_LARGE = doc("the body is larger than 1 MiB", BodyTooLarge)
