//! `scripts/contract.sh`, rendered from the contract: its facts as shell variables (`C_*`),
//! every call option empty until parsed, and `c_is_release`.

use super::*;

/// The contract's facts as the shell variables of `contract.sh` (name, value), in its order.
pub fn shell_vars() -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = Vec::new();
    let var = |s: &mut Vec<(String, String)>, name: &str, value: &str| {
        s.push((name.to_string(), value.to_string()));
    };
    let words = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(" ");
    var(&mut s, "C_APP_USER", APP_USER);
    var(&mut s, "C_BACKEND_PACKAGE", BACKEND_PACKAGE);
    var(&mut s, "C_DEFAULT_ROOT", DEFAULT_ROOT);
    var(&mut s, "C_DEPLOY_KEYS_FILE", DEPLOY_KEYS_FILE);
    var(&mut s, "C_DEPLOY_TOOL", DEPLOY_TOOL);
    var(&mut s, "C_JOURNAL_READER", JOURNAL_READER);
    var(&mut s, "C_ROLE_FILE", ROLE_FILE);
    var(&mut s, "C_ROLES", &ROLES.join(" "));
    var(&mut s, "C_ROLE_PRIMARY", ROLES[0]);
    var(&mut s, "C_ROLE_SECONDARY", ROLES[1]);
    var(&mut s, "C_SUDOERS_FILE", SUDOERS_FILE);
    var(&mut s, "C_TLS_DIR", TLS_DIR);
    var(&mut s, "C_TLS_SNIPPET", TLS_SNIPPET);
    var(&mut s, "C_UNIT_PREFIX", UNIT_PREFIX);
    var(&mut s, "C_UNIT_DIR", UNIT_DIR);
    var(&mut s, "C_OLD_UNIT_DIR", OLD_UNIT_DIR);
    var(&mut s, "C_UNITS", &words(&mut UNITS.iter().map(|u| u.name)));
    var(
        &mut s,
        "C_UNITS_BACKEND",
        &words(
            &mut UNITS
                .iter()
                .filter(|u| u.half == Half::Backend)
                .map(|u| u.name),
        ),
    );
    var(
        &mut s,
        "C_UNITS_FRONTEND",
        &words(
            &mut UNITS
                .iter()
                .filter(|u| u.half == Half::Frontend)
                .map(|u| u.name),
        ),
    );
    var(
        &mut s,
        "C_UNITS_PRIMARY_ONLY",
        &words(&mut UNITS.iter().filter(|u| u.primary_only).map(|u| u.name)),
    );
    var(
        &mut s,
        "C_UNITS_WITH_SOCKET",
        &words(&mut UNITS.iter().filter(|u| u.socket).map(|u| u.name)),
    );
    for (name, value) in [
        ("C_RELEASES", layout::RELEASES),
        ("C_CURRENT", layout::CURRENT),
        ("C_SHARED", layout::SHARED),
        ("C_ENV_BACKEND", layout::ENV_BACKEND),
        ("C_ENV_FRONTEND", layout::ENV_FRONTEND),
        ("C_ENV_BACKUP", layout::ENV_BACKUP),
        ("C_ENV_STAGED", layout::ENV_STAGED),
        ("C_UV_CACHE", layout::UV_CACHE),
        ("C_UV_CACHE_FRESH", layout::UV_CACHE_FRESH),
        ("C_UV_CACHE_OLD", layout::UV_CACHE_OLD),
        ("C_VENVS", layout::VENVS),
        ("C_ASSETS", layout::ASSETS),
        ("C_LOCK", layout::LOCK),
        ("C_GUARD", layout::GUARD),
        ("C_LOG", layout::LOG),
        ("C_JOBS", layout::JOBS),
        ("C_SCRIPTS", layout::SCRIPTS),
        ("C_TRASH", layout::TRASH),
        ("C_DB_SNAPSHOTS", layout::DB_SNAPSHOTS),
        ("C_DB_DUMP", layout::DB_DUMP),
        ("C_DB_RECORD", layout::DB_RECORD),
        ("C_STATE_FILE", layout::STATE_FILE),
        ("C_META_FILE", layout::META_FILE),
        ("C_MANIFEST", layout::MANIFEST),
        ("C_IMMUTABLE", layout::IMMUTABLE),
        ("C_NGINX_SITE_SOURCE", layout::NGINX_SITE_SOURCE),
        ("C_NGINX_SITE", layout::NGINX_SITE),
        ("C_NGINX_SITE_ENABLED", layout::NGINX_SITE_ENABLED),
        ("C_MAINTENANCE_FLAG", layout::MAINTENANCE_FLAG),
        ("C_MAINTENANCE_PAGE", layout::MAINTENANCE_PAGE),
        ("C_MAINTENANCE_DEPLOY_MESSAGE", MAINTENANCE_DEPLOY_MESSAGE),
        ("C_NAME_DATE_FORMAT", NAME_DATE_FORMAT),
    ] {
        var(&mut s, name, value);
    }
    let links: Vec<String> = layout::ENV_LINKS
        .iter()
        .map(|(l, t)| format!("{l}:{t}"))
        .collect();
    var(&mut s, "C_ENV_LINKS", &links.join(" "));
    var(
        &mut s,
        "C_API_PROBE",
        API.probe.expect("the API has a probe"),
    );
    for (name, value) in [
        ("C_FUTURE_TOLERANCE_SECS", FUTURE_TOLERANCE_SECS),
        ("C_FAILED_GRACE_SECS", FAILED_GRACE_SECS),
        ("C_ASSET_GRACE_SECS", ASSET_GRACE_SECS),
        ("C_CLIENT_GRACE_SECS", CLIENT_GRACE_SECS as i64),
        ("C_PROBE_TIMEOUT_SECS", PROBE_TIMEOUT_SECS as i64),
        ("C_MAINTENANCE_MESSAGE_MAX", MAINTENANCE_MESSAGE_MAX as i64),
        ("C_JOBS_KEPT", JOBS_KEPT as i64),
        ("C_ENV_BACKUPS_KEPT", ENV_BACKUPS_KEPT as i64),
        ("C_ENV_MAX_BYTES", ENV_MAX_BYTES as i64),
        ("C_CRASH_LOOP_RESTARTS", CRASH_LOOP_RESTARTS as i64),
    ] {
        var(&mut s, name, &value.to_string());
    }
    var(
        &mut s,
        "C_STATES",
        &words(&mut State::ALL.iter().map(|w| w.name())),
    );
    for state in State::ALL {
        var(
            &mut s,
            &format!("C_STATE_{}", state.name().to_uppercase()),
            state.name(),
        );
    }
    var(
        &mut s,
        "C_RESULTS",
        &words(&mut JobResult::ALL.iter().map(|w| w.name())),
    );
    var(
        &mut s,
        "C_STEPS",
        &words(&mut Step::ALL.iter().map(|w| w.name())),
    );
    var(&mut s, "C_DB_SNAPSHOT_ENV", DB_SNAPSHOT_ENV);
    var(
        &mut s,
        "C_PHASES",
        &words(&mut Phase::ALL.iter().map(|w| w.name())),
    );
    var(
        &mut s,
        "C_MESSAGES",
        &words(&mut Message::ALL.iter().map(|w| w.name())),
    );
    var(
        &mut s,
        "C_EVENTS",
        &words(&mut EventKind::ALL.iter().map(|w| w.name())),
    );
    var(
        &mut s,
        "C_NOTES",
        &words(&mut Note::ALL.iter().map(|w| w.name())),
    );
    var(
        &mut s,
        "C_SUBS",
        &SUBS.iter().map(|s| s.name).collect::<Vec<_>>().join(" "),
    );
    for sub in SUBS {
        var(&mut s, &format!("C_KEYS_{}", sub.name), &sub.keys.join(" "));
    }
    var(
        &mut s,
        "C_KEYS_plan",
        &[PLAN_KEYS, PLAN_SERVER_KEYS].concat().join(" "),
    );
    s
}

