from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from innercontext.pricing import MAX_BASE_CENTS, MIN_BASE_CENTS, compute_price

NOON = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_price_is_deterministic() -> None:
    assert compute_price(7, "Kettle", NOON) == compute_price(7, "Kettle", NOON)


def test_price_depends_only_on_the_utc_day() -> None:
    same_day = [NOON.replace(hour=0), NOON.replace(hour=23, minute=59)]
    warsaw_evening = NOON.astimezone(timezone(timedelta(hours=2))).replace(hour=23)  # 21:00 UTC

    prices = {compute_price(7, "Kettle", at) for at in [NOON, *same_day, warsaw_evening]}

    assert len(prices) == 1


def test_price_has_two_decimal_places_and_stays_in_range() -> None:
    for product_id in range(1, 200):
        for day in range(0, 30, 7):
            price = compute_price(product_id, f"product {product_id}", NOON + timedelta(days=day))
            assert price.as_tuple().exponent == -2
            assert Decimal(MIN_BASE_CENTS) / 100 * Decimal("0.9") <= price
            assert price <= Decimal(MAX_BASE_CENTS) / 100 * Decimal("1.1")


def test_price_varies_between_products_and_days() -> None:
    by_product = {compute_price(i, "Kettle", NOON) for i in range(1, 50)}
    by_day = {compute_price(1, "Kettle", NOON + timedelta(days=d)) for d in range(50)}

    assert len(by_product) > 40
    assert len(by_day) > 10


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_price(1, "Kettle", datetime(2025, 6, 1, 12, 0))
