//! The final verification table: the script's rows plus the comparisons only this side can
//! make (sudo commands against the sudoers source, node and uv versions).

use super::inputs::{Inputs, SUDOERS_SOURCE};
use crate::flags::ToolchainSource;
use crate::remote::Reply;
use crate::tools;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub ok: bool,
    pub value: String,
}

impl Row {
    pub fn render(&self) -> String {
        format!(
            "  {:<5} {:<24} {}",
            if self.ok { "ok" } else { "FAIL" },
            self.name,
            self.value
        )
    }
}

/// The commands a sudoers text grants, in order (continuation lines joined).
pub fn sudoers_commands(text: &str) -> Vec<String> {
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.split_once("NOPASSWD:").map(|(_, c)| c))
        .flat_map(|c| c.split(','))
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| !c.is_empty())
        .collect()
}

/// The final table: the script's rows plus the comparisons only this side can make.
pub fn verification(reply: &Reply, inputs: &Inputs, toolchain: ToolchainSource) -> Vec<Row> {
    let mut rows: Vec<Row> = reply
        .all("row")
        .into_iter()
        .filter_map(|r| {
            let mut parts = r.splitn(3, '|');
            let name = parts.next()?.to_string();
            let ok = parts.next()? == "ok";
            let value = parts.next().unwrap_or("").to_string();
            Some(Row { name, ok, value })
        })
        .collect();
    let mut want = sudoers_commands(&inputs.sudoers);
    let mut got: Vec<String> = reply
        .all("sudo_cmd")
        .into_iter()
        .map(str::to_string)
        .collect();
    want.sort();
    got.sort();
    rows.push(Row {
        name: "sudo commands".to_string(),
        ok: !got.is_empty() && got == want,
        value: if got == want {
            format!("exactly the {} of {}", got.len(), SUDOERS_SOURCE)
        } else {
            format!(
                "{} listed, {} expected: {}",
                got.len(),
                want.len(),
                got.join(", ")
            )
        },
    });
    let node = reply.get("node").unwrap_or("").to_string();
    let node_ok = match toolchain {
        ToolchainSource::Registry => node == format!("v{}", tools::NODE_VERSION),
        ToolchainSource::Upstream => node_major(&node) == node_major(tools::NODE_VERSION),
    };
    rows.push(Row {
        name: "node".to_string(),
        ok: node_ok,
        value: format!("/usr/local/bin/node {}", or_missing(&node)),
    });
    let uv = reply.get("uv").unwrap_or("").to_string();
    let uv_ok = uv == format!("uv {}", tools::UV_VERSION)
        || uv.starts_with(&format!("uv {} ", tools::UV_VERSION));
    rows.push(Row {
        name: "uv".to_string(),
        ok: uv_ok,
        value: format!("/usr/local/bin/uv: {}", or_missing(&uv)),
    });
    rows
}

fn or_missing(s: &str) -> &str {
    if s.is_empty() {
        "missing"
    } else {
        s
    }
}

/// `24` for `v24.22.3` or `24.22.3`.
pub fn node_major(v: &str) -> &str {
    v.trim_start_matches('v').split('.').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup_server::test_support::inputs;

    #[test]
    fn the_sudoers_source_grants_restarts_stops_starts_and_the_log_reader_only() {
        let cmds = sudoers_commands(&inputs().sudoers);
        let units = crate::contract::UNITS;
        let mut want: Vec<String> = units
            .iter()
            .map(|u| format!("/usr/bin/systemctl restart {}", u.name))
            .collect();
        want.extend(
            units
                .iter()
                .map(|u| format!("/usr/bin/systemctl reset-failed {}", u.reset_targets())),
        );
        for verb in ["stop", "start"] {
            want.extend(
                units
                    .iter()
                    .map(|u| format!("/usr/bin/systemctl {verb} {}", u.reset_targets())),
            );
        }
        want.push(crate::contract::JOURNAL_READER.to_string());
        assert_eq!(cmds, want);
    }

    #[test]
    fn rows() {
        let reply = Reply::parse(
            "row=app user|ok|innercontext: innercontext systemd-journal\nrow=nginx|fail|nginx -t: emerg\nsudo_cmd=/usr/bin/systemctl restart innercontext\nnode=v24.1.0\nuv=uv 0.13.8 (abc 2026-01-01)\n",
        );
        let rows = verification(&reply, &inputs(), ToolchainSource::Upstream);
        let names: Vec<(&str, bool)> = rows.iter().map(|r| (r.name.as_str(), r.ok)).collect();
        assert_eq!(
            names,
            vec![
                ("app user", true),
                ("nginx", false),
                ("sudo commands", false),
                ("node", true),
                ("uv", true)
            ]
        );
        assert!(!verification(&reply, &inputs(), ToolchainSource::Registry)[3].ok);
        assert_eq!(
            rows[1].render(),
            "  FAIL  nginx                    nginx -t: emerg"
        );
    }
}
