"""Request and response bodies of the HTTP API."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _format_money(value: Decimal) -> str:
    return f"{value:.2f}"


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, serialised as ISO-8601 in UTC."""

MoneyStr = Annotated[Decimal, PlainSerializer(_format_money, return_type=str)]
"""A decimal amount, serialised as a string with two decimal places, e.g. ``"12.50"``."""


class ProductCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    url: str | None = None


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    url: str | None
    current_price: MoneyStr | None
    currency: str
    price_updated_at: UtcDatetime | None


class PriceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    price: MoneyStr
    currency: str
    observed_at: UtcDatetime


class HealthOk(BaseModel):
    """The health check as loopback clients (the server itself) see it."""

    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    revision: str | None


class HealthUnavailable(BaseModel):
    status: Literal["unavailable"] = "unavailable"
    reason: str


class HealthPublic(BaseModel):
    """The health check as any other client sees it: the status alone."""

    status: Literal["ok", "unavailable"]
