//! The database under a deploy (issue 24): the migration lint before the lock, and the snapshot
//! the job takes before every migration, on the test host's real PostgreSQL.
//!
//! Each scenario writes its own migrations into the scratch checkout as new revision files
//! (chained to its head, each with a working downgrade), so the database of this group's
//! machines moves forward with them: a scenario that needs something to migrate adds it if the
//! database is at the checkout's head already.
//!
//! What must hold: a migration that adds and backfills a column deploys with a `snapshot` step
//! whose dump is the app user's (0600, in a 0700 `shared/db`), recorded, listed, and readable by
//! `pg_restore`; a migration that drops a column is refused before the lock (squawk's rule, its
//! file), goes through with the allow comment, and with `--allow-unsafe-migration` (deploy.log
//! says so); `--dry-run` prints the SQL; a Ctrl-C, SIGKILL or SIGHUP of the deployer while the
//! job takes the snapshot stops it before the migration with its partial dump removed and the
//! lock released; PostgreSQL down at snapshot time is refused naming host, port and cause; a
//! disk too small for the snapshot is refused before the lock with the sizes.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::{
    fresh, log_len, log_since, paused, resume, wait_quiet, Background, Scratch, Site, ROOT,
};
use crate::Ctx;

const VERSIONS: &str = "backend/alembic/versions";
const DB_DIR: &str = "/opt/innercontext/shared/db";

/// This group's scratch checkout, with a current release on the site (a first deploy all).
fn scratch(ctx: &mut Ctx) -> Result<(Site, &Scratch)> {
    let site = ctx.site()?;
    if ctx.database_scratch.is_none() {
        let s = crate::support::scratch("database")?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.database_scratch = Some(s);
    }
    Ok((site, ctx.database_scratch.as_ref().unwrap()))
}

/// SQL on the app's database, as postgres on the db machine; its output, trimmed.
pub(crate) fn psql(site: &Site, sql: &str) -> Result<String> {
    Ok(site
        .db
        .ssh(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-qtAX",
            "innercontext",
            "-c",
            sql,
        ])?
        .trim()
        .to_string())
}

fn db_revision(site: &Site) -> Result<String> {
    psql(site, "SELECT version_num FROM alembic_version")
}

/// The checkout's newest revision: (its number, its id). Ids are the file names.
pub(crate) fn head(s: &Scratch) -> Result<(u32, String)> {
    let mut best = (0, String::new());
    for e in fs_err::read_dir(s.dir.join(VERSIONS))? {
        let name = e?.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".py") else {
            continue;
        };
        let Some(n) = id.get(..4).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if n > best.0 {
            best = (n, id.to_string());
        }
    }
    ensure!(best.0 > 0, "no revision in {VERSIONS}");
    Ok(best)
}

/// Write the next revision (`NNNN_e2e_SLUG`), chained to the checkout's head, with its body
/// lines (four spaces in) and `header` above the revision id (an allow comment); its id.
pub(crate) fn add_revision(
    s: &Scratch,
    slug: &str,
    header: &str,
    upgrade: &[&str],
    downgrade: &[&str],
) -> Result<String> {
    let (n, down) = head(s)?;
    let id = format!("{:04}_e2e_{slug}", n + 1);
    let body = |lines: &[&str]| {
        lines
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    s.write(
        &format!("{VERSIONS}/{id}.py"),
        &format!(
            "\"\"\"An end-to-end migration: {slug}.\"\"\"\n\nimport sqlalchemy as sa\n\nfrom alembic import op\n\n{header}revision = \"{id}\"\ndown_revision = \"{down}\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n{}\n\ndef downgrade() -> None:\n{}",
            body(upgrade),
            body(downgrade)
        ),
    )?;
    Ok(id)
}

/// A column added by a migration the database has not run yet (one is written and committed
/// when the database is at the checkout's head); the revision the database is at.
fn pending_migration(site: &Site, s: &Scratch) -> Result<String> {
    let at = db_revision(site)?;
    let (n, head) = head(s)?;
    if at == head {
        let column = format!("pending_{}", n + 1);
        add_revision(
            s,
            &column,
            "",
            &[&format!(
                "op.add_column(\"products\", sa.Column(\"{column}\", sa.Text(), nullable=True))"
            )],
            &[&format!("op.drop_column(\"products\", \"{column}\")")],
        )?;
        s.commit(&format!("a pending migration: {column}"))?;
    }
    Ok(at)
}

/// What must not change when a deploy is refused before the lock: releases, deploy.log,
/// current, the lock, the database's revision, the snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Untouched {
    releases: Vec<String>,
    log: usize,
    current: String,
    locked: bool,
    revision: String,
    snapshots: String,
}

fn untouched(site: &Site) -> Result<Untouched> {
    Ok(Untouched {
        releases: site.releases()?,
        log: log_len(site)?,
        current: site.current()?,
        locked: site.locked()?,
        revision: db_revision(site)?,
        snapshots: snapshots(site)?,
    })
}

/// `shared/db` as a listing: every file with its mode, owner, size and time.
fn snapshots(site: &Site) -> Result<String> {
    site.sh(&format!(
        "cd {DB_DIR} 2>/dev/null && find . -mindepth 1 -printf '%P %m %u %s %T@\\n' | sort || true"
    ))
}

/// The step lines of a run: `==> NAME ...` for NAME (the first one), or an error with the run.
fn step_line<'a>(out: &'a str, name: &str) -> Result<&'a str> {
    out.lines()
        .find(|l| l.starts_with(&format!("==> {name}")))
        .with_context(|| format!("no step line '{name}':\n{out}"))
}

