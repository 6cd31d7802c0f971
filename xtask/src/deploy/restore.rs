//! `cargo xtask db snapshots` and `cargo xtask db restore SNAPSHOT [--yes] [--dry-run]`: the
//! database's snapshots as the probe lists them, and putting one back.
//!
//! A restore is a job of its own (`mode=restore`, scripts/deploy-job.sh `job_restore`): under the
//! deploy lock it verifies the snapshot again, stops the units and their sockets, replaces the
//! database in one transaction, switches current to the release that ran on that data, starts
//! and checks health, and logs `result=restored`. This side refuses what the probe already shows
//! (no such snapshot, its release no longer kept), says what will be lost, asks, and follows.
//! In a fleet every host's job holds its lock and stops its units while the primary loads; the
//! client orders them ([`crate::deploy::restore_order`], pure) with the fleet's messages
//! (`begin`, `go`, an abort).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host, HostRole};
use crate::contract::{JobResult, Message};
use crate::deploy::dbsnap::{self, Dump};
use crate::deploy::fleet::{self, Member, Output};
use crate::deploy::job::{Wait, RECONNECT_FOR};
use crate::deploy::local;
use crate::deploy::plan::{self, Asker, JobPlan, Mode};
use crate::deploy::release::{self, Release, State};
use crate::deploy::report::{self, FleetPrinter, Printer};
use crate::deploy::restore_order::{Order, Seen};
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::deploy::unlock;
use crate::remote::Call;
use crate::{interrupt, say, say_event, say_part, show, ui};

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
    let sessions = server::connect_all(cfg)?;
    let snaps = server::probe_all(&sessions, cfg, Look::default())?;
    let hosts: Vec<(Host, Snapshot)> = cfg.hosts.iter().cloned().zip(snaps).collect();
    let snap = &hosts[primary_of(&hosts)?].1;
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

/// The index of the primary (the host whose recorded role is primary: it holds the snapshots
/// and migrates); every host's role must agree with DEPLOY_SERVER.
fn primary_of(hosts: &[(Host, Snapshot)]) -> Result<usize> {
    let roles = crate::deploy::drift::roles(hosts)?;
    Ok(roles
        .iter()
        .position(|r| *r == HostRole::Primary)
        .unwrap_or(0))
}

fn seen(m: &Member) -> Seen {
    Seen {
        name: m.name().to_string(),
        phase: m.job.phase,
        ended: m
            .job
            .outcome
            .as_ref()
            .map(|o| (o.success(), format!("{}: {}", o.result, o.reason))),
    }
}

pub fn restore(cfg: &Config, name: &str, yes: bool, dry_run: bool) -> Result<()> {
    validate_name(name)?;
    let started = Instant::now();
    let sessions = server::connect_all(cfg)?;
    let snaps = server::probe_all(&sessions, cfg, Look::default())?;
    let hosts: Vec<(Host, Snapshot)> = cfg.hosts.iter().cloned().zip(snaps).collect();
    let p = primary_of(&hosts)?;
    let roles = crate::deploy::drift::roles(&hosts)?;
    let fleet = hosts.len() > 1;
    if roles[p] != HostRole::Primary {
        bail!(
            "{} is not the primary (its recorded role is {}): the primary holds the snapshots and the database it restores; put it in DEPLOY_SERVER (nothing was changed)",
            hosts[p].1.host,
            roles[p].name()
        );
    }
    let snap = hosts[p].1.clone();
    let Some(d) = snap.dumps.iter().find(|d| d.name == name).cloned() else {
        bail!(
            "snapshot {name} does not exist on {}: 'cargo xtask db snapshots' lists them (nothing was changed)",
            snap.host
        );
    };
    for (_, s) in &hosts {
        if let Err(what) = kept(&d, &s.releases) {
            bail!(
                "snapshot {name} belongs to release {}, and on {} that {what}: a restore runs the data with the release that ran on it, on every host (nothing was changed)",
                d.release,
                s.host
            );
        }
    }
    for l in what_is_lost(&d, &snap) {
        show!("{l}");
    }
    if fleet {
        show!(
            "Every host ({}) stops its units while the primary {} replaces the database, then switches to {}.",
            hosts.iter().map(|(_, s)| s.host.as_str()).collect::<Vec<_>>().join(", "),
            snap.host,
            d.release
        );
    }
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
    let calls: Vec<Call> = hosts
        .iter()
        .zip(&roles)
        .map(|((_, s), role)| {
            let units = plan::units_of(*role);
            let p = JobPlan {
                mode: Mode::Rollback {
                    target: d.release.clone(),
                    force: false,
                },
                expect_current: s.current.link(),
                restart: units.iter().map(|u| u.name).collect(),
                check: units.iter().map(|u| u.name).collect(),
                probes: units.iter().filter_map(|u| u.probe).collect(),
                prune: Vec::new(),
                need_mb: 1,
                role: *role,
                wait_for_verdict: false,
                begin: !fleet,
                clean: false,
                maintenance: false,
            };
            restore_call(&p, cfg, &asker, name)
        })
        .collect();
    if dry_run {
        for ((h, _), call) in hosts.iter().zip(&calls) {
            show!(
                "Plan for 'db restore {name}' on {}, nothing will be changed:",
                h.dest
            );
            show!("  server job (takes the lock; on the primary verifies the snapshot; stops the units and sockets; the primary loads it in one transaction; switches current to {}, starts, checks health):", d.release);
            show!("      {}", call.render());
        }
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
        if interrupt::requested() {
            say!("");
        }
        server::stop_before_the_lock(cfg)?;
        if answer.as_deref().map(str::trim) != Some(name) {
            say!("");
            bail!("not restored: the answer was not the snapshot's name; nothing was changed");
        }
    }
    server::stop_before_the_lock(cfg)?;
    let mut out: Box<dyn Output> = if fleet {
        Box::new(FleetPrinter::new(
            hosts.iter().map(|(_, s)| s.host.clone()).collect(),
        ))
    } else {
        Box::new(Printer::new(false))
    };
    let starts = hosts
        .into_iter()
        .zip(sessions)
        .zip(calls)
        .map(|(((h, s), session), call)| (h, s, session, call))
        .collect();
    let mut members = fleet::start_all(starts, out.as_mut(), cfg.ssh_config.as_deref())?;
    let what = format!("restore of {name}");
    follow(&mut members, p, out.as_mut(), cfg, &what)?;
    out.close();
    if !fleet {
        let (line, ok) = report::last_words(&what, &mut members[0])?;
        if ok {
            say!("{line} ({} in all)", ui::secs(started.elapsed()));
            return Ok(());
        }
        return Err(anyhow!("{line}"));
    }
    report::fleet_summary(&what, report::summary_rows(&mut members), started.elapsed())
}

