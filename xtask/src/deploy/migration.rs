//! The migration lint, on the deploying machine, before the lock (and the room for the snapshot
//! the job takes before it migrates).
//!
//! After the probe, the primary's database revision is read (the `db` call); from it to the
//! release's head, the backend's own lint (`python -m innercontext.migrationlint FROM head`,
//! with the backend's dev virtualenv, which `uv sync --locked` makes or checks) renders each
//! migration's SQL offline and checks it with squawk. A step line of its own: "nothing to
//! migrate" when the database is at the head (then no Python starts: [`local_head`] reads the
//! head from the revision files), else the revisions and warnings; a refusal prints
//! each refused statement (file, rule, statement, what to do instead) and stops the deploy
//! before the lock: nothing changed. `--allow-unsafe-migration` turns refusals into warnings
//! (and the job's deploy.log line says so). A database with no revision yet is not linted. The
//! result depends on the server's revision: it is never cached, and runs under
//! `--skip-local-checks` too. `--dry-run` prints the SQL that would run.
//!
//! When there is something to migrate and snapshots are on, a second look at the database
//! (its size, the room where the snapshot goes) refuses before the lock when the snapshot
//! cannot fit ([`super::dbsnap::space_refusal`]).

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use xshell::Shell;

use crate::config::Config;
use crate::deploy::dbsnap;
use crate::remote::Call;
use crate::ssh::Session;
use crate::{interrupt, proc, say, tools, ui};

/// One revision the lint went through, in upgrade order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    /// Its file, relative to backend/.
    pub file: String,
    /// Its SQL (`--sql`), line by line.
    pub sql: Vec<String>,
}

/// What `python -m innercontext.migrationlint` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lint {
    pub from: String,
    pub to: String,
    pub revisions: Vec<Revision>,
    /// `FILE: RULE: "STATEMENT": what is wrong and what to do instead`, one each.
    pub refused: Vec<String>,
    pub warnings: Vec<String>,
    /// `ok`, `refused`, or `unsafe` (refusals --allow-unsafe let through).
    pub result: String,
    /// Why it could not lint (exit 2).
    pub error: Option<String>,
}

impl Lint {
    /// The lint's `key=value` lines (its module docstring has them all).
    pub fn parse(text: &str) -> Lint {
        let mut l = Lint::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "from" => l.from = v.to_string(),
                "to" => l.to = v.to_string(),
                "revision" => {
                    let (id, file) = v.split_once(' ').unwrap_or((v, ""));
                    l.revisions.push(Revision {
                        id: id.to_string(),
                        file: file.to_string(),
                        sql: Vec::new(),
                    });
                }
                "sql" => {
                    if let Some(r) = l.revisions.last_mut() {
                        r.sql.push(v.to_string());
                    }
                }
                "refuse" => l.refused.push(v.to_string()),
                "warn" => l.warnings.push(v.to_string()),
                "result" => l.result = v.to_string(),
                "error" => l.error = Some(v.to_string()),
                _ => {}
            }
        }
        l
    }

    /// Whether the database is at the release's head already.
    pub fn nothing_to_migrate(&self) -> bool {
        self.error.is_none() && self.revisions.is_empty()
    }

    /// The step line's note: what was linted and how it went.
    pub fn summary(&self) -> String {
        if self.nothing_to_migrate() {
            return format!("nothing to migrate, at {}", self.to);
        }
        let n = self.revisions.len();
        let mut s = format!(
            "{n} revision{} from {} to {}",
            if n == 1 { "" } else { "s" },
            self.from,
            self.to
        );
        if !self.refused.is_empty() {
            s.push_str(&format!(", {} refused", self.refused.len()));
        }
        if !self.warnings.is_empty() {
            let w = self.warnings.len();
            s.push_str(&format!(", {w} warning{}", if w == 1 { "" } else { "s" }));
        }
        s
    }
}

