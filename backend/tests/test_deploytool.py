"""``python -m innercontext.deploytool``: what the deploy job learns about the database."""

import subprocess
import sys

from sqlalchemy import Engine, text

from tests.support import BACKEND_DIR, HEAD_REVISION, current_revision


def deploytool(database_url: str, *args: str) -> tuple[int, dict[str, str], str]:
    """Run it as the deploy job does: from backend/, DATABASE_URL from the environment."""
    done = subprocess.run(
        [sys.executable, "-m", "innercontext.deploytool", *args],
        cwd=BACKEND_DIR,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pairs = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return done.returncode, pairs, done.stdout + done.stderr


def test_revision_of_a_migrated_database(db: Engine, database_url: str) -> None:
    code, out, text_ = deploytool(database_url, "revision")
    assert code == 0, text_
    assert out == {"db_revision": HEAD_REVISION, "heads": HEAD_REVISION, "known": "yes"}


def test_migrate_upgrades_only_when_behind(scratch_db: Engine, database_url: str) -> None:
    code, out, text_ = deploytool(database_url, "migrate")
    assert code == 0, text_
    assert out["action"] == "upgraded"
    assert out["db_revision"] == HEAD_REVISION
    assert current_revision(scratch_db) == HEAD_REVISION

    code, out, text_ = deploytool(database_url, "migrate")
    assert code == 0, text_
    assert out["action"] == "none"
    assert "Running upgrade" not in text_


def test_a_revision_this_release_does_not_know(db: Engine, database_url: str) -> None:
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    try:
        code, out, text_ = deploytool(database_url, "revision")
        assert code == 0, text_
        assert out["db_revision"] == "0099_from_the_future"
        assert out["known"] == "no"
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": HEAD_REVISION})


def test_an_unreachable_database_is_one_line_naming_host_and_port(free_port: int) -> None:
    url = f"postgresql+psycopg://innercontext:s3cret-pw@127.0.0.1:{free_port}/innercontext"
    code, out, text_ = deploytool(url, "migrate")
    assert code == 1
    assert list(out) == ["error"], text_
    assert f"127.0.0.1:{free_port}" in out["error"]
    assert "refused" in out["error"].lower()
    assert "s3cret-pw" not in text_
    assert "Traceback" not in text_


def test_a_failing_migration_leaves_the_revision(scratch_db: Engine, database_url: str) -> None:
    broken = BACKEND_DIR / "alembic" / "versions" / "0099_broken_for_test.py"
    broken.write_text(
        '"""broken"""\n\nfrom alembic import op\n\nrevision = "0099_broken_for_test"\n'
        f'down_revision = "{HEAD_REVISION}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        '    op.execute("SELECT * FROM table_that_does_not_exist")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    try:
        code, out, text_ = deploytool(database_url, "migrate")
    finally:
        broken.unlink()
    assert code == 1, text_
    assert "alembic upgrade head from an empty database failed" in out["error"]
    assert "table_that_does_not_exist" in out["error"]
    # One transaction: nothing of the earlier migrations stayed either.
    with scratch_db.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('alembic_version')")) is None
