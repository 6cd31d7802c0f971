//! The whole command-line grammar of `cargo xtask`, in one place.
//!
//! The parser and the `--help` texts live side by side so they cannot drift apart. Parsing is
//! pure (no I/O): it turns the argument list into a [`Command`], a request for help, or a
//! [`UsageError`] whose message is one line naming the valid choices (exit code 2).

use std::fmt;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Command),
    /// Print this help text and exit 0.
    Help(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ci(Ci),
    Check(Check),
    Testhost(Testhost),
    SetupServer(SetupServer),
    Deploy(Deploy),
    Demo(Demo),
    Bench(Bench),
    Logs(Logs),
}

/// Stages of `cargo xtask ci`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Tools,
    Rust,
    Backend,
    Frontend,
    Config,
    E2e,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Tools,
        Stage::Rust,
        Stage::Backend,
        Stage::Frontend,
        Stage::Config,
        Stage::E2e,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Tools => "tools",
            Stage::Rust => "rust",
            Stage::Backend => "backend",
            Stage::Frontend => "frontend",
            Stage::Config => "config",
            Stage::E2e => "e2e",
        }
    }
    fn parse(s: &str) -> Result<Stage, UsageError> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UsageError::choice("stage", s, &Stage::ALL.map(Stage::name)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ci {
    /// Stages to run, in order. Empty means none were selected (never produced by the parser).
    pub stages: Vec<Stage>,
    /// Only the end-to-end scenarios whose name contains one of these (empty: all).
    pub filter: Vec<String>,
}

/// A part of `cargo xtask check` (the local checks of a deploy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPart {
    Backend,
    Frontend,
    Build,
}

impl CheckPart {
    pub const ALL: [CheckPart; 3] = [CheckPart::Backend, CheckPart::Frontend, CheckPart::Build];
    pub fn name(self) -> &'static str {
        match self {
            CheckPart::Backend => "backend",
            CheckPart::Frontend => "frontend",
            CheckPart::Build => "build",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub parts: Vec<CheckPart>,
    pub recheck: bool,
    pub stop_db: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    App,
    Db,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Db => "db",
        }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolchainSource {
    /// uv from PyPI, Node.js from the npm registry: works on hosts that reach only registries.
    Registry,
    /// The spec's own sources: astral.sh installer, nvm, GitHub downloads.
    Upstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupServer {
    pub admin: Option<String>,
    pub deploy_key: Option<String>,
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

impl Default for SetupServer {
    /// No flags given: everything from the environment, the registry toolchains.
    fn default() -> SetupServer {
        SetupServer {
            admin: None,
            deploy_key: None,
            backend_env: None,
            frontend_env: None,
            force_env: false,
            toolchain: ToolchainSource::Registry,
            dry_run: false,
            tls_cert: None,
            tls_key: None,
            tls_redirect: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Backend,
    Frontend,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Backend => "backend",
            Scope::Frontend => "frontend",
        }
    }
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
        recheck: bool,
        /// Fleets: hosts that switch at once (None: `--parallel`, all of them).
        batch: Option<usize>,
    },
    List,
    Rollback {
        release: Option<String>,
        force: bool,
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

/// The most entries `logs -n` asks for (the server's log reader allows as many).
pub const LOGS_MAX_LINES: u32 = 100_000;

/// `--since WHEN` as the server's log reader accepts it: 1-64 letters, digits, spaces and
/// `: . + -` (a date, a time, `-1h`, `today`, `yesterday`, ...).
pub fn validate_since(when: &str) -> Result<(), UsageError> {
    let ok = (1..=64).contains(&when.len())
        && when
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " :.+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "invalid --since '{}': use a date or a relative time like \"2026-11-28 10:15\", -1h or today (letters, digits, space and : . + - only, at most 64 characters)",
            when.escape_debug()
        )))
    }
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

/// Parts of `cargo xtask bench`, each a group of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPhase {
    /// Incremental, no-op, backend redeploy, rollback, list.
    Deploys,
    /// Failed requests under wrk load during a deploy and a rollback.
    Load,
    /// Deploys with local checks (a new tree, the same tree again) and the checks alone.
    Checks,
    /// The incremental deploy and list with 50 more releases on the server.
    Releases,
    /// The incremental deploy with 20,000 more files in the backend.
    Files,
    /// A release whose API crashes at import: from the job's restart to the named crash loop.
    Crash,
    /// Deploy and rollback of fleets of `--hosts` app machines behind a load balancer.
    Hosts,
}

impl BenchPhase {
    pub const ALL: [BenchPhase; 7] = [
        BenchPhase::Deploys,
        BenchPhase::Load,
        BenchPhase::Checks,
        BenchPhase::Releases,
        BenchPhase::Files,
        BenchPhase::Crash,
        BenchPhase::Hosts,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BenchPhase::Deploys => "deploys",
            BenchPhase::Load => "load",
            BenchPhase::Checks => "checks",
            BenchPhase::Releases => "releases",
            BenchPhase::Files => "files",
            BenchPhase::Crash => "crash",
            BenchPhase::Hosts => "hosts",
        }
    }
}

/// The hosts phase's fleet sizes when `--hosts` is not given.
pub const BENCH_HOSTS: [u32; 3] = [1, 2, 4];
/// The largest fleet `--hosts` takes, and the most app machines all its fleets may need at
/// once (each size is a fleet of its own, up at the same time so rounds can interleave).
pub const BENCH_MAX_HOSTS: u32 = 8;
pub const BENCH_MAX_MACHINES: u32 = 12;

