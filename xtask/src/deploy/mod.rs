//! `cargo xtask deploy`: atomic, release-based deploys with automatic rollback. This file only
//! dispatches the subcommands.
//!
//! The server owns its state: every change is made by one detached job on the server
//! (scripts/deploy-job.sh) that takes the lock and always records its outcome and releases it;
//! the client plans, starts, feeds and follows it. The folder reads like the flow:
//!
//! - [`server`]: the connections, the probe, reading every host
//! - [`snapshot`]: what the server looks like (one probe)
//! - [`plan`]: what to ask the job (pure: names, units, prune, nothing to deploy)
//! - [`drift`]: what the hosts must agree on (pure: roles with DEPLOY_SERVER, one release)
//! - [`local`]: who deploys what, which files make a release, which must travel
//! - [`checks`]: the local checks, beside the upload
//! - [`migration`]: the migration lint before the lock; [`dbsnap`]: the database's facts, the
//!   snapshot's free-space check and the snapshots as the server lists them
//! - [`seal`]: what the seed may keep: this checkout's hashes against the server's copies
//! - [`upload`]: rsync (or tar) into the seeded release
//! - [`job`]: start, message, follow and re-attach to the server job ([`follower`]: the ssh
//!   call that carries it; [`event`]: its events; [`reading`]: what the server's files say)
//! - [`fleet`], [`rollout`]: several hosts as one; the rollout's decisions (pure)
//! - [`entry`]: one deploy.log line, parsed
//! - [`report`]: step lines and the final line
//! - [`pipeline`], [`rollback`], [`list`], [`status`], [`unlock`]: the subcommands; [`restore`]:
//!   `cargo xtask db snapshots` and `db restore` ([`restore_order`]: a fleet's order, pure);
//!   [`maintenance`]: `cargo xtask maintenance`
//!   [`envjob`]: `cargo xtask env push` and `env rollback`

pub mod checks;
pub mod dbsnap;
pub mod downgrade;
pub mod drift;
pub mod entry;
pub mod envjob;
pub mod event;
pub mod fleet;
pub mod follower;
pub mod hooked;
pub mod job;
pub mod list;
pub mod local;
pub mod lock;
pub mod log;
pub mod maintenance;
pub mod migration;
pub mod pipeline;
pub mod plan;
pub mod reading;
pub mod release;
pub mod report;
pub mod restore;
pub mod restore_order;
pub mod rollback;
pub mod rollout;
pub mod seal;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod unlock;
pub mod upload;

use anyhow::Result;
use xshell::Shell;

use crate::config::Config;
use crate::flags::{Db, Deploy};
use crate::interrupt;

pub fn run(cmd: Deploy, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    match cmd {
        Deploy::Release {
            scope,
            dry_run,
            skip_local_checks,
            redeploy,
            clean,
            recheck,
            batch,
            allow_unsafe_migration,
            maintenance,
        } => pipeline::deploy(
            sh,
            &cfg,
            scope,
            pipeline::Options {
                dry_run,
                skip_local_checks,
                redeploy,
                clean,
                recheck,
                batch: batch.unwrap_or(usize::MAX),
                allow_unsafe_migration,
                maintenance,
            },
        ),
        Deploy::List => list::run(&cfg),
        Deploy::Rollback {
            release,
            force,
            migrate_down,
            yes,
            dry_run,
            batch,
        } => rollback::run(
            &cfg,
            release.as_deref(),
            rollback::Options {
                force,
                migrate_down,
                yes,
                dry_run,
                batch: batch.unwrap_or(usize::MAX),
            },
        ),
        Deploy::Unlock { yes, force } => unlock::run(&cfg, yes, force),
        Deploy::Status { follow } => status::run(&cfg, follow),
        Deploy::Log { lines } => log::run(&cfg, lines),
    }
}

/// `cargo xtask db`: the database's snapshots on the server, and restoring one.
pub fn db(cmd: Db) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    match cmd {
        Db::Snapshots => restore::snapshots(&cfg),
        Db::Restore {
            snapshot,
            yes,
            dry_run,
        } => restore::restore(&cfg, &snapshot, yes, dry_run),
        // main runs it (crate::exec::psql): it is a command in the release, not a deploy's.
        Db::Psql { .. } => anyhow::bail!("db psql runs through cargo xtask's exec module"),
    }
}
