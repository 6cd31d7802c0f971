//! The server contract: every fact both halves of the deployer rely on, defined once.
//!
//! The Rust client and the server script (`scripts/deploy.sh`, run as the app user) must agree
//! on the units and their probes, the layout under the deploy root, the release states and
//! results, the release-name format, the keys each remote call accepts, the steps and events of
//! the server-side job, and a few timings. They live here; [`render_shell`] turns them into
//! `scripts/contract.sh`, which is sent ahead of the script on every call (and shipped in every
//! release). A unit test fails when the committed file differs from the rendering, and another
//! checks that the script uses no call, key or event this module does not define.

/// The account the app runs as and deploys log in as.
pub const APP_USER: &str = "innercontext";

/// The root-owned log reader setup-server installs; the deploy user runs it through sudo.
pub const JOURNAL_READER: &str = "/usr/local/sbin/innercontext-journal";

/// A host's role in a fleet, recorded by setup-server (as root: the app user cannot change it)
/// and read by the deploy probe: one word of [`ROLES`]. A deploy refuses when DEPLOY_SERVER's
/// marks disagree with it, and takes a lone host's role from it.
pub const ROLE_FILE: &str = "/etc/innercontext/role";
/// The words of [`ROLE_FILE`] (`crate::config::HostRole` names them).
pub const ROLES: [&str; 2] = ["primary", "secondary"];

/// The backend's Python package (in `backend/`), and its deploy tool (`python -m ...`).
pub const BACKEND_PACKAGE: &str = "innercontext";
pub const DEPLOY_TOOL: &str = "innercontext.deploytool";

/// Which half of a release a unit runs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Backend,
    Frontend,
}

/// A systemd service of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub name: &'static str,
    pub half: Half,
    /// An HTTP endpoint on the server that answers 2xx when the unit serves (probed on the
    /// server, in this order: the web page needs the API).
    pub probe: Option<&'static str>,
    /// Runs on the primary host only (the background worker: one per fleet).
    pub primary_only: bool,
    /// Has a listening socket of its own (`NAME.socket`), held by systemd across restarts.
    pub socket: bool,
}

impl Unit {
    /// What `systemctl reset-failed` clears before the job restarts the unit: the service and
    /// its socket (a crash loop of a socket-activated service fails its socket too). One exact
    /// sudoers line each (`systemd/innercontext-deploy.sudoers`).
    pub fn reset_targets(&self) -> String {
        if self.socket {
            format!("{} {}.socket", self.name, self.name)
        } else {
            self.name.to_string()
        }
    }
}

pub const API: Unit = Unit {
    name: "innercontext",
    half: Half::Backend,
    probe: Some("http://127.0.0.1:8000/health-check"),
    primary_only: false,
    socket: true,
};
pub const WEB: Unit = Unit {
    name: "innercontext-node",
    half: Half::Frontend,
    probe: Some("http://127.0.0.1:3000/"),
    primary_only: false,
    socket: true,
};
pub const WORKER: Unit = Unit {
    name: "innercontext-pricing-worker",
    half: Half::Backend,
    probe: None,
    primary_only: true,
    socket: false,
};

/// Every unit, in the order they are checked (a failure names the first that fails).
pub const UNITS: [Unit; 3] = [API, WEB, WORKER];

/// Where setup-server installs the units: in systemd's search path for locally installed
/// software (Debian 12's systemd reads it), below `/etc/systemd/system`, so an admin's
/// `systemctl mask` (a link in /etc) works and `systemctl unmask` brings the unit back.
pub const UNIT_DIR: &str = "/usr/local/lib/systemd/system";
/// Where setup-server installed them up to cafb523: a host with units there is set up again
/// (setup-server moves the ones it installed) before a deploy.
pub const OLD_UNIT_DIR: &str = "/etc/systemd/system";

/// Health fails at once when systemd has restarted a unit on its own this many times since the
/// job restarted it (a crash loop), instead of waiting for the health timeout.
pub const CRASH_LOOP_RESTARTS: u32 = 2;