/// A migration that adds a column and backfills it: `--dry-run` prints its SQL and changes
/// nothing; the deploy lints it, takes a snapshot (its own step line, with size and time) into
/// `shared/db/<release that ran on the data>-<its revision>.dump` (0600 in a 0700 directory, the
/// app user's, recorded with its sha256), then migrates; `deploy list` and `status` show the
/// snapshot, and pg_restore reads it.
pub fn a_backfilled_column_deploys_after_a_snapshot(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let before = site.current()?;
    let from = db_revision(&site)?;
    ensure!(
        head(s)?.1 == from,
        "the database is not at the checkout's head ({from})"
    );
    psql(
        &site,
        "INSERT INTO products (name) VALUES ('e2e backfill one'), ('e2e backfill two')",
    )?;
    let rev = add_revision(
        s,
        "note",
        "",
        &[
            "op.add_column(\"products\", sa.Column(\"note\", sa.Text(), nullable=True))",
            "op.execute(\"UPDATE products SET note = 'was ' || name\")",
        ],
        &["op.drop_column(\"products\", \"note\")"],
    )?;
    s.commit("a column and its backfill")?;

    // The dry run: the SQL that would run, and nothing changed.
    let quiet = untouched(&site)?;
    let dry = site.xtask(
        &s.dir,
        &["deploy", "backend", "--skip-local-checks", "--dry-run"],
    )?;
    let out = dry.all();
    println!("--- the dry run:\n{out}");
    ensure!(dry.status.success(), "the dry run failed:\n{out}");
    ensure!(
        out.contains("ALTER TABLE products ADD COLUMN note TEXT")
            && out.contains("UPDATE products SET note = 'was ' || name")
            && out.contains(&format!("-- {rev} (alembic/versions/{rev}.py)")),
        "the dry run does not print the migration's SQL:\n{out}"
    );
    ensure!(untouched(&site)? == quiet, "the dry run changed the server");

    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    let out = run.all();
    println!("--- the deploy of a column and its backfill:\n{out}");
    let release = run.release().context("no release named")?;
    let lint = step_line(&out, "lint the migrations")?;
    ensure!(
        lint.contains("ok (") && lint.contains(&format!("1 revision from {from} to {rev}")),
        "the lint's step line: {lint}"
    );
    let name = format!("{before}-{from}");
    let snap = step_line(&out, "snapshot the database")?;
    ensure!(
        snap.contains(" ok (") && snap.contains(&format!("{name}.dump")) && snap.contains("B, "),
        "the snapshot's step line does not say ok, its size and its file: {snap}"
    );
    let lines: Vec<&str> = out.lines().collect();
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    ensure!(
        at("==> snapshot the database") < at("==> migrate the database")
            && at("==> lint the migrations") < at("==> lock "),
        "the steps are out of order:\n{out}"
    );
    ensure!(db_revision(&site)? == rev, "the database did not migrate");
    ensure!(
        psql(&site, "SELECT count(*) FROM products WHERE note IS NULL")? == "0",
        "the backfill did not run"
    );

    // The file: the app user's, private, whole, recorded; pg_restore reads it.
    let dump = format!("{DB_DIR}/{name}.dump");
    let facts = site.sh(&format!(
        "stat -c '%a %U %F' {DB_DIR} {dump}; sha256sum {dump} | cut -d' ' -f1; cat {DB_DIR}/{name}.record; \
         ls -A {DB_DIR} | grep -c '\\.tmp\\.' || true; find {ROOT}/jobs -name pgpass | wc -l"
    ))?;
    let f: Vec<&str> = facts.lines().collect();
    ensure!(
        f.first() == Some(&"700 innercontext directory")
            && f.get(1) == Some(&"600 innercontext regular file"),
        "shared/db or its dump is not private to the app user:\n{facts}"
    );
    let sum = f.get(2).copied().unwrap_or("");
    ensure!(
        facts.contains(&format!("sha256={sum}"))
            && facts.contains(&format!("revision={from}"))
            && facts.contains(&format!("release={before}"))
            && f.iter().rev().nth(1) == Some(&"0")
            && f.last() == Some(&"0"),
        "the record does not match the dump, or a temporary or password file stayed:\n{facts}"
    );
    let toc = site.sh(&format!(
        "runuser -u innercontext -- pg_restore --list {dump}"
    ))?;
    ensure!(
        toc.contains("TABLE public products") && toc.contains("TABLE DATA public products"),
        "pg_restore --list does not read the snapshot:\n{toc}"
    );
    let leaked = site.sh(&format!(
        "grep -rl -- '{}' {ROOT}/jobs {DB_DIR} 2>/dev/null | head -n 3 || true",
        xtask::testhost::DB_PASSWORD
    ))?;
    ensure!(
        leaked.trim().is_empty(),
        "the database password is in the job's files: {leaked}"
    );

    let list = site.xtask(&s.dir, &["deploy", "list"])?.ok()?;
    println!("--- deploy list:\n{}", list.stdout);
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&before))
        .unwrap_or("");
    ensure!(
        row.ends_with(&format!("B at {from}")) && list.stdout.contains("SNAPSHOT"),
        "deploy list does not show {before}'s snapshot: {row}\n{}",
        list.stdout
    );
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    println!("--- deploy status:\n{}", status.stdout);
    ensure!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("snapshot:") && l.contains(&format!("{name}.dump"))),
        "deploy status does not show the newest snapshot:\n{}",
        status.stdout
    );
    ensure!(site.current()? == release);
    site.assert_serving()
}