/// A one-line usage error; `main` prints it and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl UsageError {
    fn new(msg: impl Into<String>) -> UsageError {
        UsageError(msg.into())
    }
    fn choice(what: &str, got: &str, valid: &[&str]) -> UsageError {
        UsageError(format!(
            "unknown {what} '{got}' (valid: {})",
            valid.join(", ")
        ))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub const HELP: &str = "\
cargo xtask: build, test and deploy the innercontext monorepo

Usage: cargo xtask <COMMAND> [ARGS]

Commands:
  ci             Run every test of the repository (the README's test command)
  check          Run the local checks a deploy runs (backend, frontend, build)
  testhost       Boot and manage local Debian 12 machines to deploy to
  setup-server   Provision a fresh Debian 12 host over ssh (idempotent)
  deploy         Deploy a release, list releases, roll back, unlock, show status
  logs           Show (or follow) the units' logs on the server
  demo           Boot the local test host, provision it, deploy, print the URL
  bench          Measure deploy speed, ssh handshakes, bytes sent and failed requests

Run 'cargo xtask <COMMAND> --help' for the arguments of one command.
";

pub const HELP_CI: &str = "\
cargo xtask ci: run every test of the repository

Usage: cargo xtask ci [--only STAGE[,STAGE...]] [--skip STAGE[,STAGE...]] [--filter TEXT]...

Installs what is missing on a Debian 12 machine (apt packages, Chromium included, uv from PyPI,
Node.js, pnpm and playwright-core from the npm registry), then runs the stages in order,
stopping at the first failure:
  tools      install or check the toolchains and the browser test's Chromium
  rust       cargo fmt --check, clippy -D warnings, unit tests
  backend    ruff and pytest against a throwaway local PostgreSQL
  frontend   pnpm install --frozen-lockfile, svelte-check, build
  config     systemd-analyze verify, nginx -t, shellcheck, actionlint
  e2e        end-to-end scenarios against the local test host (needs root)

Options:
  --only STAGES   run only these stages (comma separated)
  --skip STAGES   run all stages but these
  --filter TEXT   run only the end-to-end scenarios whose name contains TEXT (repeatable)
  -h, --help      print this help
";

pub const HELP_CHECK: &str = "\
cargo xtask check: the local checks a deploy runs, on their own

Usage: cargo xtask check [backend|frontend|build]... [--recheck]
       cargo xtask check --stop-db

  backend    ruff check, ruff format --check, pytest against a local PostgreSQL
  frontend   svelte-check and the unit tests
  build      the production build the server runs (frontend/build)
  (none)     all three

A part that passed for exactly this tree (working-tree changes included) with the same tools is
not run again. The backend tests use a PostgreSQL cluster that stays running between runs, a
fresh database each time: in target/checks/pg, or as root (run as the postgres user, which may
not enter the checkout) under /run/innercontext-pg/, one per checkout.

Options:
  --recheck    run the parts even if they passed for this tree before
  --stop-db    stop the checks' PostgreSQL cluster
  -h, --help   print this help
";

pub const HELP_TESTHOST: &str = "\
cargo xtask testhost: local Debian 12 machines (systemd-nspawn) to deploy to

Usage: cargo xtask testhost <build|up|start|reboot|poweroff|down|status|ssh|exec|delay> [ARGS]

  build [--rebuild]          debootstrap and cache the bookworm image (idempotent)
  up NAME [--role app|db]    boot machine NAME on a new disk (app: a fresh host; db: PostgreSQL
                             listening on its own address) and print how to reach it; a
                             stopped machine is wiped and built afresh
  start NAME                 boot a stopped machine from its kept disk (same address, host keys)
  reboot NAME                clean reboot (systemctl reboot inside), then the same disk again
  poweroff NAME [--hard]     shut down and keep the disk (stopped); --hard: a power cut, every
                             process of the machine killed at once, no shutdown
  down NAME | --all          shut down and remove every trace of a machine, its disk too
  status                     list machines (running, booting, stopped with a disk, stale)
  ssh NAME [CMD...]          ssh in as root with strict host-key checking
  exec NAME CMD...           run a command inside the machine without ssh
  delay NAME MS              put a proxy adding MS ms each way in front of its sshd (0 removes)

NAME: 1-12 lowercase letters or digits, starting with a letter. Requires root on Linux.
";

pub const HELP_SETUP_SERVER: &str = "\
cargo xtask setup-server: first-time provisioning of a Debian 12 host, idempotent

Usage: cargo xtask setup-server [OPTIONS]

Connects as DEPLOY_ADMIN (default root@<host of DEPLOY_SERVER>) and brings the host to the state a
deploy needs: runtime packages, uv, Node.js, the innercontext user and directories, the env files,
the log reader, the sudoers drop-in, the systemd units and the nginx site. Every step reports
changed/unchanged.

Options:
  --admin USER@HOST          admin login (overrides DEPLOY_ADMIN)
  --deploy-key FILE          public key to authorize for the innercontext user
  --backend-env FILE         local file to install as shared/backend/.env
  --frontend-env FILE        local file to install as shared/frontend/.env.production
  --force-env                overwrite env files that already exist on the host
  --toolchain registry|upstream
                             where uv and Node.js come from (default: registry, i.e. PyPI and
                             the npm registry; upstream: the installers the spec names)
  --tls-cert FILE            HTTPS on :443 with this certificate (PEM, chain after the leaf)...
  --tls-key FILE             ...and its private key (installed root-only; never printed)
  --tls-redirect             with TLS: plain http answers 301 to https, HSTS is sent
  --dry-run                  print what would change, change nothing
  -h, --help                 print this help
";

pub const HELP_DEPLOY: &str = "\
cargo xtask deploy: atomic release-based deploys with automatic rollback

Usage: cargo xtask deploy [all|backend|frontend] [--dry-run] [--skip-local-checks] [--redeploy] [--recheck]
                          [--batch N | --parallel]
       cargo xtask deploy list
       cargo xtask deploy rollback [RELEASE] [--force] [--dry-run] [--batch N | --parallel]
       cargo xtask deploy unlock [--yes] [--force]
       cargo xtask deploy status [--follow]
       cargo xtask deploy log [-n N]

  all (default)   check, upload and activate backend and frontend
  backend         only the backend changes; the frontend is carried over from current
  frontend        only the frontend changes; the backend is carried over from current
  list            releases newest first, with state, commit, age, what each adds on disk
  rollback        switch back to RELEASE (default: newest successful one before current);
                  --force is needed when the database is ahead of that release's migrations
                  (or cannot be read)
  unlock          show the deploy lock and remove it (asks unless --yes); refuses while the
                  job holding it runs, unless --force (which stops that job first)
  status          current release, units, lock, disk, database revision, the last deploy job;
                  --follow re-attaches to a running deploy's output
  log             deploy.log as a table: who deployed what when, the result and why
                  (-n N: the last N entries, of each host in a fleet; default 20)

Options:
  --dry-run            print the plan, remote commands included, and change nothing
  --skip-local-checks  skip lint and tests (the build and the clean-tree check still run)
  --redeploy           make a new release even if current already runs this commit
  --recheck            run the local checks even if they passed for this tree before
  --force              rollback: past a database migration; unlock: stop a live job
  --yes                unlock without asking
  --follow             status: follow the running (or last) deploy job to its end
  --batch N            several hosts: switch N hosts at a time (default 1: rolling)
  --parallel           several hosts: switch them all at once
  -h, --help           print this help

Environment:
  DEPLOY_SERVER        ssh destination (default: innercontext); several, comma separated, for a
                       fleet: the first (or the one marked #primary) migrates and runs the worker
  DEPLOY_ROOT          absolute path on the server (default: /opt/innercontext)
  DEPLOY_ALLOW_DIRTY   1 to deploy a tree with uncommitted changes
  DEPLOY_SSH_CONFIG    ssh config file to use instead of ~/.ssh/config
  DEPLOY_HEALTH_TIMEOUT seconds to wait for health (default: 60)
  DEPLOY_KEEP          successful releases to keep (default: 5)
";

pub const HELP_LOGS: &str = "\
cargo xtask logs: the units' journal on the server, over one ssh connection

Usage: cargo xtask logs [api|web|worker|all]... [-f] [-n N] [--since WHEN] [--host HOST]

  api        innercontext (the FastAPI backend)
  web        innercontext-node (the SvelteKit server)
  worker     innercontext-pricing-worker (the background worker)
  all        all three, merged by time (the default)

Reads through the log reader setup-server installs (sudo -n /usr/local/sbin/innercontext-journal):
the deploy user sees its own units' entries and nothing else of the journal. With several hosts in
DEPLOY_SERVER every line starts with its host ([app1] ...), all hosts at once; --host picks one.

Options:
  -f, --follow      keep printing new entries until Ctrl-C
  -n, --lines N     the last N entries of each host (0-100000, default 100)
  --since WHEN      entries since WHEN: \"2026-11-28 10:15:00\", -1h, today (letters, digits,
                    space and : . + - only)
  --host HOST       only this host of DEPLOY_SERVER
  -h, --help        print this help

Environment: DEPLOY_SERVER, DEPLOY_SSH_CONFIG (as for deploy).
";

pub const HELP_DEMO: &str = "\
cargo xtask demo: the whole product on local test machines

Usage: cargo xtask demo [--down]

Boots the test host (an app machine and a db machine), runs setup-server, deploys, and prints the
URL of the app through nginx. The machines stay up until 'cargo xtask demo --down'.
";

pub const HELP_BENCH: &str = "\
cargo xtask bench: measure the deployer against the local test host

Usage: cargo xtask bench [--runs N] [--only PHASE[,PHASE...]] [--hosts N[,N...]]

Boots two identical app machines and a db machine behind a 25 ms each-way latency proxy, and
measures `cargo xtask deploy` against a spec-faithful bash deploy (scripts/bench/) side by side,
interleaved. Prints one table: baseline and xtask medians (min/max) of N runs (default 5), their
ratio, the target, the floor measured in the same run, and the number of samples. The hosts
phase runs last, on machines of its own (a fleet per size, bfleet<N>a..., and bfleetdb), and
prints a table of its own: per fleet size, deploy and rollback and their ratio to one host,
ssh handshakes per host, failed requests through the balancer, and the targets.

Phases (default: all):
  deploys    incremental, no-op, backend redeploy, rollback, list
  load       failed requests under wrk load during a deploy and a rollback
  checks     deploys with local checks (new tree, same tree again) and the checks alone
  releases   the incremental deploy and list with 50 more releases on the server
  files      the incremental deploy with 20,000 more files (500 MB) in the backend
  crash      a release whose API crashes at import: the job's restart to the named crash loop
  hosts      fleets of app machines behind a load balancer on this host (nginx): rolling
             deploy all and rollback, ssh handshakes per host, failed requests (own table)

  --hosts N[,N...]  the hosts phase's fleet sizes (default 1,2,4; 1 must be one of them, at
                    most 8 per fleet and 12 machines in all); without --only, runs that
                    phase alone
";

/// A cursor over the arguments after the command name.
struct Args {
    items: Vec<String>,
    pos: usize,
}

impl Args {
    fn new(items: Vec<String>) -> Args {
        Args { items, pos: 0 }
    }
    fn next(&mut self) -> Option<String> {
        let item = self.items.get(self.pos).cloned();
        if item.is_some() {
            self.pos += 1;
        }
        item
    }
    fn rest(&mut self) -> Vec<String> {
        let rest = self.items[self.pos..].to_vec();
        self.pos = self.items.len();
        rest
    }
    fn wants_help(&self) -> bool {
        self.items[self.pos..]
            .iter()
            .take_while(|a| a.as_str() != "--")
            .any(|a| a == "-h" || a == "--help")
    }
    fn value(&mut self, flag: &str) -> Result<String, UsageError> {
        match self.next() {
            Some(v) if !v.starts_with("--") => Ok(v),
            _ => Err(UsageError::new(format!("{flag} needs a value"))),
        }
    }
    fn finish(&mut self, cmd: &str) -> Result<(), UsageError> {
        match self.next() {
            None => Ok(()),
            Some(extra) => Err(unexpected(cmd, &extra)),
        }
    }
}

fn unexpected(cmd: &str, arg: &str) -> UsageError {
    let top = cmd.split(' ').next().unwrap_or(cmd);
    if arg.starts_with('-') {
        UsageError::new(format!(
            "unknown flag '{arg}' for '{cmd}' (see 'cargo xtask {top} --help')"
        ))
    } else {
        UsageError::new(format!(
            "unexpected argument '{arg}' for '{cmd}' (see 'cargo xtask {top} --help')"
        ))
    }
}

/// Parse `cargo xtask` arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, UsageError> {
    let mut args = Args::new(args.into_iter().collect());
    let Some(cmd) = args.next() else {
        return Ok(Parsed::Help(HELP));
    };
    type ParseFn = fn(&mut Args) -> Result<Command, UsageError>;
    let (help, parse_cmd): (&'static str, ParseFn) = match cmd.as_str() {
        "-h" | "--help" | "help" => return Ok(Parsed::Help(HELP)),
        "ci" => (HELP_CI, parse_ci),
        "check" => (HELP_CHECK, parse_check),
        "testhost" => (HELP_TESTHOST, parse_testhost),
        "setup-server" => (HELP_SETUP_SERVER, parse_setup_server),
        "deploy" => (HELP_DEPLOY, parse_deploy),
        "demo" => (HELP_DEMO, parse_demo),
        "bench" => (HELP_BENCH, parse_bench),
        "logs" => (HELP_LOGS, parse_logs),
        other => {
            return Err(UsageError::choice(
                "command",
                other,
                &[
                    "ci",
                    "check",
                    "testhost",
                    "setup-server",
                    "deploy",
                    "logs",
                    "demo",
                    "bench",
                ],
            ))
        }
    };
    if args.wants_help() {
        return Ok(Parsed::Help(help));
    }
    parse_cmd(&mut args).map(Parsed::Run)
}

