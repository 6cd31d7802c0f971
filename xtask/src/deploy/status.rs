//! `cargo xtask deploy status [--follow]`: current (and exactly what is wrong with it), the
//! units, the lock (live or stale), the disk, the database revision (or why it cannot be
//! read), the newest snapshot of the database, maintenance mode, and the last deploy job; `--follow` re-attaches to the running job's events.

use anyhow::Result;

use crate::config::Config;
use crate::contract::{EventKind, StepStatus};
use crate::deploy::event::Event;
use crate::deploy::job;
use crate::deploy::lock::LockInfo;
use crate::deploy::release;
use crate::deploy::report::{self, Printer};
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::{LastJob, Recorded};
use crate::show;

pub fn run(cfg: &Config, follow: bool) -> Result<()> {
    if cfg.hosts.len() > 1 {
        let reads = server::probe_each(
            cfg,
            Look {
                status: true,
                sizes: false,
            },
        );
        for (host, snap) in &reads.ok {
            show!("== {}", snap.host);
            print(&host.dest, &cfg.root, snap);
        }
        for line in super::list::matrix(&reads.ok)
            .into_iter()
            .filter(|l| l.starts_with("DRIFT") || l.starts_with("ROLES"))
        {
            show!("{line}");
        }
        let maintenance: Vec<(String, bool)> = reads
            .ok
            .iter()
            .map(|(_, s)| (s.host.clone(), s.maintenance.on))
            .collect();
        if let Some(line) = super::maintenance::disagreement(&maintenance) {
            show!("{line}");
        }
        if follow {
            show!("(--follow follows one host: set DEPLOY_SERVER to it)");
        }
        return reads.finish();
    }
    let session = server::connect(cfg)?;
    let snap = server::probe(
        &session,
        cfg,
        Look {
            status: true,
            sizes: false,
        },
    )?;
    print(&cfg.server, &cfg.root, &snap);
    if let Err(e) = super::drift::roles(&[(cfg.hosts[0].clone(), snap.clone())]) {
        show!("ROLES: {e}");
    }
    if follow {
        follow_job(cfg, &session, &snap)?;
    }
    Ok(())
}

/// One host's state; `dest`: how DEPLOY_SERVER reaches it; `root`: DEPLOY_ROOT.
fn print(dest: &str, root: &str, snap: &crate::deploy::snapshot::Snapshot) {
    show!("server:   {} ({dest})", snap.host);
    let file = crate::contract::ROLE_FILE;
    match &snap.role {
        Recorded::Role(r) => show!("role:     {} (recorded in {file})", r.name()),
        Recorded::Missing => {
            show!("role:     NOT RECORDED (no {file}): run cargo xtask setup-server")
        }
        Recorded::Invalid(why) => show!("role:     UNUSABLE ({why}): run cargo xtask setup-server"),
    }
    show!("current:  {}", current_line(snap));
    for u in &snap.units {
        show!(
            "unit:     {:<30} {:<10} restarts: {:<4} {}",
            u.name,
            u.active,
            u.restarts,
            u.enabled
        );
    }
    match &snap.lock {
        Some(l) => show!("lock:     {}", l.describe(snap.now)),
        None => show!("lock:     free"),
    }
    show!("maintenance: {}", snap.maintenance.describe());
    show!("disk:     {}", snap.disk.as_deref().unwrap_or("?"));
    match &snap.db {
        Ok(rev) => show!("database: alembic revision {rev}"),
        Err(why) => show!("database: revision unreadable: {why}"),
    }
    if let Some(d) = crate::deploy::dbsnap::newest(&snap.dumps) {
        show!(
            "snapshot: {}/{} ({}, revision {}, taken {} ago; {} snapshot(s) kept)",
            root,
            d.file(),
            crate::deploy::dbsnap::bytes(d.size),
            d.revision,
            release::age(snap.now - d.created),
            snap.dumps.len()
        );
    }
    if let Some(j) = &snap.last_job {
        show!("last job: {}", last_job(j, snap.lock.as_ref(), root));
        let shown = |e: &&Event| e.kind != EventKind::Journal || crate::ui::journal_shown();
        for l in j.events_tail.iter().filter(shown).filter_map(job_line) {
            show!("          | {l}");
        }
    }
}

