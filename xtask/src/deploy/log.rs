//! `cargo xtask deploy log [-n N]`: deploy.log as a table: when (on the server's clock), who,
//! what, which release, the result, how long, and why (refusals, failures, unlocks).

use anyhow::Result;

use crate::config::Config;
use crate::remote::Call;
use crate::show;

/// One deploy.log line, split into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub when: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// `WHEN key=value ... [reason=TEXT]`: the fields before `reason=` are single words; the
    /// reason, always last, is everything after `reason=`, spaces and underscores as written
    /// (`log_line` in scripts/deploy-lib.sh). Lines written before the reason was kept whole
    /// carry it with `_` for every space and cut at 300 characters: they show as written,
    /// since which of their underscores were spaces cannot be told.
    pub fn parse(line: &str) -> Entry {
        let (head, reason) = match line.split_once(" reason=") {
            Some((head, reason)) => (head, Some(reason)),
            None => (line, None),
        };
        let mut words = head.split(' ');
        let when = words.next().unwrap_or("").to_string();
        let mut fields: Vec<(String, String)> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(r) = reason {
            fields.push(("reason".to_string(), r.to_string()));
        }
        Entry { when, fields }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("-")
    }
}

pub fn run(cfg: &Config, lines: u32) -> Result<()> {
    let session = super::connect(cfg)?;
    let call = Call::deploy(
        "log",
        &[("root", cfg.root.clone()), ("lines", lines.to_string())],
    );
    let (out, reply) = session.call(&call)?;
    if !out.status.success() {
        anyhow::bail!("{}", super::failure(&session, &call, &out.status, &reply));
    }
    let entries: Vec<Entry> = reply.all("line").into_iter().map(Entry::parse).collect();
    show!(
        "{:<21}{:<22}{:<10}{:<18}{:<17}{:>9}  {:<16}WHY",
        "WHEN (UTC)",
        "WHO",
        "WHAT",
        "RELEASE",
        "RESULT",
        "TOOK",
        "COMMIT"
    );
    for e in &entries {
        show!(
            "{:<21}{:<22}{:<10}{:<18}{:<17}{:>9}  {:<16}{}",
            e.when,
            e.get("deployer"),
            e.get("scope"),
            e.get("release"),
            e.get("result"),
            e.get("duration"),
            e.get("commit"),
            e.get("reason")
        );
    }
    if entries.is_empty() {
        show!("(deploy.log on the server is empty)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_split_into_fields() {
        let e = Entry::parse("2026-11-28T10:15:30Z deployer=alice@laptop commit=3f2a9c1d0b7e scope=all release=20261128T101530Z result=refused duration=0.0s alembic=- reason=another_deploy_holds_the_lock");
        assert_eq!(e.when, "2026-11-28T10:15:30Z");
        assert_eq!(e.get("result"), "refused");
        assert_eq!(e.get("reason"), "another_deploy_holds_the_lock");
        assert_eq!(e.get("missing"), "-");
    }

    #[test]
    fn the_reason_is_the_rest_of_the_line_as_written() {
        let e = Entry::parse("2026-11-28T10:15:30Z deployer=alice@laptop commit=3f2a9c1d0b7e scope=backend release=20261128T101530Z result=failed duration=4.2s alembic=0002_price_history reason=alembic upgrade head from 0002_price_history failed; the database was left at 0002_price_history (release=x result=y)");
        assert_eq!(e.get("result"), "failed");
        assert_eq!(e.get("alembic"), "0002_price_history");
        assert_eq!(
            e.get("reason"),
            "alembic upgrade head from 0002_price_history failed; the database was left at 0002_price_history (release=x result=y)"
        );
        let none = Entry::parse("2026-11-28T10:15:30Z result=success duration=1.0s");
        assert_eq!(none.get("reason"), "-");
    }

    /// What `log_line` (scripts/deploy-lib.sh, run by bash) writes for `reason`, read back.
    fn written(reason: &str) -> (String, Entry) {
        let dir =
            std::env::temp_dir().join(format!("log-line-{}-{}", std::process::id(), reason.len()));
        fs_err::create_dir_all(&dir).unwrap();
        let lib = crate::project_root().join("scripts/deploy-lib.sh");
        let status = std::process::Command::new("bash")
            .args([
                "-c",
                "set -euo pipefail; . \"$1\"; log_line \"$2\" 2026-11-28T10:15:30Z alice@laptop 3f2a9c1d0b7e backend 20261128T101530Z failed 4.2 0002_price_history \"$3\"",
                "t",
                lib.as_str(),
                dir.to_str().unwrap(),
                reason,
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs_err::read_to_string(dir.join("deploy.log")).unwrap();
        fs_err::remove_dir_all(&dir).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.trim_end_matches('\n').to_string();
        let entry = Entry::parse(&line);
        (line, entry)
    }

    #[test]
    fn log_line_keeps_the_reason_whole_and_readable() {
        let reason = "database migration failed on app: alembic upgrade head from 0002_price_history failed (ProgrammingError: relation \"x\" does not exist); current was not touched";
        let (line, e) = written(reason);
        assert!(line.ends_with(&format!(" reason={reason}")), "{line}");
        assert_eq!(e.get("reason"), reason);
        assert_eq!(e.get("alembic"), "0002_price_history");
        assert_eq!(e.get("result"), "failed");
        // Newlines, tabs and escapes become spaces; other bytes '?'; trailing spaces go.
        let (line, e) = written("two\nlines\tand \x1b[31mred\x1b[0m caf\u{e9}\n");
        assert_eq!(e.get("reason"), "two lines and  [31mred [0m caf??");
        assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
    }

    #[test]
    fn log_line_cuts_a_long_reason_after_a_whole_word() {
        let word = "abcdefghi "; // 10 characters
        let long = word.repeat(150); // 1500 characters
        let (_, e) = written(&long);
        let r = e.get("reason");
        assert!(r.len() <= 1000, "{} characters", r.len());
        assert!(r.ends_with("abcdefghi..."), "{r}");
        assert!(r.len() > 980, "cut too early: {} characters", r.len());
        // One word longer than the limit is cut where it is.
        let (_, e) = written(&"x".repeat(1500));
        assert_eq!(e.get("reason"), format!("{}...", "x".repeat(997)));
        // A reason up to the limit is kept whole.
        let fits = format!("{}end", "y ".repeat(498)); // 999 characters
        let (_, e) = written(&fits);
        assert_eq!(e.get("reason"), fits.as_str());
    }
}
