"""Unsafe: renames a column.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

from alembic import op

revision = "0003_rename_column"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("products", "url", new_column_name="link")


def downgrade() -> None:
    op.alter_column("products", "link", new_column_name="url")
