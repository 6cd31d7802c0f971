//! The database before the lock, and the snapshots the job takes before a migration.
//!
//! The job on the primary takes a snapshot (`pg_dump --format=custom`) right before it migrates
//! (`step_snapshot` in scripts/deploy-job.sh) into `shared/db/<release>-<revision>.dump`, named
//! after the release that was running on that data and the data's revision, with a record
//! beside it (revision, size, sha256), and prunes it with that release. This side:
//!
//! - [`DbFacts`]: what the `db` call reads before the lock: the database's revision (the lint
//!   starts from it), and, when there is something to migrate, its size and the room for the
//!   snapshot; [`space_refusal`] decides whether the snapshot fits (pure);
//! - [`enabled`]: `DEPLOY_DB_SNAPSHOT`; [`plan_args`]: what the job's plan says of both;
//! - [`Dump`]: the snapshots as the probe lists them (`deploy list`, `deploy status`).

use anyhow::{bail, Result};

use crate::contract::{self, layout};
use crate::remote::{Call, Reply};

/// The database as the `db` call read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFacts {
    /// Its alembic revision (`-`: never migrated), or why it could not be read.
    pub revision: Result<String, String>,
    /// No release runs on the host yet (a first deploy): nothing there can read the revision.
    pub first: bool,
    /// Its size in bytes (`pg_database_size`), or why it could not be read (asked with `size`).
    pub size: Result<u64, String>,
    /// `host:port` of the database server.
    pub server: String,
    /// Where the snapshots go, the bytes free there, and the bytes the snapshots there take.
    pub dir: String,
    pub free: Option<u64>,
    pub kept: u64,
    /// Whether the releases are on the same disk (the upload needs room there too).
    pub same_disk: bool,
}

impl DbFacts {
    pub fn from_reply(r: &Reply) -> DbFacts {
        let revision = match (r.get("db.revision"), r.get("db.error")) {
            (Some(rev), _) if !rev.is_empty() => Ok(rev.to_string()),
            (_, Some(e)) => Err(e.to_string()),
            _ => Err("the server did not say".to_string()),
        };
        let size = match (r.get("db.size"), r.get("db.size_error")) {
            (Some(n), _) => n
                .parse()
                .map_err(|_| format!("the server said '{n}', not a number of bytes")),
            (None, Some(e)) => Err(e.to_string()),
            (None, None) => Err("not asked".to_string()),
        };
        DbFacts {
            revision,
            first: r.get("db.first") == Some("yes"),
            size,
            server: r.get("db.server").unwrap_or("?").to_string(),
            dir: r.get("db.dir").unwrap_or(layout::DB_SNAPSHOTS).to_string(),
            free: r.get("db.free").and_then(|n| n.parse().ok()),
            kept: r.get("db.kept").and_then(|n| n.parse().ok()).unwrap_or(0),
            same_disk: r.get("db.same_disk") != Some("no"),
        }
    }
}

/// Whether a snapshot is taken before a migration: `DEPLOY_DB_SNAPSHOT` unset, empty or `on`;
/// `off` turns it off; anything else is an error.
pub fn enabled(get: impl Fn(&str) -> Option<String>) -> Result<bool> {
    let var = contract::DB_SNAPSHOT_ENV;
    match get(var).as_deref().map(str::trim) {
        None | Some("") | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => bail!("{var} must be on or off, not '{other}'"),
    }
}

/// The job's plan keys for both: `allow_unsafe` (its deploy.log line says so) and `db_snapshot`.
pub fn plan_args(call: &mut Call, allow_unsafe: bool, snapshot: bool) {
    let keys = contract::keys("run");
    for (k, v) in [
        ("allow_unsafe", if allow_unsafe { "yes" } else { "no" }),
        ("db_snapshot", if snapshot { "on" } else { "off" }),
    ] {
        assert!(keys.contains(&k), "the run call takes no '{k}'");
        call.args.push(format!("{k}={v}"));
    }
}

/// Why the snapshot before the migration cannot be taken on `host` (None: it fits). Its bound is
/// the database's size: a custom-format dump is compressed and smaller, but never larger than
/// the data it holds; when the releases share the disk, this upload's room comes on top.
pub fn space_refusal(host: &str, f: &DbFacts, upload_bytes: u64) -> Option<String> {
    let (Ok(size), Some(free)) = (&f.size, f.free) else {
        return None;
    };
    let upload = if f.same_disk { upload_bytes } else { 0 };
    let need = size.saturating_add(upload);
    if free >= need {
        return None;
    }
    let plus = if upload > 0 {
        format!(
            ", plus about {} for this upload on the same disk",
            bytes(upload)
        )
    } else {
        String::new()
    };
    let kept = if f.kept > 0 {
        format!(
            " (the snapshots kept there take {}: each goes with its release, see DEPLOY_KEEP)",
            bytes(f.kept)
        )
    } else {
        String::new()
    };
    Some(format!(
        "no room for the snapshot of the database before the migration on {host}: it needs up to {} under {} (the database's size, pg_database_size: a custom-format dump is smaller, but that is its bound){plus}, and {} are free there: free space on that disk{kept}, or deploy with {}=off (no snapshot: no way back for the data); nothing was changed",
        bytes(*size),
        f.dir,
        bytes(free),
        contract::DB_SNAPSHOT_ENV
    ))
}

