//! The deploy lock, as the client sees it: `DEPLOY_ROOT/.deploy.lock` with an `info` file (who,
//! when, what, token), taken by `deploy.sh run` and released by the job that holds it (or by
//! `deploy unlock`, only for the token it showed). Its flock is held from before the lock is
//! visible until the job ends, so a probe tells a live lock (its job runs) from a stale one (its
//! job is gone: a crash, a reboot), with no window; the next deploy or rollback takes a stale
//! lock over. A job that could not record its result (a full disk) leaves it in its lock for
//! the next one to record. This module parses what a probe says and words it.

use crate::deploy::release::age;
use crate::remote::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// UTC, RFC 3339, on the server's clock.
    pub started: String,
    pub started_epoch: i64,
    pub command: String,
    pub commit: String,
    pub token: String,
    /// The release being deployed (or rolled back to).
    pub release: String,
    /// Whether the job holding the lock is alive (None: the server did not say).
    pub alive: Option<bool>,
    /// The server booted since the lock was taken (so its job is gone).
    pub rebooted: bool,
    /// Alive, but not its job's own process: a step the dead job started holds the lock.
    pub orphaned: bool,
    /// The job's current step or wait.
    pub phase: String,
    /// The result its (dead) job could not record, and why (`No space left on device`).
    pub unrecorded: Option<(String, String)>,
}

/// Keep only characters that cannot break the `key=value` line format or a terminal.
pub fn clean(value: &str) -> String {
    let v: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-+:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if v.is_empty() {
        "-".to_string()
    } else {
        v
    }
}

