//! The database phase (issue 24): the primary's database seeded with 100,000 products and
//! 1,000,000 price rows (the app's own tables), then rounds of backend deploys of the xtask,
//! interleaved: one whose tree only changed (nothing to migrate) and one with a fresh revision
//! that adds a nullable column (a snapshot, then the migration). The rows: both deploys, the
//! overhead of the second over the first in the same round (target: at most the snapshot's own
//! time + 0.5 s), the snapshot's time and size and the migration's time as the job recorded them
//! (its events, the snapshot's `.record`), with a plain `pg_dump` timed on the app machine and
//! the database's size as floors.
//!
//! A row is one function of [`ROUND`]: it runs what it measures on the xtask's side and returns
//! its samples. Rows that need something of their own on the server (a restore, a downgrade) go
//! there the same way. The phase runs after every other side-by-side phase: the machines share
//! one database, and the revisions it adds are unknown to the baseline's tree.

use anyhow::{bail, ensure, Context, Result};

use super::side::{self, Done, Op, Side};
use super::table::{FloorParts, Key};
use crate::contract::{layout, EventKind, Note, Step, StepStatus, BACKEND_PACKAGE, DEFAULT_ROOT};
use crate::deploy::event::Event;
use crate::testhost::{DbInfo, Machine};

/// What the database is seeded with (issue 24): 100,000 products and 1,000,000 price rows (ten
/// per product). The product list is paged (`GET /products?limit=&after=`, 100 to a page on the
/// home page): before it was, the home page listed every product, and at 100,000 it did not
/// answer within 30 s, so node's health probe failed and every deploy rolled back.
pub const PRODUCTS: u32 = 100_000;
pub const PRICES_PER_PRODUCT: u32 = 10;

/// The revisions' directory in a checkout.
const VERSIONS: &str = "backend/alembic/versions";

/// The seeding SQL (psql, as postgres, on the app's database): one `INSERT ... SELECT
/// generate_series` per table, the products priced now (so the pricing worker, which prices
/// products older than a day, leaves them alone), `PRICES_PER_PRODUCT` daily prices each, then
/// `VACUUM ANALYZE` so every snapshot reads a settled table (the first read after a bulk insert
/// writes hint bits).
pub fn seed_sql(products: u32, per_product: u32) -> String {
    format!(
        "\\set ON_ERROR_STOP on\n\
         INSERT INTO products (name, url, created_at, current_price, currency, price_updated_at)\n  \
         SELECT 'bench product ' || g, 'https://example.com/p/' || g, now(), 1 + (g % 10000) / 100.0, 'EUR', now()\n  \
         FROM generate_series(1, {products}) AS g;\n\
         INSERT INTO price_observations (product_id, price, currency, observed_at)\n  \
         SELECT p.id, 1 + ((p.id * 7 + d * 13) % 10000) / 100.0, 'EUR', now() - d * interval '1 day'\n  \
         FROM products p CROSS JOIN generate_series(1, {per_product}) AS d\n  \
         WHERE p.name LIKE 'bench product %';\n\
         VACUUM ANALYZE products;\n\
         VACUUM ANALYZE price_observations;\n\
         SELECT (SELECT count(*) FROM products) || ' ' || (SELECT count(*) FROM price_observations);\n"
    )
}

/// psql as postgres on the db machine, the app's database, SQL on stdin; its output.
fn psql(db: &Machine, sql: &str) -> Result<String> {
    let script = format!(
        "runuser -u postgres -- psql -qtAX -d {} <<'SQL'\n{sql}\nSQL",
        crate::quote::sh(&crate::testhost::db_info(db).database)
    );
    side::exec(db, &script)
}

/// Seed the database once (`products` and `price_observations` must be empty of bench rows):
/// checks the counts it left.
pub fn seed(db: &Machine) -> Result<()> {
    let out = psql(db, &seed_sql(PRODUCTS, PRICES_PER_PRODUCT))?;
    let counts: Vec<u64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let want = (
        u64::from(PRODUCTS),
        u64::from(PRODUCTS) * u64::from(PRICES_PER_PRODUCT),
    );
    ensure!(
        matches!(counts[..], [p, o] if p >= want.0 && o >= want.1),
        "seeding left '{}' rows (products, price rows), want at least {} and {}",
        out.trim(),
        want.0,
        want.1
    );
    Ok(())
}

