"""Database facts for the deployer: ``python -m innercontext.deploytool revision|migrate``.

The server-side deploy job runs this from a release's ``backend/`` directory (the settings come
from ``.env`` there, as for the app). Output is ``key=value`` lines on stdout:

- ``revision``: ``db_revision`` (the database's alembic revision, ``-`` if never migrated),
  ``heads`` (this release's migration heads, comma separated) and ``known`` (``yes`` when this
  release's migrations contain the database's revision, so it can run against that schema).
- ``migrate``: the same facts before, then ``alembic upgrade head`` only when the database is not
  at this release's heads; ``action`` is ``upgraded`` or ``none`` and ``db_revision`` is the
  revision afterwards. Migration output goes to stderr.

A failure prints one ``error=`` line that says what is true (the host and port that could not be
reached and the driver's reason, never the password) and exits 1.
"""

import logging
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from innercontext.config import get_settings
from innercontext.db import create_db_engine

BACKEND_DIR = Path(__file__).resolve().parents[1]


def say(key: str, value: str) -> None:
    print(f"{key}={value}", flush=True)


def alembic_config() -> Config:
    config = Config(BACKEND_DIR / "alembic.ini")
    config.attributes["configure_logger"] = False
    return config


def heads(config: Config) -> list[str]:
    return sorted(ScriptDirectory.from_config(config).get_heads())


def knows(config: Config, revision: str | None) -> bool:
    """Whether this release's migrations contain ``revision`` (None: an empty database)."""
    if revision is None:
        return True
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for unknown revisions
        return False


def db_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        migrated = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not migrated:
            return None
        return conn.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))


def describe(url: str, exc: Exception) -> str:
    """One line: where the database is and why it could not be used (no password)."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0] if reason else exc.__class__.__name__
    return (
        f"cannot use the database {parsed.database or '?'} at {where} as {parsed.username or '?'}"
        f" (from DATABASE_URL in backend/.env): {first}"
    )


def facts(config: Config, revision: str | None) -> None:
    say("db_revision", revision or "-")
    say("heads", ",".join(heads(config)) or "-")
    say("known", "yes" if knows(config, revision) else "no")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("revision", "migrate"):
        say("error", "usage: python -m innercontext.deploytool revision|migrate")
        return 2
    try:
        url = get_settings().database_url
    except Exception as exc:  # pydantic hides values (hide_input_in_errors)
        say("error", f"the backend settings are invalid (backend/.env): {exc}".splitlines()[0])
        return 1
    config = alembic_config()
    engine = create_db_engine(url)
    try:
        try:
            revision = db_revision(engine)
        except SQLAlchemyError as exc:
            say("error", describe(url, exc))
            return 1
        facts(config, revision)
        if argv[0] == "revision" or (revision is not None and revision in heads(config)):
            if argv[0] == "migrate":
                say("action", "none")
            return 0
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        try:
            with engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except Exception as exc:
            first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0]
            say(
                "error",
                f"alembic upgrade head from {revision or 'an empty database'} failed "
                f"({exc.__class__.__name__}: {first}); the database was left at "
                f"{revision or 'no revision'} (the migration ran in one transaction)",
            )
            return 1
        say("action", "upgraded")
        say("db_revision", db_revision(engine) or "-")
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
