//! What the server's files say about a job at one moment: its result file or its own
//! deploy.log line, `current`, the lock, and what deploy.log says happened after it. The
//! deployer's last words whenever it may have missed part of the job (see `Job::read_now`).

use std::time::Duration;

use crate::contract::JobResult;
use crate::deploy::entry::Entry;
use crate::deploy::event::Outcome;
use crate::deploy::snapshot::Snapshot;

/// The server time a job started at or after: what the server said right after starting it,
/// less how long the call took (rounded up) and a second for the clock's resolution. 0 when
/// the server did not say (then every line counts).
pub fn since_epoch(server_now: Option<i64>, call_took: Duration) -> i64 {
    match server_now {
        Some(now) => now - call_took.as_secs_f64().ceil() as i64 - 1,
        None => 0,
    }
}

/// The lock as a reading found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockNow {
    Free,
    /// This job's lock: whether its job still runs, its step, and whether the server booted
    /// since it was taken.
    Ours {
        alive: bool,
        phase: String,
        rebooted: bool,
    },
    /// Another deploy's lock (its description).
    Other(String),
}

/// What the server's files say about a job at one moment (see [`Job::read_now`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The job's result file; else its own deploy.log line; None: nothing recorded.
    pub outcome: Option<Outcome>,
    /// `current` now (`releases/NAME`, empty for none).
    pub current: String,
    /// What current was when the job was planned (`releases/NAME`, empty for none).
    pub before: String,
    pub lock: LockNow,
    /// deploy.log lines since the job started, other than its own (a boot check's
    /// `restored-at-boot`, an unlock, another deploy).
    pub after: Vec<Entry>,
}

impl Reading {
    /// The job is gone without a result: nothing recorded, and no live job holds its lock.
    pub fn gone_without_result(&self) -> bool {
        self.outcome.is_none() && !matches!(self.lock, LockNow::Ours { alive: true, .. })
    }
}

impl Reading {
    /// Read from a probe (and the job's result file it showed, if any) and deploy.log's lines
    /// since the job started; `(release, deployer)` find the job's own line; `before`: what
    /// current was when the job was planned.
    pub fn from_server(
        snap: &Snapshot,
        recorded: Option<Outcome>,
        token: &str,
        (release, deployer): (&str, &str),
        before: &str,
        lines: Vec<Entry>,
    ) -> Reading {
        let own = |e: &Entry| {
            e.get("release") == release
                && e.get("deployer") == deployer
                && !matches!(e.result(), Some(JobResult::Refused | JobResult::Unlocked))
        };
        let from_log = || {
            lines.iter().find(|e| own(e)).map(|e| Outcome {
                result: e.result_word().to_string(),
                reason: e.get("reason").replace('_', " "),
                duration: e.get("duration").trim_end_matches('s').to_string(),
                revision: e.get("alembic").to_string(),
                current: String::new(),
                logged: String::new(),
            })
        };
        let lock = match &snap.lock {
            None => LockNow::Free,
            Some(l) if l.token == token => LockNow::Ours {
                alive: l.alive != Some(false),
                phase: l.phase.clone(),
                rebooted: l.rebooted,
            },
            Some(l) => LockNow::Other(l.describe(snap.now)),
        };
        Reading {
            outcome: recorded.or_else(from_log),
            current: match snap.current.name() {
                Some(n) => format!("{}/{n}", crate::contract::layout::RELEASES),
                None => match &snap.current {
                    crate::deploy::snapshot::Current::Missing => String::new(),
                    other => other.link(),
                },
            },
            before: before.to_string(),
            lock,
            after: lines
                .into_iter()
                // Refusals changed nothing; neither did a command run in current (exec).
                .filter(|e| {
                    !own(e) && !matches!(e.result(), Some(JobResult::Refused | JobResult::Ran))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Reply;

    #[test]
    fn a_job_started_at_or_after_the_servers_time_less_the_call() {
        assert_eq!(since_epoch(Some(1000), Duration::from_millis(300)), 998);
        assert_eq!(since_epoch(Some(1000), Duration::from_millis(2100)), 996);
        assert_eq!(
            since_epoch(None, Duration::ZERO),
            0,
            "unknown: every line counts"
        );
    }

    fn probe(extra: &str) -> Snapshot {
        Snapshot::from_reply(&Reply::parse(&format!(
            "now=1795860990\nhost=app\ncurrent.status=ok\ncurrent.link=releases/20261128T101530Z\ncurrent=20261128T101530Z\n{extra}"
        )))
    }

    const RELEASE: &str = "20261128T101600Z";
    const WHO: &str = "alice@laptop";

    fn lines(text: &[&str]) -> Vec<Entry> {
        text.iter().map(|l| Entry::parse(l)).collect()
    }

    #[test]
    fn a_reading_takes_the_result_file_and_what_came_after() {
        let file = Outcome::from_reply(&Reply::parse(
            "job.result=rolled-back\njob.reason=not healthy\njob.current=releases/20261128T101530Z\n",
        ));
        let r = Reading::from_server(
            &probe("locked=no\n"),
            file,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            lines(&[
                "2026-11-28T10:16:00Z deployer=bob@ci commit=x scope=all release=20261128T101601Z result=refused duration=0.0s alembic=- reason=another_deploy_holds_the_lock",
                "2026-11-28T10:16:00Z deployer=alice@laptop commit=x scope=all release=20261128T101600Z result=rolled-back duration=30.1s alembic=0002 reason=not_healthy",
                "2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current_was_x",
            ]),
        );
        assert_eq!(r.outcome.as_ref().unwrap().result, "rolled-back");
        assert_eq!(r.current, "releases/20261128T101530Z");
        assert_eq!(r.lock, LockNow::Free);
        assert_eq!(
            r.after.len(),
            1,
            "not its own line, not a refusal: {:?}",
            r.after
        );
        assert_eq!(r.after[0].get("result"), "restored-at-boot");
    }

    #[test]
    fn without_a_result_file_a_reading_takes_the_jobs_own_log_line_and_the_lock() {
        // Another job's directory is newer: the result comes from deploy.log.
        let r = Reading::from_server(
            &probe("locked=yes\nlock.token=other\nlock.alive=yes\nlock.user=bob\n"),
            None,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            lines(&["2026-11-28T10:16:00Z deployer=alice@laptop commit=x scope=all release=20261128T101600Z result=interrupted duration=12.0s alembic=- reason=the_deployer_fell_silent"]),
        );
        let o = r.outcome.unwrap();
        assert_eq!(
            (o.result.as_str(), o.reason.as_str(), o.duration.as_str()),
            ("interrupted", "the deployer fell silent", "12.0")
        );
        assert!(matches!(r.lock, LockNow::Other(_)));
        // Its own lock, its job dead, nothing recorded.
        let r = Reading::from_server(
            &probe("locked=yes\nlock.token=tok\nlock.alive=no\nlock.phase=prepare\n"),
            None,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            Vec::new(),
        );
        assert_eq!(r.outcome, None);
        assert_eq!(
            r.lock,
            LockNow::Ours {
                alive: false,
                phase: "prepare".into(),
                rebooted: false,
            }
        );
    }
}