/// The database's size in bytes (`pg_database_size`).
pub fn size(db: &Machine) -> Result<f64> {
    let out = psql(db, "SELECT pg_database_size(current_database());")?;
    out.trim()
        .parse()
        .with_context(|| format!("the database's size on {}: '{}'", db.name, out.trim()))
}

/// A plain `pg_dump --format=custom` of the app's database into a file beside the snapshots'
/// disk (then removed), timed inside the app machine; its output is the seconds.
pub fn pg_dump_script(db: &DbInfo) -> String {
    let q = crate::quote::sh;
    format!(
        "set -euo pipefail; f=$(mktemp /var/tmp/bench-pg-dump.XXXXXX); trap 'rm -f \"$f\"' EXIT; \
         s=$(date +%s.%N); PGPASSWORD={pw} pg_dump --format=custom --no-password --host={host} --port={port} \
         --username={user} --dbname={name} --file=\"$f\" </dev/null; sync -- \"$f\"; e=$(date +%s.%N); \
         awk -v s=$s -v e=$e 'BEGIN {{print e - s}}'",
        pw = q(&db.password),
        host = q(&db.host),
        port = db.port,
        user = q(&db.user),
        name = q(&db.database),
    )
}

/// The checkout's newest revision: (its number, its id); ids are the file names (`NNNN_...`).
pub fn head_of<'a>(files: impl IntoIterator<Item = &'a str>) -> Option<(u32, String)> {
    files
        .into_iter()
        .filter_map(|f| {
            let id = f.strip_suffix(".py")?;
            let n: u32 = id.get(..4)?.parse().ok()?;
            Some((n, id.to_string()))
        })
        .max()
}

/// A revision after `down` that adds the nullable column `column` to products (what the lint
/// lets through, and something to snapshot and migrate), with its downgrade.
pub fn revision_file(id: &str, down: &str, column: &str) -> String {
    format!(
        "\"\"\"The bench's migration: products.{column}.\"\"\"\n\n\
         import sqlalchemy as sa\n\nfrom alembic import op\n\n\
         revision = \"{id}\"\ndown_revision = \"{down}\"\nbranch_labels = None\ndepends_on = None\n\n\n\
         def upgrade() -> None:\n    op.add_column(\"products\", sa.Column(\"{column}\", sa.Text(), nullable=True))\n\n\n\
         def downgrade() -> None:\n    op.drop_column(\"products\", \"{column}\")\n"
    )
}

/// Seconds of a job's step `step`, from its `start` to its `ok` (server time, ms): the job's
/// own figure, without the link.
pub fn step_secs(events: &str, step: Step) -> Option<f64> {
    let mut start = None;
    for e in events.lines().filter_map(Event::parse) {
        match e.step() {
            Some((Some(s), StepStatus::Start)) if s == step => start = Some(e.ms),
            Some((Some(s), StepStatus::Ok)) if s == step => {
                return Some(e.ms.checked_sub(start?)? as f64 / 1000.0)
            }
            _ => {}
        }
    }
    None
}

/// The snapshot a job took: its file name, from the note `snapshot taken SIZE NAME`.
pub fn snapshot_taken(events: &str) -> Option<String> {
    events
        .lines()
        .filter_map(Event::parse)
        .find(|e| {
            e.kind == EventKind::Note && e.note() == Some(Note::Snapshot) && e.field(1) == "taken"
        })
        .map(|e| e.field(3).to_string())
}

/// The size a snapshot's `.record` gives (`size=BYTES`).
pub fn record_size(record: &str) -> Option<f64> {
    record
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// A snapshot's file name, checked before it goes into a shell line (`RELEASE-REVISION.dump`).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The events of the newest job on the side's machine.
fn newest_events(side: &Side) -> Result<String> {
    side.exec(&format!(
        "cat \"$(ls -1td {DEFAULT_ROOT}/{}/*/ | head -n 1)events\"",
        layout::JOBS
    ))
}

/// The phase's state across rounds: the xtask's side and the db machine.
pub struct Phase<'a> {
    pub side: &'a Side,
    pub db: &'a Machine,
    /// The snapshot the round's deploy with a migration took (its name without `.dump`): what
    /// the restore row restores.
    pub taken: std::cell::RefCell<Option<String>>,
}

