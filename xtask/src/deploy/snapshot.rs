//! What the server looks like, from one `probe` call: current (and what is wrong with it),
//! the releases, the lock and whether its job lives, the last job, and for `status` the units,
//! the disk and the database revision. Pure parsing, tested on the probe's text.

use crate::config::HostRole;
use crate::deploy::entry::Entry;
use crate::deploy::event::Event;
use crate::deploy::lock::LockInfo;
use crate::deploy::release::{self, Made, Release, State};
use crate::remote::Reply;

/// What `current` is on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// A link to a release directory that exists.
    Release(String),
    /// No `current` at all (a server that never had a successful deploy).
    Missing,
    /// A link to a release whose directory is gone (removed by hand or by a disk tool).
    Dangling(String),
    /// Something else: not a link, or a link outside releases/.
    Foreign(String),
}

impl Current {
    fn parse(status: &str, link: &str, name: &str) -> Current {
        match status {
            "ok" if release::is_name(name) => Current::Release(name.to_string()),
            "missing" => Current::Missing,
            "dangling" => Current::Dangling(link.to_string()),
            _ => Current::Foreign(link.to_string()),
        }
    }

    /// The release current runs, when it runs one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Current::Release(n) => Some(n),
            _ => None,
        }
    }

    /// What the client plans against: the link as it is (`-`: none). The job compares it under
    /// the lock.
    pub fn link(&self) -> String {
        match self {
            Current::Release(n) => format!("{}/{n}", crate::contract::layout::RELEASES),
            Current::Missing => "-".to_string(),
            Current::Dangling(l) | Current::Foreign(l) => l.clone(),
        }
    }

    /// The release name a dangling link still names (a rollback starts from there).
    pub fn named(&self) -> Option<&str> {
        match self {
            Current::Release(n) => Some(n),
            Current::Dangling(l) => l.rsplit('/').next().filter(|n| release::is_name(n)),
            _ => None,
        }
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        match self {
            Current::Release(n) => n.clone(),
            Current::Missing => "none (no current link: nothing was deployed successfully yet)".into(),
            Current::Dangling(l) => format!(
                "DANGLING: current -> {l}, which does not exist (removed by hand?): deploy all, or roll back to a release from 'deploy list'"
            ),
            Current::Foreign(l) => format!(
                "NOT A RELEASE: current is '{l}', not a link into releases/: deploy all replaces it"
            ),
        }
    }
}

/// The role setup-server recorded on the host (`contract::ROLE_FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Role(HostRole),
    /// No record: a host set up before roles were recorded (or never set up).
    Missing,
    /// A record that is not root's plain file of one known word: what the probe found.
    Invalid(String),
}

impl Recorded {
    fn parse(value: Option<&str>) -> Recorded {
        match value {
            None | Some("missing") => Recorded::Missing,
            Some(v) => HostRole::parse(v)
                .map(Recorded::Role)
                .unwrap_or_else(|| Recorded::Invalid(v.to_string())),
        }
    }

    /// One word or phrase for `status` and `list`.
    pub fn describe(&self) -> String {
        match self {
            Recorded::Role(r) => r.name().to_string(),
            Recorded::Missing => "not recorded".to_string(),
            Recorded::Invalid(why) => format!("unreadable record ({why})"),
        }
    }
}

/// A unit as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub name: String,
    pub active: String,
    pub restarts: String,
    pub enabled: String,
}

/// The last job of the server (running or finished).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastJob {
    pub token: String,
    pub result: Option<String>,
    pub reason: String,
    pub duration: String,
    /// Bytes of its event stream so far.
    pub events: u64,
    /// Its last events.
    pub events_tail: Vec<Event>,
    /// Its result could not be recorded (why): it waits in the lock for the next job.
    pub unrecorded: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub now: i64,
    pub host: String,
    /// The role recorded on the host.
    pub role: Recorded,
    pub current: Current,
    pub current_made: Made,
    /// The boot check's deploy.log line when current is where it put it (nothing logged since).
    pub restored: Option<Entry>,
    pub releases: Vec<Release>,
    pub junk: Vec<String>,
    pub lock: Option<LockInfo>,
    pub last_job: Option<LastJob>,
    pub units: Vec<UnitState>,
    pub disk: Option<String>,
    /// The database revision, or why it could not be read.
    pub db: Result<String, String>,
    /// What each release adds on disk (kB), oldest first.
    pub sizes: Vec<(String, u64)>,
    /// The snapshots of the database (`shared/db`), each by the release that ran on its data.
    pub dumps: Vec<crate::deploy::dbsnap::Dump>,
    /// Maintenance mode (`cargo xtask maintenance`), as its flag file says.
    pub maintenance: Maintenance,
}

