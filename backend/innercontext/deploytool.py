"""Database facts and changes for the deployer: ``python -m innercontext.deploytool COMMAND``.

The server-side deploy job runs this from a release's ``backend/`` directory (the settings come
from ``.env`` there, as for the app: ``DATABASE_URL``). Output is ``key=value`` lines on stdout;
migration output goes to stderr. Commands:

- ``revision``: ``db_revision`` (the database's alembic revision, ``-`` if never migrated),
  ``heads`` (this release's migration heads, comma separated) and ``known`` (``yes`` when this
  release's migrations contain the database's revision, so it can run against that schema).
- ``migrate``: the same facts before, then ``alembic upgrade head`` only when the database is not
  at this release's heads; ``action`` is ``upgraded`` or ``none`` and ``db_revision`` is the
  revision afterwards.
- ``downgrade-plan TARGET``: what ``downgrade TARGET`` would do, changing nothing. ``db_revision``,
  ``target``; for each revision it undoes, newest first, ``step=REVISION FILE DOWNGRADE`` (FILE
  relative to the backend directory; DOWNGRADE ``yes``, ``empty`` when it changes nothing but the
  version, or ``online`` when it cannot be rendered offline, so what it drops is not known),
  followed by ``drop=REVISION ROWS table NAME`` or ``drop=REVISION ROWS column TABLE.COLUMN`` for
  each table or column its downgrade SQL (rendered offline) drops, ROWS being how many rows hold
  data there now (``count(*)`` of the table, or of its rows where the column is not null; ``-``
  when it does not exist now); then ``rows`` (their sum) and ``steps``. Run it with the release
  that wrote the migrations (its scripts know them); TARGET is the older release's head (``-``:
  the empty database).
- ``downgrade TARGET``: the same checks, then ``alembic downgrade TARGET`` in ONE transaction, so
  a downgrade that raises leaves the database unchanged; ``action`` is ``downgraded`` or ``none``
  and ``db_revision`` the revision afterwards.
- ``downgrade-trial TARGET``: the downgrade run to its end in its transaction, then rolled back
  (``action=trial``): whether it would raise, with the database never changed. The deploy job
  runs it under the lock before a ``rollback --migrate-down`` switches anything.
- ``snapshot-info``: ``db_revision``, ``database``, ``host``, ``port``, ``user`` (from
  ``DATABASE_URL``; never the password), ``database_size`` (bytes, ``pg_database_size``),
  ``server_version_num`` and ``server_major`` (the server's major version, e.g. ``15``).
- ``pgpass FILE``: a libpq password file for that same connection (one line,
  ``host:port:database:user:password``, ``:`` and ``\\`` escaped), created as FILE with mode
  0600 (never over an existing file, never through a link), for ``pg_dump`` and ``pg_restore``
  (``PGPASSFILE``): the password goes from ``DATABASE_URL`` into that file only, never onto a
  command line or into this output. Prints ``pgpass=FILE``; needs no connection.

A failure prints one ``error=`` line that says what is true (the host and port that could not be
reached and the driver's reason, never the password; the revision that is declared irreversible,
has no downgrade, or raised, and where the database is) and exits 1 (2 for a usage error). Both
downgrade commands refuse before changing anything when a revision on the way down declares
itself ``irreversible`` or has no downgrade (see ``innercontext.revisions``).
"""

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from innercontext import revisions
from innercontext.config import get_settings
from innercontext.db import create_db_engine
from innercontext.revisions import Drop, RenderError, RevisionError, first_line

USAGE = (
    "usage: python -m innercontext.deploytool "
    "revision|migrate|snapshot-info|pgpass FILE|downgrade-plan TARGET|downgrade TARGET|"
    "downgrade-trial TARGET"
)


class Refused(Exception):
    """What stops a command before it changes anything (its message is the error line)."""


def say(key: str, value: str) -> None:
    print(f"{key}={value}", flush=True)


def alembic_config() -> Config:
    return revisions.alembic_config()


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
        return revision_of(conn)


def revision_of(conn: Connection) -> str | None:
    migrated = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not migrated:
        return None
    return conn.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))


