"""Migration lint: ``python -m innercontext.migrationlint [--sql] [--allow-unsafe] FROM TO``.

Run on the deploying machine, from the backend directory of the release about to be deployed,
before anything changes: FROM is the server database's alembic revision (``-`` or empty: a
database never migrated, so there is nothing to lint), TO the release's head. Each migration
on the path is rendered to SQL offline, one revision at a time (``alembic upgrade PARENT:REV
--sql``, through alembic's API: no database is needed), so every statement is tied to its file,
and the SQL is linted by squawk (the ``squawk-cli`` dev dependency: the binary next to this
Python) with its default rules.

These rules REFUSE: each breaks the release still serving while the migration runs (and a
fleet's rolling switch, and a code-only rollback): ``ban-drop-column``, ``ban-drop-table``,
``renaming-column``, ``renaming-table``, ``changing-column-type``, ``adding-required-field``
(NOT NULL without a default), and a constraint that scans the table without NOT VALID:
``constraint-missing-not-valid``, ``adding-foreign-key-constraint``,
``adding-not-nullable-field`` (SET NOT NULL). So does a statement squawk cannot parse (its
``syntax-error``: nothing checked it). Every other rule warns.

A migration allows a rule for itself with a comment in its file (the SQL carries no Python
comments), ``# migration-lint: allow RULE -- reason``; an allow without a reason is refused. A
migration whose SQL cannot be rendered offline (it needs a live connection) is refused unless
it allows ``online-only``. A migration that declares itself ``irreversible`` (see
``innercontext.revisions``) warns: a rollback with its downgrade cannot go below it.

Options: ``--allow-unsafe`` turns refusals into warnings (the deployer logs that); ``--sql``
prints each revision's SQL.

Output, ``key=value`` lines on stdout: ``from``, ``to``; per revision in upgrade order
``revision=REV FILE`` (FILE relative to the backend directory), with ``--sql`` its SQL as
``sql=LINE`` lines, then its findings, one line each: ``refuse=`` or ``warn=`` followed by
``FILE: RULE: STATEMENT (shortened): what is wrong and what to do instead``; at the end
``revisions`` (how many were linted), ``refused``, ``warnings``, and ``result``: ``ok``,
``refused``, or ``unsafe`` (refusals that ``--allow-unsafe`` let through).

Exit status: 0 nothing refused; 1 refused; 2 could not lint (a revision this release does not
know, a path through a merge, squawk missing or failing), with one ``error=`` line.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import Script

from innercontext import revisions
from innercontext.revisions import ONLINE_ONLY, RenderError, RevisionError

# squawk's rule names (squawk 2.x) for what breaks the release still serving, with what to do
# instead: expand, deploy, then contract.
REFUSED = {
    "ban-drop-column": (
        "the release still serving reads this column: deploy code that no longer uses it "
        "first, then drop it in a later migration (expand, deploy, then contract)"
    ),
    "ban-drop-table": (
        "the release still serving reads this table: deploy code that no longer uses it "
        "first, then drop it in a later migration (expand, deploy, then contract)"
    ),
    "renaming-column": (
        "the release still serving uses the old name: add the new column, write both and "
        "backfill, deploy, then drop the old one in a later migration"
    ),
    "renaming-table": (
        "the release still serving uses the old name: create the new table (or a view under "
        "the new name), deploy code that uses it, then drop the old one in a later migration"
    ),
    "changing-column-type": (
        "rewrites the table under an exclusive lock and breaks readers of the old type: add a "
        "column of the new type, backfill it and write both, deploy, then drop the old one "
        "in a later migration"
    ),
    "adding-required-field": (
        "the release still serving inserts rows without this column: add it nullable or with "
        "a server default, backfill, deploy code that writes it, then SET NOT NULL in a later "
        "migration"
    ),
    "constraint-missing-not-valid": (
        "validating scans the table and blocks writes while the old release serves: add it "
        "NOT VALID (postgresql_not_valid=True) and VALIDATE CONSTRAINT in a later migration "
        "(UNIQUE or PRIMARY KEY: CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... "
        "USING INDEX)"
    ),
    "adding-foreign-key-constraint": (
        "checking the foreign key scans the table and blocks writes to both tables: add the "
        "column without REFERENCES, add the constraint NOT VALID (postgresql_not_valid=True), "
        "then VALIDATE CONSTRAINT in a later migration"
    ),
    "adding-not-nullable-field": (
        "SET NOT NULL scans the table under an exclusive lock: add CHECK (column IS NOT NULL) "
        "NOT VALID, VALIDATE it in a later migration, then SET NOT NULL (no scan) and drop "
        "the check"
    ),
    "syntax-error": (
        "squawk cannot parse this statement, so nothing checked it: write it in plain SQL "
        "squawk reads, or allow syntax-error with the reason it is safe"
    ),
}
# The lint's own rules (not squawk's).
ALLOW_WITHOUT_REASON = "allow-without-reason"
LINT_COMMENT = "migration-lint-comment"
IRREVERSIBLE = revisions.IRREVERSIBLE
STATEMENT_WIDTH = 90


class LintError(Exception):
    """The lint could not run (exit 2)."""


@dataclass
class Finding:
    rule: str
    refuse: bool
    statement: str
    text: str


@dataclass(frozen=True)
class Reported:
    """One finding as squawk's JSON reporter gives it (line is 0-based)."""

    file: str
    line: int
    column: int
    level: str
    rule: str
    message: str
    help: str

    @classmethod
    def parse(cls, item: dict[str, object]) -> "Reported":
        return cls(
            file=str(item.get("file", "")),
            line=int(str(item.get("line", 0))),
            column=int(str(item.get("column", 0))),
            level=str(item.get("level", "")),
            rule=str(item.get("rule_name", "")),
            message=str(item.get("message", "")),
            help=str(item.get("help") or ""),
        )


