//! Several app hosts as one: a connection and a server job per host, locks taken in a fixed
//! order, and the rollout: hosts switch one batch at a time, each health-gated, and a healthy
//! host waits for the fleet's verdict. If any host fails, every host that switched goes back
//! (and is checked healthy) and the hosts that had not switched never do: the fleet ends on one
//! release, old or new. One host is the degenerate fleet: it switches as soon as it may and
//! finishes on its own.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host};
use crate::deploy::job::{Job, Outcome, Refusal, Wait, Watcher};
use crate::deploy::report::{self, Seen};
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

/// What the rollout knows of a host: enough to decide, nothing that talks to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub name: String,
    /// Its job's phase (`awaiting-go`, `awaiting-verdict`, ...).
    pub phase: String,
    /// How its job ended, as it reported it: whether it succeeded, and `RESULT: REASON`.
    pub ended: Option<(bool, String)>,
    /// Its job is gone without a result (nothing more will come from it).
    pub gone: bool,
    /// A message can go to it now (its connection has not been lost since).
    pub reachable: bool,
    pub activated: bool,
    pub told_back: bool,
    pub told_commit: bool,
}

impl View {
    fn over(&self) -> bool {
        self.ended.is_some() || self.gone
    }
}

/// A message of the rollout to a host's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Switch, restart, check health (then wait for the verdict).
    Go,
    /// The fleet is healthy: keep the new release.
    Commit,
    /// Go back to the previous release (a host that switched).
    Revert,
    /// Stop before the switch (a host that did not switch), with why.
    Abort(String),
}

impl Msg {
    pub fn text(&self) -> String {
        match self {
            Msg::Go => "go".into(),
            Msg::Commit => "commit".into(),
            Msg::Revert => "revert".into(),
            Msg::Abort(why) => format!("abort failed: the fleet goes back ({why})"),
        }
    }
}

/// The rollout of a fleet: which batch switches, and what happens when one fails. Deciding is
/// pure ([`Rollout::plan`]); [`Rollout::advance`] sends what it decided, and a message that does
/// not go through is a lost connection ([`Rollout::send_failed`]), never an error: before the
/// verdict the fleet goes back, as for any failed host; after it, the host gets `commit` again
/// once it is re-attached.
pub struct Rollout {
    /// Hosts that switch at once (`--batch N`; `--parallel`: all).
    pub batch: usize,
    /// Index of the next host to send `go`.
    next: usize,
    /// Why the fleet goes back (the first failure), once it does.
    pub failed: Option<String>,
    /// Every host was healthy at once: the verdict is `commit`, and it stands.
    pub committed: bool,
    /// That it stands was said (once).
    stands_said: bool,
}

impl Rollout {
    pub fn new(batch: usize) -> Rollout {
        Rollout {
            batch: batch.max(1),
            next: 0,
            failed: None,
            committed: false,
            stands_said: false,
        }
    }

