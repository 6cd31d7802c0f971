"""Unsafe: a column with a foreign key checked at once.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_foreign_key"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "price_observations",
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("products.id"), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("price_observations", "source_id")