/// Current as `status` shows it: the release, its state, commit and age; and, when the boot
/// check put it there (and nothing was logged since), that and why.
fn current_line(snap: &crate::deploy::snapshot::Snapshot) -> String {
    let mut line = match snap
        .current
        .name()
        .and_then(|c| snap.releases.iter().find(|r| r.name == c))
    {
        Some(r) => format!(
            "{} ({}, commit {}, deployed {} ago)",
            r.name,
            release::state_name(r.state),
            r.commit,
            release::parse_name(&r.name)
                .map(|t| release::age(snap.now - t.unix_timestamp()))
                .unwrap_or_default()
        ),
        None => snap.current.describe(),
    };
    if let Some(e) = &snap.restored {
        line.push_str(&format!(", restored at boot at {}", e.when));
        if e.get("reason") != "-" {
            line.push_str(&format!(" ({})", e.get("reason")));
        }
    }
    line
}

fn follow_job(
    cfg: &Config,
    session: &crate::ssh::Session,
    snap: &crate::deploy::snapshot::Snapshot,
) -> Result<()> {
    {
        let Some(j) = &snap.last_job else {
            show!("no deploy job to follow on {}", snap.host);
            return Ok(());
        };
        show!(
            "following job {} on {} (Ctrl-C stops watching; the job goes on)",
            j.token,
            snap.host
        );
        let mut printer = Printer::new(false);
        let outcome = job::observe(session, &cfg.root, &j.token, 0, &mut printer, &snap.host)?;
        printer.close_line();
        if let Some(o) = outcome {
            show!(
                "{}",
                report::final_line(&format!("job {}", j.token), &snap.host, &o)
            );
        }
    }
    Ok(())
}

/// The last job as `status` shows it: its result, as the server recorded it or as it waits in
/// the lock to be recorded; or, without one, whether its job runs or died (by its lock).
fn last_job(j: &LastJob, lock: Option<&LockInfo>, root: &str) -> String {
    let reason = if j.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", j.reason)
    };
    let phase = |l: &LockInfo| {
        if l.phase.is_empty() {
            "?".to_string()
        } else {
            l.phase.clone()
        }
    };
    match (&j.result, &j.unrecorded, lock.filter(|l| l.token == j.token)) {
        (Some(r), Some(why), _) => format!(
            "{} {r} in {}s{reason}; NOT RECORDED: the server could not write it ({why}): free space under {root}; the next deploy or rollback records it",
            j.token, j.duration
        ),
        (Some(r), None, _) => format!("{} {r} in {}s{reason}", j.token, j.duration),
        (None, _, Some(l)) if l.alive != Some(false) => {
            format!("{} RUNNING ({})", j.token, phase(l))
        }
        (None, _, Some(l)) => format!(
            "{} DIED at {} ({}no process holds its lock): the next deploy or rollback takes the lock over and records it as interrupted",
            j.token,
            phase(l),
            if l.rebooted {
                "the server rebooted since it started: "
            } else {
                ""
            }
        ),
        (None, _, None) => format!(
            "{} ended without a result and holds no lock: see {root}/{}/{} on the server",
            j.token,
            crate::contract::layout::JOBS,
            j.token
        ),
    }
}

