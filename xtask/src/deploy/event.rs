//! The job's events as the deployer reads them: one line each in the job's event stream
//! (`jobs/TOKEN/events`, written by `emit` in scripts/deploy-job.sh), `MS<TAB>KIND<TAB>FIELD...`;
//! and the outcome a `result` event (or the job's result file) reports.

use crate::contract::{EventKind, JobResult, Note, Step, StepStatus};
use crate::remote::Reply;

/// One event of the job, as it wrote it: server time (ms), kind, fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ms: u64,
    pub kind: EventKind,
    pub fields: Vec<String>,
}

impl Event {
    /// `MS<TAB>KIND<TAB>FIELD...` (a kind of the contract); None for anything else. The one
    /// reading of an event line: the follower's stream and the probe's last events alike. The
    /// fields are server-written text, control characters stripped ([`crate::quote::printable`]).
    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split('\t');
        let ms = parts.next()?.parse().ok()?;
        let kind = EventKind::parse(parts.next()?)?;
        Some(Event {
            ms,
            kind,
            fields: parts.map(crate::quote::printable).collect(),
        })
    }

    pub fn field(&self, i: usize) -> &str {
        self.fields.get(i).map(String::as_str).unwrap_or("")
    }

    /// A `step` event's step and mark (`step NAME start LABEL`, `step NAME ok SECS`,
    /// `step NAME failed SECS WHY`); None for other events. A step the contract does not know
    /// is None too: its name is still `field(0)`.
    pub fn step(&self) -> Option<(Option<Step>, StepStatus)> {
        if self.kind != EventKind::Step {
            return None;
        }
        Some((
            Step::parse(self.field(0)),
            StepStatus::parse(self.field(1))?,
        ))
    }

    /// A `note` event's kind (its first field); None for other events and unknown notes.
    pub fn note(&self) -> Option<Note> {
        (self.kind == EventKind::Note)
            .then(|| Note::parse(self.field(0)))
            .flatten()
    }
}

/// How a job ended, as it reported it (read back from the server: the truth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: String,
    pub reason: String,
    pub duration: String,
    pub revision: String,
    /// What `current` is after the job, read by the job itself.
    pub current: String,
    /// The deploy.log line the job wrote, as its result event carried it (empty: not known
    /// here, read from a result file, or none was written).
    pub logged: String,
}

impl Outcome {
    pub fn from_event(e: &Event) -> Outcome {
        Outcome {
            result: e.field(0).to_string(),
            reason: e.field(1).to_string(),
            duration: e.field(2).to_string(),
            revision: e.field(3).to_string(),
            current: e.field(4).to_string(),
            logged: e.field(5).to_string(),
        }
    }

    pub fn from_reply(r: &Reply) -> Option<Outcome> {
        Some(Outcome {
            result: r.get("job.result")?.to_string(),
            reason: r.get("job.reason").unwrap_or("").to_string(),
            duration: r.get("job.duration").unwrap_or("").to_string(),
            revision: r.get("job.revision").unwrap_or("").to_string(),
            current: r.get("job.current").unwrap_or("").to_string(),
            logged: String::new(),
        })
    }

    /// The result as the contract knows it (None: a word it does not know, or none).
    pub fn kind(&self) -> Option<JobResult> {
        JobResult::parse(&self.result)
    }

    /// Whether the job did what it was asked: `success` (a deploy, a rollback), `restored`
    /// (`db restore`) or `env-pushed` (`env push`, `env rollback`).
    pub fn success(&self) -> bool {
        matches!(
            self.kind(),
            Some(JobResult::Success | JobResult::Restored | JobResult::EnvPushed)
        )
    }
}

/// What a caller does with each event while it waits (render it, note it, ...).
pub trait Watcher {
    fn event(&mut self, host: &str, e: &Event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let e = Event::parse("1795860930123\tstep\tprepare\tok\t1.2").unwrap();
        assert_eq!(e.ms, 1_795_860_930_123);
        assert_eq!(e.kind, EventKind::Step);
        assert_eq!(e.step(), Some((Some(Step::Prepare), StepStatus::Ok)));
        assert_eq!(e.note(), None);
        assert_eq!(e.fields, vec!["prepare", "ok", "1.2"]);
        assert_eq!(e.field(7), "");
        assert!(Event::parse("started=yes").is_none());
        assert!(
            Event::parse("12\tbogus\tx").is_none(),
            "kinds come from the contract"
        );
        let r = Event::parse(
            "1\tresult\trolled-back\tnot healthy\t3.4\t0002\treleases/20261128T101530Z",
        )
        .unwrap();
        let o = Outcome::from_event(&r);
        assert_eq!(o.result, "rolled-back");
        assert_eq!(o.current, "releases/20261128T101530Z");
        assert!(!o.success());
        assert_eq!(o.kind(), Some(JobResult::RolledBack));
        assert_eq!(o.logged, "", "an event without the line (an older job's)");
        let line = "2026-11-28T10:15:30Z deployer=a@b commit=c scope=all release=r result=success";
        let r = Event::parse(&format!(
            "1\tresult\tsuccess\t\t3.4\t0002\treleases/r\t{line}"
        ));
        assert_eq!(Outcome::from_event(&r.unwrap()).logged, line);
        let n = Event::parse("2\tnote\tseed\t20261128T101530Z\tlinked").unwrap();
        assert_eq!(n.note(), Some(Note::Seed));
        assert_eq!(n.step(), None);
    }

    #[test]
    fn event_fields_lose_control_characters() {
        let e = Event::parse("3\tdetail\tboom\u{1b}]0;pwned\u{7}\u{1b}[2J!\r").unwrap();
        assert_eq!(e.fields, vec!["boom!"]);
        let r = Reply::parse(
            "line=2026 who=x\u{1b}[31m reason=a\u{9b}2Jb\tc\nother=\u{1b}]0;t\u{7}v\n",
        );
        assert_eq!(r.get("line"), Some("2026 who=x reason=ab\tc"));
        assert_eq!(r.get("other"), Some("v"));
    }
}
