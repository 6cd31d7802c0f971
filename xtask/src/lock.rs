//! The deploy lock: an atomic `mkdir DEPLOY_ROOT/.deploy.lock` holding an `info` file with
//! who holds it. This module renders and parses that file and words the conflict message;
//! taking and releasing the lock happens in `scripts/deploy.sh` (begin / finish / fail / unlock),
//! guarded by a per-deploy token so nobody removes a lock they do not hold.

use crate::release::age;
use crate::ssh::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// UTC, RFC 3339.
    pub started: String,
    pub started_epoch: i64,
    pub command: String,
    pub commit: String,
    pub token: String,
}

/// Keep only characters that cannot break the `key=value` line format or a terminal.
pub fn clean(value: &str) -> String {
    let v: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-+:/ ".contains(c) {
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
    /// The lines of the `info` file.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("user={}", clean(&self.user)),
            format!("host={}", clean(&self.host)),
            format!("pid={}", self.pid),
            format!("started={}", clean(&self.started)),
            format!("started_epoch={}", self.started_epoch),
            format!("command={}", clean(&self.command)),
            format!("commit={}", clean(&self.commit)),
            format!("token={}", clean(&self.token)),
        ]
    }

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
        })
    }

    /// One line naming the holder and the lock's age, measured on the server's clock.
    pub fn describe(&self, server_now: i64) -> String {
        format!(
            "held by {}@{} (pid {}, '{}', commit {}) since {} ({} ago)",
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

    fn info() -> LockInfo {
        LockInfo {
            user: "alice".into(),
            host: "laptop".into(),
            pid: 4242,
            started: "2026-11-28T10:15:30Z".into(),
            started_epoch: 1_795_860_930,
            command: "deploy all".into(),
            commit: "abc1234+dirty".into(),
            token: "4242-99".into(),
        }
    }

    #[test]
    fn info_roundtrips_through_the_probe_format() {
        let mut text = String::from("now=1\nlocked=yes\n");
        for l in info().lines() {
            text.push_str(&format!("lock.{l}\n"));
        }
        let parsed = LockInfo::from_reply(&Reply::parse(&text)).unwrap();
        assert_eq!(parsed, info());
        assert!(LockInfo::from_reply(&Reply::parse("locked=no\n")).is_none());
    }

    #[test]
    fn a_lock_without_info_still_has_an_age() {
        // mkdir happened but the client died before writing info.
        let r = Reply::parse("locked=yes\nlock.mtime=100\n");
        let l = LockInfo::from_reply(&r).unwrap();
        assert_eq!(l.started_epoch, 100);
        assert!(
            l.describe(292).contains("(3m12s ago)"),
            "{}",
            l.describe(292)
        );
    }

    #[test]
    fn describe_names_holder_and_age() {
        let d = info().describe(1_795_860_930 + 75);
        assert_eq!(
            d,
            "held by alice@laptop (pid 4242, 'deploy all', commit abc1234+dirty) since 2026-11-28T10:15:30Z (1m15s ago)"
        );
    }

    #[test]
    fn hostile_values_cannot_forge_lines() {
        let mut i = info();
        i.user = "eve\ntoken=stolen".into();
        i.command = "$(rm -rf /)".into();
        let lines = i.lines();
        assert_eq!(lines.len(), 8);
        assert!(lines.iter().all(|l| !l.contains('\n')));
        assert_eq!(lines[0], "user=eve_token_stolen");
        assert_eq!(lines[5], "command=__rm -rf /_");
    }
}
