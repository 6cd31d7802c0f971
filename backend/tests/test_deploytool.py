"""``python -m innercontext.deploytool``: what the deploy job learns about the database."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, make_url, text

from innercontext import revisions
from innercontext.deploytool import main, major
from tests.support import BACKEND_DIR, HEAD_REVISION, backend_copy, current_revision


def deploytool(
    database_url: str, *args: str, backend: Path = BACKEND_DIR
) -> tuple[int, dict[str, str], str]:
    """Run it in this process on a backend's migrations (quick): exit status, its key=value
    pairs (the last value of a key that repeats), its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args), config=revisions.alembic_config(backend), url=database_url)
    pairs = dict(line.split("=", 1) for line in out.getvalue().splitlines() if "=" in line)
    return code, pairs, out.getvalue()


def deploytool_process(
    database_url: str, *args: str, backend: Path = BACKEND_DIR
) -> tuple[int, dict[str, str], str]:
    """Run it as the deploy job does: a process in backend/ (or a copy), DATABASE_URL from the
    environment."""
    done = subprocess.run(
        [sys.executable, "-m", "innercontext.deploytool", *args],
        cwd=backend,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(backend)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pairs = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return done.returncode, pairs, done.stdout + done.stderr


def all_values(output: str, key: str) -> list[str]:
    """Every value of a key that repeats (step=, drop=), in order."""
    return [line.split("=", 1)[1] for line in output.splitlines() if line.startswith(f"{key}=")]


def test_revision_of_a_migrated_database(db: Engine, database_url: str) -> None:
    code, out, text_ = deploytool_process(database_url, "revision")
    assert code == 0, text_
    assert out == {"db_revision": HEAD_REVISION, "heads": HEAD_REVISION, "known": "yes"}


def test_migrate_upgrades_only_when_behind(scratch_db: Engine, database_url: str) -> None:
    code, out, text_ = deploytool_process(database_url, "migrate")
    assert code == 0, text_
    assert out["action"] == "upgraded"
    assert out["db_revision"] == HEAD_REVISION
    assert current_revision(scratch_db) == HEAD_REVISION

    code, out, text_ = deploytool_process(database_url, "migrate")
    assert code == 0, text_
    assert out["action"] == "none"
    assert "Running upgrade" not in text_


def test_a_revision_this_release_does_not_know(db: Engine, database_url: str) -> None:
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    try:
        code, out, text_ = deploytool_process(database_url, "revision")
        assert code == 0, text_
        assert out["db_revision"] == "0099_from_the_future"
        assert out["known"] == "no"
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": HEAD_REVISION})


def test_an_unreachable_database_is_one_line_naming_host_and_port(free_port: int) -> None:
    url = f"postgresql+psycopg://innercontext:s3cret-pw@127.0.0.1:{free_port}/innercontext"
    code, out, text_ = deploytool_process(url, "migrate")
    assert code == 1
    assert list(out) == ["error"], text_
    assert f"127.0.0.1:{free_port}" in out["error"]
    assert "refused" in out["error"].lower()
    assert "s3cret-pw" not in text_
    assert "Traceback" not in text_


def test_a_failing_migration_leaves_the_revision(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path)
    (backend / "alembic" / "versions" / "0099_broken_for_test.py").write_text(
        '"""broken"""\n\nfrom alembic import op\n\nrevision = "0099_broken_for_test"\n'
        f'down_revision = "{HEAD_REVISION}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        '    op.execute("SELECT * FROM table_that_does_not_exist")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    code, out, text_ = deploytool_process(database_url, "migrate", backend=backend)
    assert code == 1, text_
    assert "alembic upgrade head from an empty database failed" in out["error"]
    assert "table_that_does_not_exist" in out["error"]
    # One transaction: nothing of the earlier migrations stayed either.
    with scratch_db.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('alembic_version')")) is None


# --- downgrade-plan, downgrade ----------------------------------------------------------------


def columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def at_fixture_head(database_url: str, tmp_path: Path, *fixtures: str) -> Path:
    """A backend copy with fixture revisions, the test database migrated to its head."""
    backend = backend_copy(tmp_path, *fixtures)
    code, out, text_ = deploytool(database_url, "migrate", backend=backend)
    assert code == 0 and out["db_revision"] == fixtures[-1], text_
    return backend


def seed(engine: Engine) -> None:
    """Three products (two priced), one price observation."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO products (name, url, current_price) VALUES "
                "('Kettle', 'https://k', 12.5), ('Toaster', NULL, 20), ('Lamp', NULL, NULL)"
            )
        )
        conn.execute(text("INSERT INTO price_observations (product_id, price) VALUES (1, 12.5)"))


def test_downgrade_plan_counts_the_rows_of_what_it_drops(db: Engine, database_url: str) -> None:
    seed(db)
    code, out, text_ = deploytool(database_url, "downgrade-plan", "0001_products")
    assert code == 0, text_
    assert (out["db_revision"], out["target"]) == (HEAD_REVISION, "0001_products")
    assert all_values(text_, "step") == [f"{HEAD_REVISION} alembic/versions/{HEAD_REVISION}.py yes"]
    # 0002's downgrade: DROP TABLE price_observations, then DROP COLUMN of the three columns;
    # a table counts its rows, a column the rows where it is not null (currency has a default).
    assert all_values(text_, "drop") == [
        f"{HEAD_REVISION} 1 table price_observations",
        f"{HEAD_REVISION} 0 column products.price_updated_at",
        f"{HEAD_REVISION} 3 column products.currency",
        f"{HEAD_REVISION} 2 column products.current_price",
    ]
    assert (out["rows"], out["steps"]) == ("6", "1")
    # A plan changes nothing.
    assert current_revision(db) == HEAD_REVISION
    assert "current_price" in columns(db, "products")


def test_downgrade_plan_to_the_empty_database_and_to_where_it_is(
    db: Engine, database_url: str
) -> None:
    seed(db)
    code, out, text_ = deploytool(database_url, "downgrade-plan", "-")
    assert code == 0, text_
    assert [step.split()[0] for step in all_values(text_, "step")] == [
        HEAD_REVISION,
        "0001_products",
    ]
    assert "0001_products 3 table products" in all_values(text_, "drop")
    assert (out["target"], out["rows"], out["steps"]) == ("-", "9", "2")

    code, out, text_ = deploytool(database_url, "downgrade-plan", HEAD_REVISION)
    assert code == 0, text_
    assert (out["rows"], out["steps"]) == ("0", "0")
    assert all_values(text_, "step") == []


def test_downgrade_plan_of_fixture_revisions(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(
        database_url, tmp_path, "0003_downgrade_raises", "0003_add_rating", "0003_empty_downgrade"
    )
    with scratch_db.begin() as conn:
        conn.execute(text("INSERT INTO products (name) VALUES ('a'), ('b'), ('c')"))
        conn.execute(text("UPDATE products SET rating = 4.5 WHERE name <> 'c'"))
        conn.execute(text("INSERT INTO notes DEFAULT VALUES"))
    code, out, text_ = deploytool(database_url, "downgrade-plan", HEAD_REVISION, backend=backend)
    assert code == 0, text_
    assert all_values(text_, "step") == [
        "0003_empty_downgrade alembic/versions/0003_empty_downgrade.py empty",
        "0003_add_rating alembic/versions/0003_add_rating.py yes",
        "0003_downgrade_raises alembic/versions/0003_downgrade_raises.py yes",
    ]
    assert all_values(text_, "drop") == [
        "0003_add_rating 2 column products.rating",  # not null in two of three rows
        "0003_downgrade_raises 1 table notes",
    ]
    assert out["rows"] == "3"


def test_downgrade_plan_of_what_does_not_exist_now(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_downgrade_raises", "0003_add_rating")
    with scratch_db.begin() as conn:
        conn.execute(text("ALTER TABLE products DROP COLUMN rating"))
        conn.execute(text("DROP TABLE notes"))
    code, out, text_ = deploytool(database_url, "downgrade-plan", HEAD_REVISION, backend=backend)
    assert code == 0, text_
    assert all_values(text_, "drop") == [
        "0003_add_rating - column products.rating",
        "0003_downgrade_raises - table notes",
    ]
    assert out["rows"] == "0"


def test_downgrade_plan_of_a_downgrade_that_needs_a_live_connection(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_online_only")
    code, _out, text_ = deploytool(database_url, "downgrade-plan", HEAD_REVISION, backend=backend)
    assert code == 0, text_
    assert all_values(text_, "step") == [
        "0003_online_only alembic/versions/0003_online_only.py online"
    ]


@pytest.mark.parametrize("command", ["downgrade-plan", "downgrade"])
def test_an_irreversible_revision_on_the_way_down_is_refused_before_anything(
    scratch_db: Engine, database_url: str, tmp_path: Path, command: str
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_irreversible", "0003_add_rating")
    code, out, text_ = deploytool(database_url, command, HEAD_REVISION, backend=backend)
    assert code == 1, text_
    assert out["error"] == (
        f"{command} refused: 0003_irreversible (alembic/versions/0003_irreversible.py) is "
        "declared irreversible (blank product URLs become NULL; which ones were blank is not "
        f"kept): the database cannot be downgraded below it, so not to {HEAD_REVISION}; "
        "nothing was changed, the database is at 0003_add_rating"
    )
    assert all_values(text_, "step") == []
    assert current_revision(scratch_db) == "0003_add_rating"
    assert "rating" in columns(scratch_db, "products")
    # Down to the irreversible revision itself is fine.
    code, out, text_ = deploytool(database_url, command, "0003_irreversible", backend=backend)
    assert code == 0, text_


@pytest.mark.parametrize("command", ["downgrade-plan", "downgrade"])
def test_a_revision_without_a_downgrade_is_refused_before_anything(
    scratch_db: Engine, database_url: str, tmp_path: Path, command: str
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_no_downgrade")
    code, out, text_ = deploytool(database_url, command, HEAD_REVISION, backend=backend)
    assert code == 1, text_
    assert out["error"] == (
        f"{command} refused: 0003_no_downgrade (alembic/versions/0003_no_downgrade.py) has no "
        "downgrade; nothing was changed, the database is at 0003_no_downgrade (its downgrade "
        "raises NotImplementedError)"
    )
    assert current_revision(scratch_db) == "0003_no_downgrade"


def test_a_revision_without_a_downgrade_function_is_refused(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_add_rating")
    path = backend / "alembic" / "versions" / "0003_add_rating.py"
    text_ = path.read_text()
    path.write_text(text_[: text_.index("def downgrade")])
    code, out, text_ = deploytool(database_url, "downgrade", HEAD_REVISION, backend=backend)
    assert code == 1, text_
    assert out["error"] == (
        "downgrade refused: 0003_add_rating (alembic/versions/0003_add_rating.py) has no "
        "downgrade; nothing was changed, the database is at 0003_add_rating"
    )
    assert "rating" in columns(scratch_db, "products")


def test_downgrade_undoes_the_migrations(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_add_rating")
    code, out, text_ = deploytool_process(database_url, "downgrade", HEAD_REVISION, backend=backend)
    assert code == 0, text_
    assert (out["action"], out["db_revision"]) == ("downgraded", HEAD_REVISION)
    assert "Running downgrade 0003_add_rating -> 0002_price_history" in text_
    assert current_revision(scratch_db) == HEAD_REVISION
    assert "rating" not in columns(scratch_db, "products")

    code, out, text_ = deploytool_process(database_url, "downgrade", HEAD_REVISION, backend=backend)
    assert code == 0, text_
    assert (out["action"], out["db_revision"]) == ("none", HEAD_REVISION)


def test_a_downgrade_that_raises_leaves_the_database_unchanged(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    # Down from 0003_add_rating: its downgrade runs (drops rating), then 0003_downgrade_raises's
    # drops notes and raises. One transaction: all of it is rolled back.
    backend = at_fixture_head(database_url, tmp_path, "0003_downgrade_raises", "0003_add_rating")
    code, out, text_ = deploytool_process(database_url, "downgrade", HEAD_REVISION, backend=backend)
    assert code == 1, text_
    assert out["error"].startswith(
        f"alembic downgrade to {HEAD_REVISION} failed in 0003_downgrade_raises "
        "(alembic/versions/0003_downgrade_raises.py: ProgrammingError: relation "
        '"table_that_does_not_exist" does not exist'
    ), out["error"]
    assert out["error"].endswith(
        "the database is unchanged, at 0003_add_rating (the downgrade ran in one transaction)"
    )
    assert current_revision(scratch_db) == "0003_add_rating"
    assert "rating" in columns(scratch_db, "products")
    assert "notes" in inspect(scratch_db).get_table_names()


def test_a_trial_downgrade_runs_it_and_changes_nothing(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_add_rating")
    code, out, text_ = deploytool_process(
        database_url, "downgrade-trial", HEAD_REVISION, backend=backend
    )
    assert code == 0, text_
    assert (out["action"], out["db_revision"]) == ("trial", "0003_add_rating")
    assert "Running downgrade 0003_add_rating -> 0002_price_history" in text_
    assert current_revision(scratch_db) == "0003_add_rating"
    assert "rating" in columns(scratch_db, "products")


def test_a_trial_of_a_downgrade_that_raises_says_where_it_raised(
    scratch_db: Engine, database_url: str, tmp_path: Path
) -> None:
    backend = at_fixture_head(database_url, tmp_path, "0003_downgrade_raises", "0003_add_rating")
    code, out, text_ = deploytool_process(
        database_url, "downgrade-trial", HEAD_REVISION, backend=backend
    )
    assert code == 1, text_
    assert out["error"].startswith(
        f"alembic downgrade to {HEAD_REVISION} failed in 0003_downgrade_raises "
    ), out["error"]
    assert out["error"].endswith(
        "the database is unchanged, at 0003_add_rating (the downgrade ran in one transaction)"
    )
    assert current_revision(scratch_db) == "0003_add_rating"
    assert "notes" in inspect(scratch_db).get_table_names()


def test_downgrade_with_a_revision_this_release_does_not_know(
    db: Engine, database_url: str
) -> None:
    code, out, text_ = deploytool(database_url, "downgrade", "0099_unknown")
    assert code == 1, text_
    assert out["error"] == (
        "downgrade refused: 0099_unknown is not a revision of this release's migrations"
    )
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    try:
        code, out, text_ = deploytool(database_url, "downgrade-plan", "0001_products")
        assert code == 1, text_
        assert out["error"] == (
            "downgrade-plan refused: the database is at 0099_from_the_future, which this "
            "release's migrations do not know: run this with the release that wrote that "
            "migration"
        )
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": HEAD_REVISION})


def test_downgrade_of_a_database_never_migrated(scratch_db: Engine, database_url: str) -> None:
    code, out, text_ = deploytool(database_url, "downgrade", "-")
    assert code == 0, text_
    assert (out["db_revision"], out["action"]) == ("-", "none")
    code, out, text_ = deploytool(database_url, "downgrade-plan", "0001_products")
    assert code == 1, text_
    assert "the database has no alembic revision" in out["error"]


@pytest.mark.parametrize(
    "args",
    [
        ("downgrade",),
        ("downgrade-plan",),
        ("downgrade-trial",),
        ("snapshot-info", "x"),
        ("pgpass",),
        ("nonsense",),
        (),
    ],
)
def test_usage(database_url: str, args: tuple[str, ...]) -> None:
    code, out, text_ = deploytool(database_url, *args)
    assert code == 2, text_
    assert out["error"].startswith("usage: python -m innercontext.deploytool ")


# --- snapshot-info --------------------------------------------------------------------------


def test_snapshot_info(db: Engine, database_url: str) -> None:
    parsed = make_url(database_url)
    with_password = parsed.set(password="s3cret-pw").render_as_string(hide_password=False)
    code, out, text_ = deploytool_process(with_password, "snapshot-info")  # trust auth ignores it
    assert code == 0, text_
    with db.connect() as conn:
        size = conn.scalar(text("SELECT pg_database_size(current_database())"))
        version_num = int(conn.scalar(text("SHOW server_version_num")))
    assert out["db_revision"] == HEAD_REVISION
    assert out["database"] == parsed.database
    assert (out["host"], out["port"], out["user"]) == (
        parsed.host,
        str(parsed.port or 5432),
        parsed.username,
    )
    assert abs(int(out["database_size"]) - size) < 1024 * 1024
    assert out["server_version_num"] == str(version_num)
    assert out["server_major"] == str(version_num // 10000)
    assert "s3cret-pw" not in text_


# --- pgpass -----------------------------------------------------------------------------------


def test_pgpass_writes_the_password_to_a_private_file_only(tmp_path: Path) -> None:
    url = "postgresql+psycopg://app%3Auser:p%40ss%3Aw%5Cd@db.example:6543/shop"
    path = tmp_path / "pgpass"
    code, out, text_ = deploytool_process(url, "pgpass", str(path))
    assert code == 0, text_
    assert out == {"pgpass": str(path)}
    # Decoded from the URL, then escaped as libpq reads it (":" and "\\").
    assert path.read_text() == "db.example:6543:shop:app\\:user:p@ss\\:w\\\\d\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "p@ss" not in text_ and "p%40ss" not in text_


def test_pgpass_never_writes_over_a_file_or_through_a_link(tmp_path: Path) -> None:
    url = "postgresql+psycopg://innercontext:s3cret-pw@127.0.0.1/innercontext"
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    for path in (taken, link):
        code, out, text_ = deploytool(url, "pgpass", str(path))
        assert code == 1, text_
        assert out["error"].startswith(f"cannot create the password file {path}")
        assert "s3cret-pw" not in text_
    assert taken.read_text() == "mine\n"
    assert not (tmp_path / "elsewhere").exists()
    # Without the host and port of the URL, libpq's defaults.
    code, _, _ = deploytool("postgresql+psycopg://u:pw@/db", "pgpass", str(tmp_path / "d"))
    assert code == 0
    assert (tmp_path / "d").read_text() == "localhost:5432:db:u:pw\n"


def test_major_versions() -> None:
    assert major(150008) == "15"
    assert major(170002) == "17"
    assert major(90624) == "9.6"


@pytest.mark.parametrize(
    "args", [("snapshot-info",), ("downgrade-plan", "0001_products"), ("downgrade", "-")]
)
def test_the_new_commands_name_an_unreachable_database(
    free_port: int, args: tuple[str, ...]
) -> None:
    url = f"postgresql+psycopg://innercontext:s3cret-pw@127.0.0.1:{free_port}/innercontext"
    code, out, text_ = deploytool(url, *args)
    assert code == 1
    assert list(out) == ["error"], text_
    assert f"127.0.0.1:{free_port}" in out["error"]
    assert "s3cret-pw" not in text_
    assert "Traceback" not in text_
