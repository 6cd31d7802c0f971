//! `cargo xtask deploy rollback [RELEASE] [--force | --migrate-down [--yes]]`: switch back to
//! an earlier successful release, on one host or every host of a fleet. The server job checks
//! the database revision against the target's migrations (refusing unless `--force` or
//! `--migrate-down`), switches, restarts every unit, checks health, and restores current if the
//! target does not come up. With `--migrate-down` the primary then takes the database down to
//! the target's migrations (see [`downgrade`]). One host runs it to its end whatever happens
//! here; a fleet rolls host by host, and goes back as a whole if one fails.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host, HostRole};
use crate::contract::Message;
use crate::deploy::downgrade::{self, Plan as DownPlan};
use crate::deploy::fleet::{self, Output};
use crate::deploy::hooked;
use crate::deploy::job::{Wait, RECONNECT_FOR};
use crate::deploy::local;
use crate::deploy::plan::{self, Asker};
use crate::deploy::report::{self, FleetPrinter, Printer};
use crate::deploy::rollout::Rollout;
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::hooks::Hooks;
use crate::{interrupt, say, say_event, show, ui};

/// What `deploy rollback` was asked besides the release.
pub struct Options {
    pub force: bool,
    pub migrate_down: bool,
    pub yes: bool,
    pub dry_run: bool,
    pub batch: usize,
}