impl LockInfo {
    /// Read the lock from a probe reply (`lock.KEY=VALUE` lines). None when not locked.
    pub fn from_reply(reply: &Reply) -> Option<LockInfo> {
        if reply.get("locked") != Some("yes") {
            return None;
        }
        let get = |k: &str| reply.get(&format!("lock.{k}")).unwrap_or("?").to_string();
        let epoch = reply
            .get("lock.started_epoch")
            .or_else(|| reply.get("lock.mtime"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Some(LockInfo {
            user: get("user"),
            host: get("host"),
            pid: reply
                .get("lock.pid")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            started: get("started"),
            started_epoch: epoch,
            command: get("command"),
            commit: get("commit"),
            token: get("token"),
            release: get("release"),
            alive: reply.get("lock.alive").map(|a| a == "yes"),
            rebooted: reply.get("lock.rebooted") == Some("yes"),
            orphaned: reply.get("lock.orphaned") == Some("yes"),
            phase: reply.get("lock.phase").unwrap_or("").to_string(),
            unrecorded: reply.get("lock.unrecorded").map(|r| {
                (
                    r.to_string(),
                    reply.get("lock.unrecorded_why").unwrap_or("?").to_string(),
                )
            }),
        })
    }

    /// Whether the lock is stale: nothing alive holds it any more.
    pub fn stale(&self) -> bool {
        self.alive == Some(false)
    }

    /// One line naming the holder, the lock's age (on the server's clock) and whether its job
    /// still runs (a lock is STALE only when that is proven).
    pub fn describe(&self, server_now: i64) -> String {
        let state = match (self.alive, &self.unrecorded) {
            (Some(true), _) if self.orphaned => format!(
                "; its job died{}, but a process it started still runs and holds the lock until it ends (a migration is not cut short)",
                if self.phase.is_empty() { String::new() } else { format!(" at {}", self.phase) }
            ),
            (Some(true), _) if self.phase.is_empty() => "; its job is running".to_string(),
            (Some(true), _) => format!("; its job is running ({})", self.phase),
            (Some(false), Some((result, why))) => format!(
                "; its job ended ({result}) but could not record it ({why}): the next deploy or rollback records it"
            ),
            (Some(false), None) => format!(
                "; STALE: no job holds it any more ({}the next deploy or rollback takes it over)",
                if self.rebooted {
                    "the server rebooted since it was taken; "
                } else {
                    ""
                }
            ),
            (None, _) => String::new(),
        };
        format!(
            "held by {}@{} (pid {}, '{}', commit {}) since {} ({} ago){state}",
            self.user,
            self.host,
            self.pid,
            self.command,
            self.commit,
            self.started,
            age(server_now - self.started_epoch)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(extra: &str) -> Reply {
        Reply::parse(&format!(
            "now=1\nlocked=yes\nlock.user=alice\nlock.host=laptop\nlock.pid=4242\nlock.started=2026-11-28T10:15:30Z\nlock.started_epoch=1795860930\nlock.command=deploy all\nlock.commit=abc1234+dirty\nlock.token=4242-99\nlock.release=20261128T101530Z\n{extra}"
        ))
    }

    #[test]
    fn info_parses_from_the_probe_format() {
        let l = LockInfo::from_reply(&reply("lock.alive=yes\nlock.phase=prepare\n")).unwrap();
        assert_eq!(l.user, "alice");
        assert_eq!(l.token, "4242-99");
        assert_eq!(l.release, "20261128T101530Z");
        assert_eq!(l.alive, Some(true));
        assert!(!l.stale());
        assert!(LockInfo::from_reply(&Reply::parse("locked=no\n")).is_none());
    }

    #[test]
    fn a_lock_without_info_still_has_an_age() {
        // mkdir happened but the info was never written (an older deployer died there).
        let r = Reply::parse("locked=yes\nlock.mtime=100\nlock.alive=no\n");
        let l = LockInfo::from_reply(&r).unwrap();
        assert_eq!(l.started_epoch, 100);
        assert!(l.stale());
        assert!(
            l.describe(292).contains("(3m12s ago)"),
            "{}",
            l.describe(292)
        );
    }

    #[test]
    fn describe_tells_live_from_stale() {
        let live =
            LockInfo::from_reply(&reply("lock.alive=yes\nlock.phase=awaiting-upload\n")).unwrap();
        assert_eq!(
            live.describe(1_795_860_930 + 75),
            "held by alice@laptop (pid 4242, 'deploy all', commit abc1234+dirty) since 2026-11-28T10:15:30Z (1m15s ago); its job is running (awaiting-upload)"
        );
        let stale = LockInfo::from_reply(&reply("lock.alive=no\n")).unwrap();
        let d = stale.describe(0);
        assert!(d.contains("STALE: no job holds it any more"), "{d}");
        assert!(!d.contains("unlock"), "a stale lock is taken over: {d}");
        assert!(!d.contains("rebooted"), "{d}");
        let rebooted = LockInfo::from_reply(&reply("lock.alive=no\nlock.rebooted=yes\n")).unwrap();
        assert!(
            rebooted.describe(0).ends_with("STALE: no job holds it any more (the server rebooted since it was taken; the next deploy or rollback takes it over)"),
            "{}",
            rebooted.describe(0)
        );
        let pending = LockInfo::from_reply(&reply(
            "lock.alive=no\nlock.unrecorded=success\nlock.unrecorded_why=No space left on device\n",
        ))
        .unwrap();
        let d = pending.describe(0);
        assert!(
            d.ends_with("its job ended (success) but could not record it (No space left on device): the next deploy or rollback records it"),
            "{d}"
        );
        assert!(!d.contains("STALE"), "{d}");
        let orphaned = LockInfo::from_reply(&reply(
            "lock.alive=yes\nlock.orphaned=yes\nlock.phase=migrate\n",
        ))
        .unwrap();
        let d = orphaned.describe(0);
        assert!(
            d.ends_with("its job died at migrate, but a process it started still runs and holds the lock until it ends (a migration is not cut short)"),
            "{d}"
        );
        assert!(!orphaned.stale(), "held: not taken over");
    }

    #[test]
    fn hostile_values_are_cleaned() {
        assert_eq!(clean("eve\ntoken=stolen"), "eve_token_stolen");
        assert_eq!(clean("$(rm -rf /)"), "__rm_-rf_/_");
        assert_eq!(clean(""), "-");
        assert!(!clean("a\tb c").contains(['\t', ' ']));
    }
}
