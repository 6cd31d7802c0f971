//! The server contract: every fact both halves of the deployer rely on, defined once.
//!
//! The Rust client and the server scripts (`scripts/deploy.sh`, run as the app user, and
//! `scripts/setup-server.sh`, run as root) must agree on the app user, the units and their
//! probes, the layout under the deploy root and the paths setup-server installs, the
//! release-name format, the keys each remote call accepts, a few timings, and the protocol's
//! words: release states, job results, steps, phases, messages, event kinds and notes, each an
//! enum here ([`State`], [`JobResult`], [`Step`], [`StepStatus`], [`Phase`], [`Message`],
//! [`EventKind`], [`Note`]) that the rest of the Rust side spells them through. They live here;
//! [`shell::render_shell`] turns them into `scripts/contract.sh`, which is sent ahead of both
//! scripts on every call (and shipped in every release). Unit tests fail when the committed
//! file differs from the rendering, when a script uses a call, key, event, step, phase,
//! message, note or result this module does not define or spells a fact itself, and when the
//! Rust side quotes one of the protocol's words outside this module.

/// The account the app runs as and deploys log in as.
pub const APP_USER: &str = "innercontext";

/// The deploy root the repository's units and nginx site name (DEPLOY_ROOT's default; another
/// root is substituted into them when setup-server installs them).
pub const DEFAULT_ROOT: &str = "/opt/innercontext";

/// The root-owned log reader setup-server installs; the deploy user runs it through sudo.
pub const JOURNAL_READER: &str = "/usr/local/sbin/innercontext-journal";

/// A host's role in a fleet, recorded by setup-server (as root: the app user cannot change it)
/// and read by the deploy probe: one word of [`ROLES`]. A deploy refuses when DEPLOY_SERVER's
/// marks disagree with it, and takes a lone host's role from it.
pub const ROLE_FILE: &str = "/etc/innercontext/role";
/// The words of [`ROLE_FILE`] (`crate::config::HostRole` names them).
pub const ROLES: [&str; 2] = ["primary", "secondary"];

/// The deploy keys setup-server authorized last (authorized_keys lines, root's): the set it
/// keeps when it is given no key, and writes `~innercontext/.ssh/authorized_keys` from in full.
pub const DEPLOY_KEYS_FILE: &str = "/etc/innercontext/deploy-keys";

/// Where setup-server installs the sudoers drop-in (`systemd/innercontext-deploy.sudoers`)
/// that lets the deploy user restart the units and read their journal.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/innercontext-deploy";

/// HTTPS (setup-server --tls-cert/--tls-key): the certificate and key's directory, and the
/// nginx snippet the site includes (`include /etc/nginx/innercontext.d/*.conf`).
pub const TLS_DIR: &str = "/etc/ssl/innercontext";
pub const TLS_SNIPPET: &str = "/etc/nginx/innercontext.d/tls.conf";

/// Every unit file of the product is named `UNIT_PREFIX…` (`.service`, `.socket`, `.timer`):
/// setup-server installs no other and refuses any other name.
pub const UNIT_PREFIX: &str = "innercontext";

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
    /// Its `SyslogIdentifier=`: how its journal lines name it (`cargo xtask logs` shows it), so
    /// the API and the worker, both Python, are told apart.
    pub log_id: &'static str,
}

