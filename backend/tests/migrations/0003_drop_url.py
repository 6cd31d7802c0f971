"""Unsafe: drops a column the release still serving reads.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_drop_url"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("products", "url")


def downgrade() -> None:
    op.add_column("products", sa.Column("url", sa.Text(), nullable=True))
