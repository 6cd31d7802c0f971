"""This release's migrations as the deploy tools see them: the alembic configuration, the path
between two revisions, the two declarations a revision file can carry, and the SQL of one
revision step rendered offline (no database).

The declarations are defined here, once; the migration tests, ``innercontext.migrationlint``
and ``innercontext.deploytool`` read them through this module:

- ``irreversible = "reason"``, a module attribute of the revision file: its downgrade cannot
  undo it. The migration tests do not run its downgrade (nor any below it);
  ``deploytool downgrade-plan`` and ``downgrade`` refuse to go below it, naming it.
- ``# migration-lint: allow RULE -- reason``, a comment line in the revision file: the lint does not
  refuse RULE (a squawk rule, or ``online-only`` for a migration whose SQL needs a live
  connection) in this file. The reason is required.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from alembic import command

BACKEND_DIR = Path(__file__).resolve().parents[1]
IRREVERSIBLE = "irreversible"
ONLINE_ONLY = "online-only"
VERSION_TABLE = "alembic_version"

# "# migration-lint: allow RULE -- reason" (the reason may be missing: that is reported).
_LINT_COMMENT = re.compile(r"^\s*#\s*migration-lint:(?P<rest>.*)$")
_ALLOW = re.compile(r"\s*allow\s+(?P<rule>[A-Za-z0-9_-]+)\s*(?:--\s*(?P<reason>.*?))?\s*$")


class RevisionError(Exception):
    """A revision or a path between revisions that this release's migrations cannot give."""


class RenderError(Exception):
    """A migration step whose SQL could not be rendered offline (it needs a live connection,
    or it raised)."""

    def __init__(self, script: Script, cause: BaseException) -> None:
        self.script = script
        self.cause = cause
        super().__init__(f"{cause.__class__.__name__}: {first_line(cause)}")


def first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def alembic_config(backend_dir: Path = BACKEND_DIR) -> Config:
    config = Config(backend_dir / "alembic.ini")
    config.attributes["configure_logger"] = False
    return config


def script_directory(config: Config) -> ScriptDirectory:
    return ScriptDirectory.from_config(config)


def backend_dir(config: Config) -> Path:
    assert config.config_file_name is not None
    return Path(config.config_file_name).resolve().parent


def file_of(config: Config, script: Script) -> str:
    """The revision's file, relative to the backend directory when it lies inside it."""
    path = Path(script.path).resolve()
    try:
        return str(path.relative_to(backend_dir(config)))
    except ValueError:
        return str(path)


def parse_revision(value: str) -> str | None:
    """A revision argument: ``-``, empty or ``base`` is the empty database (None)."""
    value = value.strip()
    return None if value in ("", "-", "base") else value


def get(scripts: ScriptDirectory, revision: str) -> Script:
    try:
        script = scripts.get_revision(revision)
    except Exception as exc:  # alembic raises several kinds for unknown or ambiguous ids
        raise RevisionError(f"{revision} is not a revision of this release's migrations") from exc
    if script is None:
        raise RevisionError(f"{revision} is not a revision of this release's migrations")
    return script


def head(scripts: ScriptDirectory) -> str:
    heads = scripts.get_heads()
    if len(heads) != 1:
        raise RevisionError(f"this release's migrations have {len(heads)} heads: {heads}")
    return heads[0]


def parent(script: Script) -> str | None:
    """The one revision below ``script`` (None: the empty database). Merges are refused."""
    down = script.down_revision
    if isinstance(down, tuple | list):
        if len(down) > 1:
            raise RevisionError(
                f"{script.revision} merges {', '.join(down)}: paths through merge revisions "
                "are not supported"
            )
        down = down[0] if down else None
    return down


def path_up(scripts: ScriptDirectory, lower: str | None, upper: str) -> list[Script]:
    """The revisions an upgrade from ``lower`` (None: empty) to ``upper`` runs, in order."""
    if lower is not None:
        get(scripts, lower)
    get(scripts, upper)
    try:
        steps = list(scripts.iterate_revisions(upper, lower or "base"))
    except Exception as exc:
        raise RevisionError(
            f"{upper} does not descend from {lower or 'the empty database'} ({first_line(exc)})"
        ) from exc
    steps.reverse()
    for script in steps:
        parent(script)
    return steps


