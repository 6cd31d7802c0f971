"""Safe: add a nullable column, then backfill it.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_add_rating"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("products", sa.Column("rating", sa.Numeric(3, 1), nullable=True))
    op.execute("UPDATE products SET rating = 0 WHERE rating IS NULL")


def downgrade() -> None:
    op.drop_column("products", "rating")
