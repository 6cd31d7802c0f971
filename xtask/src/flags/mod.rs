//! The whole command-line grammar of `cargo xtask`, in one place, parsed purely (no I/O)
//! into a [`Command`], a request for help, or a one-line [`UsageError`] (exit code 2).
//!
//! Each command is one table in `commands.rs`: its flags (what each takes: a `table::Value`)
//! with their docs, its subcommands and positional words, its help prose, and the function
//! that makes its [`Command`] from what was given. Everything else is derived in `table.rs`:
//! the usage lines and every `--help` (one layout for all), the choices an error names,
//! which words take a value. `golden/` holds each help text and usage error byte for byte
//! (`UPDATE_GOLDEN=1 cargo test -p xtask flags` rewrites them, failing once).
//!
//! **Add a flag**: one line in its command's table, e.g. `flag("--quiet", Switch, "say
//! less")` or `flag("--batch", Num("N", (1, 1000, "hosts")), "…")` (a subcommand also names
//! it among the flags that apply to it), plus the field in the command's struct below, set in
//! the command's function from the scan (`g.on("--quiet")`, `g.num(…)`, `g.text(…)`,
//! `g.names(…)`). A new name to pick from is one line in its `choice!` list. Then rewrite the
//! goldens and review the diff.

mod commands;
mod operate;
mod table;

use std::fmt;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Command),
    /// Print this help text and exit 0.
    Help(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ci(Ci),
    Check(Check),
    Testhost(Testhost),
    SetupServer(SetupServer),
    Deploy(Deploy),
    Db(Db),
    Env(Env),
    Demo(Demo),
    Bench(Bench),
    Logs(Logs),
    Verify(Verify),
    Exec(Exec),
    Maintenance(Maintenance),
}

/// A closed list of names (made by `choice!`): what an error calls one, the names in order,
/// and each one's help line (empty where the help does not list them).
trait Choice: Copy + 'static {
    const WHAT: &'static str;
    const NAMES: &'static [&'static str];
    const ROWS: &'static [(&'static str, &'static str)];
    fn all() -> &'static [Self];
}