fn parse_check(args: &mut Args) -> Result<Command, UsageError> {
    let mut c = Check {
        parts: Vec::new(),
        recheck: false,
        stop_db: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--recheck" => c.recheck = true,
            "--stop-db" => c.stop_db = true,
            "all" => c.parts.extend(CheckPart::ALL),
            a if !a.starts_with('-') => {
                let part = CheckPart::ALL
                    .into_iter()
                    .find(|p| p.name() == a)
                    .ok_or_else(|| {
                        UsageError::choice(
                            "check part",
                            a,
                            &["backend", "frontend", "build", "all"],
                        )
                    })?;
                c.parts.push(part);
            }
            other => return Err(unexpected("check", other)),
        }
    }
    if c.stop_db && !c.parts.is_empty() {
        return Err(UsageError::new("--stop-db takes no parts"));
    }
    if c.parts.is_empty() && !c.stop_db {
        c.parts.extend(CheckPart::ALL);
    }
    c.parts.dedup();
    Ok(Command::Check(c))
}

fn stage_list(value: &str) -> Result<Vec<Stage>, UsageError> {
    value.split(',').map(Stage::parse).collect()
}

fn parse_ci(args: &mut Args) -> Result<Command, UsageError> {
    let mut only: Option<Vec<Stage>> = None;
    let mut skip: Vec<Stage> = Vec::new();
    let mut filter = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only = Some(stage_list(&args.value("--only")?)?),
            "--skip" => skip.extend(stage_list(&args.value("--skip")?)?),
            "--filter" => filter.push(args.value("--filter")?),
            other => return Err(unexpected("ci", other)),
        }
    }
    let stages: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.contains(s)) && !skip.contains(s))
        .collect();
    if stages.is_empty() {
        return Err(UsageError::new("no stage left to run after --only/--skip"));
    }
    if !filter.is_empty() && !stages.contains(&Stage::E2e) {
        return Err(UsageError::new(
            "--filter selects end-to-end scenarios, but the e2e stage is not selected (add --only e2e)",
        ));
    }
    Ok(Command::Ci(Ci { stages, filter }))
}

