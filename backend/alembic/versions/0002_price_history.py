"""Price history: price observations table and the current price on products.

Revision ID: 0002_price_history
Revises: 0001_products
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002_price_history"
down_revision: str | None = "0001_products"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("products", sa.Column("current_price", sa.Numeric(12, 2), nullable=True))
    op.add_column(
        "products",
        sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False),
    )
    op.add_column(
        "products", sa.Column("price_updated_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_products_price_updated_at", "products", ["price_updated_at"])

    op.create_table(
        "price_observations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("price", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False),
        sa.Column(
            "observed_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name="fk_price_observations_product_id_products",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_price_observations"),
    )
    op.create_index(
        "ix_price_observations_product_id_observed_at",
        "price_observations",
        ["product_id", "observed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_price_observations_product_id_observed_at", table_name="price_observations")
    op.drop_table("price_observations")
    op.drop_index("ix_products_price_updated_at", table_name="products")
    op.drop_column("products", "price_updated_at")
    op.drop_column("products", "currency")
    op.drop_column("products", "current_price")