/// One row's measurement in a round: it runs one command of the xtask, and returns its samples
/// (the deploy with a migration also gives the snapshot's rows) and the command (its ssh
/// handshakes count in the handshakes row).
pub type RowFn = fn(&Phase, u32) -> Result<(Vec<(Key, f64)>, Done)>;

/// A round, in order: the deploy without a migration first, then the one with, as the bench
/// pairs (baseline, xtask). Further rows (a restore, a downgrade) are a function each, added
/// here with their keys and their lines in rows.rs.
pub const ROUND: &[(&str, RowFn)] = &[
    (
        "backend deploy, nothing to migrate",
        deploy_without_migration,
    ),
    ("backend deploy with a migration", deploy_with_migration),
    ("rollback --migrate-down", rollback_migrate_down),
    ("db restore", restore_snapshot),
];

/// The overhead of the deploy with a migration over the one without, in the same round.
pub fn overhead(samples: &[(Key, f64)]) -> Option<f64> {
    let of = |k: Key| samples.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    Some(of(Key::DbDeployWith)? - of(Key::DbDeployWithout)?)
}

/// A backend change without a migration (a comment), committed and deployed: no snapshot step.
fn deploy_without_migration(p: &Phase, round: u32) -> Result<(Vec<(Key, f64)>, Done)> {
    let path = format!("backend/{BACKEND_PACKAGE}/__init__.py");
    let text = p.side.scratch.read(&path)?;
    p.side
        .scratch
        .write(&path, &format!("{text}# bench database round {round}\n"))?;
    p.side
        .scratch
        .commit(&format!("bench: database round {round}, no migration"))?;
    let done = p.side.run(&Op::Backend)?;
    let events = newest_events(p.side)?;
    if snapshot_taken(&events).is_some() {
        bail!("the deploy without a migration took a snapshot:\n{events}");
    }
    Ok((vec![(Key::DbDeployWithout, done.secs)], done))
}

/// A fresh revision that adds a nullable column, committed and deployed: the job snapshots
/// then migrates. Its wall time, and the snapshot's and the migration's, as the job recorded
/// them, with the snapshot's size from its record.
fn deploy_with_migration(p: &Phase, round: u32) -> Result<(Vec<(Key, f64)>, Done)> {
    let dir = p.side.scratch.dir.join(VERSIONS);
    let files: Vec<String> = fs_err::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let (n, down) = head_of(files.iter().map(String::as_str))
        .with_context(|| format!("no revision in {dir}"))?;
    let column = format!("bench_col_{round}");
    let id = format!("{:04}_bench_{column}", n + 1);
    p.side.scratch.write(
        &format!("{VERSIONS}/{id}.py"),
        &revision_file(&id, &down, &column),
    )?;
    p.side
        .scratch
        .commit(&format!("bench: database round {round}, migration {id}"))?;
    let done = p.side.run(&Op::Backend)?;
    let events = newest_events(p.side)?;
    let facts = || {
        format!(
            "in the events of the job on {}:\n{events}",
            p.side.machine().name
        )
    };
    let snapshot = step_secs(&events, Step::Snapshot)
        .with_context(|| format!("no snapshot step {}", facts()))?;
    let migrate = step_secs(&events, Step::Migrate)
        .with_context(|| format!("no migrate step {}", facts()))?;
    let name = snapshot_taken(&events)
        .filter(|n| plain_name(n))
        .with_context(|| format!("no snapshot taken {}", facts()))?;
    let base = name.strip_suffix(layout::DB_DUMP).unwrap_or(&name);
    *p.taken.borrow_mut() = Some(base.to_string());
    let record = p.side.exec(&format!(
        "cat {DEFAULT_ROOT}/{}/{base}{}",
        layout::DB_SNAPSHOTS,
        layout::DB_RECORD
    ))?;
    let bytes = record_size(&record)
        .with_context(|| format!("no size in the record of {name}:\n{record}"))?;
    Ok((
        vec![
            (Key::DbDeployWith, done.secs),
            (Key::DbSnapshot, snapshot),
            (Key::DbSnapshotSize, bytes),
            (Key::DbMigrate, migrate),
        ],
        done,
    ))
}