/// A migration that drops a column is refused before the lock, naming squawk's rule and the
/// file, and nothing changes on the server; with the allow comment (and its reason) in the
/// migration, the same drop goes through.
pub fn a_dropped_column_is_refused_unless_the_migration_allows_it(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let at = pending_free(&site, s)?;
    psql(
        &site,
        "ALTER TABLE products ADD COLUMN IF NOT EXISTS e2e_doomed TEXT",
    )?;
    let drop = ["op.drop_column(\"products\", \"e2e_doomed\")"];
    let back = ["op.add_column(\"products\", sa.Column(\"e2e_doomed\", sa.Text(), nullable=True))"];
    let rev = add_revision(s, "drop_doomed", "", &drop, &back)?;
    s.commit("drop a column")?;
    let quiet = untouched(&site)?;
    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .failed()?;
    let out = run.all();
    println!("--- a refused drop:\n{out}");
    let file = format!("alembic/versions/{rev}.py");
    let refused = out
        .lines()
        .find(|l| l.contains("refused:") && l.contains("ban-drop-column"))
        .with_context(|| format!("no refusal naming squawk's rule:\n{out}"))?;
    ensure!(
        refused.contains(&file) && refused.contains("DROP COLUMN e2e_doomed"),
        "the refusal does not name the file and the statement: {refused}"
    );
    ensure!(
        step_line(&out, "lint the migrations")?.contains("refused (")
            && !out.contains("==> lock ")
            && out.contains("nothing was changed"),
        "the deploy was not stopped before the lock:\n{out}"
    );
    ensure!(
        untouched(&site)? == quiet,
        "a refused migration changed the server:\n{out}"
    );

    // The same drop, allowed by the migration itself.
    s.undo()?;
    let rev = add_revision(
        s,
        "drop_doomed",
        "# migration-lint: allow ban-drop-column -- no release reads products.e2e_doomed\n",
        &drop,
        &back,
    )?;
    s.commit("drop a column, allowed")?;
    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    let out = run.all();
    ensure!(
        step_line(&out, "lint the migrations")?.contains(" ok (")
            && out.contains("Allowed by the migration: no release reads products.e2e_doomed"),
        "the allowed drop does not say it was allowed:\n{out}"
    );
    ensure!(
        db_revision(&site)? == rev,
        "the database is not at {rev} (from {at})"
    );
    ensure!(
        !site.last_log()?.contains("lint=allow-unsafe"),
        "deploy.log says the lint was overridden: {}",
        site.last_log()?
    );
    site.assert_serving()
}

/// `--allow-unsafe-migration` lets a refused migration through, says so on the refused
/// statement's line, and the job's deploy.log line says `lint=allow-unsafe`.
pub fn allow_unsafe_migration_lets_it_through_and_says_so(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    pending_free(&site, s)?;
    psql(
        &site,
        "ALTER TABLE products ADD COLUMN IF NOT EXISTS e2e_unsafe TEXT",
    )?;
    let rev = add_revision(
        s,
        "drop_unsafe",
        "",
        &["op.drop_column(\"products\", \"e2e_unsafe\")"],
        &["op.add_column(\"products\", sa.Column(\"e2e_unsafe\", sa.Text(), nullable=True))"],
    )?;
    s.commit("drop a column, unsafe")?;
    let run = site
        .xtask(
            &s.dir,
            &[
                "deploy",
                "backend",
                "--skip-local-checks",
                "--allow-unsafe-migration",
            ],
        )?
        .ok()?;
    let out = run.all();
    println!("--- --allow-unsafe-migration:\n{out}");
    ensure!(
        out.lines().any(|l| l.starts_with("warning:")
            && l.contains("ban-drop-column")
            && l.contains("let through by --allow-unsafe")),
        "the let-through refusal is not a warning:\n{out}"
    );
    ensure!(db_revision(&site)? == rev);
    let last = site.last_log()?;
    ensure!(
        last.contains("result=success") && last.split(' ').any(|w| w == "lint=allow-unsafe"),
        "deploy.log does not say the lint was overridden: {last}"
    );
    site.assert_serving()
}

/// Whether `products` has the column `name` now.
fn has_column(site: &Site, name: &str) -> Result<bool> {
    Ok(psql(
        site,
        &format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'products' AND column_name = '{name}'"
        ),
    )? == "1")
}

