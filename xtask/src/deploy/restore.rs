//! `cargo xtask db snapshots` and `cargo xtask db restore SNAPSHOT [--yes] [--dry-run]`: the
//! database's snapshots as the probe lists them, and putting one back.
//!
//! A restore is a job of its own (`mode=restore`, scripts/deploy-job.sh `job_restore`): under the
//! deploy lock it verifies the snapshot again, stops the units and their sockets, replaces the
//! database in one transaction, switches current to the release that ran on that data, starts
//! and checks health, and logs `result=restored`. This side refuses what the probe already shows
//! (no such snapshot, its release no longer kept), says what will be lost, asks, and follows.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host};
use crate::contract::JobResult;
use crate::deploy::dbsnap::{self, Dump};
use crate::deploy::fleet::{self, Output};
use crate::deploy::local;
use crate::deploy::plan::{self, Asker, JobPlan, Mode};
use crate::deploy::release::{self, Release, State};
use crate::deploy::report::{self, Printer};
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::deploy::unlock;
use crate::remote::Call;
use crate::{interrupt, say, say_part, show, ui};

/// A snapshot's name: `RELEASE-REVISION` the way the job names them (a release name, then a
/// revision of letters, digits and `_`, at most 64): it reaches a remote shell.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.split_once('-').is_some_and(|(rel, rev)| {
        release::is_name(rel)
            && !rev.is_empty()
            && rev.len() <= 64
            && rev.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if !ok {
        bail!(
            "'{}' is not a snapshot name: use one from 'cargo xtask db snapshots' (like 20261128T101530Z-0002_price_history)",
            name.escape_debug()
        );
    }
    Ok(())
}

/// One row of `db snapshots` (pure).
pub fn row(d: &Dump, releases: &[Release], now: i64) -> String {
    format!(
        "{:<52} {:<16} {:<24} {:>9} {:>9}  {}",
        d.name,
        d.release,
        d.revision,
        dbsnap::bytes(d.size),
        release::age(now - d.created),
        kept(d, releases).map_or_else(|e| e, |()| "kept".to_string())
    )
}

/// Whether the release that ran on the snapshot's data is still kept, and succeeded (a restore
/// switches current to it); Err says what it is instead.
pub fn kept(d: &Dump, releases: &[Release]) -> Result<(), String> {
    match releases.iter().find(|r| r.name == d.release) {
        Some(r) if r.state == Some(State::Succeeded) => Ok(()),
        Some(r) => Err(format!("release {}", release::state_name(r.state))),
        None => Err("release pruned".to_string()),
    }
}

/// The releases made after the snapshot's release, oldest first: what was deployed since.
pub fn deployed_since<'a>(d: &Dump, releases: &'a [Release]) -> Vec<&'a Release> {
    let mut since: Vec<&Release> = releases.iter().filter(|r| r.name > d.release).collect();
    since.sort_by(|a, b| a.name.cmp(&b.name));
    since
}

/// What a restore of `d` loses, as lines (pure): its age, the releases deployed since, current.
pub fn what_is_lost(d: &Dump, snap: &Snapshot) -> Vec<String> {
    let since = deployed_since(d, &snap.releases);
    let names: Vec<String> = since
        .iter()
        .map(|r| format!("{} ({})", r.name, release::state_name(r.state)))
        .collect();
    vec![
        format!(
            "Restoring {} on {} puts the database back to {} ago (revision {}): every change to the data since is lost.",
            d.name,
            snap.host,
            release::age(snap.now - d.created),
            d.revision
        ),
        if names.is_empty() {
            "Releases deployed since: none.".to_string()
        } else {
            format!("Releases deployed since: {}.", names.join(", "))
        },
        if snap.current.name() == Some(d.release.as_str()) {
            format!(
                "current stays on {}; the units and their sockets are stopped while the database is replaced.",
                d.release
            )
        } else {
            format!(
                "current goes from {} to {}; the units and their sockets are stopped while the database is replaced.",
                snap.current.describe(),
                d.release
            )
        },
    ]
}

/// The job's `run` call: the plan of a rollback to the snapshot's release (every unit, the
/// target checked under the lock), in mode `restore`, with the snapshot's name.
pub fn restore_call(p: &JobPlan, cfg: &Config, who: &Asker, snapshot: &str) -> Call {
    let mut call = p.run_call(cfg, who);
    for a in call.args.iter_mut() {
        if a.starts_with("mode=") {
            *a = "mode=restore".to_string();
        } else if a.starts_with("command=") {
            *a = format!("command=db restore {snapshot}");
        }
    }
    call.args.push(format!("snapshot={snapshot}"));
    call
}

