//! Releases: names, states, and the pure choices made about them (next name, what to prune,
//! what to roll back to). Names are fixed-width UTC timestamps, so sorting by name is sorting
//! by age; mtimes are never consulted.

use anyhow::{bail, Result};
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

const NAME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

const ISO_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

use crate::contract::{FAILED_GRACE_SECS, FUTURE_TOLERANCE_SECS};

pub use crate::contract::State;

/// How a release's state (None: a word the contract does not know, in a file edited by hand,
/// which counts as not succeeded) reads in a listing (`unknown` for None).
pub fn state_name(state: Option<State>) -> &'static str {
    state.map_or("unknown", State::name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub state: Option<State>,
    pub commit: String,
    pub revision: String,
}

impl Release {
    /// Parse a `release=` value from the remote script: `NAME STATE COMMIT REVISION`.
    pub fn parse(line: &str) -> Option<Release> {
        let mut parts = line.split(' ');
        let name = parts.next()?.to_string();
        if !is_name(&name) {
            return None;
        }
        let state = State::parse(parts.next().unwrap_or(""));
        let commit = parts.next().unwrap_or("-").to_string();
        let revision = parts.next().unwrap_or("-").to_string();
        Some(Release {
            name,
            state,
            commit,
            revision,
        })
    }
}

/// What a release was made from: its state and the commit of each half (`-` when unknown;
/// `+dirty` marks a tree with uncommitted changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub state: Option<State>,
    pub backend_commit: String,
    pub frontend_commit: String,
}

impl Made {
    /// Whether this (current) release already runs `commit` for every half `scope` ships, so a
    /// deploy would change nothing. A dirty tree is never considered deployed.
    pub fn runs(&self, scope: crate::flags::Scope, commit: &str, dirty: bool) -> bool {
        !dirty
            && self.state == Some(State::Succeeded)
            && commit != "-"
            && (!scope.backend() || self.backend_commit == commit)
            && (!scope.frontend() || self.frontend_commit == commit)
    }
}

pub fn name_for(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(NAME_FORMAT)
        .expect("a UTC time always formats")
}

/// UTC time as `2026-11-28T10:15:30Z`.
pub fn iso(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(ISO_FORMAT)
        .expect("a UTC time always formats")
}

pub fn parse_name(name: &str) -> Option<OffsetDateTime> {
    let t = time::PrimitiveDateTime::parse(name, NAME_FORMAT).ok()?;
    Some(t.assume_utc())
}

/// Whether a release is named for a time more than a few minutes ahead of the server's clock
/// (`server_now`, Unix seconds): such a release is reported and never taken for the newest one,
/// the prune anchor or a rollback target.
pub fn is_future(name: &str, server_now: i64) -> bool {
    parse_name(name).is_some_and(|t| t.unix_timestamp() - server_now > FUTURE_TOLERANCE_SECS)
}

/// The releases that are not from the future.
pub fn present(releases: &[Release], server_now: i64) -> Vec<Release> {
    releases
        .iter()
        .filter(|r| !is_future(&r.name, server_now))
        .cloned()
        .collect()
}

/// Exactly `YYYYMMDDTHHMMSSZ` and a real date: nothing else may name a release.
pub fn is_name(name: &str) -> bool {
    name.len() == 16 && parse_name(name).is_some()
}

/// A user-supplied release name (rollback target), with a message that says what is wrong.
pub fn validate_user_name(name: &str) -> Result<()> {
    if !is_name(name) {
        bail!(
            "'{}' is not a release name: use one from 'cargo xtask deploy list' (like 20261128T101530Z)",
            name.escape_debug()
        );
    }
    Ok(())
}

