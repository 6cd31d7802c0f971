"""innercontext.revisions: what a rendered downgrade drops (pure parsing)."""

import pytest

from innercontext.revisions import Drop, dropped


@pytest.mark.parametrize(
    ("sql", "drops"),
    [
        ("DROP TABLE price_observations;", [Drop(("price_observations",))]),
        (
            "ALTER TABLE products DROP COLUMN price_updated_at;",
            [Drop(("products",), "price_updated_at")],
        ),
        # What alembic renders for op.drop_table / op.drop_column with a schema.
        ("DROP TABLE shop.products;", [Drop(("shop", "products"))]),
        ("ALTER TABLE shop.products DROP COLUMN url;", [Drop(("shop", "products"), "url")]),
        # Quoted names keep their case, unquoted ones fold to lower case.
        ('DROP TABLE "Price Log", Archive;', [Drop(("Price Log",)), Drop(("archive",))]),
        ('ALTER TABLE "Products" DROP "Url"', [Drop(("Products",), "Url")]),
        # Hand-written SQL (op.execute): IF EXISTS, ONLY, *, CASCADE, several actions.
        (
            "drop table if exists notes cascade",
            [Drop(("notes",))],
        ),
        (
            "ALTER TABLE IF EXISTS ONLY products * DROP COLUMN IF EXISTS a CASCADE, DROP b, "
            "DROP CONSTRAINT ck_x, ADD COLUMN c int, ALTER COLUMN d DROP DEFAULT, "
            "ALTER COLUMN e DROP NOT NULL",
            [Drop(("products",), "a"), Drop(("products",), "b")],
        ),
        # Several statements in one op.execute; DROP inside strings and comments is not a drop.
        (
            "UPDATE notes SET body = 'DROP TABLE x;'; -- DROP TABLE y\nDROP TABLE z",
            [Drop(("z",))],
        ),
        ("DO $$ BEGIN DROP TABLE w; END $$; SELECT 1", []),
        # Not tables or columns; nor alembic's own version table.
        ("DROP INDEX ix_products_price_updated_at;", []),
        ("DROP VIEW v; DROP SEQUENCE s; DROP TYPE t;", []),
        ("ALTER TABLE products DROP CONSTRAINT pk_products;", []),
        ("ALTER TABLE products RENAME url TO link;", []),
        ("DROP TABLE alembic_version;", []),
    ],
)
def test_what_a_downgrade_drops(sql: str, drops: list[Drop]) -> None:
    assert dropped([sql]) == drops


def test_each_drop_once_in_order() -> None:
    statements = [
        "BEGIN;",
        "-- Running downgrade 0003 -> 0002",
        "ALTER TABLE products DROP COLUMN rating;",
        "DROP TABLE notes;",
        "DROP TABLE notes;",
        "COMMIT;",
    ]
    assert [d.name for d in dropped(statements)] == ["products.rating", "notes"]