/// Rollback across a migration. A release adds a column and backfills it; a plain rollback is
/// refused naming `--migrate-down` and the snapshot; `--migrate-down` without `--yes` (no
/// terminal) is refused because the downgrade drops rows that hold data, nothing changed; with
/// `--yes`, under load, the old release is switched in first (no failed request), then a
/// snapshot is taken and the column goes; `deploy status` is at the old revision, deploy.log
/// says `migrate=down`; deploying forward again brings the column back.
pub fn rollback_migrate_down_takes_the_column_away_while_serving(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let from = pending_free(&site, s)?;
    psql(
        &site,
        "INSERT INTO products (name) VALUES ('e2e down one'), ('e2e down two')",
    )?;
    let old = site.current()?;
    let rev = add_revision(
        s,
        "tagline",
        "",
        &[
            "op.add_column(\"products\", sa.Column(\"tagline\", sa.Text(), nullable=True))",
            "op.execute(\"UPDATE products SET tagline = 'about ' || name\")",
        ],
        &["op.drop_column(\"products\", \"tagline\")"],
    )?;
    s.commit("a tagline column and its backfill")?;
    let new = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?
        .release()
        .context("no release named")?;
    ensure!(db_revision(&site)? == rev && has_column(&site, "tagline")?);
    let rows = psql(
        &site,
        "SELECT count(*) FROM products WHERE tagline IS NOT NULL",
    )?;

    // A plain rollback refuses, and says what would take the database down.
    let run = site.xtask(&s.dir, &["deploy", "rollback"])?.failed()?;
    let out = run.all();
    println!("--- a plain rollback across the migration:\n{out}");
    ensure!(
        out.contains("--migrate-down") && out.contains("snapshot") && out.contains(&rev),
        "the refusal does not name --migrate-down and the snapshot:\n{out}"
    );
    ensure!(site.current()? == new && db_revision(&site)? == rev);

    // Without --yes, and no terminal to ask at: refused before anything changed.
    let quiet = untouched(&site)?;
    let run = site
        .xtask(&s.dir, &["deploy", "rollback", "--migrate-down"])?
        .failed()?;
    let out = run.all();
    println!("--- --migrate-down without --yes:\n{out}");
    ensure!(
        out.contains(&format!("drops {rows} row(s) that hold data"))
            && out.contains("column products.tagline")
            && out.contains("rerun with --yes"),
        "the refusal does not say what the downgrade drops and what to add:\n{out}"
    );
    ensure!(
        untouched(&site)? == quiet,
        "a refused --migrate-down changed the server"
    );
    let dry = site
        .xtask(
            &s.dir,
            &["deploy", "rollback", "--migrate-down", "--dry-run"],
        )?
        .ok()?;
    let out = dry.all();
    println!("--- --migrate-down --dry-run:\n{out}");
    ensure!(
        out.contains(&format!("down from {rev} to {from}"))
            && out.contains(&format!(
                "drops column products.tagline: {rows} row(s) hold data"
            ))
            && out.contains("migrate_down=yes")
            && out.contains("it would be refused without --yes"),
        "the dry run does not show the downgrade:\n{out}"
    );
    ensure!(untouched(&site)? == quiet, "the dry run changed the server");

    // With --yes, under load.
    let load = crate::support::Load::start(&site.app.ip);
    let run = site.xtask(&s.dir, &["deploy", "rollback", "--migrate-down", "--yes"]);
    let (requests, failures) = load.finish();
    let run = run?;
    let out = run.all();
    println!("--- rollback --migrate-down --yes:\n{out}");
    let run = run.ok()?;
    ensure!(
        failures.is_empty() && requests > 10,
        "{} of {requests} requests failed during the rollback: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(site.current()? == old, "current is not {old}");
    ensure!(
        db_revision(&site)? == from,
        "the database is not back at {from}"
    );
    ensure!(!has_column(&site, "tagline")?, "the column is still there");
    let lines: Vec<&str> = run.stdout.lines().chain(run.stderr.lines()).collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or(usize::MAX)
    };
    ensure!(
        at("==> check the downgrade") < at("==> switch current")
            && at("==> switch current") < at("==> snapshot the database")
            && at("==> snapshot the database") < at("==> migrate the database down")
            && at("==> migrate the database down") != usize::MAX,
        "the steps are not trial, switch, snapshot, downgrade:\n{out}"
    );
    let name = format!("{new}-{rev}.dump");
    ensure!(
        step_line(&out, "snapshot the database")?.contains(&name),
        "the snapshot is not named after {new} and {rev}:\n{out}"
    );
    ensure!(
        site.sh(&format!("test -f {DB_DIR}/{name} && echo yes"))?
            .trim()
            == "yes",
        "no snapshot {name}"
    );
    let last = site.last_log()?;
    ensure!(
        last.contains("scope=rollback")
            && last.contains("result=success")
            && last.contains(&format!("alembic={from}"))
            && last.contains("migrate=down"),
        "deploy.log's line: {last}"
    );
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    ensure!(
        status.stdout.contains(&from) && !status.stdout.contains(&format!("at {rev}")),
        "deploy status is not at {from}:\n{}",
        status.stdout
    );
    site.assert_serving()?;

    // Forward again.
    site.xtask(
        &s.dir,
        &["deploy", "backend", "--skip-local-checks", "--redeploy"],
    )?
    .ok()?;
    ensure!(db_revision(&site)? == rev && has_column(&site, "tagline")?);
    site.assert_serving()
}