/// Paths relative to the deploy root.
pub mod layout {
    pub const RELEASES: &str = "releases";
    pub const CURRENT: &str = "current";
    pub const SHARED: &str = "shared";
    pub const ENV_BACKEND: &str = "shared/backend/.env";
    pub const ENV_FRONTEND: &str = "shared/frontend/.env.production";
    pub const UV_CACHE: &str = "shared/uv-cache";
    /// Content-addressed virtualenvs (by uv.lock, pyproject.toml and Python), shared by releases.
    pub const VENVS: &str = "shared/venvs";
    /// Immutable frontend assets of recent releases, served by nginx across deploys.
    pub const ASSETS: &str = "shared/assets";
    /// The deploy lock: a directory made with mkdir.
    pub const LOCK: &str = ".deploy.lock";
    /// A file flocked around every change of the lock (take, release, unlock).
    pub const GUARD: &str = ".deploy.guard";
    /// One line per deploy, rollback, refusal and unlock.
    pub const LOG: &str = "deploy.log";
    /// One directory per server-side job: its events, tool logs and result.
    pub const JOBS: &str = "jobs";
    /// Scripts of the last successful release, for the boot-time check.
    pub const SCRIPTS: &str = "scripts";
    /// Pruned releases, moved here under the lock and deleted after it is released.
    pub const TRASH: &str = ".trash";
    /// Snapshots of the database, taken by the job before a migration (0700, the app user's):
    /// `<release that ran on the data>-<its revision>.dump` (pg_dump's custom format, 0600) and
    /// its record beside it (`.record`: revision, size, sha256), pruned with that release.
    pub const DB_SNAPSHOTS: &str = "shared/db";
    /// The two files of a snapshot, by suffix.
    pub const DB_DUMP: &str = ".dump";
    pub const DB_RECORD: &str = ".record";

    /// Inside a release.
    pub const STATE_FILE: &str = ".state";
    pub const META_FILE: &str = ".release";
    /// Every file the release was made from, as uploaded (relative paths).
    pub const MANIFEST: &str = ".manifest";
    /// The env links of a release, relative to the release, and where they point.
    pub const ENV_LINKS: [(&str, &str); 2] = [
        ("backend/.env", "../../../shared/backend/.env"),
        (
            "frontend/.env.production",
            "../../../shared/frontend/.env.production",
        ),
    ];
    /// The frontend's immutable assets inside a release.
    pub const IMMUTABLE: &str = "frontend/build/client/_app/immutable";
    /// The nginx site in a release, and where setup-server installs it.
    pub const NGINX_SITE_SOURCE: &str = "nginx/innercontext.conf";
    pub const NGINX_SITE: &str = "/etc/nginx/sites-available/innercontext";
}

/// `date -u +FORMAT` of a release name (`20261128T101530Z`); [`crate::release`] parses it.
pub const NAME_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// The same as a shell `case` pattern.
pub const NAME_PATTERN: &str =
    "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z";

/// A release named more than this far ahead of the server's clock is "from the future".
pub const FUTURE_TOLERANCE_SECS: i64 = 300;
/// Failed or abandoned releases are kept this long for a look, then pruned.
pub const FAILED_GRACE_SECS: i64 = 24 * 3600;
/// Assets of a release stay served at least this long after it stopped being current.
pub const ASSET_GRACE_SECS: i64 = 24 * 3600;
/// The client says it is alive this often...
pub const HEARTBEAT_MS: u64 = 1000;
/// ...and the job decides the client is gone after this long without a word.
pub const CLIENT_GRACE_SECS: u64 = 10;
/// Job directories kept for `deploy status` and `deploy log`.
pub const JOBS_KEPT: usize = 20;

/// States of a release (`releases/NAME/.state`).
pub const STATES: [&str; 3] = ["preparing", "succeeded", "failed"];

/// The `result=` of a deploy.log line.
pub const RESULTS: [&str; 8] = [
    "success",
    "failed",
    "rolled-back",
    "rollback-failed",
    "interrupted",
    "refused",
    "unlocked",
    "restored-at-boot",
];

/// Steps of the server-side job, in order (a step line each). `snapshot` (pg_dump of the
/// database, on the primary, when there is something to migrate) is the last step the deployer
/// can still stop: an abort or a silent deployer during it ends the job before the migration.
pub const STEPS: [&str; 10] = [
    "seed", "prepare", "snapshot", "migrate", "sync", "switch", "restart", "health", "restore",
    "record",
];

/// Set to `off` on the deploying machine, no snapshot is taken before a migration (the plan key
/// `db_snapshot`; the job's deploy.log line then says `snapshot=off`).
pub const DB_SNAPSHOT_ENV: &str = "DEPLOY_DB_SNAPSHOT";

