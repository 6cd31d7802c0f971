//! One table per command (its flags, subcommands and help prose), each followed by the
//! function that makes the [`Command`] from what was given. The rest is derived (`table.rs`).

use super::table::{no_words, number, pick, render_rows, scan, sub, unexpected};
use super::table::{Args, Choice, Cmd, Flag, Rows, Section, Shape, OPTIONS};
use super::*;

/// Every command, in the order `cargo xtask --help` lists them.
pub(super) const COMMANDS: [Cmd; 8] =
    [CI, CHECK, TESTHOST, SETUP_SERVER, DEPLOY, LOGS, DEMO, BENCH];

/// `cargo xtask`, `cargo xtask --help`.
pub(super) fn top_help() -> String {
    let mut out = "cargo xtask: build, test and deploy the innercontext monorepo\n\n\
                   Usage: cargo xtask <COMMAND> [ARGS]\n\n"
        .to_string();
    let rows: Vec<_> = COMMANDS
        .iter()
        .map(|c| (c.name.to_string(), c.about))
        .collect();
    render_rows(&mut out, "Commands:", 15, &rows);
    out + "\nRun 'cargo xtask <COMMAND> --help' for the arguments of one command.\n"
}

#[rustfmt::skip]
const CI: Cmd = Cmd {
    name: "ci",
    about: "Run every test of the repository (the README's test command)",
    title: "run every test of the repository",
    args: "",
    flags: &[
        Flag::list::<Stage>("--only", "STAGE", "run only these stages (comma separated)"),
        Flag::list::<Stage>("--skip", "STAGE", "run all stages but these"),
        Flag::text("--filter", "TEXT", "run only the end-to-end scenarios whose name contains TEXT (repeatable)")
            .shape(Shape::Many),
    ],
    subs: &[], default: None,
    help: &[
        Section::Rows("\
Installs what is missing on a Debian 12 machine (apt packages, Chromium included, uv from PyPI,
Node.js, pnpm and playwright-core from the npm registry), then runs the stages in order,
stopping at the first failure:", 11, &[Rows::Pairs(Stage::ROWS)]),
        Section::Rows("Options:", 16, OPTIONS),
    ],
    parse: ci,
};

