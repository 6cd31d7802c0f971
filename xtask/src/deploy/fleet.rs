//! Several app hosts as one: a connection and a server job per host, locks taken in a fixed
//! order, and the rollout: hosts switch one batch at a time, each health-gated, and a healthy
//! host waits for the fleet's verdict. If any host fails, every host that switched goes back
//! (and is checked healthy) and the hosts that had not switched never do: the fleet ends on one
//! release, old or new (what is sent when is decided in [`crate::deploy::rollout`]). One host is
//! the degenerate fleet: it switches as soon as it may and finishes on its own.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host};
use crate::deploy::job::{Job, Outcome, Refusal, Wait, Watcher};
use crate::deploy::report::{self, Seen};
use crate::deploy::rollout::View;
use crate::deploy::snapshot::Snapshot;
use crate::remote::Call;
use crate::ssh::Session;
use crate::{say, ui};

/// Where the client and the job printer write: job events, plus lines of the client's own.
pub trait Output: Watcher {
    /// A line of the client's own (a local check, an upload).
    fn line(&mut self, text: &str);
    /// End any open line.
    fn close(&mut self);
}

/// One ssh connection per host, opened in parallel (one handshake each).
pub fn connect_all(cfg: &Config) -> Result<Vec<Session>> {
    if cfg.hosts.len() == 1 {
        return Ok(vec![super::connect(cfg)?]);
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

/// One probe per host, in parallel.
pub fn probe_all(
    sessions: &[Session],
    cfg: &Config,
    status: bool,
    sizes: bool,
) -> Result<Vec<Snapshot>> {
    if sessions.len() == 1 {
        return Ok(vec![super::probe_with(&sessions[0], cfg, status, sizes)?]);
    }
    let snaps = ui::step("read the servers' state", || {
        let results: Vec<Result<Snapshot>> = std::thread::scope(|s| {
            let handles: Vec<_> = sessions
                .iter()
                .map(|session| s.spawn(|| super::probe_quiet(session, cfg, status, sizes)))
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

impl<T> Reads<T> {
    /// After the others were shown: one `UNREACHABLE` line per host that could not be read,
    /// and an error (a non-zero exit) naming them.
    pub fn finish(&self) -> Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        for (h, why) in &self.failed {
            crate::show!("UNREACHABLE: {}: {why}", h.name());
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

/// A host in the rollout.
pub struct Member {
    pub host: Host,
    pub snap: Snapshot,
    pub job: Job,
    /// `go` was sent: it switches (or switched).
    pub activated: bool,
    /// The client asked it to go back (`revert`) or to stop (`abort`).
    pub told_back: bool,
    /// `commit` went through to it.
    pub told_commit: bool,
}

impl Member {
    pub fn name(&self) -> &str {
        &self.snap.host
    }

    /// What the rollout decides from.
    pub fn view(&self) -> View {
        View {
            name: self.name().to_string(),
            phase: self.job.phase.clone(),
            ended: self
                .job
                .outcome
                .as_ref()
                .map(|o| (o.success(), format!("{}: {}", o.result, o.reason))),
            gone: self.job.gone,
            reachable: self.job.can_send(),
            activated: self.activated,
            told_back: self.told_back,
            told_commit: self.told_commit,
        }
    }
}

/// The fleet's summary rows: each host's result as its job reported it, or, for a host the
/// deployer lost sight of (a lost connection, a failed send, this process stopped), what the
/// server's files say now (see [`report::fleet_row`]).
pub fn summary_rows(members: &mut [Member]) -> Vec<(String, bool, String)> {
    members
        .iter_mut()
        .map(|m| {
            let lost = m.job.new_stop().is_some() || m.job.lost_sight || m.job.gone;
            if !lost {
                return report::fleet_row(m.name(), Seen::Reported(m.job.outcome.as_ref()));
            }
            match m.job.read_now() {
                Ok(r) => report::fleet_row(m.name(), Seen::Read(&r)),
                Err(e) => report::fleet_row(m.name(), Seen::Unreadable(&format!("{e:#}"))),
            }
        })
        .collect()
}

/// Start a job on every host, in DEPLOY_SERVER's order, each taking its host's lock. If one
/// host refuses, the jobs already started stop (they changed nothing yet) and the deploy
/// refuses, naming the host and what it said.
pub fn start_all(
    starts: Vec<(Host, Snapshot, Session, Call)>,
    out: &mut dyn Output,
    ssh_config: Option<&camino::Utf8Path>,
) -> Result<Vec<Member>> {
    let n = starts.len();
    let mut members: Vec<Member> = Vec::new();
    for (host, snap, session, call) in starts {
        let label = snap.host.clone();
        let started = if n == 1 {
            super::start_job(session, &call, &label)?
        } else {
            Job::start(session, &call, &label)?
        };
        match started {
            Ok(job) => members.push(Member {
                host,
                snap,
                job,
                activated: false,
                told_back: false,
                told_commit: false,
            }),
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Locked { message, lock } => format!(
                        "{message}: {}{}",
                        lock.as_ref()
                            .map(|l| l.describe(snap.now))
                            .unwrap_or_else(|| "holder unknown".into()),
                        if lock.as_ref().is_some_and(|l| l.stale()) {
                            ": it went just now; run the command again (a deploy takes a stale lock over)"
                        } else {
                            "; wait for it, or follow it with 'cargo xtask deploy status --follow'"
                        }
                    ),
                    Refusal::Refused(m) => m,
                };
                if !members.is_empty() {
                    let msg = format!("abort refused: {label} refused: {why}");
                    for m in &mut members {
                        let _ = m.job.send(&msg);
                    }
                    follow_to_end(&mut members, out, ssh_config);
                    out.line(&format!(
                        "the locks taken on {} were released",
                        members
                            .iter()
                            .map(|m| m.name().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                bail!(
                    "{}{why}",
                    if n > 1 {
                        format!("{label}: ")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    if n > 1 {
        out.line(&format!(
            "==> {:<44} ok [{}]",
            format!("lock {n} hosts and start their jobs"),
            members
                .iter()
                .map(|m| m.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(members)
}

/// Follow every job until it reports its outcome (or its connection is lost for good).
pub fn follow_to_end(
    members: &mut [Member],
    out: &mut dyn Output,
    ssh_config: Option<&camino::Utf8Path>,
) {
    loop {
        let mut open = false;
        for m in members.iter_mut() {
            if m.job.outcome.is_some() {
                continue;
            }
            open = true;
            if m.job.wait(out, Duration::from_millis(20), &|_| false) == Wait::Lost
                && m.job.reattach(&m.host.dest, ssh_config).is_err()
            {
                m.job.outcome = Some(Outcome {
                    result: "unknown".into(),
                    reason: format!("lost the connection to {}", m.name()),
                    duration: String::new(),
                    revision: String::new(),
                    current: String::new(),
                });
            }
        }
        if !open {
            return;
        }
    }
}
