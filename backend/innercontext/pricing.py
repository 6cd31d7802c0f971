"""Deterministic, local price computation (no network access).

A product's base price is derived from its id and name; the price observed on a given UTC day
varies around that base by up to ±10 %. The same product, name and day always give the same price.
"""

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

MIN_BASE_CENTS = 500  # 5.00
MAX_BASE_CENTS = 15_000  # 150.00
MAX_DAILY_VARIATION_BP = 1_000  # basis points: ±10 %
_BP_PER_UNIT = 10_000
_CENT = Decimal("0.01")


def _stable_int(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def base_price_cents(product_id: int, name: str) -> int:
    span = MAX_BASE_CENTS - MIN_BASE_CENTS + 1
    return MIN_BASE_CENTS + _stable_int(f"base:{product_id}:{name}") % span


def compute_price(product_id: int, name: str, at: datetime) -> Decimal:
    """Price (two decimal places) of a product at a timezone-aware moment."""
    if at.tzinfo is None:
        raise ValueError("compute_price needs a timezone-aware datetime")
    day = at.astimezone(UTC).date().isoformat()
    span = 2 * MAX_DAILY_VARIATION_BP + 1
    variation_bp = _stable_int(f"day:{product_id}:{day}") % span - MAX_DAILY_VARIATION_BP
    cents = base_price_cents(product_id, name) * (_BP_PER_UNIT + variation_bp) // _BP_PER_UNIT
    return (Decimal(cents) * _CENT).quantize(_CENT)
