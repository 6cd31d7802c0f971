"""Unsafe: a NOT NULL column without a default.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_required_column"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("products", sa.Column("sku", sa.Text(), nullable=False))


def downgrade() -> None:
    op.drop_column("products", "sku")
