//! `cargo xtask deploy unlock [--yes] [--force]`: show the lock and remove exactly that lock
//! (by its token: a lock taken meanwhile is never touched). A lock whose job still runs is
//! refused unless `--force`, which asks the job to stop and stops it if it does not; a stale
//! lock's release, if it was being prepared, is marked failed; deploy.log records the unlock.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::config::Config;
use crate::deploy::local;
use crate::deploy::server::{self, Look};
use crate::remote::Call;
use crate::wait::{self, Deadline, Missed};
use crate::{interrupt, say, say_part, show};

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
        let answer = read_answer(std::io::stdin(), interrupt::requested);
        let answer = match answer {
            Err(Missed::Interrupted) => {
                say!("");
                return stopped(&snap.host);
            }
            Err(_) => None,
            Ok(a) => a.map_err(|e| anyhow!("reading the answer: {e}"))?,
        };
        if !confirmed(answer.as_deref()) {
            bail!("lock left in place");
        }
    }
    // A signal since the probe (the question answered meanwhile, or --yes): nothing is removed.
    if interrupt::requested() {
        return stopped(&snap.host);
    }
    let (user, host) = local::deployer();
    let mut args = vec![
        ("root", cfg.root.clone()),
        ("token", lock.token.clone()),
        ("force", if force { "yes" } else { "no" }.to_string()),
        ("deployer", format!("{user}@{host}")),
    ];
    if let Some(name) = crate::destination::name() {
        args.push(("destination", name.to_string()));
    }
    let call = Call::deploy("unlock", &args);
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

/// Stopped by a signal before the unlock call: the lock is where it was.
fn stopped(host: &str) -> Result<()> {
    bail!(
        "interrupted by {} before the lock was removed: nothing was changed on {host}, the lock is still there",
        interrupt::describe()
    )
}

/// Whether the answer to "Remove it? [y/N]" is yes (None: stdin ended without one).
pub fn confirmed(answer: Option<&str>) -> bool {
    matches!(answer.map(str::trim), Some("y" | "Y" | "yes"))
}

/// One line from `input`, read in a thread of its own so that `stop` (a signal) ends the wait:
/// a terminal's read is restarted after a signal, so the question would outlive Ctrl-C. Ok(None)
/// when the input ended; the thread is left to the end of the process when stopped.
pub fn read_answer(
    input: impl Read + Send + 'static,
    stop: impl Fn() -> bool,
) -> Result<std::io::Result<Option<String>>, Missed> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = BufReader::new(input)
            .read_line(&mut line)
            .map(|n| (n > 0).then_some(line));
        let _ = tx.send(got);
    });
    wait::recv_until(&rx, Deadline::after(Duration::MAX), stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Input that never comes (a terminal nobody types at).
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
    }

    #[test]
    fn a_signal_ends_the_question() {
        let started = Instant::now();
        assert_eq!(
            read_answer(Silent, || true).unwrap_err(),
            Missed::Interrupted
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn only_yes_removes_the_lock() {
        let answer = |text: &'static str| read_answer(text.as_bytes(), || false).unwrap().unwrap();
        assert_eq!(answer("y\nmore\n").as_deref(), Some("y\n"));
        assert_eq!(answer(""), None);
        assert!(confirmed(answer("y\n").as_deref()));
        assert!(confirmed(Some(" yes ")));
        assert!(!confirmed(answer("n\n").as_deref()));
        assert!(!confirmed(answer("").as_deref()));
        assert!(!confirmed(Some("yep")));
    }
}
