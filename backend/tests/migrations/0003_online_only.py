"""Needs a live connection: it reads the data to decide what to do.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

import sqlalchemy as sa

from alembic import op

revision = "0003_online_only"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM products")).scalar()
    if count:
        op.execute("UPDATE products SET url = NULL WHERE url = ''")


def downgrade() -> None:
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM products")).scalar()
    if count:
        op.execute("UPDATE products SET url = '' WHERE url IS NULL")
