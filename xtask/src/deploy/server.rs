//! The deploy commands' connections to their servers: one ssh connection per host (in parallel
//! for a fleet), the read-only probe of each (one call, built once), reading every host for the
//! commands that only look, and the one line a failed call ends with. Nothing here changes a
//! server: a signal before the lock stops the command with nothing changed.

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host};
use crate::deploy::snapshot::Snapshot;
use crate::remote::{Call, Reply};
use crate::ssh::Session;
use crate::{interrupt, say, show, ui};

/// Open the one ssh connection of this command (not after a signal: the command stops).
pub fn connect(cfg: &Config) -> Result<Session> {
    stop_before_the_lock(cfg)?;
    ui::step(&format!("connect to {}", cfg.server), || {
        Session::connect(&cfg.server, cfg.ssh_config.as_deref())
    })
}

/// One ssh connection per host, opened in parallel (one handshake each).
pub fn connect_all(cfg: &Config) -> Result<Vec<Session>> {
    if cfg.hosts.len() == 1 {
        return Ok(vec![connect(cfg)?]);
    }
    ui::step(&format!("connect to {} hosts", cfg.hosts.len()), || {
        let results: Vec<Result<Session>> = std::thread::scope(|s| {
            let handles: Vec<_> = cfg
                .hosts
                .iter()
                .map(|h| s.spawn(|| Session::connect(&h.dest, cfg.ssh_config.as_deref())))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("connecting panicked")))
                })
                .collect()
        });
        results.into_iter().collect()
    })
}

/// A signal that arrived before any job was asked for (before or during connect, the probe,
/// the plan) stops the command there, with the signal's exit status: nothing was changed on
/// the servers.
pub fn stop_before_the_lock(cfg: &Config) -> Result<()> {
    if interrupt::requested() {
        bail!(
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

/// What a probe reads besides current, the releases, the lock and the last job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Look {
    /// The units, the disk and the database revision (`status`).
    pub status: bool,
    /// What each release adds on disk (`list`).
    pub sizes: bool,
}

/// The probe call: one read-only look at the server under `root`.
pub fn probe_call(root: &str, look: Look) -> Call {
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    Call::deploy(
        "probe",
        &[
            ("root", root.to_string()),
            ("db", yn(look.status)),
            ("sizes", yn(look.sizes)),
        ],
    )
}

/// Probe one server under its own step line, and print its warnings.
pub fn probe(session: &Session, cfg: &Config, look: Look) -> Result<Snapshot> {
    stop_before_the_lock(cfg)?;
    let snap = ui::step("read the server's state", || {
        probe_quiet(session, cfg, look)
    })?;
    for w in snap.warnings(&cfg.root) {
        say!("warning: {w}");
    }
    Ok(snap)
}

/// The same without a step line or warnings (fleets probe in parallel and print once).
pub fn probe_quiet(session: &Session, cfg: &Config, look: Look) -> Result<Snapshot> {
    let reply = read(session, &probe_call(&cfg.root, look))?;
    Ok(Snapshot::from_reply(&reply))
}

/// One probe per host, in parallel (one host: its own step line).
pub fn probe_all(sessions: &[Session], cfg: &Config, look: Look) -> Result<Vec<Snapshot>> {
    if sessions.len() == 1 {
        return Ok(vec![probe(&sessions[0], cfg, look)?]);
    }
    let snaps = ui::step("read the servers' state", || {
        let results: Vec<Result<Snapshot>> = std::thread::scope(|s| {
            let handles: Vec<_> = sessions
                .iter()
                .map(|session| s.spawn(|| probe_quiet(session, cfg, look)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("probe panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<_>>>()
    })?;
    for s in &snaps {
        for w in s.warnings(&cfg.root) {
            say!("warning: [{}] {w}", s.host);
        }
    }
    Ok(snaps)
}

/// Run a call that only reads; a signal meanwhile stops it there, which changes nothing.
pub fn read(session: &Session, call: &Call) -> Result<Reply> {
    let Some((out, reply)) = session.call_unless_interrupted(call, interrupt::mark())? else {
        bail!(
            "interrupted by {} while {} on {}: nothing was changed there",
            interrupt::describe(),
            call.what(),
            session.dest()
        );
    };
    if !out.status.success() {
        bail!("{}", failure(session, call, &out.status, &reply));
    }
    Ok(reply)
}

/// One line for a call that failed: the script's own `error=`, or what ssh said.
pub fn failure(
    session: &Session,
    call: &Call,
    status: &std::process::ExitStatus,
    reply: &Reply,
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

/// What a read-only command (`list`, `status`, `log`) got from every host: the hosts that
/// answered, in DEPLOY_SERVER's order, and the others with why (one line each).
pub struct Reads<T> {
    pub ok: Vec<(Host, T)>,
    pub failed: Vec<(Host, String)>,
}

/// `read` every host, each over its own connection, in parallel, under one step line; a host
/// that cannot be read does not keep the others from being shown.
pub fn read_each<T: Send>(
    cfg: &Config,
    what: &str,
    read: impl Fn(&Host) -> Result<T> + Sync,
) -> Reads<T> {
    let label = format!("{what} {} hosts", cfg.hosts.len());
    let started = std::time::Instant::now();
    let id = ui::step_start(&label);
    let results: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = cfg.hosts.iter().map(|h| s.spawn(|| read(h))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("reading panicked")))
            })
            .collect()
    });
    let mut reads = Reads {
        ok: Vec::new(),
        failed: Vec::new(),
    };
    for (host, r) in cfg.hosts.iter().cloned().zip(results) {
        match r {
            Ok(t) => reads.ok.push((host, t)),
            Err(e) => reads.failed.push((host, format!("{e:#}"))),
        }
    }
    let took = ui::secs(started.elapsed());
    let outcome = if reads.failed.is_empty() {
        format!("ok ({took})")
    } else {
        format!(
            "FAILED ({took}): {} of {} could not be read",
            reads.failed.len(),
            cfg.hosts.len()
        )
    };
    ui::step_end(id, &label, &outcome);
    reads
}

/// Every host's snapshot, each over its own connection; the warnings of those that answered.
pub fn probe_each(cfg: &Config, look: Look) -> Reads<Snapshot> {
    let reads = read_each(cfg, "read", |h| {
        let session = Session::connect(&h.dest, cfg.ssh_config.as_deref())?;
        probe_quiet(&session, cfg, look)
    });
    for (_, s) in &reads.ok {
        for w in s.warnings(&cfg.root) {
            say!("warning: [{}] {w}", s.host);
        }
    }
    reads
}

impl<T> Reads<T> {
    /// After the others were shown: one `UNREACHABLE` line per host that could not be read,
    /// and an error (a non-zero exit) naming them.
    pub fn finish(&self) -> Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        for (h, why) in &self.failed {
            show!("UNREACHABLE: {}: {why}", h.name());
        }
        bail!(
            "{} of {} hosts could not be read ({}): the lines above show the others; run the command again when it can reach every host",
            self.failed.len(),
            self.failed.len() + self.ok.len(),
            self.failed
                .iter()
                .map(|(h, _)| h.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_call_for_every_look() {
        let c = probe_call("/opt/ic", Look::default());
        assert_eq!(
            c.render(),
            "scripts/deploy.sh probe root=/opt/ic db=no sizes=no"
        );
        let c = probe_call(
            "/opt/ic",
            Look {
                status: true,
                sizes: true,
            },
        );
        assert_eq!(
            c.render(),
            "scripts/deploy.sh probe root=/opt/ic db=yes sizes=yes"
        );
    }
}