impl Snapshot {
    pub fn from_reply(reply: &Reply) -> Snapshot {
        let current = Current::parse(
            reply.get("current.status").unwrap_or("missing"),
            reply.get("current.link").unwrap_or(""),
            reply.get("current").unwrap_or(""),
        );
        let last_job = reply.get("job.token").map(|t| LastJob {
            token: t.to_string(),
            result: reply.get("job.result").map(str::to_string),
            reason: reply.get("job.reason").unwrap_or("").to_string(),
            duration: reply.get("job.duration").unwrap_or("").to_string(),
            events: reply
                .get("job.events")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            events_tail: reply
                .all("job.event")
                .into_iter()
                .filter_map(Event::parse)
                .collect(),
            unrecorded: reply.get("job.unrecorded").map(str::to_string),
        });
        let units = reply
            .all("unit")
            .into_iter()
            .map(|u| {
                let mut p = u.split(' ');
                let mut next = || p.next().unwrap_or("?").to_string();
                UnitState {
                    name: next(),
                    active: next(),
                    restarts: next(),
                    enabled: next(),
                }
            })
            .collect();
        let db = match (reply.get("db.revision"), reply.get("db.error")) {
            (Some(r), _) => Ok(r.to_string()),
            (None, Some(e)) => Err(e.to_string()),
            (None, None) => Err("not asked".to_string()),
        };
        let sizes = reply
            .all("size")
            .into_iter()
            .filter_map(|s| {
                let (name, kb) = s.split_once(' ')?;
                Some((name.to_string(), kb.trim().parse().ok()?))
            })
            .collect();
        Snapshot {
            now: reply.get("now").and_then(|n| n.parse().ok()).unwrap_or(0),
            host: reply.get("host").unwrap_or("?").to_string(),
            role: Recorded::parse(reply.get("role")),
            current,
            current_made: Made {
                state: State::parse(reply.get("current.state").unwrap_or("")),
                backend_commit: reply
                    .get("current.backend_commit")
                    .unwrap_or("-")
                    .to_string(),
                frontend_commit: reply
                    .get("current.frontend_commit")
                    .unwrap_or("-")
                    .to_string(),
            },
            restored: reply.get("current.restored").map(Entry::parse),
            releases: reply
                .all("release")
                .into_iter()
                .filter_map(Release::parse)
                .collect(),
            junk: reply.all("junk").into_iter().map(str::to_string).collect(),
            lock: LockInfo::from_reply(reply),
            maintenance: Maintenance::from_reply(reply),
            last_job,
            units,
            disk: reply.get("disk").map(str::to_string),
            db,
            sizes,
            dumps: crate::deploy::dbsnap::Dump::all(reply),
        }
    }

    /// Releases named in the future of the server's clock.
    pub fn future(&self) -> Vec<&str> {
        self.releases
            .iter()
            .filter(|r| release::is_future(&r.name, self.now))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// A `preparing` release with no live job preparing it: a deploy that died (not one whose
    /// job ended but could not record its result: see [`Snapshot::unrecorded`]).
    pub fn dead_preparing(&self, name: &str) -> bool {
        let live = self
            .lock
            .as_ref()
            .is_some_and(|l| l.alive == Some(true) && l.release == name);
        self.releases
            .iter()
            .any(|r| r.name == name && r.state == Some(State::Preparing))
            && !live
            && self.unrecorded(name).is_none()
    }

    /// The result a dead job of release `name` could not record, and why: it waits in the
    /// lock for the next deploy or rollback (the boot check counts it meanwhile).
    pub fn unrecorded(&self, name: &str) -> Option<&(String, String)> {
        self.lock
            .as_ref()
            .filter(|l| l.alive == Some(false) && l.release == name)
            .and_then(|l| l.unrecorded.as_ref())
    }

    /// Warnings every command prints: junk in releases/, releases from the future.
    pub fn warnings(&self, root: &str) -> Vec<String> {
        let mut w: Vec<String> = self
            .junk
            .iter()
            .map(|j| {
                format!(
                    "{root}/releases/{} is not a release (left alone; remove it by hand if it is yours)",
                    j.escape_debug()
                )
            })
            .collect();
        for f in self.future() {
            w.push(format!(
                "release {f} on {} is named in the future of the server's clock: it is never taken for the newest release, the prune anchor or a rollback target (check the clocks)",
                self.host
            ));
        }
        w
    }
}

/// Maintenance mode on one host, as its flag file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maintenance {
    pub on: bool,
    pub since: String,
    pub by: String,
    pub message: String,
    /// The deploy job that turned it on (it turns it off in its record step); empty: a person.
    pub token: String,
}

impl Maintenance {
    /// From a reply's `maintenance*` lines (the `maintenance` call, or the probe).
    pub fn from_reply(reply: &Reply) -> Maintenance {
        let get = |k: &str| reply.get(k).filter(|v| *v != "-").unwrap_or("").to_string();
        Maintenance {
            on: reply.get("maintenance") == Some("on"),
            since: get("maintenance.since"),
            by: get("maintenance.by"),
            message: get("maintenance.message"),
            token: get("maintenance.token"),
        }
    }