/// `deploy rollback --migrate-down --yes` of the round's migration: its wall time and the job's
/// downgrade step; then, untimed, forward again (the next round's deploy without a migration
/// must find the database at the checkout's head).
fn rollback_migrate_down(p: &Phase, _round: u32) -> Result<(Vec<(Key, f64)>, Done)> {
    let done = p.side.run(&Op::RollbackMigrateDown)?;
    let events = newest_events(p.side)?;
    let down = step_secs(&events, Step::Migrate).with_context(|| {
        format!(
            "no migrate step in the rollback's events on {}:\n{events}",
            p.side.machine().name
        )
    })?;
    p.side.run(&Op::Backend)?;
    Ok((
        vec![(Key::DbRollbackDown, done.secs), (Key::DbDowngrade, down)],
        done,
    ))
}

/// `db restore SNAPSHOT --yes` of the snapshot the round's deploy with a migration took (the
/// data before its migration, current back on the release that ran on it): its wall time and
/// the job's load step; then, untimed, forward again.
fn restore_snapshot(p: &Phase, _round: u32) -> Result<(Vec<(Key, f64)>, Done)> {
    let name = p
        .taken
        .borrow()
        .clone()
        .context("no snapshot taken this round to restore")?;
    let done = p.side.run(&Op::DbRestore(name))?;
    let events = newest_events(p.side)?;
    let load = step_secs(&events, Step::LoadSnapshot).with_context(|| {
        format!(
            "no load step in the restore's events on {}:\n{events}",
            p.side.machine().name
        )
    })?;
    p.side.run(&Op::Backend)?;
    Ok((vec![(Key::DbRestore, done.secs), (Key::DbLoad, load)], done))
}