    /// What to send now, to which host (by index). Call whenever events came, a message failed,
    /// or a host was re-attached. Only reachable hosts are sent anything; the others get what
    /// they still need once they are reachable again.
    pub fn plan(&mut self, hosts: &[View]) -> Vec<(usize, Msg)> {
        let reachable = |h: &View| h.reachable && !h.over();
        if self.committed {
            return hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| reachable(h) && !h.told_commit)
                .map(|(i, _)| (i, Msg::Commit))
                .collect();
        }
        // A host that ended without success, or is gone: everyone back.
        if self.failed.is_none() {
            self.failed = hosts.iter().find_map(|h| match &h.ended {
                Some((false, how)) => Some(format!("{} {how}", h.name)),
                _ if h.gone => Some(format!("the job on {} is gone without a result", h.name)),
                _ => None,
            });
        }
        if let Some(why) = &self.failed {
            return hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| reachable(h) && !h.told_back)
                .map(|(i, h)| {
                    let msg = if h.activated {
                        Msg::Revert
                    } else {
                        Msg::Abort(why.clone())
                    };
                    (i, msg)
                })
                .collect();
        }
        if hosts
            .iter()
            .any(|h| h.phase != "awaiting-go" && !h.activated)
        {
            return Vec::new();
        }
        let in_flight = hosts
            .iter()
            .filter(|h| h.activated && h.phase != "awaiting-verdict" && !h.over())
            .count();
        if in_flight == 0 && self.next < hosts.len() {
            let end = (self.next + self.batch).min(hosts.len());
            let batch = (self.next..end).map(|i| (i, Msg::Go)).collect();
            self.next = end;
            return batch;
        }
        if self.next == hosts.len()
            && hosts.iter().all(|h| {
                h.activated
                    && (h.phase == "awaiting-verdict" || h.ended.as_ref().is_some_and(|e| e.0))
            })
        {
            self.committed = true;
            return self.plan(hosts);
        }
        Vec::new()
    }

    /// A message to `host` did not go through (`why`): its connection is lost, and its follower
    /// hung up (the next wait re-attaches). Before the verdict the fleet goes back.
    pub fn send_failed(&mut self, why: &str) {
        if !self.committed && self.failed.is_none() {
            self.failed = Some(why.to_string());
        }
    }

    /// Send what [`Rollout::plan`] decides, and say what the fleet does.
    pub fn advance(&mut self, members: &mut [Member], out: &mut dyn Output) {
        let was_committed = self.committed;
        let views: Vec<View> = members.iter().map(Member::view).collect();
        let sends = self.plan(&views);
        if self.committed && !was_committed {
            out.line(&format!(
                "==> {:<44} ok",
                format!("all {} hosts healthy: commit", members.len())
            ));
        }
        let mut told = Vec::new();
        for (i, msg) in sends {
            // Once one `go` failed, the rest of its batch stays where it is (it goes back).
            if msg == Msg::Go && self.failed.is_some() {
                continue;
            }
            let m = &mut members[i];
            match m.job.send(&msg.text()) {
                Ok(()) => match msg {
                    Msg::Go => m.activated = true,
                    Msg::Commit => m.told_commit = true,
                    Msg::Revert | Msg::Abort(_) => {
                        m.told_back = true;
                        told.push(m.name().to_string());
                    }
                },
                Err(e) => self.send_failed(&format!("{e:#}")),
            }
        }
        if !told.is_empty() {
            out.line(&format!(
                "==> the fleet goes back to its previous release ({}): {}",
                self.failed.as_deref().unwrap_or("?"),
                told.join(", ")
            ));
        }
        // A failure just now (a send that did not go through): the others are told at once.
        if self.failed.is_some()
            && members
                .iter()
                .any(|m| !m.told_back && !m.job.over() && m.job.can_send())
        {
            self.advance(members, out);
        }
    }

    /// Send every host back (a signal, a lost connection): switched ones `revert` (they restore
    /// and check the previous release), the others `abort` (they stop before the switch). Once
    /// the verdict is `commit`, it stands: said, and nothing is sent back.
    pub fn back(&mut self, members: &mut [Member], why: &str, out: &mut dyn Output) {
        if self.committed {
            if !self.stands_said {
                self.stands_said = true;
                out.line(&format!(
                    "==> {why}: every host was healthy and told to commit: the verdict stands (a host that missed it gets it again)"
                ));
            }
        } else if self.failed.is_none() {
            self.failed = Some(why.to_string());
        }
        self.advance(members, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, phase: &str) -> View {
        View {
            name: name.into(),
            phase: phase.into(),
            reachable: true,
            ..View::default()
        }
    }

    /// Apply what was sent (as `advance` does when every message goes through).
    fn sent(hosts: &mut [View], sends: &[(usize, Msg)]) {
        for (i, m) in sends {
            match m {
                Msg::Go => hosts[*i].activated = true,
                Msg::Commit => hosts[*i].told_commit = true,
                Msg::Revert | Msg::Abort(_) => hosts[*i].told_back = true,
            }
        }
    }

    #[test]
    fn a_rolling_rollout_goes_one_host_at_a_time_then_commits() {
        let mut r = Rollout::new(1);
        let mut h = vec![host("a", "prepare"), host("b", "awaiting-go")];
        assert_eq!(r.plan(&h), vec![], "not every host is ready");
        h[0].phase = "awaiting-go".into();
        let s = r.plan(&h);
        assert_eq!(s, vec![(0, Msg::Go)]);
        sent(&mut h, &s);
        h[0].phase = "health".into();
        assert_eq!(r.plan(&h), vec![], "a is in flight");
        h[0].phase = "awaiting-verdict".into();
        let s = r.plan(&h);
        assert_eq!(s, vec![(1, Msg::Go)]);
        sent(&mut h, &s);
        h[1].phase = "awaiting-verdict".into();
        assert_eq!(r.plan(&h), vec![(0, Msg::Commit), (1, Msg::Commit)]);
        assert!(r.committed);
    }

    #[test]
    fn a_go_that_does_not_go_through_sends_the_fleet_back() {
        let mut r = Rollout::new(1);
        let mut h = vec![host("a", "awaiting-verdict"), host("b", "awaiting-go")];
        h[0].activated = true;
        r.next = 1;
        assert_eq!(r.plan(&h), vec![(1, Msg::Go)]);
        // The connection to b was lost: the send failed, its follower hung up.
        h[1].reachable = false;
        r.send_failed("sending 'go' to the job on b failed: Broken pipe (os error 32)");
        assert_eq!(
            r.plan(&h),
            vec![(0, Msg::Revert)],
            "b is told once it is back"
        );
        h[0].told_back = true;
        // b re-attached: it never switched, so it stops before the switch.
        h[1].reachable = true;
        assert_eq!(
            r.plan(&h),
            vec![(
                1,
                Msg::Abort("sending 'go' to the job on b failed: Broken pipe (os error 32)".into())
            )]
        );
        assert!(!r.committed);
    }

    #[test]
    fn a_commit_that_does_not_go_through_is_sent_again_never_reverted() {
        let mut r = Rollout::new(2);
        let mut h = vec![host("a", "awaiting-go"), host("b", "awaiting-go")];
        let s = r.plan(&h);
        assert_eq!(s, vec![(0, Msg::Go), (1, Msg::Go)]);
        sent(&mut h, &s);
        h[0].phase = "awaiting-verdict".into();
        h[1].phase = "awaiting-verdict".into();
        assert_eq!(r.plan(&h), vec![(0, Msg::Commit), (1, Msg::Commit)]);
        // a got it, b's connection was lost on the way.
        h[0].told_commit = true;
        h[1].reachable = false;
        r.send_failed("sending 'commit' to the job on b failed: Broken pipe (os error 32)");
        assert_eq!(r.failed, None, "the verdict stands");
        h[0].ended = Some((true, "success: ".into()));
        assert_eq!(r.plan(&h), vec![]);
        // b re-attached: it gets the verdict again, never a revert.
        h[1].reachable = true;
        assert_eq!(r.plan(&h), vec![(1, Msg::Commit)]);
    }

    #[test]
    fn a_failed_or_gone_host_sends_the_fleet_back() {
        let mut r = Rollout::new(1);
        let mut h = vec![
            host("a", "awaiting-verdict"),
            host("b", "health"),
            host("c", "awaiting-go"),
        ];
        h[0].activated = true;
        h[1].activated = true;
        h[1].ended = Some((false, "rolled-back: not healthy".into()));
        r.next = 2;
        assert_eq!(
            r.plan(&h),
            vec![
                (0, Msg::Revert),
                (2, Msg::Abort("b rolled-back: not healthy".into()))
            ]
        );
        assert_eq!(r.failed.as_deref(), Some("b rolled-back: not healthy"));
        let mut r = Rollout::new(1);
        let mut h = vec![host("a", "awaiting-go"), host("b", "awaiting-go")];
        h[1].gone = true;
        assert_eq!(
            r.plan(&h),
            vec![(
                0,
                Msg::Abort("the job on b is gone without a result".into())
            )]
        );
        assert_eq!(
            Msg::Abort("x".into()).text(),
            "abort failed: the fleet goes back (x)"
        );
    }
}