/// Phases the job announces while it waits for the client.
pub const PHASES: [&str; 6] = [
    "awaiting-begin",
    "awaiting-upload",
    "awaiting-checks",
    "awaiting-go",
    "awaiting-verdict",
    "done",
];

/// Messages the client sends the job (one per line on the follower's stdin).
pub const MESSAGES: [&str; 9] = [
    "beat", "begin", "manifest", "uploaded", "checked", "go", "commit", "revert", "abort",
];

/// Kinds of event lines in a job's event stream (`jobs/TOKEN/events`).
pub const EVENTS: [&str; 8] = [
    "started", "step", "phase", "info", "warn", "detail", "note", "result",
];

/// A remote call of `scripts/deploy.sh`: its subcommand and the `key=value` options it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub name: &'static str,
    pub keys: &'static [&'static str],
}

/// What a deploy or rollback asks the job to do (the `run` call; stored as the job's plan).
pub const PLAN_KEYS: &[&str] = &[
    "root",
    "token",
    "mode",
    "release",
    "scope",
    "expect_current",
    "target",
    "force",
    "deployer",
    "commit",
    "dirty",
    "command",
    "client_pid",
    "client_host",
    "restart",
    "check",
    "probe",
    "timeout",
    "stable_ms",
    "role",
    "verdict",
    "begin",
    "need_mb",
    "prune",
    "asset_grace",
    // Test hook (INNERCONTEXT_TEST_PAUSE_AT): a step (one of STEPS) the job pauses before.
    "pause_at",
    // `--allow-unsafe-migration` was given (yes|no): the job's deploy.log line says so.
    "allow_unsafe",
    // A snapshot before the migration (on|off: DB_SNAPSHOT_ENV).
    "db_snapshot",
];

/// What the job's plan file holds besides the plan: set by the server when it took the lock.
pub const PLAN_SERVER_KEYS: &[&str] = &["started", "started_ms"];

pub const SUBS: &[Sub] = &[
    Sub {
        name: "probe",
        keys: &["root", "db", "sizes"],
    },
    Sub {
        name: "run",
        keys: PLAN_KEYS,
    },
    Sub {
        name: "follow",
        keys: &["root", "token", "offset", "role"],
    },
    Sub {
        name: "unlock",
        keys: &["root", "token", "force", "deployer"],
    },
    Sub {
        name: "job",
        keys: &["root", "token"],
    },
    Sub {
        name: "log",
        keys: &["root", "lines"],
    },
    Sub {
        name: "receive",
        keys: &["root", "token", "release"],
    },
    // The database before the lock: its revision; with `size`, what a snapshot needs.
    Sub {
        name: "db",
        keys: &["root", "size"],
    },
];

/// The keys of `sub`.
pub fn keys(sub: &str) -> &'static [&'static str] {
    SUBS.iter()
        .find(|s| s.name == sub)
        .map(|s| s.keys)
        .unwrap_or_else(|| panic!("no remote call '{sub}' in the contract"))
}

/// `scripts/contract.sh`: the contract as shell variables and one function.
pub fn render_shell() -> String {
    let mut s = String::new();
    s.push_str(
        "# shellcheck shell=bash disable=SC2034\n\
         # The server contract, generated from xtask/src/contract.rs: do not edit. A unit test\n\
         # fails when this file is stale; `UPDATE_GOLDEN=1 cargo test -p xtask contract` rewrites it.\n",
    );
    let var = |s: &mut String, name: &str, value: &str| {
        assert!(
            !value.contains('\''),
            "{name}: no quotes in contract values"
        );
        s.push_str(&format!("{name}='{value}'\n"));
    };
    let words = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(" ");
    var(&mut s, "C_APP_USER", APP_USER);
    var(&mut s, "C_BACKEND_PACKAGE", BACKEND_PACKAGE);
    var(&mut s, "C_DEPLOY_TOOL", DEPLOY_TOOL);
    var(&mut s, "C_JOURNAL_READER", JOURNAL_READER);
    var(&mut s, "C_ROLE_FILE", ROLE_FILE);
    var(&mut s, "C_ROLES", &ROLES.join(" "));
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
        ("C_UV_CACHE", layout::UV_CACHE),
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
        ("C_JOBS_KEPT", JOBS_KEPT as i64),
        ("C_CRASH_LOOP_RESTARTS", CRASH_LOOP_RESTARTS as i64),
    ] {
        var(&mut s, name, &value.to_string());
    }
    var(&mut s, "C_STATES", &STATES.join(" "));
    for state in STATES {
        var(&mut s, &format!("C_STATE_{}", state.to_uppercase()), state);
    }
    var(&mut s, "C_RESULTS", &RESULTS.join(" "));
    var(&mut s, "C_STEPS", &STEPS.join(" "));
    var(&mut s, "C_DB_SNAPSHOT_ENV", DB_SNAPSHOT_ENV);
    var(&mut s, "C_PHASES", &PHASES.join(" "));
    var(&mut s, "C_MESSAGES", &MESSAGES.join(" "));
    var(&mut s, "C_EVENTS", &EVENTS.join(" "));
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

