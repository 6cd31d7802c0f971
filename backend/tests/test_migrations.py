"""The migrations: pytest-alembic's checks on the real history (one head, upgrade and
downgrade through every revision on the real PostgreSQL, models match the migrations), the same
checks failing on fixture histories (tests/migrations), and what the history must keep true."""

import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_alembic
from alembic.config import Config
from fastapi.testclient import TestClient
from pytest_alembic import tests as checks
from pytest_alembic.plugin.error import AlembicTestFailure
from pytest_alembic.tests import experimental
from sqlalchemy import Engine, inspect, text

from innercontext import revisions
from innercontext.app import create_app
from tests.support import (
    BACKEND_DIR,
    FIXTURE_MIGRATIONS,
    HEAD_REVISION,
    LOOPBACK,
    backend_copy,
    current_revision,
    make_settings,
    migrate,
    reset_schema,
)

Check = Callable[[pytest_alembic.MigrationContext], None]
RunCheck = Callable[..., None]


def minimum_downgrade(config: Config, check: Check) -> str | None:
    """pytest-alembic's minimum_downgrade_revision for a check: no downgrade of the newest
    revision declared irreversible (innercontext.revisions) runs, nor any below it. The two
    downgrade checks read the setting differently: test_up_down_consistency stops before going
    down TO that revision, test_downgrade_leaves_no_trace skips the cycles OF that revision
    and those below it."""
    script = revisions.newest_irreversible(revisions.script_directory(config))
    if script is None:
        return None
    if check is experimental.test_downgrade_leaves_no_trace:
        return script.revision
    return revisions.parent(script) or "base"


@pytest.fixture
def run_check(scratch_db: Engine) -> RunCheck:
    """Run one pytest-alembic check on the migrations of a backend (the real one, or a copy
    with fixture revisions), from an empty schema of the test database. A downgrade raising
    NotImplementedError only warns there (as if declared irreversible): here it fails,
    whatever the warning filters say."""

    def run(check: Check, backend: Path = BACKEND_DIR) -> None:
        config = revisions.alembic_config(backend)
        settings = pytest_alembic.Config(
            alembic_config=config, minimum_downgrade_revision=minimum_downgrade(config, check)
        )
        reset_schema(scratch_db)
        with pytest_alembic.runner(settings, scratch_db) as runner, warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            check(runner)

    return run


def test_one_head(run_check: RunCheck) -> None:
    run_check(checks.test_single_head_revision)


def test_upgrade_from_empty_to_head(run_check: RunCheck) -> None:
    run_check(checks.test_upgrade)


def test_models_match_migrations(run_check: RunCheck) -> None:
    run_check(checks.test_model_definitions_match_ddl)


def test_every_revision_upgrades_and_downgrades(run_check: RunCheck) -> None:
    run_check(checks.test_up_down_consistency)


def test_every_downgrade_leaves_no_trace(run_check: RunCheck) -> None:
    run_check(experimental.test_downgrade_leaves_no_trace)


def test_every_irreversible_declaration_has_a_reason() -> None:
    scripts = revisions.script_directory(revisions.alembic_config())
    for script in scripts.walk_revisions():
        revisions.irreversible(script)  # raises on a declaration without a reason


# The same checks on fixture histories: they must be able to fail.
def test_a_downgrade_raising_not_implemented_fails_the_checks(
    run_check: RunCheck, tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_no_downgrade")
    # (test_up_down_consistency names the revision it was going down to.)
    with pytest.raises(UserWarning, match="0002_price_history downgrade raised"):
        run_check(checks.test_up_down_consistency, backend)
    with pytest.raises(UserWarning, match="0003_no_downgrade downgrade raised"):
        run_check(experimental.test_downgrade_leaves_no_trace, backend)


def test_a_downgrade_that_leaves_a_trace_fails_the_checks(
    run_check: RunCheck, tmp_path: Path
) -> None:
    # test_up_down_consistency does not see this one: going down to base drops the table.
    backend = backend_copy(tmp_path, "0003_empty_downgrade")
    with pytest.raises(AlembicTestFailure, match="downgrade does not precisely undo"):
        run_check(experimental.test_downgrade_leaves_no_trace, backend)


@pytest.mark.parametrize(
    "check", [checks.test_up_down_consistency, experimental.test_downgrade_leaves_no_trace]
)
def test_an_irreversible_migration_that_says_so_passes_the_checks(
    run_check: RunCheck, tmp_path: Path, check: Check
) -> None:
    # 0003_irreversible's downgrade raises NotImplementedError like 0003_no_downgrade's, but it
    # declares itself irreversible. The downgrade of 0003_add_rating above it is still checked.
    backend = backend_copy(tmp_path, "0003_irreversible", "0003_add_rating")
    run_check(check, backend)
    # ... and can fail: the same history with 0003_add_rating's downgrade emptied.
    path = backend / "alembic" / "versions" / "0003_add_rating.py"
    path.write_text(path.read_text().replace('op.drop_column("products", "rating")', "pass"))
    with pytest.raises(AlembicTestFailure):
        run_check(check, backend)


def test_models_out_of_step_with_the_migrations_fail_the_checks(
    run_check: RunCheck, tmp_path: Path
) -> None:
    with pytest.raises(AlembicTestFailure, match="out of sync"):
        run_check(
            checks.test_model_definitions_match_ddl, backend_copy(tmp_path, "0003_add_rating")
        )


def test_two_heads_fail_the_checks(run_check: RunCheck, tmp_path: Path) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating")
    # A second revision on the same parent (the fixture's own down_revision): two heads.
    shutil.copy2(FIXTURE_MIGRATIONS / "0003_drop_url.py", backend / "alembic" / "versions")
    with pytest.raises(AlembicTestFailure, match="Expected 1 head revision, found 2"):
        run_check(checks.test_single_head_revision, backend)


def test_an_irreversible_declaration_needs_a_reason(tmp_path: Path) -> None:
    backend = backend_copy(tmp_path, "0003_irreversible")
    path = backend / "alembic" / "versions" / "0003_irreversible.py"
    path.write_text(re.sub(r"(?m)^irreversible = .*$", 'irreversible = ""', path.read_text()))
    scripts = revisions.script_directory(revisions.alembic_config(backend))
    with pytest.raises(revisions.RevisionError, match="irreversible must be a non-empty string"):
        revisions.newest_irreversible(scripts)


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


def test_health_check_reports_unmigrated_database(scratch_db: Engine, database_url: str) -> None:
    with TestClient(create_app(make_settings(database_url)), client=LOOPBACK) as client:
        before = client.get("/health-check")
        migrate(scratch_db)
        after = client.get("/health-check")

    assert before.status_code == 200
    assert before.json() == {"status": "ok", "database": "ok", "revision": None}
    assert after.json() == {"status": "ok", "database": "ok", "revision": HEAD_REVISION}