/// A closed list of names: an enum with `ALL` and `name()`, and its [`Choice`].
macro_rules! choice {
    ($(#[$m:meta])* $T:ident: $what:literal {
        $($(#[$vm:meta])* $V:ident = $name:literal $(: $doc:literal)?,)*
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $T {
            $($(#[$vm])* $V,)*
        }
        impl $T {
            pub const ALL: [$T; [$($name),*].len()] = [$($T::$V),*];
            pub fn name(self) -> &'static str {
                <$T as Choice>::NAMES[self as usize]
            }
        }
        impl Choice for $T {
            const WHAT: &'static str = $what;
            const NAMES: &'static [&'static str] = &[$($name),*];
            const ROWS: &'static [(&'static str, &'static str)] =
                &[$(($name, concat!("" $(, $doc)?))),*];
            fn all() -> &'static [$T] {
                &$T::ALL
            }
        }
    };
}
choice! {
    /// Stages of `cargo xtask ci`, in the order they run.
    Stage: "stage" {
        Tools = "tools": "install or check the toolchains and the browser test's Chromium",
        Rust = "rust": "cargo fmt --check, clippy -D warnings, unit tests",
        Backend = "backend": "ruff and pytest against a throwaway local PostgreSQL",
        Frontend = "frontend": "pnpm install --frozen-lockfile, svelte-check, build",
        Config = "config": "systemd-analyze verify, nginx -t, shellcheck, actionlint",
        E2e = "e2e": "end-to-end scenarios against the local test host (needs root)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ci {
    /// Stages to run, in order. Empty means none were selected (never produced by the parser).
    pub stages: Vec<Stage>,
    /// Only the end-to-end scenarios whose name contains one of these (empty: all).
    pub filter: Vec<String>,
}

choice! {
    /// A part of `cargo xtask check` (the local checks of a deploy).
    CheckPart: "check part" {
        Backend = "backend":
            "ruff check, ruff format --check, pytest against a local PostgreSQL",
        Frontend = "frontend": "svelte-check and the unit tests",
        Build = "build": "the production build the server runs (frontend/build)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub parts: Vec<CheckPart>,
    pub recheck: bool,
    pub stop_db: bool,
}

choice! {
    /// What a test machine is.
    Role: "role" {
        App = "app": "a fresh Debian 12 host, as setup-server first meets it",
        Db = "db": "PostgreSQL listening on the machine's own address",
        Primed = "primed":
            "an app host that already has setup-server's Debian packages (a faster setup-server)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Testhost {
    Build {
        rebuild: bool,
    },
    Up {
        name: String,
        role: Role,
    },
    /// Boot a stopped machine from its kept disk.
    Start {
        name: String,
    },
    /// `systemctl reboot` inside, then the same disk booted again.
    Reboot {
        name: String,
    },
    /// Shut down keeping the disk; `hard`: every process killed at once, no shutdown.
    Poweroff {
        name: String,
        hard: bool,
    },
    Down {
        name: Option<String>,
    },
    Status,
    Ssh {
        name: String,
        command: Vec<String>,
    },
    Exec {
        name: String,
        command: Vec<String>,
    },
    Delay {
        name: String,
        millis: u32,
    },
    /// Hidden: the latency proxy `delay` starts in the background (not in the help).
    Proxy {
        listen: String,
        to: String,
        millis: u32,
        port_file: String,
    },
}

choice! {
    /// Where setup-server takes uv and Node.js from.
    #[derive(Default)]
    ToolchainSource: "toolchain source" {
        /// uv from PyPI, Node.js from the npm registry: works on hosts that reach only registries.
        #[default]
        Registry = "registry",
        /// The spec's own sources: astral.sh installer, nvm, GitHub downloads.
        Upstream = "upstream",
    }
}

/// No flags given (the default): everything from the environment, the registry toolchains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetupServer {
    pub admin: Option<String>,
    /// Public key files: the set authorized for the app user (replacing the recorded one).
    pub deploy_keys: Vec<String>,
    /// Public key files added to the recorded set.
    pub add_deploy_keys: Vec<String>,
    pub backend_env: Option<String>,
    pub frontend_env: Option<String>,
    pub force_env: bool,
    pub toolchain: ToolchainSource,
    pub dry_run: bool,
    /// A certificate (PEM, leaf first, chain after) and its private key for HTTPS on :443.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// With TLS: plain http answers 301 to https, and HSTS is sent.
    pub tls_redirect: bool,
}

choice! {
    /// What a deploy changes (the other half is carried over from current).
    Scope: "scope" {
        All = "all",
        Backend = "backend",
        Frontend = "frontend",
    }
}

impl Scope {
    pub fn backend(self) -> bool {
        matches!(self, Scope::All | Scope::Backend)
    }
    pub fn frontend(self) -> bool {
        matches!(self, Scope::All | Scope::Frontend)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deploy {
    Release {
        scope: Scope,
        dry_run: bool,
        skip_local_checks: bool,
        redeploy: bool,
        /// No seed from current, a fresh virtualenv from a fresh uv cache, fresh assets (implies
        /// a new release, as `redeploy`).
        clean: bool,
        recheck: bool,
        /// Fleets: hosts that switch at once (None: `--parallel`, all of them).
        batch: Option<usize>,
        /// The migration lint's refusals become warnings (deploy.log says so).
        allow_unsafe_migration: bool,
        /// Maintenance mode on for the migration, off after health (also on failure).
        maintenance: bool,
    },
    List,
    Rollback {
        release: Option<String>,
        force: bool,
        /// Take the database down to the target's migrations after the switch.
        migrate_down: bool,
        /// Drop the rows the downgrade drops without asking.
        yes: bool,
        dry_run: bool,
        batch: Option<usize>,
    },
    Unlock {
        yes: bool,
        force: bool,
    },
    Status {
        follow: bool,
    },
    Log {
        lines: u32,
    },
}

/// `cargo xtask db`: the database's snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Snapshots,
    Restore {
        /// `RELEASE-REVISION`, as `db snapshots` lists it (validated by the command: it reaches
        /// a remote shell).
        snapshot: String,
        yes: bool,
        dry_run: bool,
    },
    /// psql to the app's database through the primary; its words go to psql as they are.
    Psql {
        args: Vec<String>,
    },
}

/// `cargo xtask exec`: a command on the server, in the current release, as the app runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Only this host of DEPLOY_SERVER (its destination or host name); default the primary.
    pub host: Option<String>,
    /// The command and its arguments, as the OS gave them (any bytes: see [`parse_os`]).
    pub command: Vec<std::ffi::OsString>,
}

choice! {
    /// Which env file of the server (`cargo xtask env`).
    EnvKind: "env file" {
        Backend = "backend": "shared/backend/.env (the API and the worker read it)",
        Frontend = "frontend": "shared/frontend/.env.production (the web server reads it)",
    }
}

/// `cargo xtask env`: the server's env files. A FILE's kind, when not given, is its basename's
/// (`.env`: backend, `.env.production`: frontend), else a usage error asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Env {
    Show { kind: EnvKind, reveal: bool },
    Diff { kind: EnvKind, file: String },
    Push { kind: EnvKind, file: String },
    Rollback { kind: EnvKind },
}

/// `cargo xtask logs`: the units' journal on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    /// systemd unit names from the contract, in the contract's order.
    pub units: Vec<&'static str>,
    pub follow: bool,
    pub lines: u32,
    /// journalctl's `--since`, validated (see [`validate_since`]).
    pub since: Option<String>,
    /// Only this host of DEPLOY_SERVER (its destination or host name).
    pub host: Option<String>,
}

/// `cargo xtask maintenance`: nginx's maintenance page on every host, off again, or its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maintenance {
    /// The message is checked ([`validate_maintenance_message`]); None: the page's heading only.
    On {
        message: Option<String>,
    },
    Off,
    Status,
}

/// A maintenance message: at most 500 bytes, no control characters (a line of the flag file
/// and of the page).
pub fn validate_maintenance_message(m: &str) -> Result<(), UsageError> {
    let max = crate::contract::MAINTENANCE_MESSAGE_MAX;
    refuse(
        m.len() > max,
        &format!(
            "the maintenance message is {} bytes, more than {max}: shorten it",
            m.len()
        ),
    )?;
    refuse(
        m.chars().any(char::is_control),
        "the maintenance message holds a control character (a newline, a tab, an escape…): \
         give it as one line of plain text",
    )
}

/// `cargo xtask verify`: current, its virtualenv and the uv cache against this checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// Only this host of DEPLOY_SERVER (its destination or host name).
    pub host: Option<String>,
}