/// The text sent with every call: the contract, the helpers, the lock, the job, its record,
/// then the entry point.
pub fn deploy_script() -> String {
    [CONTRACT_SH, LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, DEPLOY_SH].concat()
}

pub const CONTRACT_SH: &str = include_str!("../../scripts/contract.sh");
pub const LIB_SH: &str = include_str!("../../scripts/deploy-lib.sh");
pub const LOCK_SH: &str = include_str!("../../scripts/deploy-lock.sh");
pub const JOB_SH: &str = include_str!("../../scripts/deploy-job.sh");
pub const RECORD_SH: &str = include_str!("../../scripts/deploy-record.sh");
pub const DEPLOY_SH: &str = include_str!("../../scripts/deploy.sh");
pub const BOOT_CHECK_SH: &str = include_str!("../../scripts/boot-check.sh");

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn contract_sh_is_the_rendering_of_this_module() {
        let want = render_shell();
        if CONTRACT_SH != want {
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                let path = crate::project_root().join("scripts/contract.sh");
                fs_err::write(&path, &want).unwrap();
                panic!("rewrote {path}: rerun the tests");
            }
            panic!(
                "scripts/contract.sh is stale: run `UPDATE_GOLDEN=1 cargo test -p xtask contract` and commit it"
            );
        }
    }

    #[test]
    fn the_name_format_is_the_one_release_rs_parses() {
        // What the server's `date` makes of an instant is what the client calls it.
        let t = time::macros::datetime!(2026-11-28 10:15:30 UTC);
        let out = std::process::Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", t.unix_timestamp()),
                &format!("+{NAME_DATE_FORMAT}"),
            ])
            .output()
            .unwrap();
        let made = String::from_utf8(out.stdout).unwrap();
        assert_eq!(made.trim(), crate::release::name_for(t));
        // And the shell pattern accepts exactly the names release.rs accepts.
        for name in [
            "20261128T101530Z",
            "20261128T10153Z",
            "x20261128T101530Z",
            "20261128t101530Z",
        ] {
            let status = std::process::Command::new("bash")
                .args([
                    "-c",
                    &format!("{}c_is_release \"$1\"", render_shell()),
                    "t",
                    name,
                ])
                .status()
                .unwrap();
            assert_eq!(
                status.success(),
                name.len() == 16 && crate::release::parse_name(name).is_some(),
                "{name}"
            );
        }
    }

    /// The script without its comment lines.
    fn code(script: &str) -> String {
        script
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every `word` after `marker` in the script's code (e.g. `emit step` -> event kinds).
    fn words_after(script: &str, marker: &str) -> BTreeSet<String> {
        let script = code(script);
        let mut found = BTreeSet::new();
        for (i, _) in script.match_indices(marker) {
            let rest = &script[i + marker.len()..];
            let word: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !word.is_empty() {
                found.insert(word);
            }
        }
        found
    }

    #[test]
    fn the_script_uses_only_what_the_contract_defines() {
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let script = [LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, DEPLOY_SH, BOOT_CHECK_SH].concat();
        // Subcommands: `sub_NAME()` functions, and each reads only its own keys.
        let subs = words_after(&script, "\nsub_");
        assert_eq!(subs, set(&SUBS.iter().map(|s| s.name).collect::<Vec<_>>()));
        for e in words_after(&script, "emit ") {
            assert!(
                EVENTS.contains(&e.as_str()),
                "event '{e}' not in the contract"
            );
        }
        for st in words_after(&script, "run_step ") {
            assert!(
                STEPS.contains(&st.as_str()),
                "step '{st}' not in the contract"
            );
        }
        for p in words_after(&script, "emit phase ") {
            assert!(
                PHASES.contains(&p.as_str()),
                "phase '{p}' not in the contract"
            );
        }
        for m in words_after(&script, "await_msg ") {
            assert!(
                MESSAGES.contains(&m.as_str()),
                "message '{m}' not in the contract"
            );
        }
        for r in words_after(&script, "finish_with ") {
            assert!(
                RESULTS.contains(&r.as_str()) || r == "success",
                "result '{r}' not in the contract"
            );
        }
        for k in words_after(&script, "$opt_")
            .into_iter()
            .chain(words_after(&script, "${opt_"))
        {
            assert!(
                SUBS.iter().any(|s| s.keys.contains(&k.as_str()))
                    || PLAN_SERVER_KEYS.contains(&k.as_str()),
                "option '{k}' is read but no call has it"
            );
        }
        // No unit, state or layout literal in the code: they come from contract.sh.
        let code = code(&script);
        for u in UNITS {
            assert!(
                !code.contains(&format!("{} ", u.name))
                    && !code.contains(u.probe.unwrap_or("\u{0}")),
                "the deploy scripts name unit {} themselves",
                u.name
            );
        }
        for lit in [
            ".deploy.lock",
            "deploy.log",
            "shared/backend/.env",
            "succeeded",
            "preparing",
            "sites-available",
            "systemd/system",
        ] {
            assert!(
                !code.contains(lit),
                "the deploy scripts spell '{lit}' themselves instead of using contract.sh"
            );
        }
    }

    /// Run `test` (bash) after the server's helpers, in a fresh directory; its stdout.
    fn with_helpers(name: &str, test: &str) -> String {
        let dir = std::env::temp_dir().join(format!("contract-sh-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/releases")).unwrap();
        let script = [CONTRACT_SH, LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, test].concat();
        let out = std::process::Command::new("bash")
            .args(["-c", &script, "t"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    #[test]
    fn a_lock_is_visible_only_with_its_holder_and_taken_over_once_dead() {
        let out = with_helpers(
            "lock",
            r#"set -euo pipefail
            r=$PWD/root
            take_lock "$r" t1 "$(out token t1)"; echo "took=$?"
            job_alive "$r/.deploy.lock" && echo alive
            (take_lock "$r" t2 "$(out token t2)") && echo "second took" || echo "second=$?"
            ls -d "$r"/.deploy.lock.* 2>/dev/null || echo "nothing half-built left"
            exec 8>&-
            job_alive "$r/.deploy.lock" || echo dead
            take_lock "$r" t3 "$(out token t3)"; echo "took=$? token=$(meta "$r/.deploy.lock/info" token) aside=$(meta "$r/.deploy.lock.dead.t3/info" token)"
            "#,
        );
        assert_eq!(
            out,
            "took=0\nalive\nsecond=1\nnothing half-built left\ndead\ntook=0 token=t3 aside=t1\n"
        );
    }

    /// A shutdown's SIGTERM while the job waits for a message: its trap (put current back,
    /// then the record, seconds of command substitutions) runs to its end. Inside bash's own
    /// `read -t` it did not: the read's timer fired at the trap's next command substitution and
    /// jumped back into the read, leaving the job waiting with its record half made.
    #[test]
    fn a_trap_that_takes_seconds_runs_to_its_end_while_the_job_waits() {
        let out = with_helpers(
            "term",
            r#"set -euo pipefail
            lock=$PWD/l; mkdir -p "$lock/msg"; mkfifo "$lock/fifo"
            # A deployer that never falls silent, without the look at the heartbeat's file (a
            # command substitution): what sleeps below is the wait itself.
            stop_asked() { return 1; }
            handled() {
                trap '' TERM
                local i x
                for i in 1 2 3 4 5 6 7 8 9 10; do x=$(sleep 0.2; echo "$i"); done
                echo "handled to $x" >out
                exit 3
            }
            ( exec 6<>"$lock/fifo"; trap handled TERM; await_msg never ) &
            pid=$!
            # Waiting (asleep in the kernel), then the signal.
            until [ "$(cut -d' ' -f3 "/proc/$pid/stat")" = S ] && [ "$(cat "/proc/$pid/wchan")" != 0 ]; do :; done
            kill -TERM "$pid"
            end=$((SECONDS + 6))
            while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
            if kill -0 "$pid" 2>/dev/null; then echo "still waiting after its trap"; kill -KILL "$pid"; fi
            wait "$pid" || echo "exit $?"
            cat out 2>/dev/null || echo "no out"
            "#,
        );
        assert_eq!(out, "exit 3\nhandled to 10\n");
    }

    /// Following a job of an earlier boot of the server (`deploy status --follow`, a deployer
    /// that reconnects after a reboot) gives its events and ends, even though another process
    /// now runs under the pid the job had: that pid says nothing of the job any more.
    #[test]
    fn following_a_job_of_an_earlier_boot_ends() {
        let dir = std::env::temp_dir().join(format!("contract-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let job = dir.join("jobs/t1");
        std::fs::create_dir_all(dir.join("releases")).unwrap();
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("events"), "1\tstarted\tdeploy\tX\tapp\n").unwrap();
        // A live process under the job's pid: this test.
        std::fs::write(job.join("pid"), format!("{}\n", std::process::id())).unwrap();
        std::fs::write(job.join("boot"), "an-earlier-boot\n").unwrap();
        let out = std::process::Command::new("timeout")
            .args(["20", "bash", "-c", &deploy_script(), "deploy.sh", "follow"])
            .arg(format!("root={}", dir.display()))
            .args(["token=t1", "offset=0", "role=observer"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned()
            ),
            (Some(0), "1\tstarted\tdeploy\tX\tapp\neof=yes\n".to_string()),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_file_is_written_whole_or_left_as_it_was() {
        let out = with_helpers(
            "put",
            r#"set -euo pipefail
            put f "one"; put f "two"; echo "f=$(cat f)"
            : >blocker
            put blocker/x "y" || echo "failed: $put_error"
            ls | grep -c '\.tmp\.' || true
            append_line log "a"; append_line blocker/log "b" || echo "append failed"; cat log
            printf 'x=1\nalembic_revision=-\n' >m; set_meta m alembic_revision 0002_b; cat m
            "#,
        );
        assert_eq!(
            out,
            "f=two\nfailed: writing blocker/x: Not a directory\n0\nappend failed\na\nx=1\nalembic_revision=0002_b\n"
        );
    }

    #[test]
    fn an_unrecorded_result_reads_back_from_its_name() {
        let out = with_helpers(
            "marker",
            r#"set -euo pipefail
            lock=$PWD/l; mkdir "$lock"; : >"$lock/pending"
            mark_unrecorded rolled-back 12.5 0002_price_history "No space left on device" "not healthy after 8s: unit x is failed"
            m=$(unrecorded_marker "$lock")
            for k in result duration alembic why reason nope; do echo "$k=$(marker_field "$m" "$k")"; done
            "#,
        );
        assert_eq!(
            out,
            "result=rolled-back\nduration=12.5\nalembic=0002_price_history\nwhy=No space left on device\nreason=not healthy after 8s: unit x is failed\nnope=-\n"
        );
    }

    #[test]
    fn the_roles_are_the_ones_the_client_names() {
        use crate::config::HostRole;
        for word in ROLES {
            assert_eq!(HostRole::parse(word).map(HostRole::name), Some(word));
        }
        assert_eq!(HostRole::Primary.name(), ROLES[0]);
        assert_eq!(HostRole::Secondary.name(), ROLES[1]);
    }

    #[test]
    fn the_scripts_reset_what_the_contract_says() {
        // What deploy-lib.sh clears before a restart is what the sudoers lines allow.
        for u in UNITS {
            let out = std::process::Command::new("bash")
                .args([
                    "-c",
                    &format!("{}{LIB_SH}reset_targets \"$1\"", render_shell()),
                    "t",
                    u.name,
                ])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), u.reset_targets());
        }
        assert_eq!(API.reset_targets(), "innercontext innercontext.socket");
        assert_eq!(WORKER.reset_targets(), "innercontext-pricing-worker");
    }

    #[test]
    fn keys_of_each_call_are_unique_and_known() {
        for sub in SUBS {
            let mut seen = BTreeSet::new();
            for k in sub.keys {
                assert!(seen.insert(k), "{}: key {k} twice", sub.name);
                assert!(k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            }
        }
        assert_eq!(keys("probe"), &["root", "db", "sizes"]);
    }
}
