//! The rollout of a fleet, decided apart from the talking: which batch of hosts switches, when
//! the verdict is `commit`, and what goes to each host when one fails or is lost.
//! [`Rollout::plan`] is pure (a [`View`] of each host in, the messages to send out);
//! [`Rollout::advance`] sends them, and a message that does not go through is a lost connection
//! ([`Rollout::send_failed`]), never an error.

use crate::contract::{JobResult, Message, Phase};
use crate::deploy::fleet::{Member, Output};
use crate::hooks::{Facts, Hook, Hooks};
use crate::ui;

/// What the rollout knows of a host: enough to decide, nothing that talks to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub name: String,
    /// Its job's phase (awaiting-go, awaiting-verdict, ...), once it said one.
    pub phase: Option<Phase>,
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

/// What the rollout knows of a member (see [`View`]).
fn view(m: &Member) -> View {
    View {
        name: m.name().to_string(),
        phase: m.job.phase,
        ended: m
            .job
            .outcome
            .as_ref()
            .map(|o| (o.success(), format!("{}: {}", o.result, o.reason))),
        gone: m.job.gone,
        reachable: m.job.can_send(),
        activated: m.activated,
        told_back: m.told_back,
        told_commit: m.told_commit,
    }
}

/// Whether `post-host-healthy` is due for a host (pure), `(forward, back)`, given whether it ran
/// for it already: forward once a switched host waits for the verdict (or succeeded) and was
/// not told back; back once a switched host ended `rolled-back` (restored and checked).
fn healthy_due(h: &View, (ran_forward, ran_back): (bool, bool)) -> (bool, bool) {
    let result = h.ended.as_ref().and_then(|(_, how)| how.split(':').next());
    let forward = h.activated
        && !h.told_back
        && !ran_forward
        && (h.phase == Some(Phase::AwaitingVerdict) || result == Some(JobResult::Success.name()));
    let back = h.activated && !ran_back && result == Some(JobResult::RolledBack.name());
    (forward, back)
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
            Msg::Go => Message::Go.name().into(),
            Msg::Commit => Message::Commit.name().into(),
            Msg::Revert => Message::Revert.name().into(),
            Msg::Abort(why) => {
                Message::abort_line(JobResult::Failed, &format!("the fleet goes back ({why})"))
            }
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
    /// The per-host hooks (`pre-host-switch`, `post-host-healthy`) and the facts they get.
    hooks: Option<(Hooks, Facts)>,
    /// Per host: `post-host-healthy` ran for it on the new release, and on the previous one.
    healthy: Vec<(bool, bool)>,
}

impl Rollout {
    pub fn new(batch: usize) -> Rollout {
        Rollout {
            batch: batch.max(1),
            next: 0,
            failed: None,
            committed: false,
            stands_said: false,
            hooks: None,
            healthy: Vec::new(),
        }
    }

    /// Call the per-host hooks around each host's switch (`facts`: the run's, before the lock).
    pub fn with_hooks(mut self, hooks: Hooks, facts: Facts) -> Rollout {
        self.hooks = Some((hooks, facts));
        self
    }

    /// Run a per-host hook for `m` (`back`: the fleet goes back); its failure, if any.
    fn hook(&self, hook: Hook, m: &Member, back: bool, out: &mut dyn Output) -> Result<(), String> {
        let Some((hooks, facts)) = &self.hooks else {
            return Ok(());
        };
        if !hooks.has(hook) {
            return Ok(());
        }
        out.close();
        let facts = Facts {
            host: crate::config::host_of(&m.host.dest).to_string(),
            direction: if back { "back" } else { "forward" }.into(),
            ..facts.clone()
        };
        hooks
            .run(hook, &facts, m.name())
            .map_err(|e| format!("{e:#} for {}", m.name()))
    }