/// The most entries `logs -n` asks for (the server's log reader allows as many).
pub const LOGS_MAX_LINES: u32 = 100_000;

/// `--since WHEN` as the server's log reader accepts it: 1-64 letters, digits, spaces and
/// `: . + -` (a date, a time, `-1h`, `today`, `yesterday`, ...).
pub fn validate_since(when: &str) -> Result<(), UsageError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || " :.+-".contains(c);
    let bad = !(1..=64).contains(&when.len()) || !when.chars().all(ok);
    let why = "use a date or a relative time like \"2026-11-28 10:15\", -1h or today (letters, \
               digits, space and : . + - only, at most 64 characters)";
    refuse(
        bad,
        &format!("invalid --since '{}': {why}", when.escape_debug()),
    )
}

/// Machine names become interface names (`ve-NAME`: Linux allows 15 bytes, so 12 for NAME)
/// and paths.
pub fn validate_machine_name(name: &str) -> Result<(), UsageError> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first = name.starts_with(|c: char| c.is_ascii_lowercase());
    let bad = !(1..=12).contains(&name.len()) || !first || !name.chars().all(ok);
    let why = "use 1-12 lowercase letters or digits, starting with a letter";
    refuse(bad, &format!("invalid machine name '{name}': {why}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    pub down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    pub runs: u32,
    /// The phases to run (all by default).
    pub phases: Vec<BenchPhase>,
    /// The hosts phase's fleet sizes, ascending, 1 first (default 1, 2, 4).
    pub hosts: Vec<u32>,
}

impl Bench {
    pub fn wants(&self, phase: BenchPhase) -> bool {
        self.phases.contains(&phase)
    }
}

choice! {
    /// Parts of `cargo xtask bench`, each a group of rows.
    BenchPhase: "bench phase" {
        Deploys = "deploys": "incremental, no-op, backend redeploy, rollback, list",
        Load = "load": "failed requests under wrk load during a deploy and a rollback",
        Checks = "checks":
            "deploys with local checks (new tree, same tree again) and the checks alone",
        Releases = "releases": "the incremental deploy and list with 50 more releases on the server",
        Files = "files": "the incremental deploy with 20,000 more files (500 MB) in the backend",
        Crash = "crash":
            "a release whose API crashes at import: the job's restart to the named crash loop",
        Database = "database": "a database of 1,000,000 price rows: a backend deploy with a \
            migration against one without, the snapshot's time and size",
        Exec = "exec": "exec -- true over the link: one handshake and one round trip",
        Hooks = "hooks": "a backend redeploy with every hook in deploy/hooks/ (each `true`) \
            against one without, interleaved, as a ratio",
        /// Deploy and rollback of fleets of `--hosts` app machines behind a load balancer.
        Hosts = "hosts": "fleets of app machines behind a load balancer on this host (nginx): \
            rolling deploy all and rollback, ssh handshakes per host, failed requests (own table)",
    }
}

/// The hosts phase's fleet sizes when `--hosts` is not given.
pub const BENCH_HOSTS: [u32; 3] = [1, 2, 4];
/// The largest fleet `--hosts` takes, and the most app machines all its fleets may need at
/// once (each size is a fleet of its own, up at the same time so rounds can interleave).
pub const BENCH_MAX_HOSTS: u32 = 8;
pub const BENCH_MAX_MACHINES: u32 = 12;

/// `--hosts 1,2,4`: distinct sizes from 1 to [`BENCH_MAX_HOSTS`], 1 among them (every fleet
/// is compared with one host), at most [`BENCH_MAX_MACHINES`] app machines in all; ascending.
fn parse_bench_hosts(v: &str) -> Result<Vec<u32>, UsageError> {
    let bad = |why: &str| format!("invalid --hosts '{}': {why}", v.escape_debug());
    let range = format!("use fleet sizes from 1 to {BENCH_MAX_HOSTS}, comma separated, like 1,2,4");
    let mut sizes = Vec::new();
    for part in v.split(',') {
        let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let n = part
            .parse()
            .ok()
            .filter(|n| digits && (1..=BENCH_MAX_HOSTS).contains(n));
        let n = n.ok_or_else(|| UsageError(bad(&range)))?;
        refuse(sizes.contains(&n), &bad(&format!("{n} is given twice")))?;
        sizes.push(n);
    }
    let one = "1 must be one of the sizes: every fleet is compared with one host";
    refuse(!sizes.contains(&1), &bad(one))?;
    let total: u32 = sizes.iter().sum();
    let most =
        format!("the fleets need {total} app machines at once; at most {BENCH_MAX_MACHINES}");
    refuse(total > BENCH_MAX_MACHINES, &bad(&most))?;
    sizes.sort_unstable();
    Ok(sizes)
}

/// A one-line usage error; `main` prints it and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl UsageError {
    fn choice(what: &str, got: &str, valid: &[&str]) -> UsageError {
        UsageError(format!(
            "unknown {what} '{got}' (valid: {})",
            valid.join(", ")
        ))
    }
}