def path_down(scripts: ScriptDirectory, upper: str, lower: str | None) -> list[Script]:
    """The revisions a downgrade from ``upper`` to ``lower`` undoes, in the order it does."""
    return list(reversed(path_up(scripts, lower, upper)))


def irreversible(script: Script) -> str | None:
    """The reason a revision declares itself irreversible, or None. A declaration that is not
    a non-empty string is an error (RevisionError)."""
    if not hasattr(script.module, IRREVERSIBLE):
        return None
    reason = getattr(script.module, IRREVERSIBLE)
    if not isinstance(reason, str) or not reason.strip():
        raise RevisionError(
            f"{Path(script.path).name}: {IRREVERSIBLE} must be a non-empty string saying why "
            f"(got {reason!r})"
        )
    return reason.strip()


def newest_irreversible(scripts: ScriptDirectory) -> Script | None:
    """The newest revision declared irreversible: no downgrade goes below it (None: every
    revision can be undone)."""
    for script in scripts.walk_revisions():  # newest first
        if irreversible(script) is not None:
            return script
    return None


@dataclass(frozen=True)
class Allow:
    rule: str
    reason: str  # empty: missing, which is an error
    line: int


def allows(script: Script) -> tuple[list[Allow], list[tuple[int, str]]]:
    """The ``# migration-lint: allow RULE -- reason`` comment lines of a revision file, and
    the ``migration-lint:`` comment lines that do not read as one (line number, text)."""
    found: list[Allow] = []
    unreadable: list[tuple[int, str]] = []
    text = Path(script.path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        comment = _LINT_COMMENT.search(line)
        if comment is None:
            continue
        allow = _ALLOW.fullmatch(comment.group("rest"))
        if allow is None:
            unreadable.append((number, line.strip()))
            continue
        found.append(Allow(allow.group("rule"), (allow.group("reason") or "").strip(), number))
    return found, unreadable


class _Statements:
    """An output buffer for alembic's offline mode: each write is one statement (or comment)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def write(self, text: str) -> int:
        self.items.append(text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass


def render(config: Config, script: Script, *, downgrade: bool = False) -> list[str]:
    """The SQL of one step, rendered offline like ``alembic upgrade PARENT:REV --sql`` (or
    ``alembic downgrade REV:PARENT --sql``): a list of statements and comments as alembic
    writes them, ``BEGIN;`` and ``COMMIT;`` included. Raises RenderError."""
    below = parent(script) or "base"
    buffer = _Statements()
    saved = config.output_buffer
    config.output_buffer = buffer  # type: ignore[assignment]
    run: Callable[[Config, str], None]
    if downgrade:
        run, arg = _downgrade, f"{script.revision}:{below}"
    else:
        run, arg = _upgrade, f"{below}:{script.revision}"
    try:
        run(config, arg)
    except Exception as exc:  # the migration's own code raised, whatever it was
        raise RenderError(script, exc) from exc
    finally:
        config.output_buffer = saved
    return buffer.items


def _upgrade(config: Config, arg: str) -> None:
    command.upgrade(config, arg, sql=True)


def _downgrade(config: Config, arg: str) -> None:
    command.downgrade(config, arg, sql=True)


# --- what a rendered downgrade drops --------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """A table, or a column of a table, that a statement drops. Names are as PostgreSQL
    resolves them: unquoted identifiers folded to lower case, quoted ones kept."""

    table: tuple[str, ...]  # (name,) or (schema, name)
    column: str | None = None

    @property
    def name(self) -> str:
        table = ".".join(self.table)
        return table if self.column is None else f"{table}.{self.column}"


_TOKEN = re.compile(
    "|".join(
        (
            r"\s+|--[^\n]*|/\*.*?\*/",  # space and comments: skipped
            r'(?P<quoted>"(?:[^"]|"")*")',  # a quoted identifier
            r"(?P<string>'(?:[^']|'')*')",  # a string
            r"(?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)",  # a dollar-quoted string
            r"(?P<word>[A-Za-z_][A-Za-z0-9_$]*)",
            r"(?P<other>.)",
        )
    ),
    re.DOTALL,
)


def _tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, value) tokens: ``word`` (a keyword or an unquoted identifier, as written),
    ``name`` (a quoted identifier), ``literal`` (a string), ``punct`` (one character)."""
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(sql):
        if match.group("quoted"):
            out.append(("name", match.group("quoted")[1:-1].replace('""', '"')))
        elif match.group("word"):
            out.append(("word", match.group("word")))
        elif match.group("string") or match.group("dollar"):
            out.append(("literal", ""))
        elif match.group("other"):
            out.append(("punct", match.group("other")))
    return out


def _split(tokens: list[tuple[str, str]], separator: str) -> list[list[tuple[str, str]]]:
    """Split on a punctuation character outside parentheses."""
    parts: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for token in tokens:
        if token == ("punct", "("):
            depth += 1
        elif token == ("punct", ")"):
            depth -= 1
        elif token == ("punct", separator) and depth == 0:
            parts.append([])
            continue
        parts[-1].append(token)
    return [part for part in parts if part]


def _is(token: tuple[str, str] | None, *words: str) -> bool:
    return token is not None and token[0] == "word" and token[1].upper() in words


def _name(tokens: list[tuple[str, str]], at: int) -> tuple[tuple[str, ...], int]:
    """A possibly qualified name at ``at``: its parts and the index after it."""
    parts: list[str] = []
    while at < len(tokens) and tokens[at][0] in ("word", "name"):
        kind, value = tokens[at]
        parts.append(value.lower() if kind == "word" else value)
        at += 1
        if at < len(tokens) and tokens[at] == ("punct", "."):
            at += 1
            continue
        break
    return tuple(parts), at


def _skip(tokens: list[tuple[str, str]], at: int, *words: str) -> int:
    while at < len(tokens) and _is(tokens[at], *words):
        at += 1
    return at


def _at(tokens: list[tuple[str, str]], at: int) -> tuple[str, str] | None:
    return tokens[at] if at < len(tokens) else None


def _statement_drops(tokens: list[tuple[str, str]]) -> list[Drop]:
    """What one statement drops: ``DROP TABLE [IF EXISTS] name, ...`` and ``ALTER TABLE [IF
    EXISTS] [ONLY] name ... DROP [COLUMN] [IF EXISTS] column, ...`` (not DROP CONSTRAINT)."""
    if not _is(_at(tokens, 1), "TABLE"):
        return []
    if _is(_at(tokens, 0), "DROP"):
        tables = (
            _name(part, 0)[0] for part in _split(tokens[_skip(tokens, 2, "IF", "EXISTS") :], ",")
        )
        return [Drop(table) for table in tables if table]
    if not _is(_at(tokens, 0), "ALTER"):
        return []
    table, at = _name(tokens, _skip(tokens, 2, "IF", "EXISTS", "ONLY"))
    if not table:
        return []
    if _at(tokens, at) == ("punct", "*"):  # ALTER TABLE name * (descendant tables too)
        at += 1
    found = []
    for action in _split(tokens[at:], ","):
        if not _is(action[0], "DROP") or _is(_at(action, 1), "CONSTRAINT"):
            continue
        column, _ = _name(action, _skip(action, _skip(action, 1, "COLUMN"), "IF", "EXISTS"))
        if len(column) == 1:
            found.append(Drop(table, column[0]))
    return found


def dropped(statements: list[str]) -> list[Drop]:
    """The tables and columns the given SQL drops (DROP TABLE, ALTER TABLE ... DROP COLUMN),
    in order, without repeats, never alembic's own version table."""
    found: list[Drop] = []
    for text in statements:
        for statement in _split(_tokens(text), ";"):
            for drop in _statement_drops(statement):
                if drop.table[-1] != VERSION_TABLE and drop not in found:
                    found.append(drop)
    return found