/// A job event as `status` shows it, or None for the ones that only mark time (step starts,
/// phases).
fn job_line(e: &Event) -> Option<String> {
    let (name, secs) = (e.field(0), e.field(2));
    match e.step() {
        Some((_, StepStatus::Ok)) => Some(format!("{name} ok ({secs}s)")),
        Some((_, StepStatus::Failed)) => Some(format!(
            "{name} FAILED ({secs}s): {}",
            e.fields.get(3..).unwrap_or_default().join(" ")
        )),
        _ => match e.kind {
            EventKind::Step | EventKind::Phase | EventKind::Started | EventKind::Note => None,
            kind => Some(format!("{}: {}", kind.name(), e.fields.join(" ").trim())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_job_says_what_the_server_knows() {
        use crate::remote::Reply;
        let snap = |text: &str| crate::deploy::snapshot::Snapshot::from_reply(&Reply::parse(text));
        let lock = "locked=yes\nlock.token=1-2\nlock.release=20261128T101700Z\n";
        let line = |text: &str| {
            let s = snap(text);
            last_job(s.last_job.as_ref().unwrap(), s.lock.as_ref(), "/opt/ic")
        };
        assert_eq!(
            line(&format!(
                "job.token=1-2\n{lock}lock.alive=yes\nlock.phase=health\n"
            )),
            "1-2 RUNNING (health)"
        );
        let died = line(&format!(
            "job.token=1-2\n{lock}lock.alive=no\nlock.phase=prepare\n"
        ));
        assert!(
            died.starts_with("1-2 DIED at prepare (no process"),
            "{died}"
        );
        let rebooted = line(&format!(
            "job.token=1-2\n{lock}lock.alive=no\nlock.rebooted=yes\nlock.phase=prepare\n"
        ));
        assert!(
            rebooted.starts_with(
                "1-2 DIED at prepare (the server rebooted since it started: no process holds its lock)"
            ),
            "{rebooted}"
        );
        let pending = line(&format!(
            "job.token=1-2\njob.result=success\njob.duration=7.1\njob.unrecorded=No space left on device\n{lock}lock.alive=no\nlock.unrecorded=success\n"
        ));
        assert!(
            pending.starts_with("1-2 success in 7.1s; NOT RECORDED: the server could not write it (No space left on device)")
                && !pending.contains("RUNNING"),
            "{pending}"
        );
        assert_eq!(
            line(
                "job.token=1-2\njob.result=rolled-back\njob.duration=3.0\njob.reason=not healthy\n"
            ),
            "1-2 rolled-back in 3.0s: not healthy"
        );
        assert!(line("job.token=1-2\n").contains("without a result"));
    }

    #[test]
    fn current_says_when_the_boot_check_put_it_back() {
        use crate::remote::Reply;
        let snap = |extra: &str| {
            crate::deploy::snapshot::Snapshot::from_reply(&Reply::parse(&format!(
                "now=1795860990\ncurrent.status=ok\ncurrent.link=releases/20261128T101530Z\ncurrent=20261128T101530Z\nrelease=20261128T101530Z succeeded abc 0002\n{extra}"
            )))
        };
        let plain = current_line(&snap(""));
        assert!(
            plain.starts_with("20261128T101530Z (succeeded, commit abc, deployed ")
                && !plain.contains("boot"),
            "{plain}"
        );
        let restored = current_line(&snap("current.restored=2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current was 20261128T101600Z, not a succeeded intact release, at boot\n"));
        assert!(
            restored.ends_with(", restored at boot at 2026-11-28T10:20:00Z (current was 20261128T101600Z, not a succeeded intact release, at boot)"),
            "{restored}"
        );
    }

    #[test]
    fn job_lines_read_well() {
        // What the probe says of the last job: its event lines, as the stream has them.
        let snap = crate::deploy::snapshot::Snapshot::from_reply(&crate::remote::Reply::parse(
            "job.token=1-2\n\
             job.event=1795860930123\tstep\thealth\tok\t1.5\n\
             job.event=1795860930124\tstep\thealth\tfailed\t8.0\tnot healthy after 8s: unit innercontext is failed\n\
             job.event=1795860930125\tstep\trecord\tstart\trecord the result\n\
             job.event=1795860930126\tphase\tdone\n\
             job.event=1795860930127\tresult\tsuccess\t\t6.7\t0002\treleases/x\n",
        ));
        let lines: Vec<Option<String>> = snap
            .last_job
            .unwrap()
            .events_tail
            .iter()
            .map(job_line)
            .collect();
        assert_eq!(
            lines,
            [
                Some("health ok (1.5s)".to_string()),
                Some(
                    "health FAILED (8.0s): not healthy after 8s: unit innercontext is failed"
                        .to_string()
                ),
                None,
                None,
                Some("result: success  6.7 0002 releases/x".to_string()),
            ]
        );
    }
}