/// What the deploy asks of this part.
pub struct Ask<'a> {
    pub cfg: &'a Config,
    /// The primary's connection and name (its database is the one that migrates).
    pub session: &'a Session,
    pub host: &'a str,
    pub allow_unsafe: bool,
    /// Print the SQL instead of refusing (the dry run says what would happen).
    pub dry_run: bool,
    pub snapshot: bool,
    /// What the upload may take on the server (bytes; the snapshot may share that disk).
    pub upload_bytes: u64,
}

/// Lint the migrations this deploy would run (and, for a migration, check the room for the
/// snapshot). Ok(None): nothing linted (a database never migrated, or unreadable under
/// --allow-unsafe-migration). A refusal is an error (the deploy stops before the lock), except
/// in a dry run, which prints it and returns the lint.
pub fn before_lock(sh: &Shell, ask: &Ask) -> Result<Option<Lint>> {
    let started = Instant::now();
    let name = "lint the migrations";
    let id = ui::step_start(name);
    let end = |outcome: &str, note: &str| {
        let took = ui::secs(started.elapsed());
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" [{note}]")
        };
        ui::step_end(id, name, &format!("{outcome} ({took}){note}"));
    };
    let facts = match read_facts(ask.session, ask.cfg, false) {
        Ok(f) => f,
        Err(e) => {
            end("FAILED", "");
            return Err(e);
        }
    };
    if facts.first {
        end(
            "ok",
            &format!(
                "not linted: no release runs on {} yet to read the database's revision with",
                ask.host
            ),
        );
        return Ok(None);
    }
    let from = match &facts.revision {
        Ok(rev) if rev == "-" => {
            end(
                "ok",
                &format!(
                    "not linted: the database on {} has no revision yet",
                    ask.host
                ),
            );
            return Ok(None);
        }
        Ok(rev) => rev.clone(),
        Err(why) if ask.allow_unsafe => {
            end("ok", "not linted: --allow-unsafe-migration");
            say!("warning: the migrations were not linted: the database revision on {} cannot be read ({why}); going on because of --allow-unsafe-migration", ask.host);
            return Ok(None);
        }
        Err(why) => {
            end("refused", "");
            bail!(
                "cannot lint the migrations: the database revision on {} cannot be read ({why}): make the database reachable, or deploy with --allow-unsafe-migration; nothing was changed",
                ask.host
            );
        }
    };
    // At the release's one head: nothing to lint (and no Python to start).
    let head = local_head(&crate::project_root().join("backend/alembic/versions"));
    if head.as_deref() == Some(from.as_str()) {
        end("ok", &format!("nothing to migrate, at {from}"));
        return Ok(Some(Lint {
            from: from.clone(),
            to: from,
            result: "ok".to_string(),
            ..Lint::default()
        }));
    }
    // Something to migrate: what its snapshot needs is read on the server while the lint runs
    // here (the two take a Python start each; one waits for the other no more).
    let (linted, room) = std::thread::scope(|scope| {
        let room = ask
            .snapshot
            .then(|| scope.spawn(|| read_facts(ask.session, ask.cfg, true)));
        let linted = run(sh, &from, ask.dry_run, ask.allow_unsafe);
        let room = room.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow!("reading the database's size failed")))
        });
        (linted, room)
    });
    let (code, lint) = match linted {
        Ok(r) => r,
        Err(e) => {
            end("FAILED", "");
            return Err(e);
        }
    };
    if let Some(why) = &lint.error {
        end("refused", "");
        bail!(
            "cannot lint the migrations from the database's revision on {} ({from}): {why}; nothing was changed",
            ask.host
        );
    }
    let refused = code == 1 || lint.result == "refused";
    end(if refused { "refused" } else { "ok" }, &lint.summary());
    for r in &lint.refused {
        say!("    refused: {r}");
    }
    for w in &lint.warnings {
        say!("warning: {w}");
    }
    if refused && !ask.dry_run {
        bail!(
            "the migration lint refused {} statement(s) of the migrations from {} to {} (above): they break the release still serving while they run; nothing was changed on {}. Write them expand, deploy, then contract; or allow a rule in the migration's file ('# migration-lint: allow RULE -- why it is safe'), or deploy with --allow-unsafe-migration",
            lint.refused.len(),
            lint.from,
            lint.to,
            ask.host
        );
    }
    match room {
        Some(read) if !lint.nothing_to_migrate() => room_for_the_snapshot(ask, read)?,
        _ => {}
    }
    Ok(Some(lint))
}

