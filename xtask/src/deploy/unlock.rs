//! `cargo xtask deploy unlock [--yes] [--force]`: show the lock and remove exactly that lock
//! (by its token: a lock taken meanwhile is never touched). A lock whose job still runs is
//! refused unless `--force`, which asks the job to stop and stops it if it does not; a stale
//! lock's release, if it was being prepared, is marked failed; deploy.log records the unlock.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Result};

use crate::config::Config;
use crate::deploy::local;
use crate::deploy::server::{self, Look};
use crate::remote::Call;
use crate::{say, say_part, show};

pub fn run(cfg: &Config, yes: bool, force: bool) -> Result<()> {
    let session = server::connect(cfg)?;
    let snap = server::probe(&session, cfg, Look::default())?;
    let Some(lock) = &snap.lock else {
        show!(
            "no deploy lock on {} ({}/.deploy.lock)",
            snap.host,
            cfg.root
        );
        return Ok(());
    };
    show!(
        "{}/.deploy.lock on {}: {}",
        cfg.root,
        snap.host,
        lock.describe(snap.now)
    );
    if lock.alive == Some(true) && !force {
        bail!(
            "the deploy job holding the lock on {} is running ({}): follow it with 'cargo xtask deploy status --follow'; 'deploy unlock --force' stops it",
            snap.host,
            if lock.phase.is_empty() { "?" } else { &lock.phase }
        );
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not removing the lock without confirmation: rerun with --yes once you are sure");
        }
        say_part!(
            "Remove it{}? [y/N] ",
            if lock.alive == Some(true) {
                " and stop its running job"
            } else {
                ""
            }
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("lock left in place");
        }
    }
    let (user, host) = local::deployer();
    let call = Call::deploy(
        "unlock",
        &[
            ("root", cfg.root.clone()),
            ("token", lock.token.clone()),
            ("force", if force { "yes" } else { "no" }.to_string()),
            ("deployer", format!("{user}@{host}")),
        ],
    );
    let (out, reply) = session.call(&call)?;
    if !out.status.success() {
        bail!("{}", server::failure(&session, &call, &out.status, &reply));
    }
    match (reply.get("unlocked"), reply.get("stopped")) {
        (Some("yes"), Some("job")) => {
            say!("the job stopped and released the lock on {}", snap.host)
        }
        (Some("yes"), _) => say!("lock removed on {}", snap.host),
        _ => bail!(
            "the lock on {} was not removed: it changed since it was shown",
            snap.host
        ),
    }
    Ok(())
}
