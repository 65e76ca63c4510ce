"""Request bodies the API accepts, validated at the edge."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stack.model.features import MerchantCategory

MAX_AMOUNT = 1_000_000.0


class Transaction(BaseModel):
    """A card transaction to score."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    customer_id: int = Field(ge=1)
    amount: float
    merchant_category: MerchantCategory
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2, e.g. GB")
    hour: int = Field(ge=0, le=23)
    is_online: bool

    @field_validator("amount")
    @classmethod
    def _amount_in_range(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"amount must be greater than 0, got {value}")
        if value > MAX_AMOUNT:
            raise ValueError(f"amount must be at most {MAX_AMOUNT:,.0f}, got {value:g}")
        return value


class ReloadRequest(BaseModel):
    """Which model version to activate; null means the latest."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelVersion(BaseModel):
    """The model version to stage or activate (blue/green)."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                         description="a version in the model manifest, e.g. v2")


class Faults(BaseModel):
    """In-process fault knobs; a PUT replaces all of them (omitted ones reset to 0)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    db_delay_ms: int = Field(default=0, ge=0, le=600_000)
    leak_mb_per_request: int = Field(default=0, ge=0, le=1024)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