/// The second look before the lock: the database's size against the room for its snapshot
/// (`read`: what the server said, read while the lint ran).
fn room_for_the_snapshot(ask: &Ask, read: Result<dbsnap::DbFacts>) -> Result<()> {
    let started = Instant::now();
    let name = "room for the snapshot of the database";
    let id = ui::step_start(name);
    let facts = match read {
        Ok(f) => f,
        Err(e) => {
            ui::step_end(
                id,
                name,
                &format!("FAILED ({})", ui::secs(started.elapsed())),
            );
            return Err(e);
        }
    };
    let took = ui::secs(started.elapsed());
    if let Some(no) = dbsnap::space_refusal(ask.host, &facts, ask.upload_bytes) {
        ui::step_end(id, name, &format!("refused ({took})"));
        if ask.dry_run {
            say!("    {no}");
            return Ok(());
        }
        bail!("{no}");
    }
    let note = match (&facts.size, facts.free) {
        (Ok(size), Some(free)) => format!(
            "database {}, {} free under {}",
            dbsnap::bytes(*size),
            dbsnap::bytes(free),
            facts.dir
        ),
        (Err(why), _) => format!("not checked: the database's size cannot be read ({why})"),
        (Ok(_), None) => "not checked: the free space cannot be read".to_string(),
    };
    ui::step_end(id, name, &format!("ok ({took}) [{note}]"));
    Ok(())
}

/// The one head of the migrations in `versions` (None: none, several, or unreadable), read the
/// way the server's job reads a release's heads (`release_heads` in scripts/deploy-lib.sh): the
/// revisions declared (`revision = "ID"`) that no file names in its `down_revision` line. Only
/// a shortcut: when the database is at it, there is nothing to lint; anything else goes to the
/// lint itself, which knows alembic's whole grammar.
pub fn local_head(versions: &camino::Utf8Path) -> Option<String> {
    let mut revisions = Vec::new();
    let mut down = Vec::new();
    for entry in fs_err::read_dir(versions).ok()? {
        let path = entry.ok()?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("py") {
            continue;
        }
        let text = fs_err::read_to_string(&path).ok()?;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("down_revision") {
                down.extend(quoted_words(rest));
            } else if let Some(rest) = line.strip_prefix("revision") {
                let (lhs, rhs) = rest.split_once('=')?;
                let typed = lhs.trim().strip_prefix(':').map(str::trim);
                if !(lhs.trim().is_empty()
                    || typed.is_some_and(|t| t.chars().all(char::is_alphabetic)))
                {
                    continue;
                }
                let rhs = rhs.trim_start();
                if rhs.starts_with('"') || rhs.starts_with('\'') {
                    revisions.extend(quoted_words(rhs).into_iter().take(1));
                }
            }
        }
    }
    let heads: Vec<String> = revisions
        .into_iter()
        .filter(|r| !down.contains(r))
        .collect();
    match heads.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The quoted words (`"ID"` or `'ID'`, letters, digits and `_`) of a line, in order.
fn quoted_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        let word = &after[..end];
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            words.push(word.to_string());
        }
        rest = &after[end + 1..];
    }
    words
}

