//! `cargo xtask deploy status [--follow]`: current (and exactly what is wrong with it), the
//! units, the lock (live or stale), the disk, the database revision (or why it cannot be
//! read), and the last deploy job; `--follow` re-attaches to the running job's events.

use anyhow::Result;

use crate::config::Config;
use crate::deploy::job;
use crate::deploy::report::{self, Printer};
use crate::{release, show};

pub fn run(cfg: &Config, follow: bool) -> Result<()> {
    let session = super::connect(cfg)?;
    let snap = super::probe(&session, cfg, true)?;
    show!("server:   {} ({})", snap.host, cfg.server);
    match snap
        .current
        .name()
        .and_then(|c| snap.releases.iter().find(|r| r.name == c))
    {
        Some(r) => show!(
            "current:  {} ({}, commit {}, deployed {} ago)",
            r.name,
            r.state.name(),
            r.commit,
            release::parse_name(&r.name)
                .map(|t| release::age(snap.now - t.unix_timestamp()))
                .unwrap_or_default()
        ),
        None => show!("current:  {}", snap.current.describe()),
    }
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
    show!("disk:     {}", snap.disk.as_deref().unwrap_or("?"));
    match &snap.db {
        Ok(rev) => show!("database: alembic revision {rev}"),
        Err(why) => show!("database: revision unreadable: {why}"),
    }
    if let Some(j) = &snap.last_job {
        match &j.result {
            Some(r) => show!(
                "last job: {} {r} in {}s{}",
                j.token,
                j.duration,
                if j.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", j.reason)
                }
            ),
            None => show!(
                "last job: {} RUNNING ({})",
                j.token,
                snap.lock
                    .as_ref()
                    .map(|l| l.phase.as_str())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("?")
            ),
        }
        for l in &j.lines {
            show!("          | {l}");
        }
    }
    if follow {
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
        let outcome = job::observe(&session, &cfg.root, &j.token, 0, &mut printer, &snap.host)?;
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
