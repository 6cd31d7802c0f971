//! `cargo xtask deploy rollback [RELEASE] [--force]`: switch back to an earlier successful
//! release. The server job checks the database revision against the target's migrations
//! (refusing unless `--force`), switches, restarts every unit, checks health, and restores
//! current if the target does not come up; it runs to its end whatever happens here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::Config;
use crate::config::HostRole;
use crate::deploy::job::Wait;
use crate::deploy::local;
use crate::deploy::plan::{self, Asker};
use crate::deploy::report::{self, Printer};
use crate::{interrupt, say, show, ui};

pub fn run(cfg: &Config, requested: Option<&str>, force: bool, dry_run: bool) -> Result<()> {
    if let Some(name) = requested {
        crate::release::validate_user_name(name)?;
    }
    let started = Instant::now();
    let session = super::connect(cfg)?;
    let snap = super::probe(&session, cfg, false)?;
    let plan = plan::rollback(&snap, requested, force, HostRole::Primary)?;
    let target = plan.release().to_string();
    let commit = snap
        .releases
        .iter()
        .find(|r| r.name == target)
        .map(|r| r.commit.clone())
        .unwrap_or_else(|| "-".into());
    let (user, host) = local::deployer();
    let token = plan::token();
    let deployer = format!("{user}@{host}");
    let call = plan.run_call(
        cfg,
        &Asker {
            token: &token,
            deployer: &deployer,
            host: &host,
            commit: &commit,
            dirty: false,
        },
    );
    let from = snap.current.describe();
    if dry_run {
        show!(
            "Plan for 'rollback' to {target} on {} (current {from}), nothing will be changed:",
            snap.host
        );
        show!("  server job (takes the lock, checks the database revision against {target}'s migrations{}):", if force { ", --force: continues past a mismatch" } else { "" });
        show!("      {}", call.render());
        show!(
            "  then: switch, restart {}, health checks; on failure restore {}",
            plan.restart.join(", "),
            snap.current.link()
        );
        return Ok(());
    }
    let mut job = match super::start_job(session, &call, &snap.host)? {
        Ok(job) => job,
        Err(super::job::Refusal::Locked { message, lock }) => bail!(
            "{message}: {}",
            lock.map(|l| l.describe(snap.now)).unwrap_or_default()
        ),
        Err(super::job::Refusal::Refused(m)) => bail!("{m}"),
    };
    let mut printer = Printer::new(false);
    let mut seen = 0;
    loop {
        match job.wait(&mut printer, Duration::from_secs(3600), &|_| false) {
            Wait::Finished => break,
            Wait::Lost => {
                printer.close_line();
                say!("==> the connection to {} was lost: reconnecting (the rollback goes on on the server)", snap.host);
                job.reattach(&cfg.server, cfg.ssh_config.as_deref())
                    .map_err(|e| anyhow!("could not reconnect to {} ({e:#}): the rollback finishes on the server by itself; 'cargo xtask deploy status' shows the outcome", snap.host))?;
            }
            Wait::Reached | Wait::Timeout => {
                let n = interrupt::count();
                if n != seen {
                    seen = n;
                    printer.close_line();
                    if n >= 2 {
                        job.detach();
                        say!("stopped watching: the rollback on {} goes on by itself; 'cargo xtask deploy status --follow' shows how it ends", snap.host);
                        bail!("interrupted by {} (twice)", interrupt::describe());
                    }
                    say!("==> {} received: the rollback runs on the server to its end; Ctrl-C again to stop watching", interrupt::describe());
                }
            }
        }
    }
    printer.close_line();
    let outcome = job
        .outcome
        .clone()
        .ok_or_else(|| anyhow!("the rollback job ended without a result"))?;
    let line = report::final_line(&format!("rollback to {target}"), &snap.host, &outcome);
    if outcome.success() {
        say!("{line} ({} in all)", ui::secs(started.elapsed()));
        Ok(())
    } else {
        Err(anyhow!("{line}"))
    }
}