/// A downgrade that raises: `rollback --migrate-down` tries it under the lock before the switch
/// and is refused, naming the migration; current and the database are unchanged.
pub fn a_downgrade_that_raises_refuses_the_rollback(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    pending_free(&site, s)?;
    let rev = add_revision(
        s,
        "raises",
        "",
        &["op.add_column(\"products\", sa.Column(\"raises\", sa.Text(), nullable=True))"],
        &[
            "op.drop_column(\"products\", \"raises\")",
            "op.execute(\"SELECT * FROM e2e_table_that_does_not_exist\")",
        ],
    )?;
    s.commit("a migration whose downgrade raises")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    ensure!(db_revision(&site)? == rev);
    let quiet = untouched(&site)?;
    let log = log_len(&site)?;
    let run = site
        .xtask(&s.dir, &["deploy", "rollback", "--migrate-down"])?
        .failed()?;
    let out = run.all();
    println!("--- rollback --migrate-down of a downgrade that raises:\n{out}");
    ensure!(
        out.contains("a trial of the downgrade failed")
            && out.contains(&format!("failed in {rev}"))
            && out.contains("e2e_table_that_does_not_exist"),
        "the refusal does not name the migration and why:\n{out}"
    );
    let now = untouched(&site)?;
    ensure!(
        now.current == quiet.current
            && now.revision == quiet.revision
            && now.releases == quiet.releases
            && !now.locked
            && has_column(&site, "raises")?,
        "the server changed: {quiet:?} -> {now:?}"
    );
    let lines = log_since(&site, log)?;
    ensure!(
        lines.len() == 1 && lines[0].1 == "refused",
        "deploy.log does not end with one refused line: {lines:?}"
    );
    site.assert_serving()
}

/// The database at the checkout's head (an earlier scenario's pending migration deployed
/// first, without a snapshot if need be); its revision.
fn pending_free(site: &Site, s: &Scratch) -> Result<String> {
    let at = db_revision(site)?;
    if head(s)?.1 != at {
        let mut cmd = site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
        cmd.env("DEPLOY_DB_SNAPSHOT", "off");
        crate::support::Run::capture(cmd)?.ok()?;
    }
    db_revision(site)
}

/// How the deployer is struck while the job takes the snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strike {
    /// A terminal's Ctrl-C: SIGINT to its whole process group.
    Interrupt,
    /// SIGKILL to the deployer: it says nothing more; the job hears silence.
    Kill,
    /// A closed terminal: SIGHUP to the process group.
    Hangup,
}