pub fn snapshots(cfg: &Config) -> Result<()> {
    let (_, snap) = primary(cfg)?;
    let mut dumps = snap.dumps.clone();
    dumps.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
    if dumps.is_empty() {
        show!(
            "no snapshots of the database on {} (the job takes one before each migration)",
            snap.host
        );
        return Ok(());
    }
    show!(
        "{:<52} {:<16} {:<24} {:>9} {:>9}  RELEASE",
        "SNAPSHOT",
        "OF RELEASE",
        "REVISION",
        "SIZE",
        "AGE"
    );
    for d in &dumps {
        show!("{}", row(d, &snap.releases, snap.now));
    }
    Ok(())
}

/// The primary: the one host (a fleet's restore is not built yet).
fn primary(cfg: &Config) -> Result<(Host, Snapshot)> {
    if cfg.hosts.len() > 1 {
        bail!(
            "db snapshots and db restore work on one host for now, and DEPLOY_SERVER names {}: set DEPLOY_SERVER to the primary alone (nothing was changed)",
            cfg.hosts.len()
        );
    }
    let session = server::connect(cfg)?;
    let snap = server::probe(&session, cfg, Look::default())?;
    Ok((cfg.hosts[0].clone(), snap))
}

pub fn restore(cfg: &Config, name: &str, yes: bool, dry_run: bool) -> Result<()> {
    validate_name(name)?;
    let started = Instant::now();
    if cfg.hosts.len() > 1 {
        primary(cfg)?;
    }
    let session = server::connect(cfg)?;
    let snap = server::probe(&session, cfg, Look::default())?;
    let host = cfg.hosts[0].clone();
    let Some(d) = snap.dumps.iter().find(|d| d.name == name).cloned() else {
        bail!(
            "snapshot {name} does not exist on {}: 'cargo xtask db snapshots' lists them (nothing was changed)",
            snap.host
        );
    };
    if let Err(what) = kept(&d, &snap.releases) {
        bail!(
            "snapshot {name} on {} belongs to release {}, and that {what}: a restore runs the data with the release that ran on it (nothing was changed)",
            snap.host,
            d.release
        );
    }
    for l in what_is_lost(&d, &snap) {
        show!("{l}");
    }
    let role = crate::deploy::drift::roles(&[(host.clone(), snap.clone())])?[0];
    let units = plan::units_of(role);
    let p = JobPlan {
        mode: Mode::Rollback {
            target: d.release.clone(),
            force: false,
        },
        expect_current: snap.current.link(),
        restart: units.iter().map(|u| u.name).collect(),
        check: units.iter().map(|u| u.name).collect(),
        probes: units.iter().filter_map(|u| u.probe).collect(),
        prune: Vec::new(),
        need_mb: 1,
        role,
        wait_for_verdict: false,
        begin: true,
    };
    let (user, me) = local::deployer();
    let token = plan::token();
    let deployer = format!("{user}@{me}");
    let commit = snap
        .releases
        .iter()
        .find(|r| r.name == d.release)
        .map(|r| r.commit.clone())
        .unwrap_or_else(|| "-".into());
    let asker = Asker {
        token: &token,
        deployer: &deployer,
        host: &me,
        commit: &commit,
        dirty: false,
    };
    let call = restore_call(&p, cfg, &asker, name);
    if dry_run {
        show!(
            "Plan for 'db restore {name}' on {}, nothing will be changed:",
            host.dest
        );
        show!("  server job (takes the lock, verifies the snapshot, stops the units and sockets, loads it in one transaction, switches current to {}, starts, checks health):", d.release);
        show!("      {}", call.render());
        return Ok(());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not restoring without confirmation (no terminal to ask on): rerun with --yes once you are sure; nothing was changed");
        }
        say_part!("Type the snapshot's name ({name}) to restore it: ");
        let answer = match unlock::read_answer(std::io::stdin(), interrupt::requested) {
            Ok(a) => a.map_err(|e| anyhow!("reading the answer: {e}"))?,
            Err(_) => None,
        };
        if answer.as_deref().map(str::trim) != Some(name) {
            say!("");
            bail!("not restored: the answer was not the snapshot's name; nothing was changed");
        }
    }
    server::stop_before_the_lock(cfg)?;
    let mut out: Box<dyn Output> = Box::new(Printer::new(false));
    let mut members = fleet::start_all(
        vec![(host, snap.clone(), session, call)],
        out.as_mut(),
        cfg.ssh_config.as_deref(),
    )?;
    fleet::follow_to_end(&mut members, out.as_mut(), cfg.ssh_config.as_deref());
    out.close();
    let what = format!("restore of {name}");
    let (line, _) = report::last_words(&what, &mut members[0])?;
    let restored = members[0]
        .job
        .outcome
        .as_ref()
        .is_some_and(|o| o.kind() == Some(JobResult::Restored));
    if restored {
        say!("{line} ({} in all)", ui::secs(started.elapsed()));
        return Ok(());
    }
    Err(anyhow!("{line}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Reply;

    fn rel(name: &str, state: State) -> Release {
        Release {
            name: name.into(),
            state: Some(state),
            commit: "abc".into(),
            revision: "-".into(),
        }
    }

    fn dump() -> Dump {
        Dump::parse("20261128T101530Z 0002_price_history 8123456 1795860990 20261128T101530Z-0002_price_history").unwrap()
    }

    #[test]
    fn names_are_release_dash_revision() {
        assert!(validate_name("20261128T101530Z-0002_price_history").is_ok());
        for bad in [
            "",
            "20261128T101530Z",
            "20261128T101530Z-",
            "20261128T101530Z-0002;rm -rf /",
            "20261128T101530Z-0002 x",
            "../etc-0002",
            "20261328T101530Z-0002",
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not a snapshot name"), "{bad}: {e}");
        }
        assert!(validate_name(&format!("20261128T101530Z-{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn a_snapshot_is_restorable_only_with_its_release_kept_and_succeeded() {
        let d = dump();
        assert_eq!(
            kept(&d, &[rel("20261128T101530Z", State::Succeeded)]),
            Ok(())
        );
        assert_eq!(
            kept(&d, &[rel("20261128T101530Z", State::Failed)]),
            Err("release failed".into())
        );
        assert_eq!(kept(&d, &[]), Err("release pruned".into()));
    }

    #[test]
    fn what_is_lost_names_the_age_and_the_releases_since() {
        let snap = Snapshot::from_reply(&Reply::parse(
            "host=app\nnow=1795864590\ncurrent.status=ok\ncurrent.link=releases/20261128T111530Z\ncurrent=20261128T111530Z\n\
             release=20261128T101530Z succeeded abc 0002\nrelease=20261128T111530Z succeeded def 0003\n\
             release=20261128T091530Z succeeded 012 0001\n",
        ));
        let lines = what_is_lost(&dump(), &snap);
        assert!(
            lines[0].starts_with("Restoring 20261128T101530Z-0002_price_history on app puts the database back to 1h00m ago (revision 0002_price_history)"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "Releases deployed since: 20261128T111530Z (succeeded)."
        );
        assert!(
            lines[2].starts_with("current goes from 20261128T111530Z")
                && lines[2].contains("to 20261128T101530Z;"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_call_is_a_restore_of_the_snapshot() {
        let cfg = Config::from_lookup(|_| None).unwrap();
        let p = JobPlan {
            mode: Mode::Rollback {
                target: "20261128T101530Z".into(),
                force: false,
            },
            expect_current: "releases/20261128T111530Z".into(),
            restart: vec!["innercontext"],
            check: vec!["innercontext"],
            probes: vec![],
            prune: vec![],
            need_mb: 1,
            role: crate::config::HostRole::Primary,
            wait_for_verdict: false,
            begin: true,
        };
        let who = Asker {
            token: "t1",
            deployer: "a@b",
            host: "b",
            commit: "abc",
            dirty: false,
        };
        let call = restore_call(&p, &cfg, &who, "20261128T101530Z-0002_price_history");
        let args = call.args.join(" ");
        assert!(
            args.contains("mode=restore")
                && args.contains("target=20261128T101530Z")
                && args.contains("command=db restore 20261128T101530Z-0002_price_history")
                && args.ends_with("snapshot=20261128T101530Z-0002_price_history"),
            "{args}"
        );
        let keys = crate::contract::keys("run");
        for a in &call.args {
            let k = a.split_once('=').unwrap().0;
            assert!(keys.contains(&k), "{k}");
        }
    }
}