impl Unit {
    /// What `systemctl reset-failed` clears before the job restarts the unit: the service and
    /// its socket (a crash loop of a socket-activated service fails its socket too). One exact
    /// sudoers line each (`systemd/innercontext-deploy.sudoers`).
    ///
    /// The same words are what `db restore` stops and starts again (`systemctl stop` /
    /// `systemctl start`, one exact sudoers line each): with its socket stopped, no request
    /// starts the service while the database is replaced.
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
    log_id: "innercontext-api",
};
pub const WEB: Unit = Unit {
    name: "innercontext-node",
    half: Half::Frontend,
    probe: Some("http://127.0.0.1:3000/"),
    primary_only: false,
    socket: true,
    log_id: "innercontext-web",
};
pub const WORKER: Unit = Unit {
    name: "innercontext-pricing-worker",
    half: Half::Backend,
    probe: None,
    primary_only: true,
    socket: false,
    log_id: "innercontext-worker",
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
    /// `env push` and `env rollback`: the file they replace is kept beside it first, 0600, as
    /// `<file><ENV_BACKUP><release-style UTC time>` (`shared/backend/.env.backup-20261206T172000Z`).
    pub const ENV_BACKUP: &str = ".backup-";
    /// `env push`: the pushed bytes, written beside the env file (0600) under the lock until the
    /// job puts them in place: `<file><ENV_STAGED><job token>`.
    pub const ENV_STAGED: &str = ".push-";
    pub const UV_CACHE: &str = "shared/uv-cache";
    /// `deploy --clean`: the uv cache being filled from empty, and the one it replaces while
    /// they swap (two renames; a job that died between them leaves UV_CACHE_OLD, which the next
    /// job puts back). Neither outlives the job that made it.
    pub const UV_CACHE_FRESH: &str = "shared/uv-cache.fresh";
    pub const UV_CACHE_OLD: &str = "shared/uv-cache.old";
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
    /// The sizes and times of a release's files, written by the job once it is prepared.
    pub const SEAL_FILE: &str = ".seal";
    /// The release's link to its virtualenv (under [`VENVS`]), made by the job.
    pub const VENV_LINK: &str = "backend/.venv";
    /// The file the job writes into a virtualenv once uv built it and it passed its check.
    pub const VENV_MARKER: &str = ".complete";
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
    /// The link in sites-enabled that turns the site on.
    pub const NGINX_SITE_ENABLED: &str = "/etc/nginx/sites-enabled/innercontext";
    /// Maintenance mode (`cargo xtask maintenance`, `deploy --maintenance`): while this file
    /// exists nginx answers requests from outside with 503 and [`MAINTENANCE_PAGE`]. The app
    /// user writes both (whole: temp file + rename), the page first; the flag holds
    /// `since=`, `by=`, `message=` and, when a deploy job turned it on, `token=`.
    pub const MAINTENANCE_FLAG: &str = "maintenance.on";
    /// The static page nginx sends while the flag exists (the message, HTML-escaped).
    pub const MAINTENANCE_PAGE: &str = "maintenance.html";
}

/// A maintenance message: at most this many bytes, no control characters.
pub const MAINTENANCE_MESSAGE_MAX: usize = 500;
/// The message `deploy --maintenance` puts on the page.
pub const MAINTENANCE_DEPLOY_MESSAGE: &str =
    "A new version is being deployed. We will be back in a few minutes.";
/// The `Retry-After` nginx sends with the maintenance page (seconds; nginx/innercontext.conf).
pub const MAINTENANCE_RETRY_AFTER_SECS: u32 = 120;

/// `date -u +FORMAT` of a release name (`20261128T101530Z`); [`crate::deploy::release`] parses it.
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
/// How long a health probe waits for an answer: longer than the API's own database connect
/// timeout (3 s, `backend/innercontext/db.py`), so an unreachable database is read from the
/// API's 503 and its reason, not guessed from a probe that gave up first.
pub const PROBE_TIMEOUT_SECS: u64 = 5;
/// Job directories kept for `deploy status` and `deploy log`.
pub const JOBS_KEPT: usize = 20;
/// Backups of each env file kept by `env push` and `env rollback` (the newest).
pub const ENV_BACKUPS_KEPT: usize = 5;
/// The largest env file `env push` sends (bytes).
pub const ENV_MAX_BYTES: usize = 65536;

/// An enum of the protocol's words: each variant's word, [`name`](State::name) and
/// [`parse`](State::parse) between the two, and `ALL` in the contract's order (what
/// `contract.sh` lists). The Rust side spells these words only through them (a unit test
/// looks for quoted literals elsewhere).
macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every word, in the contract's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word as both halves write it.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The word read back; None for anything else.
            pub fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

