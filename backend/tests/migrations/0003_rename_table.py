"""Unsafe: renames a table.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

from alembic import op

revision = "0003_rename_table"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.rename_table("price_observations", "prices")


def downgrade() -> None:
    op.rename_table("prices", "price_observations")
