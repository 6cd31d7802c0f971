"""Unsafe: changes a column's type.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_change_type"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("products", "name", type_=sa.Text(), existing_type=sa.String(200))


def downgrade() -> None:
    op.alter_column("products", "name", type_=sa.String(200), existing_type=sa.Text())