/// The deployer struck while the job is in its snapshot (held there by the test pause, with
/// pg_dump's output written beside its final name): the job stops before the migration, the
/// partial dump is removed, the lock is released, current and the database are as they were.
fn strike_during_the_snapshot(ctx: &mut Ctx, strike: Strike) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let at = pending_migration(&site, s)?;
    let cur = site.current()?;
    let from = log_len(&site)?;
    let files = snapshots(&site)?;
    let log = s.sidecar("strike.log");
    let mut cmd = site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    cmd.env("INNERCONTEXT_TEST_PAUSE_AT", "snapshot");
    // Its own process group, like a shell job in a terminal: the group's signals reach it.
    cmd.process_group(0);
    let mut bg = Background::start(cmd, &log)?;
    let pid = bg.child.id();
    let held = (|| -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let paused = site.sh(&format!(
                "cat {ROOT}/.deploy.lock/paused 2>/dev/null || true"
            ))?;
            if paused.trim() == "snapshot" {
                break;
            }
            if let Some(status) = bg.child.try_wait()? {
                bail!(
                    "the deploy ended ({status}) before its snapshot:\n{}",
                    bg.output()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the job never paused in its snapshot:\n{}",
                bg.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The dump is there, beside its final name.
        let partial = site.sh(&format!(
            "find {DB_DIR} -maxdepth 1 -name '.*.dump.tmp.*' -size +0 -printf '%f\\n'"
        ))?;
        ensure!(
            !partial.trim().is_empty(),
            "no dump written beside its final name while the job is in its snapshot"
        );
        let token = site.sh(&format!("sed -n 's/^token=//p' {ROOT}/.deploy.lock/info"))?;
        Ok(token.trim().to_string())
    })();
    let token = match held {
        Ok(t) => t,
        Err(e) => {
            let _ = bg.signal("KILL");
            return Err(e);
        }
    };
    let kill = |args: &[&str]| crate::support::run_ok(Command::new("kill").args(args), "kill");
    match strike {
        Strike::Interrupt => kill(&["-INT", "--", &format!("-{pid}")])?,
        Strike::Hangup => kill(&["-HUP", "--", &format!("-{pid}")])?,
        Strike::Kill => kill(&["-KILL", &pid.to_string()])?,
    };
    let (status, out) = bg.wait(Duration::from_secs(120))?;
    println!("--- the deployer struck during the snapshot:\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    wait_quiet(&site, Duration::from_secs(60)).with_context(|| out.clone())?;
    let events = site.sh(&format!("cat {ROOT}/jobs/{token}/events"))?;
    ensure!(
        events.contains("\tstep\tsnapshot\tstopped\t")
            && !events.contains("\tstep\tmigrate\tstart"),
        "the job did not stop in its snapshot, before the migration:\n{events}\n--- deployer:\n{out}"
    );
    ensure!(
        snapshots(&site)? == files,
        "shared/db changed (a partial or new dump):\nbefore:\n{files}\nafter:\n{}",
        snapshots(&site)?
    );
    ensure!(
        site.sh(&format!(
            "test -e {ROOT}/jobs/{token}/pgpass && echo left || echo gone"
        ))?
        .trim()
            == "gone",
        "the password file stayed in the job's directory"
    );
    ensure!(db_revision(&site)? == at, "the database migrated");
    ensure!(site.current()? == cur, "current moved");
    let logged = log_since(&site, from)?;
    ensure!(
        logged.len() == 1
            && logged[0].1 == "interrupted"
            && logged[0]
                .2
                .contains("during the snapshot, before the migration"),
        "deploy.log does not say the job stopped during the snapshot:\n{logged:#?}"
    );
    ensure!(site.state(&logged[0].0)? == "failed");
    if strike != Strike::Kill {
        ensure!(
            out.contains("stop before the migration") && out.contains("interrupted"),
            "the deployer does not say it stopped the job before the migration:\n{out}"
        );
    }
    site.assert_serving()
}

pub fn ctrl_c_during_the_snapshot_stops_before_the_migration(ctx: &mut Ctx) -> Result<()> {
    strike_during_the_snapshot(ctx, Strike::Interrupt)
}

pub fn sigkill_during_the_snapshot_stops_before_the_migration(ctx: &mut Ctx) -> Result<()> {
    strike_during_the_snapshot(ctx, Strike::Kill)
}

pub fn sighup_during_the_snapshot_stops_before_the_migration(ctx: &mut Ctx) -> Result<()> {
    strike_during_the_snapshot(ctx, Strike::Hangup)
}

/// PostgreSQL stopped when the job comes to its snapshot (held in prepare while it is stopped):
/// refused before the migration, naming the database's host, port and the cause; current and
/// the lock as they were.
pub fn a_database_down_at_snapshot_time_is_refused_before_the_migration(
    ctx: &mut Ctx,
) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    pending_migration(&site, s)?;
    let cur = site.current()?;
    let from = log_len(&site)?;
    let p = paused(
        &site,
        s,
        "prepare",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let release = p.release.clone();
    site.db.ssh(&["systemctl", "stop", "postgresql"])?;
    let result = (|| -> Result<()> {
        // Down when nothing answers on its port.
        let deadline = Instant::now() + Duration::from_secs(60);
        while site
            .db
            .ssh(&[
                "bash",
                "-c",
                "pg_isready -q -h 127.0.0.1 && echo up || echo down",
            ])?
            .trim()
            == "up"
        {
            ensure!(Instant::now() < deadline, "PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(200));
        }
        resume(&site)?;
        let (status, out) = p.bg.wait(Duration::from_secs(180))?;
        println!("--- the database down at snapshot time:\n{out}");
        ensure!(!status.success(), "the deploy succeeded:\n{out}");
        let db = format!("{}:5432", site.db.ip);
        let last = out
            .lines()
            .rev()
            .find(|l| l.contains(&release) && l.contains("failed"))
            .with_context(|| format!("no last line for {release}:\n{out}"))?;
        ensure!(
            last.contains(&db)
                && last.contains("refused")
                && last.contains("snapshot")
                && last.contains("nothing was migrated")
                && last.contains("current was not touched"),
            "the last line does not name {db}, the cause and that nothing was migrated: {last}"
        );
        ensure!(
            step_line(&out, "snapshot the database")?.contains("FAILED"),
            "{out}"
        );
        wait_quiet(&site, Duration::from_secs(60))?;
        ensure!(site.current()? == cur, "current moved");
        ensure!(site.state(&release)? == "failed");
        let logged = log_since(&site, from)?;
        ensure!(
            logged.len() == 1 && logged[0].1 == "failed" && logged[0].2.contains(&db),
            "{logged:#?}"
        );
        Ok(())
    })();
    site.db.ssh(&["systemctl", "start", "postgresql"])?;
    result?;
    // The API is back once its database is.
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.get("/api/health-check")?.0 != 200 {
        ensure!(Instant::now() < deadline, "the API did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    site.assert_serving()
}

/// A disk too small for the snapshot (a small tmpfs as `shared/db`): refused before the lock
/// with the database's size and the room there, nothing changed; with `DEPLOY_DB_SNAPSHOT=off`
/// the deploy migrates without one, and its deploy.log line says `snapshot=off`.
pub fn a_disk_too_small_for_the_snapshot_is_refused_before_the_lock(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let at = pending_migration(&site, s)?;
    let size: u64 = psql(&site, "SELECT pg_database_size('innercontext')")?.parse()?;
    let room_kb = size / 1024 / 4;
    site.sh(&format!(
        "set -e; install -d -o innercontext -g innercontext -m 0700 {DB_DIR}; mount -t tmpfs -o size={room_kb}k,mode=0700 tmpfs {DB_DIR}; chown innercontext: {DB_DIR}"
    ))?;
    let result = (|| -> Result<()> {
        let quiet = untouched(&site)?;
        let run = site
            .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
            .failed()?;
        let out = run.all();
        println!("--- a disk too small for the snapshot:\n{out}");
        let error = out
            .lines()
            .find(|l| l.starts_with("error:"))
            .with_context(|| format!("no error line:\n{out}"))?;
        ensure!(
            error.contains("no room for the snapshot")
                && error.contains("needs up to")
                && error.contains("are free there")
                && error.contains("DEPLOY_DB_SNAPSHOT=off")
                && !out.contains("==> lock "),
            "not refused before the lock with the sizes: {error}\n{out}"
        );
        ensure!(untouched(&site)? == quiet, "the refusal changed the server");
        // Without a snapshot it goes through, and says so.
        let mut cmd = site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
        cmd.env("DEPLOY_DB_SNAPSHOT", "off");
        let run = crate::support::Run::capture(cmd)?.ok()?;
        let out = run.all();
        ensure!(
            !out.contains("==> snapshot the database")
                && step_line(&out, "migrate the database")?
                    .contains("no snapshot before it: DEPLOY_DB_SNAPSHOT=off"),
            "{out}"
        );
        ensure!(db_revision(&site)? != at, "the database did not migrate");
        let last = site.last_log()?;
        ensure!(
            last.contains("result=success") && last.split(' ').any(|w| w == "snapshot=off"),
            "deploy.log does not say there was no snapshot: {last}"
        );
        Ok(())
    })();
    let back = site.sh(&format!("umount {DB_DIR} || umount -l {DB_DIR}"));
    result?;
    back?;
    site.assert_serving()
}

// --- db snapshots / db restore (issue 24, item 4) ----------------------------------------------

/// Take a snapshot: deploy a pending migration (one is written when the database is at the
/// checkout's head), so the job dumps the data current ran on. Its name and its release.
fn take_snapshot(site: &Site, s: &Scratch) -> Result<(String, String)> {
    let before = site.current()?;
    let at = pending_migration(site, s)?;
    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    let name = format!("{before}-{at}");
    ensure!(
        step_line(&run.all(), "snapshot the database")?.contains(&format!("{name}.dump")),
        "the deploy took no snapshot {name}:\n{}",
        run.all()
    );
    Ok((name, before))
}

/// A snapshot whose release is kept: the newest one listed, or a new one.
fn a_snapshot(site: &Site, s: &Scratch) -> Result<(String, String)> {
    let have = site.sh(&format!(
        "cd {DB_DIR} 2>/dev/null && for r in *.record; do n=${{r%.record}}; \
         test -d {ROOT}/releases/${{n%%-*}} && echo \"$n\"; done | sort | tail -n 1 || true"
    ))?;
    match have.trim() {
        "" => take_snapshot(site, s),
        name => Ok((name.to_string(), name[..16].to_string())),
    }
}

/// What a refused restore must leave as it was: every unit's and socket's start time, the lock,
/// current, the database's revision, the snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Still {
    units: String,
    locked: bool,
    current: String,
    revision: String,
    snapshots: String,
}

fn still(site: &Site) -> Result<Still> {
    Ok(Still {
        units: site.sh(
            "systemctl show -p Id -p ActiveState -p ActiveEnterTimestamp innercontext innercontext.socket \
             innercontext-node innercontext-node.socket innercontext-pricing-worker",
        )?,
        locked: site.locked()?,
        current: site.current()?,
        revision: db_revision(site)?,
        snapshots: snapshots(site)?,
    })
}

/// `db restore` of the snapshot taken before a migration: it says what will be lost, then the
/// rows deleted since are back, the table created since (by hand, as the app user) is gone,
/// the database is at the snapshot's revision, current is the snapshot's release, the site
/// answers, and deploy.log ends `result=restored`.
pub fn restore_brings_back_the_snapshots_data(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    psql(
        &site,
        "INSERT INTO products (name) VALUES ('e2e restore kept one'), ('e2e restore kept two')",
    )?;
    let kept = psql(&site, "SELECT count(*) FROM products")?;
    let (name, release) = take_snapshot(&site, s)?;
    let at = name[17..].to_string();
    let newer = site.current()?;
    ensure!(newer != release, "the deploy did not make a new release");
    psql(
        &site,
        "DELETE FROM products WHERE name LIKE 'e2e restore kept %'",
    )?;
    psql(
        &site,
        "SET ROLE innercontext; CREATE TABLE e2e_made_after (id int PRIMARY KEY, product_id int REFERENCES products (id))",
    )?;

    let list = site.xtask(&s.dir, &["db", "snapshots"])?.ok()?;
    println!("--- db snapshots:\n{}", list.all());
    ensure!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&name) && l.contains(&at) && l.ends_with("kept")),
        "db snapshots does not list {name} as kept:\n{}",
        list.all()
    );

    let from = log_len(&site)?;
    let run = site
        .xtask(&s.dir, &["db", "restore", &name, "--yes"])?
        .ok()?;
    let out = run.all();
    println!("--- db restore:\n{out}");
    ensure!(
        out.contains(&format!("Restoring {name} on "))
            && out.contains("every change to the data since is lost")
            && out.contains(&format!("Releases deployed since: {newer}")),
        "the restore did not say what is lost:\n{out}"
    );
    for step in [
        "verify the snapshot",
        "stop ",
        "restore the database from",
        "switch current",
        "start ",
        "health checks",
    ] {
        step_line(&out, step)?;
    }
    ensure!(
        psql(&site, "SELECT count(*) FROM products")? == kept,
        "the rows deleted after the snapshot are not back"
    );
    ensure!(
        psql(&site, "SELECT to_regclass('public.e2e_made_after') IS NULL")? == "t",
        "the table created after the snapshot is still there"
    );
    ensure!(db_revision(&site)? == at, "the database is not at {at}");
    ensure!(
        site.current()? == release,
        "current is not the snapshot's release {release}"
    );
    let lines = log_since(&site, from)?;
    let last = site.last_log()?;
    ensure!(
        last.contains("result=restored")
            && last.contains(&format!("release={release}"))
            && !lines.is_empty(),
        "deploy.log does not end with the restore: {last}"
    );
    ensure!(!site.locked()?, "the lock was left");
    site.assert_serving()
}

