"""Drops a column, and allows it.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_drop_url_allowed"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None

# migration-lint: allow ban-drop-column -- no release reads products.url since 0002


def upgrade() -> None:
    op.drop_column("products", "url")


def downgrade() -> None:
    op.add_column("products", sa.Column("url", sa.Text(), nullable=True))
