"""Unsafe: SET NOT NULL on an existing column scans the table.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_set_not_null"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("products", "url", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    op.alter_column("products", "url", existing_type=sa.Text(), nullable=True)