/// Refused with the reason and nothing stopped: a snapshot that does not exist, a truncated one
/// (its sha256 no longer the recorded one) and one whose record holds a revision its release
/// does not know. Each leaves the units, their sockets, the lock, current, the database and the
/// snapshots as they were; each exits 1.
pub fn restore_refuses_a_missing_damaged_or_unknown_snapshot(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let (name, release) = a_snapshot(&site, s)?;
    let dump = format!("{DB_DIR}/{name}.dump");
    let record = format!("{DB_DIR}/{name}.record");
    let refused = |args: &[&str], want: &str, what: &str| -> Result<()> {
        let quiet = still(&site)?;
        let run = site.xtask(&s.dir, args)?.failed()?;
        let out = run.all();
        println!("--- db restore of {what}:\n{out}");
        ensure!(
            run.status.code() == Some(1),
            "exit status {:?}, want 1 for {what}",
            run.status.code()
        );
        ensure!(
            out.contains(want),
            "the refusal of {what} does not say '{want}':\n{out}"
        );
        ensure!(
            still(&site)? == quiet,
            "the refused restore of {what} changed the server"
        );
        Ok(())
    };
    let missing = format!("{release}-0001_e2e_never_taken");
    refused(
        &["db", "restore", &missing, "--yes"],
        &format!("snapshot {missing} does not exist on"),
        "a snapshot that does not exist",
    )?;

    site.sh(&format!(
        "cp -p {dump} {dump}.e2e-whole && truncate -s -100 {dump}"
    ))?;
    let damaged = refused(
        &["db", "restore", &name, "--yes"],
        "is damaged: its sha256 is",
        "a truncated snapshot",
    );
    site.sh(&format!(
        "cat {dump}.e2e-whole >{dump} && rm -f {dump}.e2e-whole"
    ))?;
    damaged?;

    site.sh(&format!(
        "cp -p {record} {record}.e2e-whole && sed 's/^revision=.*/revision=9999_e2e_unknown/' {record}.e2e-whole >{record}"
    ))?;
    let unknown = refused(
        &["db", "restore", &name, "--yes"],
        &format!("holds alembic revision 9999_e2e_unknown, which release {release}"),
        "a snapshot of a revision its release does not know",
    );
    site.sh(&format!(
        "cat {record}.e2e-whole >{record} && rm -f {record}.e2e-whole"
    ))?;
    unknown
}

