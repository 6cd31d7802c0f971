//! `cargo xtask deploy log [-n N]`: deploy.log as a table: when (on the server's clock), who,
//! what, which release, the result, how long, and why (refusals, failures, unlocks). A fleet:
//! every host's last N entries merged by time, with a host column (a fleet deploy is a line on
//! each host it touched), and the hosts that could not be read (a non-zero exit).

use anyhow::Result;

use crate::config::Config;
use crate::contract::JobResult;
use crate::deploy::entry::Entry;
use crate::deploy::server;
use crate::remote::Call;
use crate::show;
use crate::ssh::Session;

pub fn run(cfg: &Config, lines: u32) -> Result<()> {
    if cfg.hosts.len() > 1 {
        let reads = server::read_each(cfg, "read deploy.log of", |h| {
            read(
                &Session::connect(&h.dest, cfg.ssh_config.as_deref())?,
                cfg,
                lines,
            )
        });
        let per_host: Vec<(String, Vec<Entry>)> = reads
            .ok
            .iter()
            .map(|(h, e)| (h.name().to_string(), e.clone()))
            .collect();
        for line in merged_table(&per_host) {
            show!("{line}");
        }
        return reads.finish();
    }
    let session = server::connect(cfg)?;
    let entries = read(&session, cfg, lines)?;
    show!("{}", columns(&HEAD, None));
    for e in &entries {
        show!("{}", columns(&e.row(), None));
    }
    if entries.is_empty() {
        show!("(deploy.log on the server is empty)");
    }
    Ok(())
}

/// The last `lines` entries of a host's deploy.log.
fn read(session: &Session, cfg: &Config, lines: u32) -> Result<Vec<Entry>> {
    let call = Call::deploy(
        "log",
        &[("root", cfg.root.clone()), ("lines", lines.to_string())],
    );
    let (out, reply) = session.call(&call)?;
    if !out.status.success() {
        anyhow::bail!("{}", server::failure(session, &call, &out.status, &reply));
    }
    Ok(reply.all("line").into_iter().map(Entry::parse).collect())
}

const HEAD: [&str; 8] = [
    "WHEN (UTC)",
    "WHO",
    "WHAT",
    "RELEASE",
    "RESULT",
    "TOOK",
    "COMMIT",
    "WHY",
];

/// A row's columns, aligned; `host`: a host column (its text and width) after the time.
fn columns(c: &[impl AsRef<str>; 8], host: Option<(&str, usize)>) -> String {
    let c: Vec<&str> = c.iter().map(AsRef::as_ref).collect();
    let host = host
        .map(|(h, width)| format!("{h:<width$}"))
        .unwrap_or_default();
    format!(
        "{:<21}{host}{:<22}{:<10}{:<18}{:<17}{:>9}  {:<16}{}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    )
    .trim_end()
    .to_string()
}

impl Entry {
    /// Its columns in the table.
    fn row(&self) -> [String; 8] {
        [
            self.when.clone(),
            self.get("deployer").to_string(),
            self.get("scope").to_string(),
            self.get("release").to_string(),
            match self.result() {
                // A command run in current (exec, db psql): how it exited.
                Some(JobResult::Ran) => format!("ran exit={}", self.get("exit")),
                _ => self.result_word().to_string(),
            },
            self.get("duration").to_string(),
            self.get("commit").to_string(),
            self.get("reason").to_string(),
        ]
    }
}

/// Every host's entries as one table, oldest first (by the servers' clocks; one instant keeps
/// DEPLOY_SERVER's order), with a host column after the time.
pub fn merged_table(per_host: &[(String, Vec<Entry>)]) -> Vec<String> {
    let mut all: Vec<(&str, &Entry)> = per_host
        .iter()
        .flat_map(|(h, es)| es.iter().map(move |e| (h.as_str(), e)))
        .collect();
    all.sort_by(|a, b| a.1.when.cmp(&b.1.when));
    let width = per_host
        .iter()
        .map(|(h, _)| h.len())
        .max()
        .unwrap_or(0)
        .max(4)
        + 2;
    let mut lines = vec![columns(&HEAD, Some(("HOST", width)))];
    for (h, e) in &all {
        lines.push(columns(&e.row(), Some((h, width))));
    }
    if all.is_empty() {
        lines.push("(deploy.log is empty on every host that answered)".to_string());
    }
    lines
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

    #[test]
    fn a_fleets_log_is_merged_by_time_with_a_host_column() {
        let one = |when: &str, release: &str, result: &str| {
            Entry::parse(&format!("{when} deployer=alice@laptop commit=abc scope=all release={release} result={result} duration=7.3s alembic=-"))
        };
        let fleet_deploy = "20261128T101530Z";
        let per_host = vec![
            (
                "app1".to_string(),
                vec![
                    one("2026-11-28T10:15:30Z", fleet_deploy, "success"),
                    one("2026-11-28T11:00:00Z", "20261128T110000Z", "success"),
                ],
            ),
            (
                "app2".to_string(),
                vec![
                    one("2026-11-28T10:15:30Z", fleet_deploy, "success"),
                    one("2026-11-28T10:40:00Z", "20261128T101530Z", "refused"),
                ],
            ),
        ];
        let t = merged_table(&per_host);
        assert_eq!(
            t[0],
            "WHEN (UTC)           HOST  WHO                   WHAT      RELEASE           RESULT                TOOK  COMMIT          WHY"
        );
        let hosts: Vec<&str> = t[1..]
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        // The fleet deploy once per host it touched, then by time.
        assert_eq!(hosts, vec!["app1", "app2", "app2", "app1"]);
        assert!(t[3].contains("refused"), "{t:#?}");
        assert!(
            t[1].starts_with("2026-11-28T10:15:30Z app1  alice@laptop"),
            "{t:#?}"
        );
        assert_eq!(
            merged_table(&[("app1".to_string(), vec![])])[1],
            "(deploy.log is empty on every host that answered)"
        );
    }
}
