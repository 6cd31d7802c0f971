"""``python -m innercontext.migrationlint FROM TO``: squawk on the SQL of each migration a deploy
would run, rendered offline one revision at a time (fixture revisions from tests/migrations on a
copy of the backend; the real squawk of the venv)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from innercontext import migrationlint, revisions
from tests.support import BACKEND_DIR, FIXTURE_MIGRATIONS, HEAD_REVISION, backend_copy


def lint(
    capsys: pytest.CaptureFixture[str], backend: Path, *args: str, squawk: Path | None = None
) -> tuple[int, list[str]]:
    """Run the lint in this process on a backend's migrations: exit status, output lines."""
    code = migrationlint.main(list(args), config=revisions.alembic_config(backend), squawk=squawk)
    out = capsys.readouterr().out
    return code, out.splitlines()


def values(lines: list[str], key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


def test_todays_migrations_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = lint(capsys, BACKEND_DIR, "0001_products", "head")
    assert code == 0, out
    assert values(out, "to") == [HEAD_REVISION]
    assert values(out, "revision") == [f"{HEAD_REVISION} alembic/versions/{HEAD_REVISION}.py"]
    assert values(out, "refuse") == []
    # squawk did look at it: its default rules warn about the plain CREATE INDEX.
    assert any(
        'require-concurrent-index-creation: "CREATE INDEX ix_products_price_updated_at' in w
        for w in values(out, "warn")
    ), out
    assert values(out, "result") == ["ok"]


@pytest.mark.parametrize("never", ["-", ""])
def test_a_database_never_migrated_is_not_linted(
    capsys: pytest.CaptureFixture[str], never: str
) -> None:
    code, out = lint(capsys, BACKEND_DIR, never, "head")
    assert code == 0, out
    assert values(out, "from") == ["-"]
    assert values(out, "revisions") == ["0"]
    assert values(out, "result") == ["ok"]


def test_a_database_at_the_head_has_nothing_to_lint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = lint(capsys, BACKEND_DIR, HEAD_REVISION, HEAD_REVISION)
    assert code == 0, out
    assert values(out, "revisions") == ["0"]


# One fixture revision per refused category, with squawk's (2.70) name for it.
REFUSALS = [
    ("0003_drop_url", "ban-drop-column", "ALTER TABLE products DROP COLUMN url"),
    ("0003_drop_table", "ban-drop-table", "DROP TABLE price_observations"),
    ("0003_rename_column", "renaming-column", "ALTER TABLE products RENAME url TO link"),
    ("0003_rename_table", "renaming-table", "ALTER TABLE price_observations RENAME TO prices"),
    ("0003_change_type", "changing-column-type", "ALTER TABLE products ALTER COLUMN name TYPE"),
    ("0003_required_column", "adding-required-field", "ADD COLUMN sku TEXT NOT NULL"),
    (
        "0003_check_constraint",
        "constraint-missing-not-valid",
        "ADD CONSTRAINT name_not_blank CHECK (length(name) > 0)",
    ),
    (
        "0003_foreign_key",
        "adding-foreign-key-constraint",
        "ALTER TABLE price_observations ADD FOREIGN KEY(source_id) REFERENCES products (id)",
    ),
    ("0003_set_not_null", "adding-not-nullable-field", "ALTER COLUMN url SET NOT NULL"),
]


@pytest.mark.parametrize(("fixture", "rule", "statement"), REFUSALS)
def test_what_breaks_the_release_still_serving_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture: str, rule: str, statement: str
) -> None:
    backend = backend_copy(tmp_path, fixture)
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    prefix = f'alembic/versions/{fixture}.py: {rule}: "'
    refusal = next((r for r in values(out, "refuse") if r.startswith(prefix)), None)
    assert refusal is not None, out
    assert statement in refusal
    assert "Instead: " in refusal and migrationlint.REFUSED[rule] in refusal
    assert values(out, "result") == ["refused"]

    code, out = lint(capsys, backend, "--allow-unsafe", HEAD_REVISION, "head")
    assert code == 0, out
    assert values(out, "refuse") == []
    assert any(
        w.startswith(prefix) and "refused, let through by --allow-unsafe" in w
        for w in values(out, "warn")
    ), out
    assert values(out, "result") == ["unsafe"]


@pytest.mark.parametrize("fixture", ["0003_add_rating", "0003_check_constraint_not_valid"])
def test_the_safe_way_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture: str):
    code, out = lint(capsys, backend_copy(tmp_path, fixture), HEAD_REVISION, "head")
    assert code == 0, out
    assert values(out, "refuse") == []
    assert values(out, "warnings") != ["0"]  # squawk's other rules still speak
    assert values(out, "result") == ["ok"]