/// Machine names become interface names (`ve-NAME`: Linux allows 15 bytes, so 12 for NAME)
/// and paths.
pub fn validate_machine_name(name: &str) -> Result<(), UsageError> {
    let ok = (1..=12).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "invalid machine name '{name}': use 1-12 lowercase letters or digits, starting with a letter"
        )))
    }
}

fn machine_name(args: &mut Args, sub: &str) -> Result<String, UsageError> {
    let name = args
        .next()
        .ok_or_else(|| UsageError::new(format!("testhost {sub} needs a machine NAME")))?;
    validate_machine_name(&name)?;
    Ok(name)
}

fn parse_testhost(args: &mut Args) -> Result<Command, UsageError> {
    const SUBS: [&str; 10] = [
        "build", "up", "start", "reboot", "poweroff", "down", "status", "ssh", "exec", "delay",
    ];
    let sub = args.next().ok_or_else(|| {
        UsageError::new(format!(
            "testhost needs a subcommand (valid: {})",
            SUBS.join(", ")
        ))
    })?;
    let th = match sub.as_str() {
        "build" => {
            let mut rebuild = false;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--rebuild" => rebuild = true,
                    other => return Err(unexpected("testhost", other)),
                }
            }
            Testhost::Build { rebuild }
        }
        "up" => {
            let name = machine_name(args, "up")?;
            let mut role = Role::App;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--role" => {
                        role = match args.value("--role")?.as_str() {
                            "app" => Role::App,
                            "db" => Role::Db,
                            other => return Err(UsageError::choice("role", other, &["app", "db"])),
                        }
                    }
                    other => return Err(unexpected("testhost", other)),
                }
            }
            Testhost::Up { name, role }
        }
        "start" => {
            let name = machine_name(args, "start")?;
            args.finish("testhost")?;
            Testhost::Start { name }
        }
        "reboot" => {
            let name = machine_name(args, "reboot")?;
            args.finish("testhost")?;
            Testhost::Reboot { name }
        }
        "poweroff" => {
            let mut name = None;
            let mut hard = false;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--hard" => hard = true,
                    a if name.is_none() && !a.starts_with('-') => {
                        validate_machine_name(a)?;
                        name = Some(arg);
                    }
                    other => return Err(unexpected("testhost", other)),
                }
            }
            let name =
                name.ok_or_else(|| UsageError::new("testhost poweroff needs a machine NAME"))?;
            Testhost::Poweroff { name, hard }
        }
        "down" => match args.next() {
            Some(a) if a == "--all" => {
                args.finish("testhost")?;
                Testhost::Down { name: None }
            }
            Some(name) => {
                validate_machine_name(&name)?;
                args.finish("testhost")?;
                Testhost::Down { name: Some(name) }
            }
            None => {
                return Err(UsageError::new(
                    "testhost down needs a machine NAME or --all",
                ))
            }
        },
        "status" => {
            args.finish("testhost")?;
            Testhost::Status
        }
        "ssh" => {
            let name = machine_name(args, "ssh")?;
            Testhost::Ssh {
                name,
                command: args.rest(),
            }
        }
        "exec" => {
            let name = machine_name(args, "exec")?;
            let command = args.rest();
            if command.is_empty() {
                return Err(UsageError::new("testhost exec needs a command to run"));
            }
            Testhost::Exec { name, command }
        }
        "delay" => {
            let name = machine_name(args, "delay")?;
            let ms = args
                .next()
                .ok_or_else(|| UsageError::new("testhost delay needs MS (0 removes the delay)"))?;
            let millis = ms
                .parse::<u32>()
                .ok()
                .filter(|m| *m <= 10_000)
                .ok_or_else(|| {
                    UsageError::new(format!("invalid delay '{ms}': use milliseconds 0-10000"))
                })?;
            args.finish("testhost")?;
            Testhost::Delay { name, millis }
        }
        "proxy" => {
            let (mut listen, mut to, mut millis, mut port_file) = (None, None, None, None);
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--listen" => listen = Some(args.value("--listen")?),
                    "--to" => to = Some(args.value("--to")?),
                    "--delay" => {
                        let v = args.value("--delay")?;
                        millis = Some(v.parse::<u32>().map_err(|_| {
                            UsageError::new(format!("invalid --delay '{v}': use milliseconds"))
                        })?);
                    }
                    "--port-file" => port_file = Some(args.value("--port-file")?),
                    other => return Err(unexpected("testhost", other)),
                }
            }
            match (listen, to, millis, port_file) {
                (Some(listen), Some(to), Some(millis), Some(port_file)) => Testhost::Proxy {
                    listen,
                    to,
                    millis,
                    port_file,
                },
                _ => {
                    return Err(UsageError::new(
                        "testhost proxy needs --listen ADDR --to ADDR --delay MS --port-file FILE",
                    ))
                }
            }
        }
        other => return Err(UsageError::choice("testhost subcommand", other, &SUBS)),
    };
    Ok(Command::Testhost(th))
}

fn parse_setup_server(args: &mut Args) -> Result<Command, UsageError> {
    let mut s = SetupServer::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--admin" => s.admin = Some(args.value("--admin")?),
            "--deploy-key" => s.deploy_key = Some(args.value("--deploy-key")?),
            "--backend-env" => s.backend_env = Some(args.value("--backend-env")?),
            "--frontend-env" => s.frontend_env = Some(args.value("--frontend-env")?),
            "--force-env" => s.force_env = true,
            "--toolchain" => {
                s.toolchain = match args.value("--toolchain")?.as_str() {
                    "registry" => ToolchainSource::Registry,
                    "upstream" => ToolchainSource::Upstream,
                    other => {
                        return Err(UsageError::choice(
                            "toolchain source",
                            other,
                            &["registry", "upstream"],
                        ))
                    }
                }
            }
            "--dry-run" => s.dry_run = true,
            "--tls-cert" => s.tls_cert = Some(args.value("--tls-cert")?),
            "--tls-key" => s.tls_key = Some(args.value("--tls-key")?),
            "--tls-redirect" => s.tls_redirect = true,
            other => return Err(unexpected("setup-server", other)),
        }
    }
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err(UsageError::new(
            "--tls-cert and --tls-key go together: the certificate and its private key",
        ));
    }
    if s.tls_redirect && s.tls_cert.is_none() {
        return Err(UsageError::new(
            "--tls-redirect needs --tls-cert FILE --tls-key FILE",
        ));
    }
    Ok(Command::SetupServer(s))
}

