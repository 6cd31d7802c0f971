//! Each remote step as a value: a call of `scripts/setup-server.sh` with its arguments, rendered
//! to one quoted command line. Nothing here runs anything.

use super::facts::RemoteFile;
use super::inputs::{EnvFile, EnvKind, Inputs, KeyPlan, Tls};
use crate::contract;
use crate::flags::ToolchainSource;
use crate::tools;

pub use crate::remote::Call;

/// What the release needs at run time (the spec's list plus sudo, which the drop-in needs, and
/// Debian's PostgreSQL client: the deploy job's pg_dump snapshots the database before a
/// migration).
pub const PACKAGES: &[&str] = &[
    "git",
    "nginx",
    "curl",
    "ca-certificates",
    "libpq5",
    "postgresql-client",
    "rsync",
    "python3",
    "python3-venv",
    "sudo",
];

/// The subcommands that only read (no `--check` in a dry run: nothing to check).
pub const READ_ONLY: [&str; 2] = ["preflight", "verify"];

fn call(sub: &'static str, args: impl IntoIterator<Item = String>) -> Call {
    Call::new(&crate::remote::SETUP, sub, args)
}

/// The call as a dry run sends it: changing subcommands get `--check` first.
pub fn checked(c: &Call) -> Call {
    if READ_ONLY.contains(&c.sub) {
        return c.clone();
    }
    let mut args = vec!["--check".to_string()];
    args.extend(c.args.iter().cloned());
    Call::new(c.script, c.sub, args)
}

pub fn preflight_call(root: &str, inputs: &Inputs) -> Call {
    call("preflight", [root.to_string(), inputs.sudoers.clone()])
}

pub fn packages_call() -> Call {
    call("packages", PACKAGES.iter().map(|p| p.to_string()))
}

fn source_name(t: ToolchainSource) -> String {
    match t {
        ToolchainSource::Registry => "registry",
        ToolchainSource::Upstream => "upstream",
    }
    .to_string()
}

pub fn uv_call(t: ToolchainSource) -> Call {
    call("uv", [source_name(t), tools::UV_VERSION.to_string()])
}

/// `sha`: the sha256 of the tarball that goes on stdin (registry source, install needed).
pub fn node_call(t: ToolchainSource, sha: Option<&str>) -> Call {
    let mut args = vec![source_name(t), tools::NODE_VERSION.to_string()];
    args.extend(sha.map(str::to_string));
    call("node", args)
}

pub fn user_call(root: &str) -> Call {
    call("user", [root.to_string()])
}

/// The deploy user's login (its home, `~/.ssh` and start-up files root's) and its keys, from
/// the plan: the keys travel as arguments (they are public).
pub fn key_call(root: &str, plan: &KeyPlan) -> Call {
    let [mode, lines] = plan.args();
    call("key", [root.to_string(), mode, lines])
}

pub fn env_call(root: &str, kind: EnvKind, local: Option<&EnvFile>, force: bool) -> Call {
    call(
        "env",
        [
            root.to_string(),
            kind.rel().to_string(),
            local.map(|l| l.sha256.clone()).unwrap_or_default(),
            if force { "1" } else { "0" }.to_string(),
        ],
    )
}

/// The log reader ([`contract::JOURNAL_SH`]) into [`contract::JOURNAL_READER`]: the only way
/// the app user reads the journal (its own units' entries, through one sudoers line).
pub fn journal_call() -> Call {
    call("journal", [contract::JOURNAL_SH.to_string()])
}

pub fn sudoers_call(text: &str) -> Call {
    call("sudoers", [text.to_string()])
}

/// The units into [`crate::contract::UNIT_DIR`]; the copies an earlier setup-server installed
/// in [`crate::contract::OLD_UNIT_DIR`] (known by [`super::earlier`]) move there. `root`: the
/// deploy root the texts were rendered for. The units step enables every unit but the ones
/// [`left_to_role`] (a secondary's worker is never enabled on the way to being disabled).
pub fn units_call(root: &str, units: &[(String, String)], role: crate::config::HostRole) -> Call {
    let mut args = vec![
        crate::contract::UNIT_DIR.to_string(),
        crate::contract::OLD_UNIT_DIR.to_string(),
        root.to_string(),
        contract::DEFAULT_ROOT.to_string(),
        super::earlier::lines(),
        left_to_role(role).join(" "),
    ];
    args.extend(units.iter().flat_map(|(n, t)| [n.clone(), t.clone()]));
    call("units", args)
}