/// `scripts/contract.sh`: the contract as shell variables and one function.
pub fn render_shell() -> String {
    let mut s = String::new();
    s.push_str(
        "# shellcheck shell=bash disable=SC2034\n\
         # The server contract, generated from xtask/src/contract.rs: do not edit. A unit test\n\
         # fails when this file is stale; `UPDATE_GOLDEN=1 cargo test -p xtask contract` rewrites it.\n",
    );
    for (name, value) in shell_vars() {
        assert!(
            !value.contains('\''),
            "{name}: no quotes in contract values"
        );
        s.push_str(&format!("{name}='{value}'\n"));
    }
    // Every option starts empty: nothing inherited from the environment, nothing unset.
    let mut all: Vec<&str> = SUBS.iter().flat_map(|s| s.keys.iter().copied()).collect();
    all.extend(PLAN_SERVER_KEYS);
    all.sort_unstable();
    all.dedup();
    s.push_str("# Options (key=value words of a call), all empty until parse_opts sets them.\n");
    for chunk in all.chunks(6) {
        let line: Vec<String> = chunk.iter().map(|k| format!("opt_{k}=''")).collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s.push_str(&format!(
        "# Whether $1 is a release name.\nc_is_release() {{\n    case \"$1\" in\n        {NAME_PATTERN}) return 0 ;;\n        *) return 1 ;;\n    esac\n}}\n"
    ));
    s
}
