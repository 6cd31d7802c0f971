//! `cargo xtask maintenance on [--message TEXT] | off | status`: maintenance mode on every host
//! of DEPLOY_SERVER. While the deploy root's flag file exists, nginx answers every request from
//! outside with 503, `Retry-After` and a static page (nginx/innercontext.conf); the deploy user
//! writes the page (the message HTML-escaped), then the flag, each whole, and `off` removes the
//! flag: no sudo, no nginx reload (`scripts/deploy.sh maintenance`, helpers in deploy-lib.sh).
//! `deploy --maintenance` has the job do the same around its migration; `deploy status` shows
//! the state from the probe (`snapshot::Maintenance`).

use anyhow::Result;

use crate::config::Config;
use crate::deploy::local;
use crate::deploy::server;
use crate::deploy::snapshot::Maintenance as State;
use crate::flags::Maintenance;
use crate::remote::Call;
use crate::ssh::Session;
use crate::{interrupt, show, ui};

/// The `maintenance` call: `action` on, off or status.
pub fn call(root: &str, action: &str, message: Option<&str>, deployer: &str) -> Call {
    let mut opts = vec![("root", root.to_string()), ("action", action.to_string())];
    if let Some(m) = message {
        opts.push(("message", m.to_string()));
    }
    if action == "on" {
        opts.push(("deployer", crate::deploy::lock::clean(deployer)));
    }
    Call::deploy("maintenance", &opts)
}

/// A fleet whose hosts disagree, in one line; None when they agree.
pub fn disagreement(states: &[(String, bool)]) -> Option<String> {
    let names = |on: bool| {
        states
            .iter()
            .filter(|(_, s)| *s == on)
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>()
    };
    let (on, off) = (names(true), names(false));
    if on.is_empty() || off.is_empty() {
        return None;
    }
    Some(format!(
        "DISAGREE: maintenance is on at {} and off at {}: run 'cargo xtask maintenance on' or 'off' to make them agree",
        on.join(", "),
        off.join(", ")
    ))
}

pub fn run(cmd: Maintenance) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    let (action, message, doing) = match &cmd {
        Maintenance::On { message } => ("on", message.as_deref(), "turn maintenance on at"),
        Maintenance::Off => ("off", None, "turn maintenance off at"),
        Maintenance::Status => ("status", None, "read maintenance mode of"),
    };
    let (user, host) = local::deployer();
    let call = call(&cfg.root, action, message, &format!("{user}@{host}"));
    if cfg.hosts.len() == 1 {
        let session = server::connect(&cfg)?;
        let label = format!("{doing} {}", cfg.hosts[0].name());
        let state = ui::step(&label, || ask(&session, &call))?;
        show!(
            "maintenance at {}: {}",
            cfg.hosts[0].name(),
            state.describe()
        );
        return Ok(());
    }
    let reads = server::read_each(&cfg, doing, |h| {
        ask(
            &Session::connect(&h.dest, cfg.ssh_config.as_deref())?,
            &call,
        )
    });
    for (h, state) in &reads.ok {
        show!("maintenance at {}: {}", h.name(), state.describe());
    }
    let states: Vec<(String, bool)> = reads
        .ok
        .iter()
        .map(|(h, s)| (h.name().to_string(), s.on))
        .collect();
    if let Some(line) = disagreement(&states) {
        show!("{line}");
    }
    reads.finish()
}

/// One host's call, and its state after it.
fn ask(session: &Session, call: &Call) -> Result<State> {
    let (out, reply) = session.call(call)?;
    if !out.status.success() {
        anyhow::bail!("{}", server::failure(session, call, &out.status, &reply));
    }
    Ok(State::from_reply(&reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{self, layout, MAINTENANCE_RETRY_AFTER_SECS};
    use crate::remote::Reply;

    #[test]
    fn the_call_carries_the_message_as_one_word() {
        let c = call("/opt/ic", "on", Some("back at 5 <b>'$(x)'</b>"), "me@here");
        assert_eq!(
            c.render(),
            "scripts/deploy.sh maintenance root=/opt/ic action=on 'message=back at 5 <b>'\\''$(x)'\\''</b>' deployer=me@here"
        );
        let c = call("/opt/ic", "off", None, "me@here");
        assert_eq!(
            c.render(),
            "scripts/deploy.sh maintenance root=/opt/ic action=off"
        );
    }

    #[test]
    fn the_state_reads_back_and_a_split_fleet_says_so() {
        let r = Reply::parse(
            "maintenance=on\nmaintenance.since=2026-12-06T10:00:00Z\nmaintenance.by=me@here\nmaintenance.message=back soon\nmaintenance.token=-\n",
        );
        let s = State::from_reply(&r);
        assert_eq!(
            s.describe(),
            "ON since 2026-12-06T10:00:00Z by me@here: \"back soon\""
        );
        assert_eq!(
            State::from_reply(&Reply::parse("maintenance=off\n")).describe(),
            "off"
        );
        let agree = [("a".to_string(), true), ("b".to_string(), true)];
        assert_eq!(disagreement(&agree), None);
        let split = [
            ("a".to_string(), true),
            ("b".to_string(), false),
            ("c".to_string(), true),
        ];
        assert!(disagreement(&split)
            .unwrap()
            .starts_with("DISAGREE: maintenance is on at a, c and off at b:"));
    }

    #[test]
    fn the_server_writes_the_page_escaped_then_the_flag_and_turns_off_only_its_own() {
        let out = contract::run_with_lib(
            "maint",
            &["root"],
            r#"
            maint_on root "<script>alert('x')</script> & \"more\"" me@here "" || exit 1
            cat root/"$C_MAINTENANCE_PAGE"
            stat -c '%a' root/"$C_MAINTENANCE_PAGE"
            maint_info root
            maint_off root job1
            [ -e root/"$C_MAINTENANCE_FLAG" ] && echo kept-for-another-token
            maint_off root
            maint_info root
            maint_on root "" me@here job1 && maint_off root job1 && maint_info root
            (maint_check_message "$(printf 'a\tb')") || echo refused-control
            (maint_check_message "$(head -c 501 /dev/zero | tr '\0' x)") || echo refused-long
            (maint_check_message "$(head -c 500 /dev/zero | tr '\0' x)") && echo took-500
            "#,
        );
        assert!(out.contains(
            "<p id=\"message\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;</p>"
        ), "{out}");
        let page = out.split("\n644\n").next().unwrap();
        assert!(!page.contains("<script>"), "{out}");
        assert!(out.contains("\n644\n"), "{out}");
        assert!(
            out.contains("maintenance=on\nmaintenance.since=20"),
            "{out}"
        );
        assert!(out.contains("maintenance.by=me@here\n"), "{out}");
        assert!(out.contains("kept-for-another-token"), "{out}");
        assert_eq!(out.matches("maintenance=off").count(), 2, "{out}");
        for w in ["refused-control", "refused-long", "took-500"] {
            assert!(out.contains(w), "{w}: {out}");
        }
    }

    #[test]
    fn the_site_reads_the_contracts_files_and_retry_after() {
        let site = include_str!("../../../nginx/innercontext.conf");
        let root = contract::DEFAULT_ROOT;
        assert!(site.contains(&format!("if (!-f {root}/{}) {{", layout::MAINTENANCE_FLAG)));
        assert!(site.contains(&format!("alias {root}/{};", layout::MAINTENANCE_PAGE)));
        assert!(site.contains(&format!(
            "set $innercontext_retry_after {MAINTENANCE_RETRY_AFTER_SECS};"
        )));
    }
}