def describe(url: str, exc: Exception) -> str:
    """One line: where the database is and why it could not be used (no password)."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return (
        f"cannot use the database {parsed.database or '?'} at {where} as {parsed.username or '?'}"
        f" (from DATABASE_URL in backend/.env): {first_line(exc)}"
    )


def facts(config: Config, revision: str | None) -> None:
    say("db_revision", revision or "-")
    say("heads", ",".join(heads(config)) or "-")
    say("known", "yes" if knows(config, revision) else "no")


# --- revision, migrate ------------------------------------------------------------------------


def cmd_revision(config: Config, engine: Engine, _url: str) -> int:
    facts(config, db_revision(engine))
    return 0


def cmd_migrate(config: Config, engine: Engine, _url: str) -> int:
    revision = db_revision(engine)
    facts(config, revision)
    if revision is not None and revision in heads(config):
        say("action", "none")
        return 0
    log_migrations()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except Exception as exc:
        say(
            "error",
            f"alembic upgrade head from {revision or 'an empty database'} failed "
            f"({exc.__class__.__name__}: {first_line(exc)}); the database was left at "
            f"{revision or 'no revision'} (the migration ran in one transaction)",
        )
        return 1
    say("action", "upgraded")
    say("db_revision", db_revision(engine) or "-")
    return 0


def log_migrations() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")


# --- downgrade-plan, downgrade ----------------------------------------------------------------


@dataclass
class Step:
    script: Script
    file: str
    downgrade: str  # yes | empty | online
    drops: list[Drop] = field(default_factory=list)


def plan(config: Config, current: str | None, target: str | None) -> list[Step]:
    """The steps of a downgrade from ``current`` to ``target``, newest first. Raises Refused
    when a revision on the way is irreversible or has no downgrade, RevisionError when the
    path does not exist."""
    if current is None:
        if target is None:
            return []
        raise Refused(
            f"the database has no alembic revision, so it cannot be downgraded to {target}"
        )
    scripts = revisions.script_directory(config)
    if target is not None:
        revisions.get(scripts, target)
    try:
        revisions.get(scripts, current)
    except RevisionError as exc:
        raise RevisionError(
            f"the database is at {current}, which this release's migrations do not know: run "
            "this with the release that wrote that migration"
        ) from exc
    steps = []
    for script in revisions.path_down(scripts, current, target):
        file = revisions.file_of(config, script)
        reason = revisions.irreversible(script)
        if reason is not None:
            raise Refused(
                f"{script.revision} ({file}) is declared irreversible ({reason}): the database "
                f"cannot be downgraded below it, so not to {target or 'the empty database'}; "
                f"nothing was changed, the database is at {current}"
            )
        steps.append(rendered(config, script, file, current))
    return steps


def rendered(config: Config, script: Script, file: str, current: str) -> Step:
    missing = (
        f"{script.revision} ({file}) has no downgrade; nothing was changed, the database is at "
        f"{current}"
    )
    if not callable(getattr(script.module, "downgrade", None)):
        raise Refused(missing)
    try:
        statements = revisions.render(config, script, downgrade=True)
    except RenderError as exc:
        if isinstance(exc.cause, NotImplementedError):
            raise Refused(f"{missing} (its downgrade raises NotImplementedError)") from exc
        return Step(script, file, "online")
    changes = [
        s
        for s in statements
        if s not in ("BEGIN;", "COMMIT;")
        and not s.startswith("--")
        and revisions.VERSION_TABLE not in s
    ]
    return Step(script, file, "yes" if changes else "empty", revisions.dropped(statements))


def quoted(conn: Connection, *parts: str) -> str:
    return ".".join(conn.dialect.identifier_preparer.quote_identifier(part) for part in parts)


def rows(conn: Connection, drop: Drop) -> int | None:
    """Rows holding data in what ``drop`` drops, now (None: it does not exist)."""
    table = quoted(conn, *drop.table)
    if conn.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is None:
        return None
    if drop.column is None:
        return conn.scalar(text(f"SELECT count(*) FROM {table}"))
    exists = conn.scalar(
        text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attname = :c AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": table, "c": drop.column},
    )
    if not exists:
        return None
    column = quoted(conn, drop.column)
    return conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"))


def cmd_downgrade_plan(config: Config, engine: Engine, _url: str, target: str | None) -> int:
    with engine.connect() as conn:
        current = revision_of(conn)
        say("db_revision", current or "-")
        say("target", target or "-")
        steps = plan(config, current, target)
        total = 0
        for step in steps:
            say("step", f"{step.script.revision} {step.file} {step.downgrade}")
            for drop in step.drops:
                count = rows(conn, drop)
                total += count or 0
                kind = "table" if drop.column is None else "column"
                amount = "-" if count is None else str(count)
                say("drop", f"{step.script.revision} {amount} {kind} {drop.name}")
    say("rows", str(total))
    say("steps", str(len(steps)))
    return 0


class TrialDone(Exception):
    """Ends a trial downgrade's transaction: everything it did is rolled back."""


def cmd_downgrade(config: Config, engine: Engine, _url: str, target: str | None) -> int:
    return downgrade(config, engine, target, trial=False)


def cmd_downgrade_trial(config: Config, engine: Engine, _url: str, target: str | None) -> int:
    """The downgrade, run to its end in its transaction and then rolled back: whether it would
    raise, learnt before anything depends on it (the database is never changed)."""
    return downgrade(config, engine, target, trial=True)