fn parse_deploy(args: &mut Args) -> Result<Command, UsageError> {
    const SUBS: [&str; 8] = [
        "all", "backend", "frontend", "list", "rollback", "unlock", "status", "log",
    ];
    // The subcommand is optional (default: all), so flags may come first.
    // (the value of a flag that takes one is not the subcommand)
    const WITH_VALUE: [&str; 3] = ["--batch", "-n", "--lines"];
    let rest = &args.items[args.pos..];
    let first_positional = rest
        .iter()
        .enumerate()
        .take_while(|(_, a)| a.as_str() != "--")
        .position(|(i, a)| {
            !a.starts_with('-') && (i == 0 || !WITH_VALUE.contains(&rest[i - 1].as_str()))
        })
        .map(|i| args.items.remove(args.pos + i));
    let sub = first_positional.unwrap_or_else(|| "all".to_string());
    let cmd = format!("deploy {sub}");
    if !SUBS.contains(&sub.as_str()) {
        return Err(UsageError::choice("deploy command", &sub, &SUBS));
    }
    let mut dry_run = false;
    let mut skip_local_checks = false;
    let mut redeploy = false;
    let mut recheck = false;
    let mut force = false;
    let mut yes = false;
    let mut follow = false;
    let mut release = None;
    let mut lines = 20;
    let mut batch = Some(1);
    let mut flag_seen = Vec::new();
    let mut positional_only = false;
    while let Some(arg) = args.next() {
        if !positional_only && arg == "--batch" {
            let v = args.value(&arg)?;
            batch = Some(
                v.parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        UsageError::new(format!(
                            "invalid --batch '{v}': use a number of hosts from 1"
                        ))
                    })?,
            );
            flag_seen.push(arg);
            continue;
        }
        if !positional_only && arg == "--parallel" {
            batch = None;
            flag_seen.push(arg);
            continue;
        }
        if !positional_only && (arg == "-n" || arg == "--lines") {
            let v = args.value(&arg)?;
            lines = v
                .parse()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| UsageError::new(format!("invalid {arg} '{v}': use 1-10000")))?;
            flag_seen.push(arg);
            continue;
        }
        if !positional_only {
            let known = match arg.as_str() {
                "--" => {
                    positional_only = true;
                    continue;
                }
                "--dry-run" => Some(&mut dry_run),
                "--skip-local-checks" => Some(&mut skip_local_checks),
                "--redeploy" => Some(&mut redeploy),
                "--recheck" => Some(&mut recheck),
                "--force" => Some(&mut force),
                "--yes" => Some(&mut yes),
                "--follow" => Some(&mut follow),
                _ => None,
            };
            if let Some(flag) = known {
                *flag = true;
                flag_seen.push(arg);
                continue;
            }
            if arg.starts_with('-') {
                return Err(unexpected(&cmd, &arg));
            }
        }
        if sub == "rollback" && release.is_none() {
            release = Some(arg);
            continue;
        }
        return Err(unexpected(&cmd, &arg));
    }
    let allowed: &[&str] = match sub.as_str() {
        "all" | "backend" | "frontend" => &[
            "--dry-run",
            "--skip-local-checks",
            "--redeploy",
            "--recheck",
            "--batch",
            "--parallel",
        ],
        "rollback" => &["--force", "--dry-run", "--batch", "--parallel"],
        "unlock" => &["--yes", "--force"],
        "status" => &["--follow"],
        "log" => &["-n", "--lines"],
        _ => &[],
    };
    if flag_seen.iter().any(|f| f == "--batch") && flag_seen.iter().any(|f| f == "--parallel") {
        return Err(UsageError::new("--batch and --parallel exclude each other"));
    }
    if let Some(bad) = flag_seen.iter().find(|f| !allowed.contains(&f.as_str())) {
        return Err(UsageError::new(format!(
            "flag '{bad}' does not apply to '{cmd}' (see 'cargo xtask deploy --help')"
        )));
    }
    let scope = match sub.as_str() {
        "backend" => Some(Scope::Backend),
        "frontend" => Some(Scope::Frontend),
        "all" => Some(Scope::All),
        _ => None,
    };
    let deploy = match (sub.as_str(), scope) {
        (_, Some(scope)) => Deploy::Release {
            scope,
            dry_run,
            skip_local_checks,
            redeploy,
            recheck,
            batch,
        },
        ("rollback", _) => Deploy::Rollback {
            release,
            force,
            dry_run,
            batch,
        },
        ("unlock", _) => Deploy::Unlock { yes, force },
        ("list", _) => Deploy::List,
        ("log", _) => Deploy::Log { lines },
        _ => Deploy::Status { follow },
    };
    Ok(Command::Deploy(deploy))
}

fn parse_logs(args: &mut Args) -> Result<Command, UsageError> {
    use crate::contract::{API, UNITS, WEB, WORKER};
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut l = Logs {
        units: Vec::new(),
        follow: false,
        lines: 100,
        since: None,
        host: None,
    };
    let mut positional_only = false;
    while let Some(arg) = args.next() {
        if !positional_only {
            match arg.as_str() {
                "--" => {
                    positional_only = true;
                    continue;
                }
                "-f" | "--follow" => {
                    l.follow = true;
                    continue;
                }
                "-n" | "--lines" => {
                    let v = args.value(&arg)?;
                    l.lines = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= LOGS_MAX_LINES)
                        .ok_or_else(|| {
                            UsageError::new(format!(
                                "invalid {arg} '{v}': use a number of entries from 0 to {LOGS_MAX_LINES}"
                            ))
                        })?;
                    continue;
                }
                "--since" => {
                    let v = args.value("--since")?;
                    validate_since(&v)?;
                    l.since = Some(v);
                    continue;
                }
                "--host" => {
                    l.host = Some(args.value("--host")?);
                    continue;
                }
                a if a.starts_with('-') => return Err(unexpected("logs", a)),
                _ => {}
            }
        }
        match arg.as_str() {
            "api" => wanted.push(API.name),
            "web" => wanted.push(WEB.name),
            "worker" => wanted.push(WORKER.name),
            "all" => wanted.extend(UNITS.iter().map(|u| u.name)),
            other => match UNITS
                .iter()
                .find(|u| u.name == other.trim_end_matches(".service"))
            {
                Some(u) => wanted.push(u.name),
                None => {
                    return Err(UsageError::choice(
                        "unit",
                        other,
                        &["api", "web", "worker", "all"],
                    ))
                }
            },
        }
    }
    if wanted.is_empty() {
        wanted.extend(UNITS.iter().map(|u| u.name));
    }
    l.units = UNITS
        .iter()
        .map(|u| u.name)
        .filter(|n| wanted.contains(n))
        .collect();
    Ok(Command::Logs(l))
}

fn parse_demo(args: &mut Args) -> Result<Command, UsageError> {
    let mut down = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--down" => down = true,
            other => return Err(unexpected("demo", other)),
        }
    }
    Ok(Command::Demo(Demo { down }))
}