    /// `on since T by WHO (deploy job TOKEN): "MESSAGE"`, or `off`.
    pub fn describe(&self) -> String {
        if !self.on {
            return "off".to_string();
        }
        let mut s = format!("ON since {} by {}", self.since, self.by);
        if !self.token.is_empty() {
            s += &format!(" (turned on by deploy job {})", self.token);
        }
        if !self.message.is_empty() {
            s += &format!(": \"{}\"", self.message);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_back() {
        let r = Reply::parse(
            "now=1795860990\nhost=app\ncurrent.status=ok\ncurrent.link=releases/20261128T101530Z\ncurrent=20261128T101530Z\ncurrent.state=succeeded\ncurrent.backend_commit=abc\ncurrent.frontend_commit=def\nrelease=20261128T101530Z succeeded abc 0002\nrelease=20261128T101700Z preparing abc -\njunk=README\nlocked=no\njob.token=9-9\njob.result=success\njob.events=1234\nunit=innercontext active 0 enabled\nsize=20261128T101530Z 1024\n",
        );
        let s = Snapshot::from_reply(&r);
        assert_eq!(s.current, Current::Release("20261128T101530Z".into()));
        assert_eq!(s.current.link(), "releases/20261128T101530Z");
        assert_eq!(s.current_made.frontend_commit, "def");
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.junk, vec!["README"]);
        assert!(s.lock.is_none());
        assert_eq!(s.last_job.as_ref().unwrap().events, 1234);
        assert_eq!(s.units[0].enabled, "enabled");
        assert_eq!(s.sizes, vec![("20261128T101530Z".to_string(), 1024)]);
        assert!(s.dead_preparing("20261128T101700Z"), "no lock holds it");
        assert_eq!(s.db, Err("not asked".into()));
        assert_eq!(s.role, Recorded::Missing, "no role= line: not recorded");
    }

    #[test]
    fn the_recorded_role_reads_back() {
        let role = |v: &str| Snapshot::from_reply(&Reply::parse(&format!("role={v}\n"))).role;
        assert_eq!(role("primary"), Recorded::Role(HostRole::Primary));
        assert_eq!(role("secondary"), Recorded::Role(HostRole::Secondary));
        assert_eq!(role("missing"), Recorded::Missing);
        let bad = role("invalid: /etc/innercontext/role is not root's");
        assert!(matches!(&bad, Recorded::Invalid(w) if w.contains("not root's")));
        assert!(bad.describe().starts_with("unreadable record"));
    }

    #[test]
    fn current_says_exactly_what_is_wrong() {
        let parse = |status, link: &str| {
            let r = Reply::parse(&format!(
                "current.status={status}\ncurrent.link={link}\ncurrent=\n"
            ));
            Snapshot::from_reply(&r).current
        };
        assert_eq!(parse("missing", ""), Current::Missing);
        let d = parse("dangling", "releases/20261128T101530Z");
        assert_eq!(d, Current::Dangling("releases/20261128T101530Z".into()));
        assert!(d.describe().starts_with("DANGLING"));
        assert_eq!(d.named(), Some("20261128T101530Z"));
        assert_eq!(d.name(), None);
        assert_eq!(d.link(), "releases/20261128T101530Z");
        assert!(parse("foreign", "/etc")
            .describe()
            .starts_with("NOT A RELEASE"));
        assert_eq!(Current::Missing.link(), "-");
        assert_ne!(Current::Missing.describe(), d.describe());
    }

    #[test]
    fn a_result_left_in_the_lock_is_not_a_dead_release() {
        let r = Reply::parse(
            "release=20261128T101700Z preparing abc -\nlocked=yes\nlock.release=20261128T101700Z\nlock.alive=no\nlock.unrecorded=success\nlock.unrecorded_why=No space left on device\njob.token=1-2\njob.result=success\njob.unrecorded=No space left on device\n",
        );
        let s = Snapshot::from_reply(&r);
        assert!(!s.dead_preparing("20261128T101700Z"));
        assert_eq!(
            s.unrecorded("20261128T101700Z").map(|u| u.0.as_str()),
            Some("success")
        );
        assert_eq!(
            s.last_job.unwrap().unrecorded.as_deref(),
            Some("No space left on device")
        );
    }

    #[test]
    fn a_live_job_keeps_its_release_alive() {
        let r = Reply::parse(
            "release=20261128T101700Z preparing abc -\nlocked=yes\nlock.release=20261128T101700Z\nlock.alive=yes\n",
        );
        let s = Snapshot::from_reply(&r);
        assert!(!s.dead_preparing("20261128T101700Z"));
    }

    #[test]
    fn releases_from_the_future_are_reported() {
        let r = Reply::parse(
            "now=1795860930\nhost=app\nrelease=20261128T101530Z succeeded a -\nrelease=20261128T201530Z succeeded a -\n",
        );
        let s = Snapshot::from_reply(&r);
        assert_eq!(s.future(), vec!["20261128T201530Z"]);
        assert!(s.warnings("/opt/ic")[0].contains("named in the future"));
    }
}