/// Run the lint from `from` to the release's head in backend/ with its dev virtualenv: its
/// exit status and what it said.
fn run(sh: &Shell, from: &str, sql: bool, allow_unsafe: bool) -> Result<(i32, Lint)> {
    let uv = tools::ensure_uv(sh)?;
    let backend = crate::project_root().join("backend");
    let env = |cmd: &mut Command| {
        cmd.current_dir(&backend)
            .env("PATH", tools::path_with_tools())
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_SYSTEM_CERTS", "1");
    };
    let mut sync = Command::new(uv.as_str());
    sync.args(["sync", "--locked", "--quiet"]);
    env(&mut sync);
    let out = finished(
        &mut sync,
        "uv sync --locked in backend/ (for the migration lint)",
    )?;
    if !out.status.success() {
        bail!(
            "uv sync --locked in backend/ failed, so the migrations cannot be linted: {}",
            last_line(&out.stderr)
        );
    }
    let mut lint = Command::new(backend.join(".venv/bin/python").as_str());
    lint.args(["-m", "innercontext.migrationlint"]);
    if sql {
        lint.arg("--sql");
    }
    if allow_unsafe {
        lint.arg("--allow-unsafe");
    }
    lint.args([from, "head"]);
    env(&mut lint);
    let out = finished(&mut lint, "the migration lint")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = Lint::parse(&text);
    let code = out.status.code().unwrap_or(2);
    if code != 0 && code != 1 && parsed.error.is_none() {
        bail!(
            "the migration lint (python -m innercontext.migrationlint in backend/) failed ({}): {}",
            out.status,
            last_line(&out.stderr)
        );
    }
    Ok((code, parsed))
}