/// Follow every job to its end; in a fleet, send what the [`Order`] decides (a message that
/// does not go through is sent again once its host is re-attached: the server keeps each one
/// as a file, so twice is once). A first Ctrl-C before the primary loads stops every host
/// (nothing was loaded; the hosts that stopped their units start them again); after that, or
/// on one host, the restore runs to its end and a second Ctrl-C stops watching.
fn follow(
    members: &mut [Member],
    p: usize,
    out: &mut dyn Output,
    cfg: &Config,
    what: &str,
) -> Result<()> {
    let fleet = members.len() > 1;
    let mut order = Order::default();
    let mut pending: Vec<(usize, Result<Message, String>)> = Vec::new();
    let mut seen_signals = 0;
    loop {
        if fleet {
            let views: Vec<Seen> = members.iter().map(seen).collect();
            pending.extend(order.next(p, &views));
        }
        pending.retain(|(i, msg)| {
            let job = &mut members[*i].job;
            if job.over() {
                return false;
            }
            if !job.can_send() {
                return true;
            }
            let sent = match msg {
                Ok(m) => job.send(*m),
                Err(why) => job.abort(JobResult::Failed, why),
            };
            sent.is_err()
        });
        for m in members.iter_mut() {
            if m.job.over() {
                continue;
            }
            if m.job.wait(out, Duration::from_millis(20), &|_| false) == Wait::Lost {
                out.close();
                let name = m.name().to_string();
                say_event!(
                    "the connection to {name} was lost: reconnecting (for up to {}s; Ctrl-C stops trying)",
                    RECONNECT_FOR.as_secs()
                );
                let dest = m.host.dest.clone();
                m.job
                    .reattach(&dest, cfg.ssh_config.as_deref())
                    .map_err(|e| {
                        anyhow!(
                            "{}",
                            report::unreachable_line(what, &name, &format!("{e:#}"))
                        )
                    })?;
                say!("    reconnected to {name}; following its job again");
            }
        }
        let n = interrupt::count();
        if n != seen_signals {
            seen_signals = n;
            out.close();
            if n >= 2 {
                for m in members.iter_mut() {
                    m.job.detach();
                }
                say!("stopped watching: the restore goes on by itself; 'cargo xtask deploy status --follow' shows how it ends");
                bail!("interrupted by {} (twice)", interrupt::describe());
            }
            if fleet && !order.primary_go {
                let why = format!("{} received", interrupt::describe());
                order.others_told = true;
                pending.clear();
                for (i, m) in members.iter_mut().enumerate() {
                    if !m.job.over() && m.job.abort(JobResult::Interrupted, &why).is_err() {
                        pending.push((i, Err(why.clone())));
                    }
                }
            } else {
                say_event!("{} received: the restore runs on the server to its end; Ctrl-C again to stop watching", interrupt::describe());
            }
        }
        if members.iter().all(|m| m.job.over()) {
            return Ok(());
        }
    }
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
            clean: false,
            maintenance: false,
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
