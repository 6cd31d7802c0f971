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
    pub fn parse(line: &str) -> Entry {
        let mut words = line.split(' ');
        let when = words.next().unwrap_or("").to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
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
            e.get("reason").replace('_', " ")
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
}