/// The name for a new release: the server's `now`, or one second past the newest existing one
/// if the clock would not move forward (two deploys within a second). Releases named in the
/// future are ignored.
pub fn next_name(now: OffsetDateTime, existing: &[Release]) -> String {
    let newest = existing
        .iter()
        .filter(|r| !is_future(&r.name, now.unix_timestamp()))
        .filter_map(|r| parse_name(&r.name))
        .max();
    match newest {
        Some(n) if n >= now.replace_nanosecond(0).unwrap_or(now) => {
            name_for(n + time::Duration::seconds(1))
        }
        _ => name_for(now),
    }
}

/// Which releases to delete after a successful deploy: keep the newest `keep` successful ones
/// (the current release among them whatever its state), remove older successful ones, and
/// remove failed or abandoned ones older than the grace period. Never `current`, never
/// `protect` (the release being deployed).
pub fn prune(
    releases: &[Release],
    current: Option<&str>,
    protect: Option<&str>,
    keep: usize,
    now: OffsetDateTime,
) -> Vec<String> {
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by(|a, b| b.name.cmp(&a.name));
    let untouchable = |name: &str| {
        Some(name) == current || Some(name) == protect || is_future(name, now.unix_timestamp())
    };
    // The current release always stays and takes one of the `keep` places.
    let mut kept_ok = usize::from(releases.iter().any(|r| Some(r.name.as_str()) == current));
    let mut doomed = Vec::new();
    for r in sorted {
        if untouchable(&r.name) {
            continue;
        }
        match r.state {
            Some(State::Succeeded) => {
                if kept_ok < keep {
                    kept_ok += 1;
                } else {
                    doomed.push(r.name.clone());
                }
            }
            Some(State::Failed | State::Preparing) | None => {
                let old = parse_name(&r.name)
                    .is_some_and(|t| (now - t).whole_seconds() > FAILED_GRACE_SECS);
                if old {
                    doomed.push(r.name.clone());
                }
            }
        }
    }
    doomed.sort();
    doomed
}

/// The release to roll back to: the named one (must exist and have succeeded) or the newest
/// successful release older than current (`current`: its name, even when its directory is gone).
pub fn rollback_target(
    releases: &[Release],
    current: Option<&str>,
    requested: Option<&str>,
    server_now: i64,
) -> Result<String> {
    if let Some(name) = requested {
        validate_user_name(name)?;
        let Some(r) = releases.iter().find(|r| r.name == name) else {
            bail!("release {name} does not exist on the server: see 'cargo xtask deploy list'");
        };
        if r.state != Some(State::Succeeded) {
            bail!(
                "release {name} is {}, not succeeded: only releases that passed their health checks can be rolled back to",
                state_name(r.state)
            );
        }
        if Some(name) == current {
            bail!("release {name} is already current");
        }
        if is_future(name, server_now) {
            bail!("release {name} is named in the future (the server's clock is behind it): it cannot be a rollback target until the clocks agree");
        }
        return Ok(name.to_string());
    }
    let Some(current) = current else {
        bail!("there is no current release to roll back from: name the release to switch to (see 'cargo xtask deploy list')");
    };
    releases
        .iter()
        .filter(|r| r.state == Some(State::Succeeded) && r.name.as_str() < current)
        .filter(|r| !is_future(&r.name, server_now))
        .map(|r| r.name.clone())
        .max()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no successful release older than current ({current}) to roll back to: see 'cargo xtask deploy list'"
            )
        })
}

