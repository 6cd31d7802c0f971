//! `cargo xtask deploy`: atomic, release-based deploys with automatic rollback.
//!
//! The server owns its state: every change is made by one detached job on the server
//! (scripts/deploy-job.sh) that takes the lock and always records its outcome and releases it;
//! the client plans, starts, feeds and follows it. The folder reads like the flow:
//!
//! - [`snapshot`]: what the server looks like (one probe)
//! - [`plan`]: what to ask the job (pure: names, units, prune, nothing to deploy)
//! - [`drift`]: what the hosts must agree on (pure: roles with DEPLOY_SERVER, one release)
//! - [`local`]: who deploys what, which files make a release, which must travel
//! - [`checks`]: the local checks, beside the upload
//! - [`migration`]: the migration lint before the lock; [`dbsnap`]: the database's facts, the
//!   snapshot's free-space check and the snapshots as the server lists them
//! - [`job`]: start, message, follow and re-attach to the server job
//! - [`fleet`], [`rollout`]: several hosts as one; the rollout's decisions (pure)
//! - [`report`]: step lines and the final line
//! - [`pipeline`], [`rollback`], [`list`], [`status`], [`unlock`]: the subcommands

pub mod checks;
pub mod dbsnap;
pub mod drift;
pub mod fleet;
pub mod job;
pub mod list;
pub mod local;
pub mod log;
pub mod migration;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod snapshot;
pub mod status;
pub mod unlock;

use anyhow::Result;
use xshell::Shell;

use crate::config::Config;
use crate::flags::Deploy;
use crate::remote::Call;
use crate::ssh::Session;
use crate::{interrupt, say, ui};

pub fn run(cmd: Deploy, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    match cmd {
        Deploy::Release {
            scope,
            dry_run,
            skip_local_checks,
            redeploy,
            recheck,
            batch,
            allow_unsafe_migration,
        } => pipeline::deploy(
            sh,
            &cfg,
            scope,
            pipeline::Options {
                dry_run,
                skip_local_checks,
                redeploy,
                recheck,
                batch: batch.unwrap_or(usize::MAX),
                allow_unsafe_migration,
            },
        ),
        Deploy::List => list::run(&cfg),
        Deploy::Rollback {
            release,
            force,
            dry_run,
            batch,
        } => rollback::run(
            &cfg,
            release.as_deref(),
            force,
            dry_run,
            batch.unwrap_or(usize::MAX),
        ),
        Deploy::Unlock { yes, force } => unlock::run(&cfg, yes, force),
        Deploy::Status { follow } => status::run(&cfg, follow),
        Deploy::Log { lines } => log::run(&cfg, lines),
    }
}

/// Open the one ssh connection of this command (not after a signal: the command stops).
pub fn connect(cfg: &Config) -> Result<Session> {
    stop_before_the_lock(cfg)?;
    ui::step(&format!("connect to {}", cfg.server), || {
        Session::connect(&cfg.server, cfg.ssh_config.as_deref())
    })
}

/// A signal that arrived before any job was asked for (before or during connect, the probe,
/// the plan) stops the command there, with the signal's exit status: nothing was changed on
/// the servers.
pub fn stop_before_the_lock(cfg: &Config) -> Result<()> {
    if interrupt::requested() {
        anyhow::bail!(
            "interrupted by {} before anything was asked of the server: nothing was changed on {}",
            interrupt::describe(),
            cfg.hosts
                .iter()
                .map(|h| h.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// One read-only look at the server (`status`: units, disk and database too; `sizes`: what
/// each release adds on disk).
pub fn probe_with(
    session: &Session,
    cfg: &Config,
    status: bool,
    sizes: bool,
) -> Result<snapshot::Snapshot> {
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let call = Call::deploy(
        "probe",
        &[
            ("root", cfg.root.clone()),
            ("db", yn(status)),
            ("sizes", yn(sizes)),
        ],
    );
    stop_before_the_lock(cfg)?;
    let reply = ui::step("read the server's state", || read(session, &call))?;
    let snap = snapshot::Snapshot::from_reply(&reply);
    for w in snap.warnings(&cfg.root) {
        say!("warning: {w}");
    }
    Ok(snap)
}

/// The same without a step line or warnings (fleets probe in parallel and print once).
pub fn probe_quiet(
    session: &Session,
    cfg: &Config,
    status: bool,
    sizes: bool,
) -> Result<snapshot::Snapshot> {
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let call = Call::deploy(
        "probe",
        &[
            ("root", cfg.root.clone()),
            ("db", yn(status)),
            ("sizes", yn(sizes)),
        ],
    );
    Ok(snapshot::Snapshot::from_reply(&read(session, &call)?))
}

/// Run a call that only reads; a signal meanwhile stops it there, which changes nothing.
pub fn read(session: &Session, call: &Call) -> Result<crate::remote::Reply> {
    let Some((out, reply)) = session.call_unless_interrupted(call, interrupt::mark())? else {
        anyhow::bail!(
            "interrupted by {} while {} on {}: nothing was changed there",
            interrupt::describe(),
            call.what(),
            session.dest()
        );
    };
    if !out.status.success() {
        anyhow::bail!("{}", failure(session, call, &out.status, &reply));
    }
    Ok(reply)
}

pub fn probe(session: &Session, cfg: &Config, status: bool) -> Result<snapshot::Snapshot> {
    probe_with(session, cfg, status, false)
}

/// One line for a call that failed: the script's own `error=`, or what ssh said.
pub fn failure(
    session: &Session,
    call: &Call,
    status: &std::process::ExitStatus,
    reply: &crate::remote::Reply,
) -> String {
    match reply.get("error") {
        Some(e) => e.to_string(),
        None if status.code() == Some(255) => format!(
            "lost the ssh connection to {} while {}",
            session.dest(),
            call.what()
        ),
        None => format!(
            "{} failed on {} ({status}): run it again; 'cargo xtask deploy status' shows the server",
            call.what(),
            session.dest()
        ),
    }
}

/// Start a job (the `run` call) with its own step line: `ok`, or `refused` before the error.
pub fn start_job(
    session: Session,
    call: &Call,
    host: &str,
) -> Result<std::result::Result<job::Job, job::Refusal>> {
    let started = std::time::Instant::now();
    ui::step_start(&format!("lock {host} and start the server job"));
    let result = job::Job::start(session, call, host);
    let took = ui::secs(started.elapsed());
    match &result {
        Ok(Ok(_)) => say!("ok ({took})"),
        Ok(Err(_)) => say!("refused ({took})"),
        Err(_) => say!("FAILED ({took})"),
    }
    result
}