pub fn nginx_call(text: &str) -> Call {
    call("nginx", [text.to_string()])
}

use contract::TLS_DIR;

/// The nginx lines for HTTPS, included in the site's server block: TLS 1.2 and 1.3 with
/// Mozilla's "intermediate" ciphers; with `redirect`, plain http answers 301 to https and HSTS
/// is sent.
pub fn tls_snippet(redirect: bool) -> String {
    let mut s = format!(
        "# HTTPS for the innercontext site, written by `cargo xtask setup-server --tls-cert/--tls-key`.\n\
         listen 443 ssl;\n\
         ssl_certificate {TLS_DIR}/cert.pem;\n\
         ssl_certificate_key {TLS_DIR}/key.pem;\n\
         ssl_protocols TLSv1.2 TLSv1.3;\n\
         ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n\
         ssl_prefer_server_ciphers off;\n\
         ssl_session_cache shared:innercontext_tls:10m;\n\
         ssl_session_timeout 1d;\n\
         ssl_session_tickets off;\n"
    );
    if redirect {
        s.push_str(
            "if ($scheme = http) {\n    return 301 https://$host$request_uri;\n}\n\
             add_header Strict-Transport-Security \"max-age=63072000\" always;\n",
        );
    }
    s
}

/// The certificate as an argument (it is public), the key's sha256 (the key itself on stdin
/// when it changes), the snippet.
pub fn tls_call(tls: &Tls) -> Call {
    call(
        "tls",
        [
            tls.cert.clone(),
            tls.key_sha256.clone(),
            tls_snippet(tls.redirect),
        ],
    )
}

/// The role setup-server records on a host: what DEPLOY_SERVER says; for a lone host without
/// a mark, the one already recorded on it (a primary when there is none).
pub fn role_to_record(
    host: &crate::config::Host,
    recorded: Option<crate::config::HostRole>,
) -> crate::config::HostRole {
    if host.stated {
        host.role
    } else {
        recorded.unwrap_or(crate::config::HostRole::Primary)
    }
}

/// The unit files whose enablement is the role step's, not the units step's: on a secondary,
/// the primary's only units (the worker), which it keeps installed but disabled; none on a
/// primary (the units step enables them with the others).
pub fn left_to_role(role: crate::config::HostRole) -> Vec<String> {
    crate::contract::UNITS
        .iter()
        .filter(|u| u.primary_only && role == crate::config::HostRole::Secondary)
        .map(|u| format!("{}.service", u.name))
        .collect()
}

/// Record a host's role; a secondary keeps the primary-only units (the worker) disabled.
pub fn role_call(role: crate::config::HostRole, root: &str) -> Call {
    let mut args = vec![role.name().to_string(), root.to_string()];
    args.extend(
        crate::contract::UNITS
            .iter()
            .filter(|u| u.primary_only)
            .map(|u| u.name.to_string()),
    );
    call("role", args)
}

pub fn verify_call(root: &str, units: &[(String, String)]) -> Call {
    let mut args = vec![root.to_string(), crate::contract::UNIT_DIR.to_string()];
    args.extend(units.iter().map(|(n, _)| n.clone()));
    call("verify", args)
}