def downgrade(config: Config, engine: Engine, target: str | None, *, trial: bool) -> int:
    current = db_revision(engine)
    say("db_revision", current or "-")
    say("target", target or "-")
    steps = plan(config, current, target)
    if not steps:
        say("action", "none")
        return 0
    undone: list[str] = []

    def applied(*, step: object, **_: object) -> None:
        undone.append(str(getattr(step, "up_revision_id", "")))

    log_migrations()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            config.attributes["on_version_apply"] = [applied]
            command.downgrade(config, target or "base")
            if trial:
                raise TrialDone
    except TrialDone:
        say("action", "trial")
        say("db_revision", db_revision(engine) or "-")
        return 0
    except Exception as exc:
        failed = next((s for s in steps if s.script.revision not in undone), steps[-1])
        now = db_revision(engine)
        where = (
            f"unchanged, at {now or 'no revision'} (the downgrade ran in one transaction)"
            if now == current
            else f"now at {now or 'no revision'}, not at {current} where it was (part of the "
            "downgrade was committed)"
        )
        say(
            "error",
            f"alembic downgrade to {target or 'base'} failed in {failed.script.revision} "
            f"({failed.file}: {exc.__class__.__name__}: {first_line(exc)}); the database is "
            f"{where}",
        )
        return 1
    say("action", "downgraded")
    say("db_revision", db_revision(engine) or "-")
    return 0


# --- snapshot-info ----------------------------------------------------------------------------


def major(version_num: int) -> str:
    """PostgreSQL's major version from ``server_version_num`` (150008 -> 15, 90624 -> 9.6)."""
    if version_num >= 100000:
        return str(version_num // 10000)
    return f"{version_num // 10000}.{version_num // 100 % 100}"


def cmd_snapshot_info(config: Config, engine: Engine, url: str) -> int:
    parsed = make_url(url)
    with engine.connect() as conn:
        revision = revision_of(conn)
        size = conn.scalar(text("SELECT pg_database_size(current_database())"))
        version_num = int(conn.scalar(text("SHOW server_version_num")) or 0)
        database = conn.scalar(text("SELECT current_database()"))
    say("db_revision", revision or "-")
    say("database", str(database))
    say("host", parsed.host or "localhost")
    say("port", str(parsed.port or 5432))
    say("user", parsed.username or "-")
    say("database_size", str(size))
    say("server_version_num", str(version_num))
    say("server_major", major(version_num))
    return 0


# --- pgpass -------------------------------------------------------------------------------------


def pgpass_field(value: str) -> str:
    """One field of a libpq password file: backslash and colon escaped."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(url: str) -> str:
    """The password file's line for the connection ``url`` names (libpq's defaults for what
    it leaves out)."""
    parsed = make_url(url)
    fields = [
        parsed.host or "localhost",
        str(parsed.port or 5432),
        parsed.database or "*",
        parsed.username or "*",
        parsed.password or "",
    ]
    return ":".join(pgpass_field(str(f)) for f in fields) + "\n"


def cmd_pgpass(url: str, path: str) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        say("error", f"cannot create the password file {path}: {exc.strerror}")
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(pgpass_line(url))
    say("pgpass", path)
    return 0


# --- main ---------------------------------------------------------------------------------------

Command = Callable[[Config, Engine, str], int]
COMMANDS: dict[str, Command] = {
    "revision": cmd_revision,
    "migrate": cmd_migrate,
    "snapshot-info": cmd_snapshot_info,
}
TARGETED: dict[str, Callable[[Config, Engine, str, str | None], int]] = {
    "downgrade-plan": cmd_downgrade_plan,
    "downgrade": cmd_downgrade,
    "downgrade-trial": cmd_downgrade_trial,
}


def main(argv: list[str], *, config: Config | None = None, url: str | None = None) -> int:
    """Run a command; the tests may hand over another backend's alembic configuration and
    the database URL (the job: neither, so this backend's and DATABASE_URL)."""
    if not (
        (len(argv) == 1 and argv[0] in COMMANDS)
        or (len(argv) == 2 and argv[0] in (*TARGETED, "pgpass"))
    ):
        say("error", USAGE)
        return 2
    if url is None:
        try:
            url = get_settings().database_url
        except Exception as exc:  # pydantic hides values (hide_input_in_errors)
            say("error", f"the backend settings are invalid (backend/.env): {exc}".splitlines()[0])
            return 1
    if argv[0] == "pgpass":
        return cmd_pgpass(url, argv[1])
    config = config or alembic_config()
    engine = create_db_engine(url)
    try:
        if argv[0] in TARGETED:
            return TARGETED[argv[0]](config, engine, url, revisions.parse_revision(argv[1]))
        return COMMANDS[argv[0]](config, engine, url)
    except SQLAlchemyError as exc:
        say("error", describe(url, exc))
        return 1
    except (Refused, RevisionError) as exc:
        say("error", f"{argv[0]} refused: {exc}")
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