/// The round's database floors: a plain pg_dump on the app machine and the database's size.
pub fn floors(p: &Phase, parts: &mut FloorParts) -> Result<()> {
    let script = pg_dump_script(&crate::testhost::db_info(p.db));
    let out = p.side.exec(&script)?;
    let secs: f64 = out.trim().parse().with_context(|| {
        format!(
            "timing pg_dump on {}: '{}'",
            p.side.machine().name,
            out.trim()
        )
    })?;
    parts.pg_dump = Some(secs);
    parts.db_bytes = Some(size(p.db)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::table::{
        judge, num, render_floor_parts, with_unit, Floor, Row, Target, Unit,
    };

    #[test]
    fn the_seed_is_one_insert_select_per_table() {
        let sql = seed_sql(1_000, 1_000);
        assert_eq!(sql.matches("INSERT INTO").count(), 2, "{sql}");
        assert!(sql.contains("FROM generate_series(1, 1000) AS g;"), "{sql}");
        assert!(
            sql.contains("FROM products p CROSS JOIN generate_series(1, 1000) AS d"),
            "{sql}"
        );
        // Priced now: the worker reprices only products older than a day.
        assert!(sql.contains("'EUR', now()\n"), "{sql}");
        assert!(sql.starts_with("\\set ON_ERROR_STOP on\n"), "{sql}");
        // The columns are the models' (every NOT NULL one without a default given).
        for col in [
            "name",
            "url",
            "current_price",
            "currency",
            "price_updated_at",
        ] {
            assert!(sql.contains(col), "{col}");
        }
        assert_eq!(PRODUCTS * PRICES_PER_PRODUCT, 1_000_000);
    }

    #[test]
    fn the_pg_dump_floor_is_bash_and_quotes_the_password() {
        let db = DbInfo {
            host: "10.213.3.2".into(),
            port: 5432,
            database: "innercontext".into(),
            user: "innercontext".into(),
            password: "it's".into(),
        };
        let script = pg_dump_script(&db);
        assert!(
            script.contains("PGPASSWORD='it'\\''s' pg_dump --format=custom"),
            "{script}"
        );
        assert!(script.contains("--host=10.213.3.2 --port=5432"), "{script}");
        let syntax = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(syntax.success(), "{script}");
    }

    #[test]
    fn revisions_chain_to_the_head() {
        let files = [
            "0001_products.py",
            "0002_price_history.py",
            "__init__.py",
            "README",
        ];
        assert_eq!(head_of(files), Some((2, "0002_price_history".into())));
        assert_eq!(head_of(["notes.txt"]), None);
        let text = revision_file(
            "0003_bench_bench_col_1",
            "0002_price_history",
            "bench_col_1",
        );
        assert!(text.contains(
            "revision = \"0003_bench_bench_col_1\"\ndown_revision = \"0002_price_history\""
        ));
        assert!(text.contains(
            "op.add_column(\"products\", sa.Column(\"bench_col_1\", sa.Text(), nullable=True))"
        ));
        assert!(text.contains("op.drop_column(\"products\", \"bench_col_1\")"));
    }

    const EVENTS: &str = "1000\tstep\tlint\tstart\tx\n\
        2000\tstep\tsnapshot\tstart\tsnapshot the database\n\
        2100\tnote\tsnapshot\ttaken\t31000000\t20261201T080204Z-0002_price_history.dump\n\
        3250\tstep\tsnapshot\tok\t1.2\n\
        3300\tstep\tmigrate\tstart\tmigrate the database\n\
        4100\tstep\tmigrate\tok\t0.8\n";

    #[test]
    fn the_snapshot_and_migration_times_are_the_jobs() {
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(step_secs(EVENTS, Step::Snapshot), 1.25));
        assert!(close(step_secs(EVENTS, Step::Migrate), 0.8));
        assert_eq!(step_secs(EVENTS, Step::Restart), None);
        // A step that failed has no time.
        assert_eq!(
            step_secs(
                "1\tstep\tsnapshot\tstart\tx\n9\tstep\tsnapshot\tfailed\t0.1\twhy\n",
                Step::Snapshot
            ),
            None
        );
        assert_eq!(
            snapshot_taken(EVENTS).as_deref(),
            Some("20261201T080204Z-0002_price_history.dump")
        );
        assert_eq!(snapshot_taken("1\tnote\tsnapshot\tnone\tat 0002\n"), None);
        assert!(plain_name("20261201T080204Z-0002_price_history.dump"));
        for bad in [
            "",
            "-x.dump",
            "a b.dump",
            "x;rm.dump",
            "../x.dump",
            "$(x).dump",
        ] {
            assert!(!plain_name(bad), "{bad}");
        }
        assert_eq!(
            record_size("release=R\nrevision=0002\nsize=31000000\nsha256=ab\n"),
            Some(31_000_000.0)
        );
        assert_eq!(record_size("size=\n"), None);
    }

    #[test]
    fn the_overhead_is_the_pair_of_one_round() {
        let round = [
            (Key::DbDeployWithout, 4.0),
            (Key::DbDeployWith, 6.5),
            (Key::DbSnapshot, 1.5),
        ];
        assert_eq!(overhead(&round), Some(2.5));
        assert_eq!(overhead(&round[1..]), None);
        assert_eq!(ROUND.len(), 4);
    }

    #[test]
    fn the_migration_overhead_is_judged_against_the_snapshot() {
        let mut snap = Row::new(
            Key::DbSnapshot,
            "snapshot",
            Unit::Secs,
            Target::None,
            Floor::PgDump,
        );
        snap.xtask = vec![1.2, 1.0, 1.4];
        let target = Target::Relative {
            of: Key::DbSnapshot,
            factor: 1.0,
            plus: 0.5,
        };
        let mut over = Row::new(
            Key::DbOverhead,
            "overhead",
            Unit::Secs,
            target,
            Floor::PgDump,
        );
        over.xtask = vec![1.6, 1.7, 1.9];
        let rows = vec![snap.clone(), over.clone()];
        let v = judge(&rows[1], &rows, None);
        assert_eq!(v.text, "<= [snapshot's own] + 0.50 s = 1.70 s");
        assert_eq!(v.met, Some(true), "{v:?}");
        over.xtask = vec![1.8, 1.71, 1.9];
        let rows = vec![snap, over];
        assert_eq!(judge(&rows[1], &rows, None).met, Some(false));
        // Sizes read in MB.
        assert_eq!(with_unit(31_456_789.0, Unit::Bytes), "31.5 MB");
        assert_eq!(num(31_456_789.0, Unit::Bytes), "31.5");
        let parts = render_floor_parts(&[FloorParts {
            pg_dump: Some(2.25),
            db_bytes: Some(150e6),
            ..FloorParts::default()
        }]);
        assert!(
            parts.ends_with(", plain pg_dump 2.25 s of a database of 150.0 MB\n"),
            "{parts}"
        );
        assert!(!render_floor_parts(&[FloorParts::default()]).contains("pg_dump"));
    }
}