/// Without `--yes` and without a terminal: refused before anything is asked of the server,
/// with the line that says what to add; exit 1; nothing stopped.
pub fn restore_without_yes_and_no_terminal_is_refused(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let (name, _) = a_snapshot(&site, s)?;
    let quiet = still(&site)?;
    let mut cmd = site.command(&s.dir, &["db", "restore", &name]);
    cmd.stdin(std::process::Stdio::null());
    let run = crate::support::Run::capture(cmd)?.failed()?;
    let out = run.all();
    println!("--- db restore without --yes:\n{out}");
    ensure!(
        run.status.code() == Some(1) && out.contains("rerun with --yes"),
        "want exit 1 and the line naming --yes, got {:?}:\n{out}",
        run.status.code()
    );
    ensure!(
        still(&site)? == quiet,
        "the refused restore changed the server"
    );
    Ok(())
}

/// A restore whose load cannot finish (another session holds a lock on `products` longer than
/// the load waits for it): the load's transaction rolls back, so the database is unchanged (a
/// table made after the snapshot and its row are still there, the revision too), the units run
/// again on current and the site answers; the result is `failed` and says the database is
/// unchanged.
pub fn a_restore_that_cannot_load_changes_nothing_and_starts_current_again(
    ctx: &mut Ctx,
) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    fresh(&site, s)?;
    let (name, _) = a_snapshot(&site, s)?;
    psql(
        &site,
        "SET ROLE innercontext; CREATE TABLE IF NOT EXISTS e2e_kept_after (id int); INSERT INTO e2e_kept_after VALUES (7)",
    )?;
    let rows = psql(&site, "SELECT count(*) FROM e2e_kept_after")?;
    let (current, revision) = (site.current()?, db_revision(&site)?);
    // A reader elsewhere: one statement that holds products' ACCESS SHARE lock for 120 s.
    let argv: Vec<String> = [
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-qtAX",
        "innercontext",
        "-c",
        "SELECT pg_sleep(120) FROM (SELECT count(*) FROM products) AS c",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut cmd = Command::new("ssh");
    cmd.args(site.db.ssh_args(None, &argv));
    let reader = Background::start(cmd, &s.sidecar("lock-holder.log"))?;
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                WHERE c.relname = 'products' AND l.pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(&site, held)? == "0" {
        ensure!(Instant::now() < deadline, "the reader never took its lock");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = site.xtask(&s.dir, &["db", "restore", &name, "--yes"]);
    let _ = psql(
        &site,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()",
    );
    let _ = reader.wait(Duration::from_secs(30));
    let run = run?.failed()?;
    let out = run.all();
    println!("--- db restore while a reader holds a lock:\n{out}");
    // The step's status may come on a line of its own after its detail lines.
    let load = step_line(&out, "restore the database from")?;
    ensure!(
        load.contains("FAILED") || out.contains("load-snapshot FAILED"),
        "the load did not fail: {load}\n{out}"
    );
    ensure!(
        out.contains("it was rolled back, the database is unchanged")
            && out.contains(&format!("the units run again on {current}")),
        "the failure does not say the database is unchanged and the units run again:\n{out}"
    );
    ensure!(
        psql(&site, "SELECT count(*) FROM e2e_kept_after")? == rows
            && db_revision(&site)? == revision,
        "the database changed although the load failed"
    );
    ensure!(site.current()? == current, "current moved");
    ensure!(
        site.last_log()?.contains("result=failed"),
        "deploy.log: {}",
        site.last_log()?
    );
    ensure!(!site.locked()?, "the lock was left");
    psql(&site, "DROP TABLE e2e_kept_after")?;
    site.assert_serving()
}
