"""Irreversible, and says so: it throws data away.

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

from alembic import op

revision = "0003_irreversible"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None

irreversible = "blank product URLs become NULL; which ones were blank is not kept"


def upgrade() -> None:
    op.execute("UPDATE products SET url = NULL WHERE url = ''")


def downgrade() -> None:
    raise NotImplementedError(irreversible)