def test_a_statement_squawk_cannot_parse_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating")
    rewrite(backend, "0003_add_rating", '"UPDATE products', '"UPDAT products')
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    assert any(
        r.startswith('alembic/versions/0003_add_rating.py: syntax-error: "UPDAT products SET')
        and "nothing checked it" in r
        for r in values(out, "refuse")
    ), out


def test_a_migration_allows_a_rule_for_itself_with_a_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = lint(capsys, backend_copy(tmp_path, "0003_drop_url_allowed"), HEAD_REVISION, "head")
    assert code == 0, out
    assert (
        'alembic/versions/0003_drop_url_allowed.py: ban-drop-column: "ALTER TABLE products DROP '
        'COLUMN url": Dropping a column may break existing clients. Allowed by the migration: '
        "no release reads products.url since 0002"
    ) in values(out, "warn")


def rewrite(backend: Path, fixture: str, old: str, new: str) -> None:
    path = backend / "alembic" / "versions" / f"{fixture}.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


ALLOW = "# migration-lint: allow ban-drop-column -- no release reads products.url since 0002"


def test_an_allow_without_a_reason_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_drop_url_allowed")
    rewrite(backend, "0003_drop_url_allowed", ALLOW, "# migration-lint: allow ban-drop-column")
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    refusals = values(out, "refuse")
    assert (
        "alembic/versions/0003_drop_url_allowed.py: allow-without-reason: line 16 allows "
        "ban-drop-column without a reason: write '# migration-lint: allow ban-drop-column -- "
        "why it is safe here'"
    ) in refusals
    # ... and it allows nothing.
    assert any(": ban-drop-column: " in r for r in refusals), out


def test_a_lint_comment_that_does_not_read_as_an_allow_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating")
    rewrite(
        backend, "0003_add_rating", "def upgrade", "# migration-lint: alow all\n\n\ndef upgrade"
    )
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    assert any(
        r.startswith("alembic/versions/0003_add_rating.py: migration-lint-comment: line ")
        for r in values(out, "refuse")
    ), out


def test_an_allow_for_a_rule_that_does_not_fire_warns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating")
    rewrite(backend, "0003_add_rating", "def upgrade", f"{ALLOW}\n\n\ndef upgrade")
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 0, out
    assert (
        "alembic/versions/0003_add_rating.py: ban-drop-column: allowed, but squawk does not "
        "report it here"
    ) in values(out, "warn")


def test_a_migration_that_needs_a_live_connection_is_refused_unless_allowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_online_only")
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    [refusal] = values(out, "refuse")
    assert refusal.startswith(
        "alembic/versions/0003_online_only.py: online-only: its SQL cannot be rendered offline "
        "(AttributeError: "
    ), refusal
    assert "'# migration-lint: allow online-only -- reason'" in refusal

    reason = "reads products to decide; checked by hand"
    rewrite(
        backend,
        "0003_online_only",
        "def upgrade",
        f"# migration-lint: allow online-only -- {reason}\n\n\ndef upgrade",
    )
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 0, out
    [warning] = values(out, "warn")
    assert warning.startswith("alembic/versions/0003_online_only.py: online-only: not linted")
    assert warning.endswith(f"allowed by the migration: {reason}")