/// A snapshot of the database as the probe lists it (`dbsnap=` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The release that was running on the data (the snapshot is pruned with it).
    pub release: String,
    pub revision: String,
    pub size: u64,
    /// When it was taken (Unix seconds, the server's clock).
    pub created: i64,
    /// Its file name without `.dump`.
    pub name: String,
}

impl Dump {
    /// `RELEASE REVISION SIZE CREATED NAME`; None for anything else.
    pub fn parse(line: &str) -> Option<Dump> {
        let mut w = line.split(' ');
        let d = Dump {
            release: w.next()?.to_string(),
            revision: w.next()?.to_string(),
            size: w.next()?.parse().ok()?,
            created: w.next()?.parse().ok()?,
            name: w.next()?.to_string(),
        };
        (w.next().is_none() && crate::deploy::release::is_name(&d.release)).then_some(d)
    }

    pub fn all(reply: &Reply) -> Vec<Dump> {
        reply
            .all("dbsnap")
            .into_iter()
            .filter_map(Dump::parse)
            .collect()
    }

    /// Its file, relative to the deploy root.
    pub fn file(&self) -> String {
        format!("{}/{}{}", layout::DB_SNAPSHOTS, self.name, layout::DB_DUMP)
    }
}

/// The newest snapshot of release `name`'s data.
pub fn of_release<'a>(dumps: &'a [Dump], name: &str) -> Option<&'a Dump> {
    dumps
        .iter()
        .filter(|d| d.release == name)
        .max_by_key(|d| d.created)
}

/// The newest snapshot.
pub fn newest(dumps: &[Dump]) -> Option<&Dump> {
    dumps.iter().max_by_key(|d| (d.created, d.name.clone()))
}

