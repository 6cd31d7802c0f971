"""Safe: the same CHECK constraint, NOT VALID (validated later).

A fixture for the tests (never in alembic/versions): installed on top of the real migrations
by tests.support.backend_copy.
"""

from alembic import op

revision = "0003_check_constraint_not_valid"
down_revision = "0002_price_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_check_constraint(
        "name_not_blank", "products", "length(name) > 0", postgresql_not_valid=True
    )


def downgrade() -> None:
    op.drop_constraint("ck_products_name_not_blank", "products", type_="check")