fn ci(args: &mut Args) -> Result<Command, UsageError> {
    let g = scan(args, "ci", &CI, None, false, no_words("ci"))?;
    let (only, skip) = (g.names("--only").pop(), g.names("--skip").concat());
    let wanted = |s: &Stage| only.as_ref().is_none_or(|o| o.contains(s)) && !skip.contains(s);
    let stages: Vec<Stage> = Stage::ALL.into_iter().filter(wanted).collect();
    let filter = g.texts("--filter");
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

#[rustfmt::skip]
const CHECK: Cmd = Cmd {
    name: "check",
    about: "Run the local checks a deploy runs (backend, frontend, build)",
    title: "the local checks a deploy runs, on their own",
    args: "[backend|frontend|build]...",
    flags: &[
        Flag::switch("--recheck", "run the parts even if they passed for this tree before"),
        Flag::switch("--stop-db", "stop the checks' PostgreSQL cluster").shape(Shape::Alone),
    ],
    subs: &[], default: None,
    help: &[
        Section::Rows("", 11, &[Rows::Pairs(CheckPart::ROWS), Rows::Pairs(&[("(none)", "all three")])]),
        Section::Text("\
A part that passed for exactly this tree (working-tree changes included) with the same tools is
not run again. The backend tests use a PostgreSQL cluster that stays running between runs, a
fresh database each time: in target/checks/pg, or as root (run as the postgres user, which may
not enter the checkout) under /run/innercontext-pg/, one per checkout."),
        Section::Rows("Options:", 13, OPTIONS),
    ],
    parse: check,
};

fn check(args: &mut Args) -> Result<Command, UsageError> {
    // `all` is taken (and offered by the error) too; the help says `(none)`.
    let names = [CheckPart::NAMES, &["all"]].concat();
    let mut parts = Vec::new();
    let g = scan(args, "check", &CHECK, None, false, |w| {
        match CheckPart::ALL.get(pick(CheckPart::WHAT, &w, &names)?) {
            Some(part) => parts.push(*part),
            None => parts.extend(CheckPart::ALL),
        }
        Ok(())
    })?;
    let (recheck, stop_db) = (g.on("--recheck"), g.on("--stop-db"));
    if stop_db && !parts.is_empty() {
        return Err(UsageError::new("--stop-db takes no parts"));
    }
    if parts.is_empty() && !stop_db {
        parts.extend(CheckPart::ALL);
    }
    parts.dedup();
    let check = Check {
        parts,
        recheck,
        stop_db,
    };
    Ok(Command::Check(check))
}

#[rustfmt::skip]
const TESTHOST: Cmd = Cmd {
    name: "testhost",
    about: "Boot and manage local Debian 12 machines to deploy to",
    title: "local Debian 12 machines (systemd-nspawn) to deploy to",
    args: "",
    flags: &[
        Flag::switch("--rebuild", ""),
        Flag::pick::<Role>("--role", ""),
        Flag::switch("--hard", ""),
        Flag::text("--listen", "ADDR", ""),
        Flag::text("--to", "ADDR", ""),
        Flag::num("--delay", "MS", 0, u32::MAX, "").hint("use milliseconds"),
        Flag::text("--port-file", "FILE", ""),
    ],
    subs: &[
        sub("build", "", &["--rebuild"], "debootstrap and cache the bookworm image (idempotent)"),
        sub("up", "NAME", &["--role"], "\
boot machine NAME on a new disk (app: a fresh host; db: PostgreSQL
listening on its own address) and print how to reach it; a
stopped machine is wiped and built afresh"),
        sub("start", "NAME", &[], "boot a stopped machine from its kept disk (same address, host keys)"),
        sub("reboot", "NAME", &[], "clean reboot (systemctl reboot inside), then the same disk again"),
        sub("poweroff", "NAME", &["--hard"], "\
shut down and keep the disk (stopped); --hard: a power cut, every
process of the machine killed at once, no shutdown"),
        sub("down", "NAME | --all", &[], "shut down and remove every trace of a machine, its disk too"),
        sub("status", "", &[], "list machines (running, booting, stopped with a disk, stale)"),
        sub("ssh", "NAME [CMD...]", &[], "ssh in as root with strict host-key checking"),
        sub("exec", "NAME CMD...", &[], "run a command inside the machine without ssh"),
        sub("delay", "NAME MS", &[], "put a proxy adding MS ms each way in front of its sshd (0 removes)"),
        // Hidden: the latency proxy `delay` starts in the background.
        sub("proxy", "", &["--listen", "--to", "--delay", "--port-file"], ""),
    ],
    default: None,
    help: &[
        Section::Rows("", 27, &[Rows::Subs(true)]),
        Section::Text("NAME: 1-12 lowercase letters or digits, starting with a letter. Requires root on Linux."),
    ],
    parse: testhost,
};

fn testhost(args: &mut Args) -> Result<Command, UsageError> {
    let Some(word) = args.next() else {
        let valid: Vec<&str> = TESTHOST.visible().map(|s| s.name).collect();
        let valid = valid.join(", ");
        return Err(UsageError::new(format!(
            "testhost needs a subcommand (valid: {valid})"
        )));
    };
    let sub = TESTHOST.sub("testhost subcommand", &word)?;
    let flags = |args: &mut Args| {
        scan(
            args,
            "testhost",
            &TESTHOST,
            Some(sub),
            false,
            no_words("testhost"),
        )
    };
    let no_name = || UsageError::new(format!("testhost {} needs a machine NAME", sub.name));
    let name = |args: &mut Args| args.next().ok_or_else(no_name).and_then(machine);
    let th = match sub.name {
        "build" => Testhost::Build {
            rebuild: flags(args)?.on("--rebuild"),
        },
        "up" => Testhost::Up {
            name: name(args)?,
            role: flags(args)?.pick("--role").unwrap_or(Role::App),
        },
        "start" => Testhost::Start { name: name(args)? },
        "reboot" => Testhost::Reboot { name: name(args)? },
        "poweroff" => {
            let mut name = None;
            let g = scan(args, "testhost", &TESTHOST, Some(sub), false, |w| {
                if name.is_some() {
                    return Err(unexpected("testhost", &w));
                }
                name = Some(machine(w)?);
                Ok(())
            })?;
            let (name, hard) = (name.ok_or_else(no_name)?, g.on("--hard"));
            Testhost::Poweroff { name, hard }
        }
        "down" => match args.next() {
            Some(all) if all == "--all" => Testhost::Down { name: None },
            Some(name) => Testhost::Down {
                name: Some(machine(name)?),
            },
            None => {
                return Err(UsageError::new(
                    "testhost down needs a machine NAME or --all",
                ))
            }
        },
        "status" => Testhost::Status,
        "ssh" => Testhost::Ssh {
            name: name(args)?,
            command: args.rest(),
        },
        "exec" => match (name(args)?, args.rest()) {
            (_, command) if command.is_empty() => {
                return Err(UsageError::new("testhost exec needs a command to run"))
            }
            (name, command) => Testhost::Exec { name, command },
        },
        "delay" => {
            let name = name(args)?;
            let ms = args.next();
            let ms =
                ms.ok_or_else(|| UsageError::new("testhost delay needs MS (0 removes the delay)"))?;
            let millis = number("delay", &ms, (0, 10_000), "use milliseconds {min}-{max}")?;
            Testhost::Delay { name, millis }
        }
        _ => {
            let g = flags(args)?;
            let (listen, to, millis) = (g.text("--listen"), g.text("--to"), g.num("--delay"));
            match (listen, to, millis, g.text("--port-file")) {
                (Some(listen), Some(to), Some(millis), Some(port_file)) => Testhost::Proxy {
                    listen,
                    to,
                    millis,
                    port_file,
                },
                _ => {
                    let need: Vec<String> =
                        sub.flags.iter().map(|f| TESTHOST.flag(f).usage()).collect();
                    let need = need.join(" ");
                    return Err(UsageError::new(format!("testhost proxy needs {need}")));
                }
            }
        }
    };
    // Whatever is left is checked against the subcommand's flags (most take none).
    flags(args)?;
    Ok(Command::Testhost(th))
}

/// A machine NAME, validated.
fn machine(name: String) -> Result<String, UsageError> {
    validate_machine_name(&name).map(|()| name)
}

#[rustfmt::skip]
const SETUP_SERVER: Cmd = Cmd {
    name: "setup-server",
    about: "Provision a fresh Debian 12 host over ssh (idempotent)",
    title: "first-time provisioning of a Debian 12 host, idempotent",
    args: "[OPTIONS]",
    flags: &[
        Flag::text("--admin", "USER@HOST", "admin login (overrides DEPLOY_ADMIN)"),
        Flag::text("--deploy-key", "FILE", "public key to authorize for the innercontext user"),
        Flag::text("--backend-env", "FILE", "local file to install as shared/backend/.env"),
        Flag::text("--frontend-env", "FILE", "local file to install as shared/frontend/.env.production"),
        Flag::switch("--force-env", "overwrite env files that already exist on the host"),
        Flag::pick::<ToolchainSource>("--toolchain", "\
where uv and Node.js come from (default: registry, i.e. PyPI and
the npm registry; upstream: the installers the spec names)"),
        Flag::text("--tls-cert", "FILE", "HTTPS on :443 with this certificate (PEM, chain after the leaf)..."),
        Flag::text("--tls-key", "FILE", "...and its private key (installed root-only; never printed)"),
        Flag::switch("--tls-redirect", "with TLS: plain http answers 301 to https, HSTS is sent"),
        Flag::switch("--dry-run", "print what would change, change nothing"),
    ],
    subs: &[], default: None,
    help: &[
        Section::Text("\
Connects as DEPLOY_ADMIN (default root@<host of DEPLOY_SERVER>) and brings the host to the state a
deploy needs: runtime packages, uv, Node.js, the innercontext user and directories, the env files,
the log reader, the sudoers drop-in, the systemd units and the nginx site. Every step reports
changed/unchanged."),
        Section::Rows("Options:", 27, OPTIONS),
    ],
    parse: setup_server,
};

fn setup_server(args: &mut Args) -> Result<Command, UsageError> {
    let label = "setup-server";
    let g = scan(args, label, &SETUP_SERVER, None, false, no_words(label))?;
    let s = SetupServer {
        admin: g.text("--admin"),
        deploy_key: g.text("--deploy-key"),
        backend_env: g.text("--backend-env"),
        frontend_env: g.text("--frontend-env"),
        force_env: g.on("--force-env"),
        toolchain: g.pick("--toolchain").unwrap_or_default(),
        dry_run: g.on("--dry-run"),
        tls_cert: g.text("--tls-cert"),
        tls_key: g.text("--tls-key"),
        tls_redirect: g.on("--tls-redirect"),
    };
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err(UsageError::new(
            "--tls-cert and --tls-key go together: the certificate and its private key",
        ));
    }
    if s.tls_redirect && s.tls_cert.is_none() {
        let why = "--tls-redirect needs --tls-cert FILE --tls-key FILE";
        return Err(UsageError::new(why));
    }
    Ok(Command::SetupServer(s))
}

/// The flags of a deploy of all, the backend or the frontend.
const RELEASE: &[&str] = &[
    "--dry-run",
    "--skip-local-checks",
    "--redeploy",
    "--recheck",
    "--batch",
    "--parallel",
    "--allow-unsafe-migration",
];

#[rustfmt::skip]
const DEPLOY: Cmd = Cmd {
    name: "deploy",
    about: "Deploy a release, list releases, roll back, unlock, show status",
    title: "atomic release-based deploys with automatic rollback",
    args: "",
    flags: &[
        Flag::switch("--dry-run", "print the plan, remote commands included, and change nothing"),
        Flag::switch("--skip-local-checks", "skip lint and tests (the build and the clean-tree check still run)"),
        Flag::switch("--redeploy", "make a new release even if current already runs this commit"),
        Flag::switch("--recheck", "run the local checks even if they passed for this tree before"),
        Flag::switch("--allow-unsafe-migration", "let the migration lint's refusals through (deploy.log says so)"),
        Flag::switch("--force", "rollback: past a database migration; unlock: stop a live job"),
        Flag::switch("--yes", "unlock without asking"),
        Flag::switch("--follow", "status: follow the running (or last) deploy job to its end"),
        Flag::num("--batch", "N", 1, 1000, "several hosts: switch N hosts at a time (default 1: rolling)")
            .hint("use a number of hosts from {min}").shape(Shape::Or("--parallel")),
        Flag::switch("--parallel", "several hosts: switch them all at once"),
        Flag::num("--lines", "N", 1, 10_000, "").short("-n"),
    ],
    subs: &[
        sub("all", "", RELEASE, "check, upload and activate backend and frontend"),
        sub("backend", "", RELEASE, "only the backend changes; the frontend is carried over from current"),
        sub("frontend", "", RELEASE, "only the frontend changes; the backend is carried over from current"),
        sub("list", "", &[], "releases newest first, with state, commit, age, what each adds on disk"),
        sub("rollback", "[RELEASE]", &["--force", "--dry-run", "--batch", "--parallel"], "\
switch back to RELEASE (default: newest successful one before current);
--force is needed when the database is ahead of that release's migrations
(or cannot be read)"),
        sub("unlock", "", &["--yes", "--force"], "\
show the deploy lock and remove it (asks unless --yes); refuses while the
job holding it runs, unless --force (which stops that job first)"),
        sub("status", "", &["--follow"], "\
current release, units, lock, disk, database revision, the last deploy job;
--follow re-attaches to a running deploy's output"),
        sub("log", "", &["--lines"], "\
deploy.log as a table: who deployed what when, the result and why
(-n N: the last N entries, of each host in a fleet; default 20)"),
    ],
    default: Some("all"),
    help: &[
        Section::Rows("", 16, &[Rows::Subs(false)]),
        Section::Rows("Options:", 21, OPTIONS),
        Section::Text("\
Environment:
  DEPLOY_SERVER        ssh destination (default: innercontext); several, comma separated, for a
                       fleet: the first (or the one marked #primary) migrates and runs the worker
  DEPLOY_ROOT          absolute path on the server (default: /opt/innercontext)
  DEPLOY_ALLOW_DIRTY   1 to deploy a tree with uncommitted changes
  DEPLOY_SSH_CONFIG    ssh config file to use instead of ~/.ssh/config
  DEPLOY_HEALTH_TIMEOUT seconds to wait for health (default: 60)
  DEPLOY_KEEP          successful releases to keep (default: 5)
  DEPLOY_DB_SNAPSHOT   off: no snapshot of the database before a migration (default: on)"),
    ],
    parse: deploy,
};

fn deploy(args: &mut Args) -> Result<Command, UsageError> {
    // The subcommand is optional, so flags may come first: it is the first word before `--`
    // that is not the value of a flag.
    let takes_value = |a: &String| DEPLOY.flags.iter().any(|f| f.takes_value() && f.spelled(a));
    let rest = &args.items[args.pos..];
    let first = (rest.iter().enumerate())
        .take_while(|(_, a)| *a != "--")
        .position(|(i, a)| !a.starts_with('-') && (i == 0 || !takes_value(&rest[i - 1])));
    let name = first.map(|i| args.items.remove(args.pos + i));
    let name = name
        .or(DEPLOY.default.map(String::from))
        .unwrap_or_default();
    let label = format!("deploy {name}");
    let sub = DEPLOY.sub("deploy command", &name)?;
    let mut release = None;
    let g = scan(args, &label, &DEPLOY, None, true, |w| {
        if sub.name != "rollback" || release.is_some() {
            return Err(unexpected(&label, &w));
        }
        release = Some(w);
        Ok(())
    })?;
    if let Some((_, bad, _)) = g.0.iter().find(|(f, ..)| !sub.flags.contains(&f.long)) {
        let see = "(see 'cargo xtask deploy --help')";
        return Err(UsageError::new(format!(
            "flag '{bad}' does not apply to '{label}' {see}"
        )));
    }
    let batch = (!g.on("--parallel")).then(|| g.num("--batch").unwrap_or(1) as usize);
    let (dry_run, force) = (g.on("--dry-run"), g.on("--force"));
    Ok(Command::Deploy(match sub.name {
        "list" => Deploy::List,
        "rollback" => Deploy::Rollback {
            release,
            force,
            dry_run,
            batch,
        },
        "unlock" => Deploy::Unlock {
            yes: g.on("--yes"),
            force,
        },
        "status" => Deploy::Status {
            follow: g.on("--follow"),
        },
        "log" => Deploy::Log {
            lines: g.num("--lines").unwrap_or(20),
        },
        scope => Deploy::Release {
            scope: Scope::ALL[pick(Scope::WHAT, scope, Scope::NAMES)?],
            dry_run,
            skip_local_checks: g.on("--skip-local-checks"),
            redeploy: g.on("--redeploy"),
            recheck: g.on("--recheck"),
            batch,
            allow_unsafe_migration: g.on("--allow-unsafe-migration"),
        },
    }))
}

/// The words `logs` takes: a unit by its short name, or all of them.
#[rustfmt::skip]
pub(super) const LOG_UNITS: &[(&str, &str)] = &[
    ("api", "innercontext (the FastAPI backend)"),
    ("web", "innercontext-node (the SvelteKit server)"),
    ("worker", "innercontext-pricing-worker (the background worker)"),
    ("all", "all three, merged by time (the default)"),
];

#[rustfmt::skip]
const LOGS: Cmd = Cmd {
    name: "logs",
    about: "Show (or follow) the units' logs on the server",
    title: "the units' journal on the server, over one ssh connection",
    args: "[api|web|worker|all]...",
    flags: &[
        Flag::switch("--follow", "keep printing new entries until Ctrl-C").short("-f"),
        Flag::num("--lines", "N", 0, LOGS_MAX_LINES, "the last N entries of each host (0-100000, default 100)")
            .short("-n").hint("use a number of entries from {min} to {max}"),
        Flag::text("--since", "WHEN", "\
entries since WHEN: \"2026-11-28 10:15:00\", -1h, today (letters, digits,
space and : . + - only)").check(validate_since),
        Flag::text("--host", "HOST", "only this host of DEPLOY_SERVER"),
    ],
    subs: &[], default: None,
    help: &[
        Section::Rows("", 11, &[Rows::Pairs(LOG_UNITS)]),
        Section::Text("\
Reads through the log reader setup-server installs (sudo -n /usr/local/sbin/innercontext-journal):
the deploy user sees its own units' entries and nothing else of the journal. With several hosts in
DEPLOY_SERVER every line starts with its host ([app1] ...), all hosts at once; --host picks one."),
        Section::Rows("Options:", 18, OPTIONS),
        Section::Text("Environment: DEPLOY_SERVER, DEPLOY_SSH_CONFIG (as for deploy)."),
    ],
    parse: logs,
};

fn logs(args: &mut Args) -> Result<Command, UsageError> {
    use crate::contract::{API, UNITS, WEB, WORKER};
    let names: Vec<&str> = LOG_UNITS.iter().map(|(w, _)| *w).collect();
    let mut wanted: Vec<&'static str> = Vec::new();
    let g = scan(args, "logs", &LOGS, None, true, |w| {
        let unit = UNITS
            .iter()
            .find(|u| u.name == w.trim_end_matches(".service"));
        match (unit, w.as_str()) {
            (Some(unit), _) => wanted.push(unit.name),
            (None, "api") => wanted.push(API.name),
            (None, "web") => wanted.push(WEB.name),
            (None, "worker") => wanted.push(WORKER.name),
            (None, "all") => wanted.extend(UNITS.iter().map(|u| u.name)),
            _ => return Err(UsageError::choice("unit", &w, &names)),
        }
        Ok(())
    })?;
    let units = UNITS.iter().map(|u| u.name);
    Ok(Command::Logs(Logs {
        units: units
            .filter(|n| wanted.is_empty() || wanted.contains(n))
            .collect(),
        follow: g.on("--follow"),
        lines: g.num("--lines").unwrap_or(100),
        since: g.text("--since"),
        host: g.text("--host"),
    }))
}

#[rustfmt::skip]
const DEMO: Cmd = Cmd {
    name: "demo",
    about: "Boot the local test host, provision it, deploy, print the URL",
    title: "the whole product on local test machines",
    args: "",
    flags: &[Flag::switch("--down", "")],
    subs: &[], default: None,
    help: &[Section::Text("\
Boots the test host (an app machine and a db machine), runs setup-server, deploys, and prints the
URL of the app through nginx. The machines stay up until 'cargo xtask demo --down'.")],
    parse: demo,
};

fn demo(args: &mut Args) -> Result<Command, UsageError> {
    let g = scan(args, "demo", &DEMO, None, false, no_words("demo"))?;
    Ok(Command::Demo(Demo {
        down: g.on("--down"),
    }))
}

#[rustfmt::skip]
const BENCH: Cmd = Cmd {
    name: "bench",
    about: "Measure deploy speed, ssh handshakes, bytes sent and failed requests",
    title: "measure the deployer against the local test host",
    args: "",
    flags: &[
        Flag::num("--runs", "N", 1, 50, ""),
        Flag::list::<BenchPhase>("--only", "PHASE", ""),
        Flag::text("--hosts", "N[,N...]", "\
the hosts phase's fleet sizes (default 1,2,4; 1 must be one of them, at
most 8 per fleet and 12 machines in all); without --only, runs that
phase alone").check(|v| parse_bench_hosts(v).map(drop)),
    ],
    subs: &[], default: None,
    help: &[
        Section::Text("\
Boots two identical app machines and a db machine behind a 25 ms each-way latency proxy, and
measures `cargo xtask deploy` against a spec-faithful bash deploy (scripts/bench/) side by side,
interleaved. Prints one table: baseline and xtask medians (min/max) of N runs (default 5), their
ratio, the target, the floor measured in the same run, and the number of samples. The hosts
phase runs last, on machines of its own (a fleet per size, bfleet<N>a..., and bfleetdb), and
prints a table of its own: per fleet size, deploy and rollback and their ratio to one host,
ssh handshakes per host, failed requests through the balancer, and the targets."),
        Section::Rows("Phases (default: all):", 11, &[Rows::Pairs(BenchPhase::ROWS)]),
        Section::Rows("", 18, &[Rows::Flags(false)]),
    ],
    parse: bench,
};

fn bench(args: &mut Args) -> Result<Command, UsageError> {
    let g = scan(args, "bench", &BENCH, None, false, no_words("bench"))?;
    let hosts = g
        .text("--hosts")
        .map(|v| parse_bench_hosts(&v))
        .transpose()?;
    let phases = match (g.names("--only").pop(), &hosts) {
        (Some(only), _) => only,
        // --hosts alone runs the hosts phase alone.
        (None, Some(_)) => vec![BenchPhase::Hosts],
        (None, None) => BenchPhase::ALL.to_vec(),
    };
    if hosts.is_some() && !phases.contains(&BenchPhase::Hosts) {
        return Err(UsageError::new(
            "--hosts sizes the hosts phase, which --only leaves out: add hosts to --only",
        ));
    }
    let (runs, hosts) = (
        g.num("--runs").unwrap_or(5),
        hosts.unwrap_or(BENCH_HOSTS.to_vec()),
    );
    Ok(Command::Bench(Bench {
        runs,
        phases,
        hosts,
    }))
}