fn parse_bench(args: &mut Args) -> Result<Command, UsageError> {
    let mut b = Bench {
        runs: 5,
        phases: BenchPhase::ALL.to_vec(),
        hosts: BENCH_HOSTS.to_vec(),
    };
    let (mut only, mut hosts) = (false, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let v = args.value("--runs")?;
                b.runs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=50).contains(n))
                    .ok_or_else(|| UsageError::new(format!("invalid --runs '{v}': use 1-50")))?;
            }
            "--only" => {
                let v = args.value("--only")?;
                let names: Vec<&str> = BenchPhase::ALL.iter().map(|p| p.name()).collect();
                b.phases = v
                    .split(',')
                    .map(|p| {
                        BenchPhase::ALL
                            .into_iter()
                            .find(|ph| ph.name() == p)
                            .ok_or_else(|| UsageError::choice("bench phase", p, &names))
                    })
                    .collect::<Result<_, _>>()?;
                only = true;
            }
            "--hosts" => {
                b.hosts = parse_bench_hosts(&args.value("--hosts")?)?;
                hosts = true;
            }
            other => return Err(unexpected("bench", other)),
        }
    }
    if hosts && !only {
        b.phases = vec![BenchPhase::Hosts];
    }
    if hosts && !b.wants(BenchPhase::Hosts) {
        return Err(UsageError::new(
            "--hosts sizes the hosts phase, which --only leaves out: add hosts to --only",
        ));
    }
    Ok(Command::Bench(b))
}