@dataclass
class Step:
    script: Script
    file: str
    statements: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # first line (0-based) of each statement
    findings: list[Finding] = field(default_factory=list)

    @property
    def sql(self) -> str:
        return "".join(statement + "\n\n" for statement in self.statements)

    def statement_at(self, line: int) -> str:
        index = max((i for i, start in enumerate(self.starts) if start <= line), default=None)
        return "" if index is None else self.statements[index]


def shorten(statement: str, width: int = STATEMENT_WIDTH) -> str:
    flat = " ".join(statement.split()).removesuffix(";")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def sentence(text: object) -> str:
    text = str(text).strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def default_squawk() -> Path:
    """The squawk of this Python's environment (the venv's bin directory)."""
    return Path(sys.executable).parent / "squawk"


def render(config: Config, step: Step, allowed: dict[str, str]) -> None:
    try:
        step.statements = revisions.render(config, step.script)
    except RenderError as exc:
        if ONLINE_ONLY in allowed:
            step.findings.append(
                Finding(
                    ONLINE_ONLY,
                    False,
                    "",
                    f"not linted, its SQL needs a live connection ({exc}); allowed by the "
                    f"migration: {allowed[ONLINE_ONLY]}",
                )
            )
        else:
            step.findings.append(
                Finding(
                    ONLINE_ONLY,
                    True,
                    "",
                    f"its SQL cannot be rendered offline ({exc}), so it cannot be linted: "
                    "make it render offline (context.is_offline_mode()), or allow it with "
                    f"'# migration-lint: allow {ONLINE_ONLY} -- reason'",
                )
            )
        return
    line = 0
    for statement in step.statements:
        step.starts.append(line)
        line += statement.count("\n") + 2