pub fn run(cfg: &Config, requested: Option<&str>, o: Options) -> Result<()> {
    let Options {
        force,
        migrate_down,
        mut yes,
        dry_run,
        batch,
    } = o;
    if let Some(name) = requested {
        crate::deploy::release::validate_user_name(name)?;
    }
    let started = Instant::now();
    let hooks = Hooks::find(&crate::project_root(), cfg.hook_timeout)?;
    let sessions = server::connect_all(cfg)?;
    let snaps = server::probe_all(&sessions, cfg, Look::default())?;
    let hosts: Vec<(Host, Snapshot)> = cfg
        .hosts
        .iter()
        .cloned()
        .zip(snaps.iter().cloned())
        .collect();
    let plans = plan::fleet_rollback(&hosts, requested, force)?;
    let target = plans[0].release().to_string();
    let commit = snaps[0]
        .releases
        .iter()
        .find(|r| r.name == target)
        .map(|r| r.commit.clone())
        .unwrap_or_else(|| "-".into());
    let (user, host) = local::deployer();
    let token = plan::token();
    let deployer = format!("{user}@{host}");
    let asker = Asker {
        token: &token,
        deployer: &deployer,
        host: &host,
        commit: &commit,
        dirty: false,
    };
    // --migrate-down: what the downgrade will do, read on the primary before anything changes.
    let primary = plans
        .iter()
        .position(|p| p.role == HostRole::Primary)
        .unwrap_or(0);
    let down = match migrate_down {
        true => Some(read_down(
            &sessions[primary],
            cfg,
            &snaps[primary].host,
            &target,
        )?),
        false => None,
    };
    if let (Some(d), false) = (&down, dry_run) {
        for line in d.lines(&snaps[primary].host) {
            show!("{line}");
        }
        if d.drops_data() && !yes {
            yes = consent(d, &snaps[primary].host)?;
        }
    }
    let mut calls: Vec<_> = plans.iter().map(|p| p.run_call(cfg, &asker)).collect();
    if migrate_down {
        for call in &mut calls {
            downgrade::plan_args(call, true, yes);
        }
    }
    if dry_run {
        for ((h, snap), (p, call)) in hosts.iter().zip(plans.iter().zip(&calls)) {
            show!(
                "Plan for 'rollback' to {target} on {} ({}, current {}), nothing will be changed:",
                h.dest,
                snap.host,
                snap.current.describe()
            );
            show!("  server job (takes the lock, checks the database revision against {target}'s migrations{}):", if force { ", --force: continues past a mismatch" } else if migrate_down { ", --migrate-down: checks and tries the downgrade" } else { "" });
            show!("      {}", call.render());
            show!(
                "  then: switch, restart {}, health checks; on failure restore {}",
                p.restart.join(", "),
                snap.current.link()
            );
            if let (Some(d), HostRole::Primary) = (&down, p.role) {
                for line in d.lines(&snap.host) {
                    show!("{line}");
                }
                if d.drops_data() && !yes {
                    show!("  it would be refused without --yes (or a yes at the terminal): it drops rows that hold data");
                }
            }
        }
        return Ok(());
    }
    let said = [&*target, &commit, "all", &deployer];
    let mut facts = hooked::facts("rollback", cfg, &snaps, said);
    hooked::before(&hooks, &facts)?;
    // A signal so far (during connect, the probe) stops here: no job was asked yet.
    server::stop_before_the_lock(cfg)?;
    let mut out: Box<dyn Output> = if plans.len() == 1 {
        Box::new(Printer::new(false))
    } else {
        Box::new(FleetPrinter::new(
            snaps.iter().map(|s| s.host.clone()).collect(),
        ))
    };
    let starts = hosts
        .into_iter()
        .zip(sessions)
        .zip(calls)
        .map(|(((h, s), session), call)| (h, s, session, call))
        .collect();
    let mut members = match fleet::start_all(starts, out.as_mut(), cfg.ssh_config.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            let hook = hooked::after(&hooks, &mut facts, &[], started.elapsed());
            return hooked::verdict(Err(e), hook);
        }
    };
    let fleet = members.len() > 1;
    if fleet {
        for m in &mut members {
            // Not sent: a lost connection, which the next wait finds (and re-attaches).
            let _ = m.job.send(Message::Begin);
        }
    }
    let mut rollout = Rollout::new(batch).with_hooks(hooks.clone(), facts.clone());
    let mut seen = 0;
    let what = format!("rollback to {target}");
    loop {
        for i in 0..members.len() {
            if members[i].job.over() {
                continue;
            }
            let waited = members[i]
                .job
                .wait(out.as_mut(), Duration::from_millis(20), &|_| false);
            // Its events ended without a result while the connection held: the job died there
            // (read, not taken for a lost connection).
            if waited == Wait::Ended && gone_without_result(&mut members[i]) {
                out.close();
                let name = members[i].name().to_string();
                members[i].job.detach();
                members[i].job.gone = true;
                if fleet {
                    rollout.back(
                        &mut members,
                        &format!("the job on {name} is gone without a result"),
                        out.as_mut(),
                    );
                }
                continue;
            }
            if waited == Wait::Lost || waited == Wait::Ended {
                out.close();
                let name = members[i].name().to_string();
                say_event!(
                    "the connection to {name} was lost: reconnecting (for up to {}s; Ctrl-C stops trying)",
                    RECONNECT_FOR.as_secs()
                );
                let dest = members[i].host.dest.clone();
                members[i]
                    .job
                    .reattach(&dest, cfg.ssh_config.as_deref())
                    .map_err(|e| {
                        anyhow!(
                            "{}",
                            report::unreachable_line(&what, &name, &format!("{e:#}"))
                        )
                    })?;
                say!("    reconnected to {name}; following its job again");
                // A job that is gone without a result: nothing more will come from it.
                if gone_without_result(&mut members[i]) {
                    members[i].job.gone = true;
                }
                if fleet {
                    rollout.back(
                        &mut members,
                        &format!("the connection to {name} was lost"),
                        out.as_mut(),
                    );
                }
            }
        }
        let n = interrupt::count();
        if n != seen {
            seen = n;
            out.close();
            if n >= 2 {
                for m in &mut members {
                    m.job.detach();
                }
                say!("stopped watching: the rollback goes on by itself; 'cargo xtask deploy status --follow' shows how it ends");
                bail!("interrupted by {} (twice)", interrupt::describe());
            }
            if fleet {
                rollout.back(
                    &mut members,
                    &format!("{} received", interrupt::describe()),
                    out.as_mut(),
                );
            } else {
                say_event!("{} received: the rollback runs on the server to its end; Ctrl-C again to stop watching", interrupt::describe());
            }
        }
        if fleet {
            // A message that does not go through is a lost connection (see Rollout::advance).
            rollout.advance(&mut members, out.as_mut());
        }
        if members.iter().all(|m| m.job.over()) {
            break;
        }
    }
    out.close();
    let hook = hooked::after(&hooks, &mut facts, &members, started.elapsed());
    let outcome = (|| {
        if !fleet {
            let (line, ok) = report::last_words(&what, &mut members[0])?;
            if ok {
                say!("{line} ({} in all)", ui::secs(started.elapsed()));
                return Ok(());
            }
            return Err(anyhow!("{line}"));
        }
        report::fleet_summary(&what, report::summary_rows(&mut members), started.elapsed())
    })();
    hooked::verdict(outcome, hook)
}

/// Whether the member's job is gone without a result, as its server's files say now.
fn gone_without_result(m: &mut fleet::Member) -> bool {
    m.job.read_now().is_ok_and(|r| r.gone_without_result())
}

/// The downgrade a rollback to `target` needs on the primary (`session`), read before the lock.
fn read_down(
    session: &crate::ssh::Session,
    cfg: &Config,
    host: &str,
    target: &str,
) -> Result<DownPlan> {
    let reply = server::read(session, &downgrade::call(&cfg.root, target))?;
    DownPlan::from_reply(&reply, host, target)
}

/// Whether dropping the rows the downgrade drops was confirmed at the terminal; refused when
/// there is none to ask at.
fn consent(d: &DownPlan, host: &str) -> Result<bool> {
    use crate::deploy::unlock::{confirmed, read_answer};
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("{}", d.consent_refusal(host));
    }
    crate::say_part!("Drop them (the snapshot keeps them)? [y/N] ");
    let answer = match read_answer(std::io::stdin(), interrupt::requested) {
        Ok(Ok(a)) => a,
        _ => None,
    };
    if !confirmed(answer.as_deref()) {
        bail!("{}", d.consent_refusal(host));
    }
    Ok(true)
}