words! {
    /// The state of a release (`releases/NAME/.state`).
    State {
        Preparing = "preparing",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

words! {
    /// How a job (or a boot check, or an unlock) ended: the `result=` of its deploy.log line.
    JobResult {
        Success = "success",
        Failed = "failed",
        /// It failed after the switch; the previous release was restored and is healthy.
        RolledBack = "rolled-back",
        /// It failed, and so did restoring the previous release.
        RollbackFailed = "rollback-failed",
        Interrupted = "interrupted",
        /// Refused before anything changed (the lock, a preflight, a migration mismatch).
        Refused = "refused",
        Unlocked = "unlocked",
        /// The boot check found current broken after a reboot and restored a release.
        RestoredAtBoot = "restored-at-boot",
        /// `db restore`: the database is the snapshot's, current its release, healthy.
        Restored = "restored",
        /// `cargo xtask exec` (scope exec) or `db psql` (scope psql) ran a command in current:
        /// no job, no change of release; its exit code in `exit=`, its words in `reason=`.
        Ran = "ran",
        /// `env push` or `env rollback`: the new env file is in place, the units that read it
        /// restarted and healthy.
        EnvPushed = "env-pushed",
        /// `env push` or `env rollback`: with the new file the units were not healthy; the file
        /// before it went back, and they are healthy again on it.
        EnvRestored = "env-restored",
    }
}

words! {
    /// A step of the server-side job, in order (a step line each). `snapshot` (pg_dump of the
    /// database, on the primary, when there is something to migrate) is the last step the
    /// deployer can still stop: an abort or a silent deployer during it ends the job before the
    /// migration.
    Step {
        /// `db restore`: the snapshot checked under the lock (record, checksum, release).
        VerifySnapshot = "verify-snapshot",
        /// `db restore`: the units and their sockets stopped.
        StopUnits = "stop-units",
        /// `db restore`: the database replaced by the snapshot, in one transaction.
        LoadSnapshot = "load-snapshot",
        /// `env push`/`env rollback`: the env file kept as a backup, the new one put in place.
        EnvWrite = "env-write",
        Seed = "seed",
        Prepare = "prepare",
        /// `deploy --maintenance`: maintenance mode turned on before the snapshot and the
        /// migration (the record step turns it off again, whatever the result).
        MaintenanceOn = "maintenance-on",
        Snapshot = "snapshot",
        Migrate = "migrate",
        /// `rollback --migrate-down`, under the lock before the switch: the downgrade's plan and
        /// a trial of it (run in its transaction, rolled back).
        Trial = "trial",
        Sync = "sync",
        Switch = "switch",
        Restart = "restart",
        Health = "health",
        Restore = "restore",
        Record = "record",
    }
}

/// Set to `off` on the deploying machine, no snapshot is taken before a migration (the plan key
/// `db_snapshot`; the job's deploy.log line then says `snapshot=off`).
pub const DB_SNAPSHOT_ENV: &str = "DEPLOY_DB_SNAPSHOT";

words! {
    /// How a `step` event marks its step (`run_step` in scripts/deploy-job.sh).
    StepStatus {
        Start = "start",
        Ok = "ok",
        Failed = "failed",
        /// The deployer stopped it (the snapshot: the last step before the migration).
        Stopped = "stopped",
    }
}

words! {
    /// A phase the job announces while it waits for the deployer.
    Phase {
        AwaitingBegin = "awaiting-begin",
        AwaitingUpload = "awaiting-upload",
        AwaitingChecks = "awaiting-checks",
        AwaitingGo = "awaiting-go",
        AwaitingVerdict = "awaiting-verdict",
        Done = "done",
    }
}

words! {
    /// A message the deployer sends the job (one per line on the follower's stdin).
    Message {
        Beat = "beat",
        Begin = "begin",
        Manifest = "manifest",
        Uploaded = "uploaded",
        Checked = "checked",
        Go = "go",
        Commit = "commit",
        Revert = "revert",
        Abort = "abort",
    }
}

impl Message {
    /// The line that asks the job to stop before it changes current (or, in a fleet, to go
    /// back): `abort RESULT: WHY`, the result it records and why.
    pub fn abort_line(result: JobResult, why: &str) -> String {
        format!("{} {}: {why}", Message::Abort.name(), result.name())
    }
}

words! {
    /// The kind of an event line in a job's event stream (`jobs/TOKEN/events`).
    EventKind {
        Started = "started",
        Step = "step",
        Phase = "phase",
        Info = "info",
        Warn = "warn",
        Detail = "detail",
        /// A line of a unit's journal (a failing unit's tail): printed like a detail, but in CI
        /// only when asked for (`DEPLOY_JOURNAL=1`: it can hold client addresses).
        Journal = "journal-line",
        Note = "note",
        /// How the job ended: result, reason, duration, revision, current, and the deploy.log
        /// line it wrote (empty when it could not write one).
        Result = "result",
    }
}

words! {
    /// What a `note` event notes (its first field): a step line's bracketed note.
    Note {
        Seed = "seed",
        Removed = "removed",
        Venv = "venv",
        Migrate = "migrate",
        Pruned = "pruned",
        /// The snapshot step: `taken SIZE PATH`, `none WHY` or `off`.
        Snapshot = "snapshot",
        /// Snapshots pruned with their releases: `N`.
        PrunedSnapshots = "pruned-snapshots",
    }
}

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
    // Test hook (INNERCONTEXT_TEST_PAUSE_AT): a step (a Step) the job pauses before.
    "pause_at",
    // `--allow-unsafe-migration` was given (yes|no): the job's deploy.log line says so.
    "allow_unsafe",
    // A snapshot before the migration (on|off: DB_SNAPSHOT_ENV).
    "db_snapshot",
    // `rollback --migrate-down` (yes|no): after the switch, the primary takes the database down
    // to the target's migrations (a snapshot first).
    "migrate_down",
    // `--yes` (yes|no): the downgrade may drop rows that hold data.
    "yes",
    // `db restore` (mode restore): the snapshot's name in DB_SNAPSHOTS, without its suffix.
    "snapshot",
    // `deploy --clean` (yes|no): no seed from current, the virtualenv built from a fresh uv
    // cache (UV_CACHE_FRESH, which then replaces UV_CACHE), the assets replacing same-named
    // shared ones.
    "clean",
    // `--to NAME` / `DEPLOY_TO` (a destination name): the job's deploy.log line says
    // `destination=NAME`.
    "destination",
    // `deploy --maintenance` (yes|no): maintenance on before the migration, off in the record
    // step (left on when it was on before the job).
    "maintenance",
    // `env push`/`env rollback` (mode env): which file (backend|frontend) and what (push|rollback).
    "env",
    "env_action",
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
        keys: &["root", "token", "force", "deployer", "destination"],
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
    // The seeded release against the deployer's hashes (on stdin): what differs is taken out.
    Sub {
        name: "compare",
        keys: &["root", "token", "release"],
    },
    // The database before the lock: its revision; with `size`, what a snapshot needs.
    Sub {
        name: "db",
        keys: &["root", "size", "down"],
    },
    // `cargo xtask maintenance on|off|status`: the flag and the page in the deploy root.
    Sub {
        name: "maintenance",
        keys: &["root", "action", "message", "deployer"],
    },
    // `env show`/`env diff`: an env file as it is on the server, and its backups (read-only).
    Sub {
        name: "envread",
        keys: &["root", "env"],
    },
    // `env push`: the new file on stdin, staged beside the env file under this job's lock.
    Sub {
        name: "envstage",
        keys: &["root", "token", "env"],
    },
];

/// Tests: `test` (bash) run after contract.sh and deploy-lib.sh, in a fresh temporary directory
/// named after `name` with the (relative) directories `dirs` made in it; its stdout, once it
/// exited 0 (else the test fails with its stderr). The directory is removed after.
#[cfg(test)]
pub fn run_with_lib(name: &str, dirs: &[&str], test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for d in dirs {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let script = [CONTRACT_SH, LIB_SH, test].concat();
    let out = std::process::Command::new("bash")
        .args(["-c", &script, "t"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The keys of `sub`.
pub fn keys(sub: &str) -> &'static [&'static str] {
    SUBS.iter()
        .find(|s| s.name == sub)
        .map(|s| s.keys)
        .unwrap_or_else(|| panic!("no remote call '{sub}' in the contract"))
}

/// The text sent with every call: the contract, the helpers, the lock, the seal, the job, its
/// record, then the entry point; without its comment lines (a fifth of it, and the packed
/// script must fit in one argument, see `remote.rs`). A test proves that changes no function.
pub fn deploy_script() -> String {
    without_comment_lines(
        &[
            CONTRACT_SH,
            LIB_SH,
            LOCK_SH,
            SEAL_SH,
            JOB_SH,
            RECORD_SH,
            DEPLOY_SH,
        ]
        .concat(),
    )
}

/// `text` without the lines that are only a comment (their first non-blank character is `#`).
/// Only for scripts without here-documents, where such a line would be text.
pub fn without_comment_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| [l, "\n"])
        .collect()
}

pub const CONTRACT_SH: &str = include_str!("../../scripts/contract.sh");
pub const LIB_SH: &str = include_str!("../../scripts/deploy-lib.sh");
pub const LOCK_SH: &str = include_str!("../../scripts/deploy-lock.sh");
pub const SEAL_SH: &str = include_str!("../../scripts/deploy-seal.sh");
pub const JOB_SH: &str = include_str!("../../scripts/deploy-job.sh");
pub const RECORD_SH: &str = include_str!("../../scripts/deploy-record.sh");
pub const DEPLOY_SH: &str = include_str!("../../scripts/deploy.sh");
pub const BOOT_CHECK_SH: &str = include_str!("../../scripts/boot-check.sh");

/// The text sent with every `exec` and `db psql` call: the contract, the helpers, then the
/// wrapper; without its comment lines (see [`deploy_script`]).
pub fn exec_script() -> String {
    without_comment_lines(&[CONTRACT_SH, LIB_SH, EXEC_SH].concat())
}

pub const EXEC_SH: &str = include_str!("../../scripts/exec.sh");

/// The text sent with every setup-server call (run as root, or re-run through sudo by itself):
/// the contract, then the script.
pub fn setup_script() -> String {
    [CONTRACT_SH, SETUP_SH].concat()
}

pub const SETUP_SH: &str = include_str!("../../scripts/setup-server.sh");
/// The log reader setup-server installs as [`JOURNAL_READER`].
pub const JOURNAL_SH: &str = include_str!("../../scripts/innercontext-journal.sh");

pub mod shell;

#[cfg(test)]
mod tests;