/// Human age: `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn r(name: &str, state: State) -> Release {
        Release {
            name: name.to_string(),
            state: Some(state),
            commit: "-".into(),
            revision: "-".into(),
        }
    }

    #[test]
    fn names_are_fixed_width_utc() {
        let t = datetime!(2026-11-28 10:15:30.999 +01:00);
        assert_eq!(name_for(t), "20261128T091530Z");
        assert_eq!(iso(t), "2026-11-28T09:15:30Z");
        assert!(is_name("20261128T091530Z"));
        for bad in [
            "20261128T091530",
            "2026-11-28",
            "../20261128T091530Z",
            "/etc",
            "20261328T091530Z",
            "20261128T091530Z ",
            "",
            "current",
        ] {
            assert!(!is_name(bad), "{bad}");
        }
        // A flag given where a release goes (the workflow's input, after `--`) is refused
        // before anything connects, in one line.
        let e = validate_user_name("--force").unwrap_err().to_string();
        assert_eq!(
            e,
            "'--force' is not a release name: use one from 'cargo xtask deploy list' (like 20261128T101530Z)"
        );
        // Sorting names sorts by time.
        let mut names = ["20261128T091530Z", "20251231T235959Z", "20261128T091529Z"];
        names.sort();
        assert_eq!(names[0], "20251231T235959Z");
    }

    #[test]
    fn next_name_moves_forward() {
        let now = datetime!(2026-11-28 10:15:30.5 UTC);
        assert_eq!(next_name(now, &[]), "20261128T101530Z");
        let same = [r("20261128T101530Z", State::Succeeded)];
        assert_eq!(next_name(now, &same), "20261128T101531Z");
        // A release a little ahead (within the clock tolerance) still moves the name forward.
        let ahead = [r("20261128T101700Z", State::Failed)];
        assert_eq!(next_name(now, &ahead), "20261128T101701Z");
        let past = [r("20261128T101529Z", State::Succeeded)];
        assert_eq!(next_name(now, &past), "20261128T101530Z");
    }

    #[test]
    fn prune_keeps_five_successful_and_current() {
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let releases: Vec<Release> = (0..8)
            .map(|i| r(&format!("20261128T10000{i}Z"), State::Succeeded))
            .collect();
        let doomed = prune(&releases, Some("20261128T100007Z"), None, 5, now);
        assert_eq!(
            doomed,
            vec!["20261128T100000Z", "20261128T100001Z", "20261128T100002Z"]
        );
        // current is old (after a rollback): it is kept and counts as one of the five.
        let doomed = prune(&releases, Some("20261128T100001Z"), None, 5, now);
        assert_eq!(
            doomed,
            vec!["20261128T100000Z", "20261128T100002Z", "20261128T100003Z"]
        );
    }

    #[test]
    fn failed_releases_do_not_count_and_expire() {
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let releases = vec![
            r("20261120T000000Z", State::Failed),    // old failed: removed
            r("20261127T110000Z", State::Preparing), // abandoned, 25h: removed
            r("20261128T100000Z", State::Succeeded),
            r("20261128T110000Z", State::Failed), // recent failed: kept for a look
            r("20261128T113000Z", State::Succeeded),
            r("20261128T115959Z", State::Preparing), // being deployed: protected
        ];
        let doomed = prune(
            &releases,
            Some("20261128T113000Z"),
            Some("20261128T115959Z"),
            1,
            now,
        );
        assert_eq!(
            doomed,
            vec!["20261120T000000Z", "20261127T110000Z", "20261128T100000Z"]
        );
    }

    #[test]
    fn prune_never_touches_current_even_if_failed_and_old() {
        let now = datetime!(2026-12-28 12:00:00 UTC);
        let releases = vec![r("20261128T100000Z", State::Failed)];
        assert!(prune(&releases, Some("20261128T100000Z"), None, 5, now).is_empty());
    }

    #[test]
    fn rollback_defaults_to_newest_successful_before_current() {
        let releases = vec![
            r("20261128T100000Z", State::Succeeded),
            r("20261128T100100Z", State::Succeeded),
            r("20261128T100200Z", State::Failed),
            r("20261128T100300Z", State::Succeeded),
            r("20261128T100400Z", State::Succeeded),
        ];
        let cur = Some("20261128T100300Z");
        let now = parse_name("20261128T120000Z").unwrap().unix_timestamp();
        assert_eq!(
            rollback_target(&releases, cur, None, now).unwrap(),
            "20261128T100100Z"
        );
        assert_eq!(
            rollback_target(&releases, cur, Some("20261128T100400Z"), now).unwrap(),
            "20261128T100400Z"
        );
        let e = |req| {
            rollback_target(&releases, cur, Some(req), now)
                .unwrap_err()
                .to_string()
        };
        assert!(e("20261128T100200Z").contains("is failed"));
        assert!(e("20261128T999999Z").contains("not a release name"));
        assert!(e("20261128T100500Z").contains("does not exist"));
        assert!(e("../x").contains("not a release name"));
        assert!(e("/etc").contains("not a release name"));
        assert!(e("20261128T100300Z").contains("already current"));
        let e = rollback_target(&releases, Some("20261128T100000Z"), None, now).unwrap_err();
        assert!(e.to_string().contains("no successful release older"));
        assert!(rollback_target(&releases, None, None, now).is_err());
        // Without a current release (missing, or dangling and unnamed) a named target works.
        assert_eq!(
            rollback_target(&releases, None, Some("20261128T100100Z"), now).unwrap(),
            "20261128T100100Z"
        );
    }

    #[test]
    fn releases_from_the_future_are_never_newest_anchor_or_target() {
        let now = parse_name("20261128T120000Z").unwrap();
        let releases = vec![
            r("20261128T110000Z", State::Succeeded),
            r("20261128T113000Z", State::Succeeded),
            r("20261128T190000Z", State::Succeeded), // 7 h ahead of the server's clock
        ];
        assert!(is_future("20261128T190000Z", now.unix_timestamp()));
        assert!(
            !is_future("20261128T120400Z", now.unix_timestamp()),
            "within tolerance"
        );
        assert_eq!(next_name(now, &releases), "20261128T120000Z");
        let t = now.unix_timestamp();
        assert_eq!(
            rollback_target(&releases, Some("20261128T113000Z"), None, t).unwrap(),
            "20261128T110000Z"
        );
        assert!(rollback_target(
            &releases,
            Some("20261128T113000Z"),
            Some("20261128T190000Z"),
            t
        )
        .unwrap_err()
        .to_string()
        .contains("in the future"));
        // Keep one: the future release is neither kept nor pruned, and not the anchor.
        assert_eq!(
            prune(&releases, Some("20261128T113000Z"), None, 1, now),
            vec!["20261128T110000Z"]
        );
    }

    #[test]
    fn release_lines_parse() {
        let rel = Release::parse("20261128T100000Z succeeded abc1234 0002_price_history").unwrap();
        assert_eq!(rel.state, Some(State::Succeeded));
        assert_eq!(rel.commit, "abc1234");
        assert_eq!(rel.revision, "0002_price_history");
        assert!(Release::parse("junk succeeded").is_none());
        assert_eq!(
            Release::parse("20261128T100000Z weird").unwrap().state,
            None
        );
    }

    #[test]
    fn a_deploy_of_what_current_runs_changes_nothing() {
        use crate::flags::Scope;
        let made = |b: &str, f: &str| Made {
            state: Some(State::Succeeded),
            backend_commit: b.into(),
            frontend_commit: f.into(),
        };
        let same = made("abc", "abc");
        assert!(same.runs(Scope::All, "abc", false));
        assert!(
            !same.runs(Scope::All, "abc", true),
            "dirty trees always deploy"
        );
        assert!(!same.runs(Scope::All, "def", false));
        // A backend-only deploy at def carried the frontend over from abc.
        let mixed = made("def", "abc");
        assert!(mixed.runs(Scope::Backend, "def", false));
        assert!(!mixed.runs(Scope::Frontend, "def", false));
        assert!(!mixed.runs(Scope::All, "def", false));
        let failed = Made {
            state: Some(State::Failed),
            ..same.clone()
        };
        assert!(!failed.runs(Scope::All, "abc", false));
        assert!(!made("-", "-").runs(Scope::All, "-", false));
        assert!(!made("abc+dirty", "abc+dirty").runs(Scope::All, "abc", false));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(3 * 3600 + 60), "3h01m");
        assert_eq!(age(2 * 86400 + 7200), "2d02h");
        assert_eq!(age(-3), "0s");
    }
}