def test_an_irreversible_migration_warns(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, out = lint(capsys, backend_copy(tmp_path, "0003_irreversible"), HEAD_REVISION, "head")
    assert code == 0, out
    assert (
        "alembic/versions/0003_irreversible.py: irreversible: declared irreversible (blank "
        "product URLs become NULL; which ones were blank is not kept): a rollback with its "
        "downgrade cannot go below it"
    ) in values(out, "warn")


def test_each_statement_is_tied_to_its_file_one_revision_at_a_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating", "0003_drop_url", "0003_check_constraint")
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out
    assert values(out, "revision") == [
        "0003_add_rating alembic/versions/0003_add_rating.py",
        "0003_drop_url alembic/versions/0003_drop_url.py",
        "0003_check_constraint alembic/versions/0003_check_constraint.py",
    ]
    refused = [r.split(": ")[:2] for r in values(out, "refuse")]
    assert refused == [
        ["alembic/versions/0003_drop_url.py", "ban-drop-column"],
        ["alembic/versions/0003_check_constraint.py", "constraint-missing-not-valid"],
    ]
    # Each revision's lines come after its revision= line, before the next one's.
    rows = [
        line.split("=", 1)[0] for line in out if line.split("=", 1)[0] in ("revision", "refuse")
    ]
    assert rows == ["revision", "revision", "refuse", "revision", "refuse"]

    # From the database's revision: only what this deploy runs.
    code, out = lint(capsys, backend, "0003_drop_url", "head")
    assert values(out, "revision") == [
        "0003_check_constraint alembic/versions/0003_check_constraint.py"
    ]


def test_sql_prints_each_revisions_sql(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    backend = backend_copy(tmp_path, "0003_add_rating", "0003_drop_url")
    code, out = lint(capsys, backend, "--sql", HEAD_REVISION, "head")
    assert code == 1
    keys = [line.split("=", 1)[0] for line in out]
    first, second = keys.index("revision"), keys.index("revision", keys.index("revision") + 1)
    sql = [values(out[first:second], "sql"), values(out[second:], "sql")]
    assert sql[0][:3] == ["BEGIN;", "", "-- Running upgrade 0002_price_history -> 0003_add_rating"]
    assert "ALTER TABLE products ADD COLUMN rating NUMERIC(3, 1);" in sql[0]
    assert "UPDATE products SET rating = 0 WHERE rating IS NULL;" in sql[0]
    assert "ALTER TABLE products DROP COLUMN url;" not in sql[0]
    assert "ALTER TABLE products DROP COLUMN url;" in sql[1]
    assert sql[1][-1] == "COMMIT;"
    # Without --sql, no SQL.
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert values(out, "sql") == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["0099_unknown", "head"], "0099_unknown is not a revision of this release's migrations"),
        (["0001_products", "0099_unknown"], "0099_unknown is not a revision"),
        (["0002_price_history", "0001_products"], "0001_products does not descend from 0002"),
        (["0001_products"], "usage: python -m innercontext.migrationlint"),
    ],
)
def test_what_cannot_be_linted_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    code, out = lint(capsys, BACKEND_DIR, *args)
    assert code == 2, out
    [message] = values(out, "error")
    assert error in message


def test_a_path_through_a_merge_cannot_be_linted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = backend_copy(tmp_path, "0003_add_rating")
    versions = backend / "alembic" / "versions"
    shutil.copy2(FIXTURE_MIGRATIONS / "0003_drop_url.py", versions)  # a second branch
    (versions / "0004_merge.py").write_text(
        'revision = "0004_merge"\ndown_revision = ("0003_add_rating", "0003_drop_url")\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    code, out = lint(capsys, backend, "0003_add_rating", "0004_merge")
    assert code == 2, out
    assert "0004_merge merges 0003_add_rating, 0003_drop_url" in values(out, "error")[0]


def test_without_squawk_it_cannot_lint(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, out = lint(capsys, BACKEND_DIR, "0001_products", "head", squawk=tmp_path / "squawk")
    assert code == 2, out
    [error] = values(out, "error")
    assert f"squawk is not installed at {tmp_path / 'squawk'}" in error
    assert "run 'uv sync' in backend/" in error


def test_a_failing_squawk_cannot_lint(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    broken = tmp_path / "squawk"
    broken.write_text("#!/bin/sh\necho 'squawk: something broke' >&2\nexit 3\n")
    broken.chmod(0o755)
    code, out = lint(capsys, BACKEND_DIR, "0001_products", "head", squawk=broken)
    assert code == 2, out
    assert "failed (exit status 3): squawk: something broke" in values(out, "error")[0]


def test_squawk_runs_with_its_default_rules_whatever_config_is_around(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_copy(tmp_path, "0003_drop_url")
    (backend / ".squawk.toml").write_text('excluded_rules = ["ban-drop-column"]\n')
    monkeypatch.chdir(backend)
    code, out = lint(capsys, backend, HEAD_REVISION, "head")
    assert code == 1, out


def test_as_the_deployer_runs_it_no_database_needed(tmp_path: Path) -> None:
    """A process from the backend directory, without DATABASE_URL or .env: the lint needs
    neither. Its exit status is the verdict."""
    backend = backend_copy(tmp_path, "0003_drop_url")
    env = {key: value for key, value in os.environ.items() if not key.endswith("DATABASE_URL")}
    env["PYTHONPATH"] = str(backend)
    done = subprocess.run(
        [sys.executable, "-m", "innercontext.migrationlint", HEAD_REVISION, "0003_drop_url"],
        cwd=backend,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == ""
    assert re.search(
        r"^refuse=alembic/versions/0003_drop_url.py: ban-drop-column: ", done.stdout, re.M
    )
    assert done.stdout.splitlines()[-1] == "result=refused"
