import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text

from innercontext.app import create_app
from innercontext.models import Base
from tests.support import (
    BACKEND_DIR,
    HEAD_REVISION,
    LOOPBACK,
    current_revision,
    make_settings,
    migrate,
)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def column_names(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def alembic_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``alembic ...`` as deploy runs it: from backend/, the URL coming from DATABASE_URL."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=BACKEND_DIR,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_upgrade_head_from_scratch(scratch_db: Engine) -> None:
    assert table_names(scratch_db) == set()

    migrate(scratch_db)

    assert table_names(scratch_db) == {"alembic_version", "products", "price_observations"}
    assert current_revision(scratch_db) == HEAD_REVISION


def test_cli_upgrade_head_uses_settings_and_is_idempotent(
    scratch_db: Engine, database_url: str
) -> None:
    first = alembic_cli(database_url, "upgrade", "head")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running upgrade  -> 0001_products" in first.stdout + first.stderr
    assert current_revision(scratch_db) == HEAD_REVISION

    second = alembic_cli(database_url, "upgrade", "head")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Running upgrade" not in second.stdout + second.stderr
    assert current_revision(scratch_db) == HEAD_REVISION


def test_downgrade_to_base_and_upgrade_again(scratch_db: Engine) -> None:
    migrate(scratch_db)

    migrate(scratch_db, "base", down=True)
    assert table_names(scratch_db) == {"alembic_version"}
    assert current_revision(scratch_db) is None

    migrate(scratch_db)
    assert current_revision(scratch_db) == HEAD_REVISION


def test_price_history_migration_keeps_existing_products(scratch_db: Engine) -> None:
    migrate(scratch_db, "0001_products")
    assert "price_observations" not in table_names(scratch_db)
    assert "current_price" not in column_names(scratch_db, "products")
    with scratch_db.begin() as conn:
        conn.execute(text("INSERT INTO products (name) VALUES ('Kettle')"))

    migrate(scratch_db, "0002_price_history")
    with scratch_db.connect() as conn:
        row = conn.execute(
            text("SELECT name, current_price, currency, price_updated_at FROM products")
        ).one()
    assert tuple(row) == ("Kettle", None, "EUR", None)

    migrate(scratch_db, "0001_products", down=True)
    assert "price_observations" not in table_names(scratch_db)
    assert column_names(scratch_db, "products") == {"id", "name", "url", "created_at"}


def test_models_match_migrations(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_health_check_reports_unmigrated_database(scratch_db: Engine, database_url: str) -> None:
    with TestClient(create_app(make_settings(database_url)), client=LOOPBACK) as client:
        before = client.get("/health-check")
        migrate(scratch_db)
        after = client.get("/health-check")

    assert before.status_code == 200
    assert before.json() == {"status": "ok", "database": "ok", "revision": None}
    assert after.json() == {"status": "ok", "database": "ok", "revision": HEAD_REVISION}