/// A size as people read it: `512 B`, `7.6 MB`, `1.2 GB` (powers of 1024).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(size: u64, free: u64, kept: u64, same_disk: bool) -> DbFacts {
        DbFacts {
            revision: Ok("0002_price_history".into()),
            first: false,
            size: Ok(size),
            server: "10.0.0.2:5432".into(),
            dir: "/opt/ic/shared/db".into(),
            free: Some(free),
            kept,
            same_disk,
        }
    }

    #[test]
    fn the_db_call_reads_back() {
        let f = DbFacts::from_reply(&Reply::parse(
            "db.revision=0002_price_history\ndb.via=api\ndb.size=8123456\ndb.server=10.0.0.2:5432\ndb.dir=/opt/ic/shared/db\ndb.free=1000\ndb.kept=0\ndb.same_disk=yes\n",
        ));
        assert_eq!(f, facts(8_123_456, 1000, 0, true));
        let f = DbFacts::from_reply(&Reply::parse(
            "db.error=cannot use the database innercontext at 10.0.0.2:5432 as innercontext: connection refused\ndb.size_error=no current release to ask\n",
        ));
        assert!(f.revision.unwrap_err().contains("10.0.0.2:5432"));
        assert_eq!(f.size, Err("no current release to ask".into()));
        assert_eq!(f.free, None);
        let f = DbFacts::from_reply(&Reply::parse("db.first=yes\n"));
        assert!(f.first && f.revision.is_err());
        let f = DbFacts::from_reply(&Reply::parse("db.revision=-\n"));
        assert_eq!(f.revision, Ok("-".into()), "a database never migrated");
        assert_eq!(f.size, Err("not asked".into()));
    }

    #[test]
    fn the_snapshot_fits_when_the_database_and_the_upload_do() {
        let mb = 1024 * 1024;
        assert_eq!(
            space_refusal("app", &facts(100 * mb, 400 * mb, 0, true), 150 * mb),
            None
        );
        // Exactly enough is enough.
        assert_eq!(
            space_refusal("app", &facts(100 * mb, 250 * mb, 0, true), 150 * mb),
            None
        );
        let no = space_refusal("app", &facts(100 * mb, 249 * mb, 300 * mb, true), 150 * mb)
            .expect("one byte short");
        assert!(
            no.starts_with("no room for the snapshot of the database before the migration on app: it needs up to 100.0 MB under /opt/ic/shared/db (the database's size, pg_database_size")
                && no.contains("plus about 150.0 MB for this upload on the same disk, and 249.0 MB are free there")
                && no.contains("the snapshots kept there take 300.0 MB")
                && no.contains("DEPLOY_DB_SNAPSHOT=off")
                && no.ends_with("nothing was changed"),
            "{no}"
        );
        // The upload goes elsewhere: only the database counts.
        assert_eq!(
            space_refusal("app", &facts(100 * mb, 120 * mb, 0, false), 150 * mb),
            None
        );
        let no = space_refusal("app", &facts(100 * mb, 99 * mb, 0, false), 150 * mb).unwrap();
        assert!(!no.contains("upload") && !no.contains("kept there"), "{no}");
        // Nothing known: nothing refused here (pg_dump itself stops at a full disk, before
        // the migration).
        let mut unknown = facts(100 * mb, 1, 0, true);
        unknown.size = Err("no current release to ask".into());
        assert_eq!(space_refusal("app", &unknown, 0), None);
    }

    #[test]
    fn snapshots_are_on_unless_turned_off() {
        let with = |v: Option<&str>| enabled(|_| v.map(str::to_string));
        assert!(with(None).unwrap() && with(Some("")).unwrap() && with(Some("on")).unwrap());
        assert!(!with(Some("off")).unwrap());
        let e = with(Some("no")).unwrap_err().to_string();
        assert_eq!(e, "DEPLOY_DB_SNAPSHOT must be on or off, not 'no'");
    }

    #[test]
    fn the_plan_says_both() {
        let mut call = Call::deploy("run", &[("root", "/opt/ic".to_string())]);
        plan_args(&mut call, true, false);
        assert_eq!(
            call.args,
            ["root=/opt/ic", "allow_unsafe=yes", "db_snapshot=off"]
        );
    }

    #[test]
    fn snapshots_read_back_and_belong_to_their_release() {
        let r = Reply::parse(
            "dbsnap=20261128T101530Z 0002_price_history 8123456 1795860990 20261128T101530Z-0002_price_history\n\
             dbsnap=20261128T111530Z 0003_note 9000 1795864590 20261128T111530Z-0003_note\n\
             dbsnap=20261128T101530Z 0001_products 100 1795850000 20261128T101530Z-0001_products\n\
             dbsnap=not-a-release 0001 1 1 x\n\
             dbsnap=20261128T101530Z 0001 many 1 x\n",
        );
        let d = Dump::all(&r);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert_eq!(
            d[0].file(),
            "shared/db/20261128T101530Z-0002_price_history.dump"
        );
        assert_eq!(
            of_release(&d, "20261128T101530Z").map(|d| d.revision.as_str()),
            Some("0002_price_history"),
            "the newest of that release"
        );
        assert_eq!(of_release(&d, "20261128T121530Z"), None);
        assert_eq!(newest(&d).map(|d| d.revision.as_str()), Some("0003_note"));
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8_123_456), "7.7 MB");
        assert_eq!(bytes(3 << 30), "3.0 GB");
    }

    /// The server's side of the names: `snapshot_name` takes only a release and a plain
    /// revision (both end up in a path), `prune_snapshots` removes exactly the pruned release's
    /// files, and `list_snapshots` lists the recorded ones whose dump is there.
    #[test]
    fn the_server_names_lists_and_prunes_snapshots_by_release() {
        let test = r#"set -euo pipefail
            r=$PWD/root; d=$r/shared/db
            for n in "20261128T101530Z 0002_price_history" "20261128T101530Z 0001_products" "20261128T111530Z 0003_note"; do
                set -- $n; name=$(snapshot_name "$1" "$2"); : >"$d/$name.dump"
                printf 'release=%s\nrevision=%s\nsize=7\ncreated_epoch=1795860990\n' "$1" "$2" >"$d/$name.record"
            done
            : >"$d/.20261128T111530Z-0003_note.dump.tmp.77"
            printf 'release=20261128T121530Z\nrevision=0004_x\n' >"$d/20261128T121530Z-0004_x.record"
            snapshot_name 20261128T101530Z '0002; rm -rf /' || echo "refused a revision that is not a word"
            snapshot_name ../etc 0002 || echo "refused a release that is not a release"
            list_snapshots "$r"
            echo "pruned $(prune_snapshots "$r" 20261128T101530Z)"
            echo "pruned $(prune_snapshots "$r" 20261128T131530Z)"
            ls -A "$d"
            "#;
        let out = contract::run_with_lib("dbsnap-sh", &["root/shared/db"], test);
        assert_eq!(
            out,
            "refused a revision that is not a word\n\
             refused a release that is not a release\n\
             dbsnap=20261128T101530Z 0001_products 7 1795860990 20261128T101530Z-0001_products\n\
             dbsnap=20261128T101530Z 0002_price_history 7 1795860990 20261128T101530Z-0002_price_history\n\
             dbsnap=20261128T111530Z 0003_note 7 1795860990 20261128T111530Z-0003_note\n\
             pruned 2\n\
             pruned 0\n\
             .20261128T111530Z-0003_note.dump.tmp.77\n\
             20261128T111530Z-0003_note.dump\n\
             20261128T111530Z-0003_note.record\n\
             20261128T121530Z-0004_x.record\n"
        );
    }
}