def squawk_findings(squawk: Path, steps: list[Step]) -> dict[int, list[Reported]]:
    """squawk's findings for each rendered step (by index), from one run over all of them."""
    rendered = [i for i, step in enumerate(steps) if step.statements]
    if not rendered:
        return {}
    if not squawk.is_file():
        raise LintError(
            f"squawk is not installed at {squawk} (the backend's dev dependency squawk-cli): "
            "run 'uv sync' in backend/"
        )
    with tempfile.TemporaryDirectory(prefix="migrationlint-") as tmp:
        config = Path(tmp) / "squawk.toml"  # empty: squawk's defaults, whatever is around
        config.write_text("")
        names = {}
        for i in rendered:
            name = f"{i:04d}.sql"
            (Path(tmp) / name).write_text(steps[i].sql)
            names[name] = i
        try:
            done = subprocess.run(
                [str(squawk), "--reporter", "json", "-c", str(config), *sorted(names)],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LintError(f"squawk ({squawk}) could not run: {exc}") from exc
        try:
            if done.returncode not in (0, 1):
                raise ValueError(f"exit status {done.returncode}")
            reported = [Reported.parse(item) for item in json.loads(done.stdout)]
        except (ValueError, TypeError, AttributeError) as exc:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
            raise LintError(
                f"squawk ({squawk}) failed ({exc}): {detail[0] if detail else 'no output'}"
            ) from exc
    found: dict[int, list[Reported]] = {}
    for item in reported:
        index = names.get(Path(item.file).name)
        if index is not None:
            found.setdefault(index, []).append(item)
    return found


def judge(step: Step, reported: list[Reported], allowed: dict[str, str]) -> set[str]:
    """Turn squawk's findings into the step's refusals and warnings; return the rules seen."""
    seen: set[str] = set()
    for item in sorted(reported, key=lambda item: (item.line, item.column)):
        seen.add(item.rule)
        statement = step.statement_at(item.line)
        message = sentence(item.message)
        if item.rule in allowed:
            text = f"{message} Allowed by the migration: {allowed[item.rule]}"
            finding = Finding(item.rule, False, statement, text)
        elif item.rule in REFUSED or item.level == "Error":
            advice = REFUSED.get(item.rule) or REFUSED["syntax-error"]
            finding = Finding(item.rule, True, statement, f"{message} Instead: {advice}")
        else:
            help_ = f" {item.help}" if item.help else ""
            finding = Finding(item.rule, False, statement, f"{message}{help_}")
        if finding not in step.findings:  # squawk reports some rules once per column
            step.findings.append(finding)
    return seen


def declarations(step: Step) -> dict[str, str]:
    """The rules this migration allows (rule: reason); malformed ones become refusals."""
    found, unreadable = revisions.allows(step.script)
    allowed: dict[str, str] = {}
    for allow in found:
        if allow.reason:
            allowed[allow.rule] = allow.reason
        else:
            step.findings.append(
                Finding(
                    ALLOW_WITHOUT_REASON,
                    True,
                    "",
                    f"line {allow.line} allows {allow.rule} without a reason: write "
                    f"'# migration-lint: allow {allow.rule} -- why it is safe here'",
                )
            )
    for number, text in unreadable:
        step.findings.append(
            Finding(
                LINT_COMMENT,
                True,
                "",
                f"line {number} is not '# migration-lint: allow RULE -- reason': {text}",
            )
        )
    try:
        reason = revisions.irreversible(step.script)
    except RevisionError as exc:
        step.findings.append(Finding(IRREVERSIBLE, True, "", str(exc)))
    else:
        if reason is not None:
            step.findings.append(
                Finding(
                    IRREVERSIBLE,
                    False,
                    "",
                    f"declared irreversible ({reason}): a rollback with its downgrade cannot "
                    "go below it",
                )
            )
    return allowed


def lint(config: Config, lower: str | None, upper: str, squawk: Path) -> list[Step]:
    """Lint each migration from ``lower`` (None: nothing to lint) up to ``upper``."""
    scripts = revisions.script_directory(config)
    revisions.get(scripts, upper)
    if lower is None:
        return []
    steps = [
        Step(script, revisions.file_of(config, script))
        for script in revisions.path_up(scripts, lower, upper)
    ]
    allowed = [declarations(step) for step in steps]
    for step, allows in zip(steps, allowed, strict=True):
        render(config, step, allows)
    reported = squawk_findings(squawk, steps)
    for i, (step, allows) in enumerate(zip(steps, allowed, strict=True)):
        seen = judge(step, reported.get(i, []), allows)
        if not step.statements:
            continue  # not rendered: squawk saw nothing, the allows cannot be checked
        for rule in sorted(set(allows) - seen):
            text = (
                "allowed, but its SQL renders offline"
                if rule == ONLINE_ONLY
                else "allowed, but squawk does not report it here"
            )
            step.findings.append(Finding(rule, False, "", text))
    return steps


def say(key: str, value: str) -> None:
    print(f"{key}={value}", flush=True)


def report(steps: list[Step], *, sql: bool, allow_unsafe: bool) -> int:
    refused = warnings = overridden = 0
    for step in steps:
        say("revision", f"{step.script.revision} {step.file}")
        if sql:
            for line in step.sql.rstrip("\n").splitlines():
                say("sql", line)
        for finding in sorted(step.findings, key=lambda finding: not finding.refuse):
            where = f"{step.file}: {finding.rule}: "
            if finding.statement:
                where += f'"{shorten(finding.statement)}": '
            if finding.refuse and not allow_unsafe:
                refused += 1
                say("refuse", where + finding.text)
            elif finding.refuse:
                overridden += 1
                say("warn", f"{where}refused, let through by --allow-unsafe: {finding.text}")
            else:
                warnings += 1
                say("warn", where + finding.text)
    say("revisions", str(len(steps)))
    say("refused", str(refused))
    say("warnings", str(warnings + overridden))
    say("result", "refused" if refused else "unsafe" if overridden else "ok")
    return 1 if refused else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m innercontext.migrationlint",
        description="Lint the migrations from FROM (the database's revision) to TO.",
    )
    parser.add_argument("--sql", action="store_true", help="print each revision's SQL")
    parser.add_argument("--allow-unsafe", action="store_true", help="turn refusals into warnings")
    parser.add_argument("lower", metavar="FROM", help="the database's revision ('-': none)")
    parser.add_argument("upper", metavar="TO", help="the release's head")
    return parser.parse_args(argv)


def main(argv: list[str], *, config: Config | None = None, squawk: Path | None = None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exc:
        if not exc.code:
            return 0  # --help
        say("error", "usage: python -m innercontext.migrationlint [--sql] [--allow-unsafe] FROM TO")
        return 2
    config = config or revisions.alembic_config()
    lower, upper = revisions.parse_revision(args.lower), args.upper.strip()
    say("from", lower or "-")
    try:
        if upper in ("head", "heads"):
            upper = revisions.head(revisions.script_directory(config))
        say("to", upper)
        steps = lint(config, lower, upper, squawk or default_squawk())
    except (LintError, RevisionError) as exc:
        say("error", f"cannot lint the migrations from {lower or '-'} to {upper}: {exc}")
        return 2
    return report(steps, sql=args.sql, allow_unsafe=args.allow_unsafe)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
