//! Several app hosts as one: a connection and a server job per host, locks taken in a fixed
//! order, and the rollout: hosts switch one batch at a time, each health-gated, and a healthy
//! host waits for the fleet's verdict. If any host fails, every host that switched goes back
//! (and is checked healthy) and the hosts that had not switched never do: the fleet ends on one
//! release, old or new (what is sent when is decided in [`crate::deploy::rollout`]). One host is
//! the degenerate fleet: it switches as soon as it may and finishes on its own.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::Host;
use crate::contract::JobResult;
use crate::deploy::event::{Outcome, Watcher};
use crate::deploy::job::{Job, Refusal, Wait};
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
        let started = start_one(session, &call, &label, n == 1)?;
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
                    let stop = format!("{label} refused: {why}");
                    for m in &mut members {
                        let _ = m.job.abort(JobResult::Refused, &stop);
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
        out.line(&ui::step_line(
            &format!("lock {n} hosts and start their jobs"),
            &format!(
                "ok [{}]",
                members
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(members)
}

/// Start one host's job (the `run` call); a lone host's under its own step line: `ok`, or
/// `refused` before the error.
fn start_one(
    session: Session,
    call: &Call,
    host: &str,
    own_line: bool,
) -> Result<std::result::Result<Job, Refusal>> {
    if !own_line {
        return Job::start(session, call, host);
    }
    let started = std::time::Instant::now();
    ui::step_start(&format!("lock {host} and start the server job"));
    let result = Job::start(session, call, host);
    let took = ui::secs(started.elapsed());
    match &result {
        Ok(Ok(_)) => say!("ok ({took})"),
        Ok(Err(_)) => say!("refused ({took})"),
        Err(_) => say!("FAILED ({took})"),
    }
    result
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
                    logged: String::new(),
                });
            }
        }
        if !open {
            return;
        }
    }
}