/// The error `why` when `bad`.
fn refuse(bad: bool, why: &str) -> Result<(), UsageError> {
    match bad {
        true => Err(UsageError(why.into())),
        false => Ok(()),
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The options given before the command (`cargo xtask --to staging deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Global {
    /// `--to NAME`: the destination (`deploy/NAME.env`), checked as a name here, as a file by
    /// `destination::load`.
    pub to: Option<String>,
}

impl Command {
    /// Whether the command reaches the servers, and so acts on a destination (`--to`,
    /// `DEPLOY_TO`, `deploy/default`). Every command says (no catch-all: a new one decides).
    pub fn takes_destination(&self) -> bool {
        match self {
            Command::SetupServer(_)
            | Command::Deploy(_)
            | Command::Db(_)
            | Command::Logs(_)
            | Command::Verify(_)
            | Command::Exec(_)
            | Command::Maintenance(_)
            | Command::Env(_) => true,
            Command::Ci(_)
            | Command::Check(_)
            | Command::Testhost(_)
            | Command::Demo(_)
            | Command::Bench(_) => false,
        }
    }
}

/// Split the options that come before the command off `args`: `--to NAME` (or `--to=NAME`).
pub fn global(
    mut args: Vec<std::ffi::OsString>,
) -> Result<(Global, Vec<std::ffi::OsString>), UsageError> {
    let mut g = Global::default();
    let text = |a: &std::ffi::OsString| a.to_string_lossy().into_owned();
    while let Some(first) = args.first().map(text) {
        let value = if first == "--to" {
            let v = args.get(1).map(text);
            let v = v.ok_or_else(|| {
                UsageError("--to needs a destination: cargo xtask --to NAME COMMAND".into())
            })?;
            args.drain(..2);
            v
        } else if let Some(v) = first.strip_prefix("--to=") {
            let v = v.to_string();
            args.remove(0);
            v
        } else {
            break;
        };
        refuse(g.to.is_some(), "--to is given twice")?;
        let why = "a destination is named by 1-32 lowercase letters, digits and -, starting \
                   with a letter (deploy/NAME.env)";
        let shown = value.escape_debug();
        refuse(
            !crate::destination::valid_name(&value),
            &format!("invalid --to '{shown}': {why}"),
        )?;
        g.to = Some(value);
    }
    Ok((g, args))
}

/// Parse `cargo xtask` arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, UsageError> {
    let mut args: Vec<String> = args.into_iter().collect();
    let top = || Ok(Parsed::Help(table::top_help(&commands::COMMANDS)));
    match args.first() {
        None => return top(),
        Some(a) if ["-h", "--help", "help"].contains(&a.as_str()) => return top(),
        Some(_) => {}
    }
    let names = commands::COMMANDS.map(|c| c.name);
    let cmd = &commands::COMMANDS[table::pick("command", &args.remove(0), &names)?];
    // `-h` or `--help` anywhere before `--` wins over everything else.
    let flags = args.iter().take_while(|a| *a != "--");
    let own_to = cmd.flags.iter().any(|f| f.long() == "--to");
    let late_to = !own_to && flags.clone().any(|a| a == "--to" || a.starts_with("--to="));
    let cmd_name = cmd.name;
    let late = format!("--to goes before the command: cargo xtask --to NAME {cmd_name} ...");
    refuse(late_to, &late)?;
    if flags.into_iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Parsed::Help(cmd.help()));
    }
    (cmd.parse)(args).map(Parsed::Run)
}

/// Parse `cargo xtask` arguments as the OS gave them (without the program name): every word
/// must be UTF-8 except those after the first `--`, which reach `exec`'s command byte for
/// byte (any other command refuses them).
pub fn parse_os(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, UsageError> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let cut = args
        .iter()
        .position(|a| a == "--")
        .map_or(args.len(), |i| i + 1);
    let tail = args.split_off(cut);
    let not_text = |a: &std::ffi::OsStr| {
        UsageError(format!(
            "the argument {:?} is not UTF-8 (only exec's command, after --, may hold any bytes)",
            a.to_string_lossy()
        ))
    };
    let mut words = Vec::with_capacity(args.len() + tail.len());
    for a in args {
        words.push(a.into_string().map_err(|a| not_text(&a))?);
    }
    words.extend(tail.iter().map(|a| a.to_string_lossy().into_owned()));
    match parse(words)? {
        Parsed::Run(Command::Exec(mut e)) => {
            e.command = tail;
            Ok(Parsed::Run(Command::Exec(e)))
        }
        parsed => match tail.iter().find(|a| a.to_str().is_none()) {
            Some(a) => Err(not_text(a)),
            None => Ok(parsed),
        },
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
