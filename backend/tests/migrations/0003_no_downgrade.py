"""No working downgrade, and no declaration.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_no_downgrade"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("products", sa.Column("rating", sa.Numeric(3, 1), nullable=True))


def downgrade() -> None:
    raise NotImplementedError