/// `--hosts 1,2,4`: distinct sizes from 1 to [`BENCH_MAX_HOSTS`], 1 among them (every fleet
/// is compared with one host), at most [`BENCH_MAX_MACHINES`] app machines in all; ascending.
fn parse_bench_hosts(v: &str) -> Result<Vec<u32>, UsageError> {
    let bad = |why: &str| UsageError::new(format!("invalid --hosts '{}': {why}", v.escape_debug()));
    let mut sizes = Vec::new();
    for part in v.split(',') {
        let n: u32 = Some(part)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse().ok())
            .filter(|n| (1..=BENCH_MAX_HOSTS).contains(n))
            .ok_or_else(|| {
                bad(&format!(
                    "use fleet sizes from 1 to {BENCH_MAX_HOSTS}, comma separated, like 1,2,4"
                ))
            })?;
        if sizes.contains(&n) {
            return Err(bad(&format!("{n} is given twice")));
        }
        sizes.push(n);
    }
    if !sizes.contains(&1) {
        return Err(bad(
            "1 must be one of the sizes: every fleet is compared with one host",
        ));
    }
    let total: u32 = sizes.iter().sum();
    if total > BENCH_MAX_MACHINES {
        return Err(bad(&format!(
            "the fleets need {total} app machines at once; at most {BENCH_MAX_MACHINES}"
        )));
    }
    sizes.sort_unstable();
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
    }
    fn run(args: &[&str]) -> Command {
        match p(args) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{args:?} gave {other:?}"),
        }
    }
    fn err(args: &[&str]) -> String {
        match p(args) {
            Err(e) => e.0,
            other => panic!("{args:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn no_args_and_help_print_top_help() {
        assert_eq!(p(&[]), Ok(Parsed::Help(HELP)));
        assert_eq!(p(&["--help"]), Ok(Parsed::Help(HELP)));
        assert_eq!(p(&["-h"]), Ok(Parsed::Help(HELP)));
    }

    #[test]
    fn every_command_has_its_own_help() {
        for (cmd, help) in [
            ("ci", HELP_CI),
            ("check", HELP_CHECK),
            ("testhost", HELP_TESTHOST),
            ("setup-server", HELP_SETUP_SERVER),
            ("deploy", HELP_DEPLOY),
            ("demo", HELP_DEMO),
            ("bench", HELP_BENCH),
            ("logs", HELP_LOGS),
        ] {
            assert_eq!(p(&[cmd, "--help"]), Ok(Parsed::Help(help)), "{cmd}");
            assert!(
                HELP.contains(&format!("  {cmd} ")),
                "{cmd} missing from top help"
            );
            assert!(help.contains(&format!("cargo xtask {cmd}")));
        }
        // Help anywhere among the flags wins, even after a subcommand.
        assert_eq!(
            p(&["deploy", "rollback", "-h"]),
            Ok(Parsed::Help(HELP_DEPLOY))
        );
    }

    #[test]
    fn unknown_command_names_the_choices() {
        let e = err(&["deplyo"]);
        assert!(e.contains("'deplyo'") && e.contains("deploy") && e.contains("setup-server"));
        assert!(!e.contains('\n'));
    }

    #[test]
    fn deploy_defaults_to_all() {
        assert_eq!(
            run(&["deploy"]),
            Command::Deploy(Deploy::Release {
                scope: Scope::All,
                dry_run: false,
                skip_local_checks: false,
                redeploy: false,
                recheck: false,
                batch: Some(1)
            })
        );
        assert_eq!(
            run(&["deploy", "--dry-run"]),
            Command::Deploy(Deploy::Release {
                scope: Scope::All,
                dry_run: true,
                skip_local_checks: false,
                redeploy: false,
                recheck: false,
                batch: Some(1)
            })
        );
        assert_eq!(
            run(&["deploy", "--dry-run", "backend"]),
            Command::Deploy(Deploy::Release {
                scope: Scope::Backend,
                dry_run: true,
                skip_local_checks: false,
                redeploy: false,
                recheck: false,
                batch: Some(1)
            })
        );
    }

    #[test]
    fn deploy_rollback_takes_an_optional_release_and_force() {
        assert_eq!(
            run(&["deploy", "rollback"]),
            Command::Deploy(Deploy::Rollback {
                release: None,
                force: false,
                dry_run: false,
                batch: Some(1)
            })
        );
        assert_eq!(
            run(&["deploy", "rollback", "20261128T101500Z", "--force"]),
            Command::Deploy(Deploy::Rollback {
                release: Some("20261128T101500Z".into()),
                force: true,
                dry_run: false,
                batch: Some(1)
            })
        );
        assert!(err(&["deploy", "rollback", "a", "b"]).contains("unexpected argument 'b'"));
        // `--` ends the flags: what follows is the release (and is then checked as a name).
        assert_eq!(
            run(&["deploy", "rollback", "--", "-rf"]),
            Command::Deploy(Deploy::Rollback {
                release: Some("-rf".into()),
                force: false,
                dry_run: false,
                batch: Some(1)
            })
        );
        let e = err(&["deploy", "rollback", "-rf"]);
        assert_eq!(
            e,
            "unknown flag '-rf' for 'deploy rollback' (see 'cargo xtask deploy --help')"
        );
    }

    #[test]
    fn status_follow_and_unlock_force() {
        assert_eq!(
            run(&["deploy", "status", "--follow"]),
            Command::Deploy(Deploy::Status { follow: true })
        );
        assert_eq!(
            run(&["deploy", "unlock", "--force", "--yes"]),
            Command::Deploy(Deploy::Unlock {
                yes: true,
                force: true
            })
        );
        assert!(err(&["deploy", "list", "--follow"]).contains("does not apply to 'deploy list'"));
    }

    #[test]
    fn fleet_batches() {
        let Command::Deploy(Deploy::Release { batch, .. }) = run(&["deploy", "--batch", "2"])
        else {
            panic!()
        };
        assert_eq!(batch, Some(2));
        let Command::Deploy(Deploy::Rollback { batch, .. }) =
            run(&["deploy", "rollback", "--parallel"])
        else {
            panic!()
        };
        assert_eq!(batch, None);
        assert!(err(&["deploy", "--batch", "0"]).contains("invalid --batch"));
        assert!(err(&["deploy", "--batch", "2", "--parallel"]).contains("exclude each other"));
        assert!(err(&["deploy", "list", "--parallel"]).contains("does not apply"));
    }

    #[test]
    fn deploy_log_lines() {
        assert_eq!(
            run(&["deploy", "log"]),
            Command::Deploy(Deploy::Log { lines: 20 })
        );
        assert_eq!(
            run(&["deploy", "log", "-n", "5"]),
            Command::Deploy(Deploy::Log { lines: 5 })
        );
        assert!(err(&["deploy", "log", "-n", "0"]).contains("invalid -n"));
        // A fleet reads N entries from every host.
        assert!(HELP_DEPLOY.contains("(-n N: the last N entries, of each host in a fleet;"));
        assert!(err(&["deploy", "status", "-n", "5"]).contains("does not apply"));
    }

    #[test]
    fn check_parts() {
        assert_eq!(
            run(&["check"]),
            Command::Check(Check {
                parts: CheckPart::ALL.to_vec(),
                recheck: false,
                stop_db: false
            })
        );
        assert_eq!(
            run(&["check", "backend", "--recheck"]),
            Command::Check(Check {
                parts: vec![CheckPart::Backend],
                recheck: true,
                stop_db: false
            })
        );
        assert!(err(&["check", "lint"]).contains("unknown check part 'lint'"));
        assert!(err(&["check", "backend", "--stop-db"]).contains("takes no parts"));
    }

    #[test]
    fn deploy_rejects_flags_that_do_not_apply() {
        assert!(err(&["deploy", "list", "--force"]).contains("does not apply"));
        assert!(err(&["deploy", "all", "--force"]).contains("does not apply"));
        assert!(err(&["deploy", "unlock", "--dry-run"]).contains("does not apply"));
        assert!(err(&["deploy", "--frobnicate"]).contains("unknown flag '--frobnicate'"));
        let e = err(&["deploy", "everything"]);
        assert!(e.contains("'everything'") && e.contains("rollback"), "{e}");
    }

    #[test]
    fn ci_stages() {
        assert_eq!(
            run(&["ci"]),
            Command::Ci(Ci {
                stages: Stage::ALL.to_vec(),
                filter: vec![]
            })
        );
        assert_eq!(
            run(&["ci", "--only", "e2e,rust", "--filter", "lock"]),
            Command::Ci(Ci {
                stages: vec![Stage::Rust, Stage::E2e],
                filter: vec!["lock".into()]
            })
        );
        assert_eq!(
            run(&["ci", "--skip", "e2e"]),
            Command::Ci(Ci {
                stages: Stage::ALL[..5].to_vec(),
                filter: vec![]
            })
        );
        assert!(err(&["ci", "--only", "java"]).contains("valid: tools, rust"));
        assert!(err(&["ci", "--only"]).contains("needs a value"));
        assert!(err(&["ci", "--only", "e2e", "--skip", "e2e"]).contains("no stage left"));
        assert!(err(&["ci", "--only", "rust", "--filter", "deploy::"])
            .contains("the e2e stage is not selected"));
    }

    #[test]
    fn testhost_power_commands() {
        let th = |a: &[&str]| run(&[&["testhost"], a].concat());
        assert_eq!(
            th(&["start", "app"]),
            Command::Testhost(Testhost::Start { name: "app".into() })
        );
        assert_eq!(
            th(&["reboot", "app"]),
            Command::Testhost(Testhost::Reboot { name: "app".into() })
        );
        let hard = Command::Testhost(Testhost::Poweroff {
            name: "app".into(),
            hard: true,
        });
        assert_eq!(th(&["poweroff", "app", "--hard"]), hard);
        assert_eq!(th(&["poweroff", "--hard", "app"]), hard);
        assert_eq!(
            th(&["poweroff", "app"]),
            Command::Testhost(Testhost::Poweroff {
                name: "app".into(),
                hard: false
            })
        );
        let err_of = |a: &[&str]| err(&[&["testhost"], a].concat());
        assert!(err_of(&["poweroff"]).contains("needs a machine NAME"));
        assert!(err_of(&["poweroff", "--soft", "app"]).contains("unknown flag '--soft'"));
        assert!(err_of(&["poweroff", "app", "db"]).contains("unexpected argument 'db'"));
        assert!(err_of(&["poweroff", "App"]).contains("invalid machine name"));
        assert!(err_of(&["reboot", "app", "now"]).contains("unexpected argument 'now'"));
        assert!(err_of(&["start"]).contains("needs a machine NAME"));
    }

    #[test]
    fn testhost_names_are_validated() {
        assert_eq!(
            run(&["testhost", "up", "app", "--role", "db"]),
            Command::Testhost(Testhost::Up {
                name: "app".into(),
                role: Role::Db
            })
        );
        // 12 characters: the host side of the veth, ve-NAME, fills Linux's 15.
        assert!(matches!(
            run(&["testhost", "up", "e2edemoapp12"]),
            Command::Testhost(Testhost::Up { .. })
        ));
        for bad in ["", "App", "1app", "app-1", "thirteenchars", "a/b", "../x"] {
            assert!(
                err(&["testhost", "up", bad]).contains("invalid machine name"),
                "{bad}"
            );
        }
        assert!(err(&["testhost", "up", "app", "--role", "web"]).contains("valid: app, db"));
        assert_eq!(
            run(&["testhost", "ssh", "app", "systemctl", "is-system-running"]),
            Command::Testhost(Testhost::Ssh {
                name: "app".into(),
                command: vec!["systemctl".into(), "is-system-running".into()]
            })
        );
        assert!(err(&["testhost", "exec", "app"]).contains("needs a command"));
        assert!(err(&["testhost", "delay", "app", "-5"]).contains("invalid delay"));
        assert_eq!(
            run(&["testhost", "down", "--all"]),
            Command::Testhost(Testhost::Down { name: None })
        );
        assert!(err(&["testhost", "fly"]).contains("valid: build, up, start, reboot, poweroff"));
        // The proxy is internal: parsed, but not offered among the choices.
        assert!(!err(&["testhost", "fly"]).contains("proxy"));
        assert_eq!(
            run(&[
                "testhost",
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "10.213.1.2:22",
                "--delay",
                "25",
                "--port-file",
                "/tmp/p"
            ]),
            Command::Testhost(Testhost::Proxy {
                listen: "127.0.0.1:0".into(),
                to: "10.213.1.2:22".into(),
                millis: 25,
                port_file: "/tmp/p".into()
            })
        );
        assert!(err(&["testhost", "proxy", "--listen", "x"]).contains("needs --listen"));
    }

    #[test]
    fn setup_server_flags() {
        let Command::SetupServer(s) = run(&[
            "setup-server",
            "--admin",
            "root@10.0.0.2",
            "--toolchain",
            "upstream",
            "--force-env",
        ]) else {
            panic!()
        };
        assert_eq!(s.admin.as_deref(), Some("root@10.0.0.2"));
        assert_eq!(s.toolchain, ToolchainSource::Upstream);
        assert!(s.force_env && !s.dry_run);
        assert!(err(&["setup-server", "--toolchain", "nvm"]).contains("valid: registry, upstream"));
        assert!(err(&["setup-server", "--backend-env"]).contains("needs a value"));
        let Command::SetupServer(s) = run(&[
            "setup-server",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-redirect",
        ]) else {
            panic!()
        };
        assert_eq!(
            (s.tls_cert.as_deref(), s.tls_key.as_deref(), s.tls_redirect),
            (Some("c.pem"), Some("k.pem"), true)
        );
        assert!(err(&["setup-server", "--tls-cert", "c.pem"]).contains("go together"));
        assert!(err(&["setup-server", "--tls-redirect"]).contains("needs --tls-cert"));
    }

    #[test]
    fn logs_units_lines_and_since() {
        let logs = |args: &[&str]| match run(&[&["logs"], args].concat()) {
            Command::Logs(l) => l,
            other => panic!("{other:?}"),
        };
        let all = logs(&[]);
        assert_eq!(
            all.units,
            vec![
                "innercontext",
                "innercontext-node",
                "innercontext-pricing-worker"
            ]
        );
        assert_eq!(
            (all.follow, all.lines, all.since, all.host),
            (false, 100, None, None)
        );
        assert_eq!(logs(&["all"]).units, all.units);
        // Contract order whatever the order given; duplicates once.
        assert_eq!(
            logs(&["worker", "api", "api"]).units,
            vec!["innercontext", "innercontext-pricing-worker"]
        );
        assert_eq!(
            logs(&["innercontext-node.service"]).units,
            vec!["innercontext-node"]
        );
        let l = logs(&["api", "-f", "-n", "0", "--since", "-1h", "--host", "app2"]);
        assert!(l.follow);
        assert_eq!(l.lines, 0);
        assert_eq!(l.since.as_deref(), Some("-1h"));
        assert_eq!(l.host.as_deref(), Some("app2"));
        assert_eq!(
            logs(&["--since", "2026-11-28 10:15:00"]).since.as_deref(),
            Some("2026-11-28 10:15:00")
        );
        assert!(
            err(&["logs", "nginx"]).contains("unknown unit 'nginx' (valid: api, web, worker, all)")
        );
        assert!(err(&["logs", "-n", "100001"]).contains("invalid -n"));
        assert!(err(&["logs", "-n", "-5"]).contains("invalid -n"));
        assert!(err(&["logs", "-n", "x"]).contains("invalid -n"));
        assert!(err(&["logs", "-n"]).contains("needs a value"));
        for bad in [
            "$(id)",
            "1h;id",
            "a'b",
            "x\ny",
            "`id`",
            &"1".repeat(65),
            "",
            "a/b",
        ] {
            let e = err(&["logs", "--since", bad]);
            assert!(
                e.contains("invalid --since") && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
        assert!(err(&["logs", "--tail"]).contains("unknown flag '--tail' for 'logs'"));
        // `--` ends the flags; what follows is still checked as a unit.
        assert!(err(&["logs", "--", "-f"]).contains("unknown unit '-f'"));
    }

    #[test]
    fn bench_flags() {
        assert_eq!(
            run(&["bench", "--runs", "3", "--only", "load,files"]),
            Command::Bench(Bench {
                runs: 3,
                phases: vec![BenchPhase::Load, BenchPhase::Files],
                hosts: vec![1, 2, 4],
            })
        );
        match run(&["bench"]) {
            Command::Bench(b) => {
                assert_eq!(b.runs, 5);
                assert!(BenchPhase::ALL.iter().all(|p| b.wants(*p)));
                assert_eq!(b.hosts, BENCH_HOSTS);
            }
            other => panic!("{other:?}"),
        }
        assert!(err(&["bench", "--runs", "0"]).contains("invalid --runs"));
        assert!(err(&["bench", "--only", "lan"]).contains("valid: deploys, load, checks"));
        assert!(err(&["bench", "--only", "lan"]).contains("files, crash, hosts"));
        assert!(err(&["bench", "--lan-only"]).contains("--lan-only"));
    }

    #[test]
    fn bench_hosts() {
        let bench = |args: &[&str]| match run(args) {
            Command::Bench(b) => b,
            other => panic!("{other:?}"),
        };
        // --hosts alone runs the hosts phase alone, sizes ascending.
        let b = bench(&["bench", "--hosts", "4,1,2"]);
        assert_eq!(
            (b.phases, b.hosts),
            (vec![BenchPhase::Hosts], vec![1, 2, 4])
        );
        // With --only, in either order, the phases are what --only says.
        for args in [
            ["bench", "--only", "deploys,hosts", "--hosts", "1,3"],
            ["bench", "--hosts", "1,3", "--only", "deploys,hosts"],
        ] {
            let b = bench(&args);
            assert_eq!(
                (b.phases, b.hosts),
                (vec![BenchPhase::Deploys, BenchPhase::Hosts], vec![1, 3])
            );
        }
        let b = bench(&["bench", "--only", "hosts", "--runs", "2"]);
        assert_eq!((b.runs, b.hosts), (2, vec![1, 2, 4]));
        assert_eq!(bench(&["bench", "--hosts", "1"]).hosts, vec![1]);
        assert_eq!(bench(&["bench", "--hosts", "1,8"]).hosts, vec![1, 8]);
        let e = err(&["bench", "--hosts", "1,2", "--only", "deploys"]);
        assert!(e.contains("add hosts to --only"), "{e}");
        for (bad, why) in [
            ("2,4", "1 must be one of the sizes"),
            ("1,2,2", "2 is given twice"),
            ("1,0", "from 1 to 8"),
            ("1,9", "from 1 to 8"),
            ("1,,2", "from 1 to 8"),
            ("1, 2", "from 1 to 8"),
            ("", "from 1 to 8"),
            ("1,+2", "from 1 to 8"),
            ("1,2,4,8", "need 15 app machines at once; at most 12"),
            ("1;id", "from 1 to 8"),
        ] {
            let e = err(&["bench", "--hosts", bad]);
            assert!(
                e.starts_with("invalid --hosts") && e.contains(why) && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
        assert!(err(&["bench", "--hosts"]).contains("--hosts needs a value"));
    }
}