    /// `post-host-healthy` for each host that became healthy since: on the new release (it
    /// waits for the verdict, or succeeded), or on the previous one (it went back and ended
    /// `rolled-back`: restored and checked). A failure on the way forward fails the rollout like
    /// an unhealthy host; on the way back it is said, and the fleet goes on back.
    fn after_healthy(&mut self, members: &[Member], out: &mut dyn Output) {
        self.healthy.resize(members.len(), (false, false));
        for (i, m) in members.iter().enumerate() {
            let (forward, back) = healthy_due(&view(m), self.healthy[i]);
            if forward {
                self.healthy[i].0 = true;
                if let Err(e) = self.hook(Hook::PostHostHealthy, m, false, out) {
                    if !self.committed && self.failed.is_none() {
                        self.failed = Some(e);
                    }
                }
            }
            if back {
                self.healthy[i].1 = true;
                if let Err(e) = self.hook(Hook::PostHostHealthy, m, true, out) {
                    out.line(&ui::event_line(&format!("warning: {e}")));
                }
            }
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
            .any(|h| h.phase != Some(Phase::AwaitingGo) && !h.activated)
        {
            return Vec::new();
        }
        let in_flight = hosts
            .iter()
            .filter(|h| h.activated && h.phase != Some(Phase::AwaitingVerdict) && !h.over())
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
                    && (h.phase == Some(Phase::AwaitingVerdict)
                        || h.ended.as_ref().is_some_and(|e| e.0))
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
        self.after_healthy(members, out);
        let was_committed = self.committed;
        let views: Vec<View> = members.iter().map(view).collect();
        let sends = self.plan(&views);
        if self.committed && !was_committed {
            out.line(&ui::step_line(
                &format!("all {} hosts healthy: commit", members.len()),
                "ok",
            ));
        }
        let mut told = Vec::new();
        for (i, msg) in sends {
            // Once one `go` failed, the rest of its batch stays where it is (it goes back).
            if msg == Msg::Go && self.failed.is_some() {
                continue;
            }
            // Before a host switches (forward, or back): a failure forward fails the rollout
            // like an unhealthy host (it never switches); back, it is said and the host goes.
            if matches!(msg, Msg::Go | Msg::Revert) {
                let back = msg == Msg::Revert;
                if let Err(e) = self.hook(Hook::PreHostSwitch, &members[i], back, out) {
                    if !back {
                        self.failed = Some(e);
                        continue;
                    }
                    out.line(&ui::event_line(&format!("warning: {e}")));
                }
            }
            let m = &mut members[i];
            match m.job.send_line(&msg.text()) {
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
            out.line(&ui::event_line(&format!(
                "the fleet goes back to its previous release ({}): {}",
                self.failed.as_deref().unwrap_or("?"),
                told.join(", ")
            )));
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
                out.line(&ui::event_line(&format!(
                    "{why}: every host was healthy and told to commit: the verdict stands (a host that missed it gets it again)"
                )));
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
            phase: Phase::parse(phase),
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
        h[0].phase = Phase::parse("awaiting-go");
        let s = r.plan(&h);
        assert_eq!(s, vec![(0, Msg::Go)]);
        sent(&mut h, &s);
        h[0].phase = Phase::parse("health");
        assert_eq!(r.plan(&h), vec![], "a is in flight");
        h[0].phase = Phase::parse("awaiting-verdict");
        let s = r.plan(&h);
        assert_eq!(s, vec![(1, Msg::Go)]);
        sent(&mut h, &s);
        h[1].phase = Phase::parse("awaiting-verdict");
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
        h[0].phase = Phase::parse("awaiting-verdict");
        h[1].phase = Phase::parse("awaiting-verdict");
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
    fn post_host_healthy_is_due_once_each_way() {
        let mut h = host("a", "health");
        assert_eq!(
            healthy_due(&h, (false, false)),
            (false, false),
            "not switched"
        );
        h.activated = true;
        assert_eq!(
            healthy_due(&h, (false, false)),
            (false, false),
            "not healthy yet"
        );
        h.phase = Phase::parse("awaiting-verdict");
        assert_eq!(healthy_due(&h, (false, false)), (true, false));
        assert_eq!(healthy_due(&h, (true, false)), (false, false), "once");
        // Told back: it restores; once it ended rolled-back, it is healthy there.
        h.told_back = true;
        assert_eq!(healthy_due(&h, (true, false)), (false, false));
        h.ended = Some((false, "rolled-back: the fleet went back".into()));
        assert_eq!(healthy_due(&h, (true, false)), (false, true));
        assert_eq!(healthy_due(&h, (true, true)), (false, false));
        // A host that failed its health checks and restored by itself: back only.
        let mut f = host("b", "restore");
        f.activated = true;
        f.ended = Some((false, "rolled-back: not healthy".into()));
        assert_eq!(healthy_due(&f, (false, false)), (false, true));
        // The last host of a committed fleet that already succeeded.
        let mut s = host("c", "record");
        s.activated = true;
        s.ended = Some((true, "success: ".into()));
        assert_eq!(healthy_due(&s, (false, false)), (true, false));
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