/// Whether an env file's contents must travel: the server has none, or a different one and
/// `--force-env` was given. Mirrors `cmd_env` in the script.
pub fn env_upload(remote: &RemoteFile, local: Option<&EnvFile>, force: bool) -> bool {
    match (remote, local) {
        (_, None) | (RemoteFile::Unsafe, _) => false,
        (RemoteFile::Missing, Some(_)) => true,
        // Unknown until the step has given it to the app user: sent when it may replace it.
        (RemoteFile::Foreign, Some(_)) => force,
        (RemoteFile::Sha256(s), Some(l)) => force && *s != l.sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SETUP_SH as SCRIPT;
    use crate::quote;
    use crate::setup_server::test_support::inputs;

    #[test]
    fn remote_lines_quote_every_word() {
        let c = key_call(
            "/opt/ic",
            &KeyPlan::Set(vec![
                "ssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)".into()
            ]),
        );
        assert_eq!(
            checked(&c).argv(),
            vec![
                "key",
                "--check",
                "/opt/ic",
                "set",
                "ssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)"
            ]
        );
        let line = c.line();
        assert!(
            line.starts_with("bash -c 'ic_script__=$(printf %s '\\''H4sI"),
            "{line}"
        );
        assert!(line.ends_with(
            r#" setup-server.sh key /opt/ic set 'ssh-ed25519 AAAAC3Nza alice'\''s laptop; $(reboot)'"#
        ));
        // Read-only calls never take --check.
        assert_eq!(
            checked(&verify_call("/opt/ic", &[("a.service".into(), "x".into())])).argv(),
            vec![
                "verify",
                "/opt/ic",
                "/usr/local/lib/systemd/system",
                "a.service"
            ]
        );
        // What a real shell makes of the line is the argv.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                quote::join(checked(&c).argv())
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "key\n--check\n/opt/ic\nset\nssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)\n"
        );
    }

    #[test]
    fn env_contents_travel_only_when_installed() {
        let local = EnvFile {
            path: "/tmp/backend.env".into(),
            sha256: "a".repeat(64),
        };
        let same = RemoteFile::Sha256("a".repeat(64));
        let other = RemoteFile::Sha256("b".repeat(64));
        assert!(env_upload(&RemoteFile::Missing, Some(&local), false));
        assert!(!env_upload(&same, Some(&local), false));
        assert!(!env_upload(&same, Some(&local), true));
        assert!(!env_upload(&other, Some(&local), false));
        assert!(env_upload(&other, Some(&local), true));
        assert!(!env_upload(&RemoteFile::Missing, None, true));
        assert!(!env_upload(&RemoteFile::Unsafe, Some(&local), true));
        assert!(!env_upload(&RemoteFile::Foreign, Some(&local), false));
        assert!(env_upload(&RemoteFile::Foreign, Some(&local), true));
        // The env call carries the checksum, never the contents.
        let c = env_call("/opt/innercontext", EnvKind::Backend, Some(&local), false);
        assert_eq!(
            c.args,
            vec![
                "/opt/innercontext",
                "shared/backend/.env",
                &"a".repeat(64),
                "0"
            ]
        );
    }

    #[test]
    fn the_script_parses_and_has_every_subcommand() {
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(crate::project_root().join("scripts/setup-server.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let i = inputs();
        for call in [
            preflight_call("/r", &i),
            packages_call(),
            uv_call(ToolchainSource::Registry),
            node_call(ToolchainSource::Registry, None),
            user_call("/r"),
            key_call("/r", &KeyPlan::Keep),
            env_call("/r", EnvKind::Frontend, None, false),
            journal_call(),
            sudoers_call(""),
            tls_call(&Tls {
                cert: String::new(),
                key_path: "/k".into(),
                key_sha256: String::new(),
                redirect: false,
            }),
            units_call("/r", &[], crate::config::HostRole::Primary),
            nginx_call(""),
            role_call(crate::config::HostRole::Secondary, "/r"),
            verify_call("/r", &[]),
        ] {
            assert!(
                SCRIPT.contains(&format!("\n{}) cmd_{}", call.sub, call.sub)),
                "{} missing from the script",
                call.sub
            );
        }
    }

    #[test]
    fn the_role_is_recorded_where_the_probe_reads_it() {
        use crate::config::{parse_hosts, HostRole};
        assert!(
            SCRIPT.contains("mv -f -- \"$tmp\" \"$C_ROLE_FILE\""),
            "scripts/setup-server.sh records the role somewhere else than contract::ROLE_FILE"
        );
        assert!(crate::contract::CONTRACT_SH
            .contains(&format!("\nC_ROLE_FILE='{}'\n", crate::contract::ROLE_FILE)));
        assert_eq!(
            role_call(HostRole::Secondary, "/opt/ic").args,
            vec!["secondary", "/opt/ic", "innercontext-pricing-worker"]
        );
        // DEPLOY_SERVER's word, stated or implied, is recorded.
        let fleet = parse_hosts("app1,app2#primary").unwrap();
        let lone = |v: &str| parse_hosts(v).unwrap().remove(0);
        assert_eq!(
            role_to_record(&fleet[0], Some(HostRole::Primary)),
            HostRole::Secondary
        );
        assert_eq!(role_to_record(&fleet[1], None), HostRole::Primary);
        assert_eq!(
            role_to_record(&lone("app2#primary"), Some(HostRole::Secondary)),
            HostRole::Primary
        );
        // A lone host without a mark keeps its record (setting up one secondary alone never
        // makes it a second primary); without a record it is a primary.
        assert_eq!(
            role_to_record(&lone("app2"), Some(HostRole::Secondary)),
            HostRole::Secondary
        );
        assert_eq!(role_to_record(&lone("app2"), None), HostRole::Primary);
    }

    #[test]
    fn a_secondarys_worker_is_left_to_the_role_step() {
        use crate::config::HostRole;
        let unit = |n: &str| (n.to_string(), String::new());
        let units = [
            unit("innercontext.service"),
            unit("innercontext-pricing-worker.service"),
        ];
        let c = units_call("/opt/ic", &units, HostRole::Secondary);
        assert_eq!(c.args[5], "innercontext-pricing-worker.service");
        assert_eq!(c.args[6], "innercontext.service");
        let c = units_call("/opt/ic", &units, HostRole::Primary);
        assert_eq!(c.args[5], "", "a primary's units step enables every unit");
        // The role step gets the same units (by unit name).
        let role = role_call(HostRole::Secondary, "/opt/ic");
        assert_eq!(
            left_to_role(HostRole::Secondary),
            role.args[2..]
                .iter()
                .map(|u| format!("{u}.service"))
                .collect::<Vec<_>>()
        );
        // What the script does with them: never enabled by the units step.
        let body = SCRIPT
            .split("\ncmd_units() {")
            .nth(1)
            .and_then(|b| b.split("\n}\n").next())
            .expect("cmd_units in the script");
        assert!(
            body.contains(
                r#"if in_words "$name" "${reenable[@]}" "${roles[@]}"; then continue; fi"#
            ),
            "{body}"
        );
    }

    #[test]
    fn the_log_reader_knows_exactly_the_services() {
        let line = contract::JOURNAL_SH
            .lines()
            .find_map(|l| l.strip_prefix("UNITS=("))
            .and_then(|l| l.strip_suffix(')'))
            .expect("UNITS=(...) in scripts/innercontext-journal.sh");
        let units: Vec<String> = line
            .split_whitespace()
            .map(|u| format!("{u}.service"))
            .collect();
        assert_eq!(units, crate::setup_server::inputs::services());
    }

    #[test]
    fn what_sudo_runs_as_root_never_comes_from_the_callers_path() {
        assert!(
            contract::JOURNAL_SH.starts_with("#!/bin/bash\n"),
            "the log reader must name its interpreter by its full path"
        );
        let sudoers = crate::setup_server::test_support::inputs().sudoers;
        let secure = sudoers
            .lines()
            .find(|l| l.starts_with("Defaults:innercontext secure_path="))
            .expect("a secure_path for innercontext in the sudoers drop-in");
        assert_eq!(
            secure,
            r#"Defaults:innercontext secure_path="/usr/sbin:/usr/bin:/sbin:/bin""#
        );
    }

    #[test]
    fn the_tls_snippet_never_carries_the_key() {
        let plain = tls_snippet(false);
        assert!(plain.contains("listen 443 ssl;\nssl_certificate /etc/ssl/innercontext/cert.pem;\nssl_certificate_key /etc/ssl/innercontext/key.pem;\nssl_protocols TLSv1.2 TLSv1.3;\n"), "{plain}");
        assert!(!plain.contains("return 301") && !plain.contains("Strict-Transport-Security"));
        let redirect = tls_snippet(true);
        assert!(redirect.starts_with(&plain));
        assert!(redirect
            .contains("if ($scheme = http) {\n    return 301 https://$host$request_uri;\n}\n"));
        let c = tls_call(&Tls {
            cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            key_path: "/secret/key.pem".into(),
            key_sha256: "d".repeat(64),
            redirect: true,
        });
        assert_eq!(c.args[1], "d".repeat(64));
        assert!(!c.line().contains("/secret/key.pem"));
    }
}