/// Run `cmd` to its end in its own process group (a terminal's Ctrl-C is ours to act on); a
/// signal meanwhile stops it, and the deploy stops before the lock.
fn finished(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    match proc::output_unless_interrupted(cmd, interrupt::mark(), true)
        .with_context(|| format!("starting {what}"))?
    {
        Some(out) => Ok(out),
        None => bail!(
            "interrupted by {} during {what}: nothing was changed on the server",
            interrupt::describe()
        ),
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// A dry run ends like the deploy would: refused when the lint refused a statement.
pub fn dry_run_verdict(l: &Lint) -> Result<()> {
    if !l.refused.is_empty() {
        bail!(
            "the deploy would be refused before the lock: the migration lint refused {} statement(s) of the migrations from {} to {} (see above)",
            l.refused.len(),
            l.from,
            l.to
        );
    }
    Ok(())
}

/// The dry run's lines: each revision and the SQL it would run.
pub fn dry_run_lines(lint: &Lint) -> Vec<String> {
    if lint.nothing_to_migrate() {
        return vec![format!(
            "  migrations: none (the database is at {})",
            lint.to
        )];
    }
    let mut lines = vec![format!(
        "  migrations the primary would run, from {} to {} (snapshot first), with their SQL:",
        lint.from, lint.to
    )];
    for r in &lint.revisions {
        lines.push(format!("    -- {} ({})", r.id, r.file));
        lines.extend(
            r.sql
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("    {l}")),
        );
    }
    if !lint.refused.is_empty() {
        lines.push(format!(
            "  the deploy would be refused before the lock: the lint refused {} statement(s) (above)",
            lint.refused.len()
        ));
    }
    lines
}

/// Read the database's facts on the host of `session` (`size`: what a snapshot needs too). A
/// signal meanwhile stops the call (nothing is changed by it).
fn read_facts(session: &Session, cfg: &Config, size: bool) -> Result<dbsnap::DbFacts> {
    let call = Call::deploy(
        "db",
        &[
            ("root", cfg.root.clone()),
            ("size", if size { "yes" } else { "no" }.to_string()),
        ],
    );
    Ok(dbsnap::DbFacts::from_reply(&crate::deploy::server::read(
        session, &call,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "from=0003_note\n\
        to=0004_drop_note\n\
        revision=0004_drop_note alembic/versions/0004_drop_note.py\n\
        sql=BEGIN;\n\
        sql=\n\
        sql=ALTER TABLE products DROP COLUMN note;\n\
        sql=\n\
        sql=COMMIT;\n\
        refuse=alembic/versions/0004_drop_note.py: ban-drop-column: \"ALTER TABLE products DROP COLUMN note\": Dropping a column may break existing clients. Instead: deploy code that no longer uses it first\n\
        warn=alembic/versions/0004_drop_note.py: require-lock-timeout: \"ALTER TABLE products DROP COLUMN note\": Missing `set lock_timeout`.\n\
        revisions=1\n\
        refused=1\n\
        warnings=1\n\
        result=refused\n";

    #[test]
    fn a_refusal_reads_back_with_its_file_rule_and_sql() {
        let l = Lint::parse(REFUSED);
        assert_eq!(
            (l.from.as_str(), l.to.as_str()),
            ("0003_note", "0004_drop_note")
        );
        assert_eq!(l.revisions.len(), 1);
        assert_eq!(l.revisions[0].file, "alembic/versions/0004_drop_note.py");
        assert_eq!(
            l.revisions[0].sql,
            [
                "BEGIN;",
                "",
                "ALTER TABLE products DROP COLUMN note;",
                "",
                "COMMIT;"
            ]
        );
        assert_eq!(l.refused.len(), 1);
        assert!(l.refused[0].starts_with("alembic/versions/0004_drop_note.py: ban-drop-column: "));
        assert_eq!(l.result, "refused");
        assert_eq!(
            l.summary(),
            "1 revision from 0003_note to 0004_drop_note, 1 refused, 1 warning"
        );
        assert!(!l.nothing_to_migrate());
        let dry = dry_run_lines(&l);
        assert_eq!(
            dry,
            [
                "  migrations the primary would run, from 0003_note to 0004_drop_note (snapshot first), with their SQL:",
                "    -- 0004_drop_note (alembic/versions/0004_drop_note.py)",
                "    BEGIN;",
                "    ALTER TABLE products DROP COLUMN note;",
                "    COMMIT;",
                "  the deploy would be refused before the lock: the lint refused 1 statement(s) (above)",
            ]
        );
    }

    #[test]
    fn the_one_head_is_the_revision_nothing_revises() {
        let dir = std::env::temp_dir().join(format!("migration-heads-{}", std::process::id()));
        let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| fs_err::write(dir.join(name), text).unwrap();
        write(
            "0001_a.py",
            "revision: str = \"0001_a\"\ndown_revision: str | None = None\n",
        );
        write(
            "0002_b.py",
            "revision = '0002_b'\ndown_revision = '0001_a'\n# revision = \"nope\"\n",
        );
        write("notes.txt", "revision = \"0009_not_python\"\n");
        assert_eq!(local_head(&dir).as_deref(), Some("0002_b"));
        // Two heads (a branch): no shortcut, the lint decides.
        write(
            "0003_c.py",
            "revision = \"0003_c\"\ndown_revision = \"0001_a\"\n",
        );
        assert_eq!(local_head(&dir), None);
        // A merge joins them again.
        write(
            "0004_m.py",
            "revision = \"0004_m\"\ndown_revision = (\"0002_b\", \"0003_c\")\n",
        );
        assert_eq!(local_head(&dir).as_deref(), Some("0004_m"));
        assert_eq!(local_head(&dir.join("missing")), None);
        fs_err::remove_dir_all(&dir).unwrap();
        assert_eq!(quoted_words("= ('a_1', \"b\", 'not a word')"), ["a_1", "b"]);
    }

    #[test]
    fn nothing_to_migrate_and_errors_read_back() {
        let l = Lint::parse("from=0002_price_history\nto=0002_price_history\nrevisions=0\nrefused=0\nwarnings=0\nresult=ok\n");
        assert!(l.nothing_to_migrate());
        assert_eq!(l.summary(), "nothing to migrate, at 0002_price_history");
        let l = Lint::parse("from=0009_newer\nerror=cannot lint the migrations from 0009_newer to head: 0009_newer is not a revision of this release's migrations\n");
        assert!(!l.nothing_to_migrate());
        assert!(l.error.unwrap().contains("0009_newer is not a revision"));
        let l = Lint::parse(
            "from=a\nto=c\nrevision=b x.py\nrevision=c y.py\nwarn=w1\nwarn=w2\nresult=unsafe\n",
        );
        assert_eq!(l.summary(), "2 revisions from a to c, 2 warnings");
    }
}
