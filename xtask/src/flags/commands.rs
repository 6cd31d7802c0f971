//! One table per command (its flags, subcommands and help prose), each followed by the
//! function that makes the [`Command`] from what was given. The rest is derived (`table.rs`).

use super::operate::{ENV, EXEC, MAINTENANCE};
use super::table::{flag, list, number, one, pick, scan, Value::*, NONE};
use super::table::{sub, Cmd, Given, Section, Shape};
use super::*;

/// Every command, in the order `cargo xtask --help` lists them.
pub(super) const COMMANDS: [Cmd; 13] = [
    CI,
    CHECK,
    TESTHOST,
    SETUP_SERVER,
    DEPLOY,
    DB,
    ENV,
    LOGS,
    EXEC,
    MAINTENANCE,
    VERIFY,
    DEMO,
    BENCH,
];

#[rustfmt::skip]
const CI: Cmd = Cmd {
    name: "ci", title: "run every test of the repository",
    about: "Run every test of the repository (the README's test command)",
    flags: &[
        flag("--only", list::<Stage>("STAGE"), "run only these stages (comma separated)"),
        flag("--skip", list::<Stage>("STAGE"), "run all stages but these"),
        flag("--filter", Text("TEXT", None), "run only the end-to-end scenarios whose name contains TEXT \
            (repeatable)").shape(Shape::Many),
    ],
    help: &[Section::Words("\
Installs what is missing on a Debian 12 machine (apt packages, Chromium included, uv from PyPI,
Node.js, pnpm and playwright-core from the npm registry), then runs the stages in order,
stopping at the first failure:", &[Stage::ROWS])],
    parse: ci, ..NONE
};

/// `--only` and `--skip` add up when repeated.
fn ci(args: Vec<String>) -> Result<Command, UsageError> {
    let g = scan(args, &CI, None)?;
    let (only, skip, filter) = (g.names("--only"), g.names("--skip"), g.texts("--filter"));
    let wanted = |s: &Stage| (only.is_empty() || only.contains(s)) && !skip.contains(s);
    let stages: Vec<Stage> = Stage::ALL.into_iter().filter(wanted).collect();
    refuse(
        stages.is_empty(),
        "no stage left to run after --only/--skip",
    )?;
    let e2e = "but the e2e stage is not selected (add --only e2e)";
    let e2e = format!("--filter selects end-to-end scenarios, {e2e}");
    refuse(!filter.is_empty() && !stages.contains(&Stage::E2e), &e2e)?;
    Ok(Command::Ci(Ci { stages, filter }))
}

#[rustfmt::skip]
const CHECK: Cmd = Cmd {
    name: "check", title: "the local checks a deploy runs, on their own",
    about: "Run the local checks a deploy runs (backend, frontend, build)",
    args: "[backend|frontend|build]...",
    flags: &[
        flag("--recheck", Switch, "run the parts even if they passed for this tree before"),
        flag("--stop-db", Switch, "stop the checks' PostgreSQL cluster").shape(Shape::Alone),
    ],
    help: &[
        Section::Words("", &[CheckPart::ROWS, &[("(none)", "all three")]]),
        Section::Text("\
A part that passed for exactly this tree (working-tree changes included) with the same tools is
not run again. The backend tests use a PostgreSQL cluster that stays running between runs, a
fresh database each time: in target/checks/pg, or as root (run as the postgres user, which may
not enter the checkout) under /run/innercontext-pg/, one per checkout."),
    ],
    parse: check, ..NONE
};

/// Each part once, in the order first named (`all`, which the help calls `(none)`: the three).
fn check(args: Vec<String>) -> Result<Command, UsageError> {
    let g = scan(args, &CHECK, None)?;
    let (recheck, stop_db) = (g.on("--recheck"), g.on("--stop-db"));
    refuse(stop_db && !g.words.is_empty(), "--stop-db takes no parts")?;
    let names = [CheckPart::NAMES, &["all"]].concat();
    let mut parts = Vec::new();
    for w in &g.words {
        let named = CheckPart::ALL.get(pick(CheckPart::WHAT, w, &names)?);
        parts.extend(named.map_or(&CheckPart::ALL[..], std::slice::from_ref));
    }
    if parts.is_empty() && !stop_db {
        parts.extend(CheckPart::ALL);
    }
    let parts = parts
        .iter()
        .enumerate()
        .filter(|(i, p)| !parts[..*i].contains(p));
    let parts = parts.map(|(_, p)| *p).collect();
    Ok(Command::Check(Check {
        parts,
        recheck,
        stop_db,
    }))
}

#[rustfmt::skip]
const TESTHOST: Cmd = Cmd {
    name: "testhost", title: "local Debian 12 machines (systemd-nspawn) to deploy to",
    about: "Boot and manage local Debian 12 machines to deploy to",
    flags: &[
        flag("--rebuild", Switch, "build: debootstrap afresh even if the image is cached"),
        flag("--role", one::<Role>(), "up: what the machine is (default: app)"),
        flag("--hard", Switch, "poweroff: a power cut, every process of the machine killed at once, \
            no shutdown"),
        flag("--listen", Text("ADDR", None), ""),
        flag("--to", Text("ADDR", None), ""),
        flag("--delay", Num("MS", (0, 10_000, "ms")), ""),
        flag("--port-file", Text("FILE", None), ""),
    ],
    subs: &[
        sub("build", "", &["--rebuild"], "debootstrap and cache the bookworm image (idempotent)"),
        sub("up", "NAME", &["--role"], "boot machine NAME on a new disk (app: a fresh host; primed: \
            one with setup-server's Debian packages installed; db: PostgreSQL listening on its own \
            address) and print how to reach it; a stopped machine is wiped and built afresh"),
        sub("start", "NAME", &[], "boot a stopped machine from its kept disk (same address, host keys)"),
        sub("reboot", "NAME", &[], "clean reboot (systemctl reboot inside), then the same disk again"),
        sub("poweroff", "NAME", &["--hard"], "shut down and keep the disk (stopped)"),
        sub("down", "NAME | --all", &[], "shut down and remove every trace of a machine, its disk too"),
        sub("status", "", &[], "list machines (running, booting, stopped with a disk, stale)"),
        sub("ssh", "NAME [CMD...]", &[], "ssh in as root with strict host-key checking"),
        sub("exec", "NAME CMD...", &[], "run a command inside the machine without ssh"),
        sub("delay", "NAME MS", &[], "put a proxy adding MS ms each way in front of its sshd (0 removes)"),
        // Hidden: the latency proxy `delay` starts in the background.
        sub("proxy", "", &["--listen", "--to", "--delay", "--port-file"], ""),
    ],
    help: &[
        Section::Subs,
        Section::Text("NAME: 1-12 lowercase letters or digits, starting with a letter. Requires root on Linux."),
    ],
    parse: testhost, ..NONE
};

fn testhost(mut args: Vec<String>) -> Result<Command, UsageError> {
    let names: Vec<&str> = TESTHOST.visible().map(|s| s.name).collect();
    let none = format!("testhost needs a command (valid: {})", names.join(", "));
    refuse(args.is_empty(), &none)?;
    let sub = TESTHOST.sub(&args.remove(0))?;
    // `ssh` and `exec` take what follows NAME as it is; `down --all` takes no NAME.
    let ssh = matches!(sub.name, "ssh" | "exec");
    let command = args.split_off(if ssh { args.len().min(1) } else { args.len() });
    let all = sub.name == "down" && args.first().is_some_and(|a| a == "--all");
    let g = scan(args.split_off(usize::from(all)), &TESTHOST, Some(sub))?;
    let need = ["a machine NAME", "a machine NAME or --all"][usize::from(sub.name == "down")];
    let name = match (g.words.first(), all) {
        (Some(w), true) => {
            return Err(g.see(format!("unexpected argument '{w}' for '{}'", g.label)))
        }
        (Some(name), _) => validate_machine_name(name).map(|()| name.clone())?,
        (None, false) if !sub.args.is_empty() => return Err(g.needs(need)),
        (None, _) => String::new(),
    };
    let (rebuild, hard, role) = (g.on("--rebuild"), g.on("--hard"), g.names("--role").pop());
    let (role, down) = (role.unwrap_or(Role::App), (!all).then(|| name.clone()));
    Ok(Command::Testhost(match sub.name {
        "build" => Testhost::Build { rebuild },
        "up" => Testhost::Up { name, role },
        "start" => Testhost::Start { name },
        "reboot" => Testhost::Reboot { name },
        "poweroff" => Testhost::Poweroff { name, hard },
        "down" => Testhost::Down { name: down },
        "status" => Testhost::Status,
        "ssh" => Testhost::Ssh { name, command },
        "exec" if command.is_empty() => return Err(g.needs("a command to run")),
        "exec" => Testhost::Exec { name, command },
        "delay" => {
            let ms = g
                .words
                .get(1)
                .ok_or_else(|| g.needs("MS (0 removes the delay)"))?;
            let millis = number("delay", ms, (0, 10_000, "ms"))?;
            Testhost::Delay { name, millis }
        }
        _ => proxy(&g)?,
    }))
}

/// The hidden `testhost proxy`: every flag is needed.
fn proxy(g: &Given) -> Result<Testhost, UsageError> {
    let flags = ["--listen", "--to", "--delay", "--port-file"];
    let need = flags.map(|f| TESTHOST.flag(f).usage()).join(" ");
    let [listen, to, millis, port_file] = flags.map(|f| g.text(f));
    let (Some(listen), Some(to), Some(_), Some(port_file)) = (listen, to, &millis, port_file)
    else {
        return Err(g.needs(&need));
    };
    let millis = g.num("--delay").unwrap_or_default();
    Ok(Testhost::Proxy {
        listen,
        to,
        millis,
        port_file,
    })
}

#[rustfmt::skip]
const SETUP_SERVER: Cmd = Cmd {
    name: "setup-server", title: "first-time provisioning of a Debian 12 host, idempotent",
    about: "Provision a fresh Debian 12 host over ssh (idempotent)",
    flags: &[
        flag("--admin", Text("USER@HOST", None), "admin login (overrides DEPLOY_ADMIN)"),
        flag("--deploy-key", Text("FILE", None), "the public keys the innercontext user logs in with, replacing \
            the recorded set (repeatable; default: the set recorded last time)").shape(Shape::Many),
        flag("--add-deploy-key", Text("FILE", None), "a public key added to the recorded set \
            (repeatable)").shape(Shape::Many),
        flag("--backend-env", Text("FILE", None), "local file to install as shared/backend/.env"),
        flag("--frontend-env", Text("FILE", None), "local file to install as shared/frontend/.env.production"),
        flag("--force-env", Switch, "overwrite env files that already exist on the host"),
        flag("--toolchain", one::<ToolchainSource>(), "where uv and Node.js come from (default: registry, \
            i.e. PyPI and the npm registry; upstream: the installers the spec names)"),
        flag("--tls-cert", Text("FILE", None), "HTTPS on :443 with this certificate (PEM, chain after the leaf)..."),
        flag("--tls-key", Text("FILE", None), "...and its private key (installed root-only; never printed)"),
        flag("--tls-redirect", Switch, "with TLS: plain http answers 301 to https, HSTS is sent"),
        flag("--dry-run", Switch, "print what would change, change nothing"),
    ],
    help: &[Section::Text("\
Connects as DEPLOY_ADMIN (default root@<host of DEPLOY_SERVER>) and brings the host to the state a
deploy needs: runtime packages, uv, Node.js, the innercontext user and directories, the env files,
the log reader, the sudoers drop-in, the systemd units and the nginx site. Every step reports
changed/unchanged.")],
    parse: setup_server, ..NONE
};

fn setup_server(args: Vec<String>) -> Result<Command, UsageError> {
    let g = scan(args, &SETUP_SERVER, None)?;
    let s = SetupServer {
        admin: g.text("--admin"),
        deploy_keys: g.texts("--deploy-key"),
        add_deploy_keys: g.texts("--add-deploy-key"),
        backend_env: g.text("--backend-env"),
        frontend_env: g.text("--frontend-env"),
        force_env: g.on("--force-env"),
        toolchain: g.names("--toolchain").pop().unwrap_or_default(),
        dry_run: g.on("--dry-run"),
        tls_cert: g.text("--tls-cert"),
        tls_key: g.text("--tls-key"),
        tls_redirect: g.on("--tls-redirect"),
    };
    let pair = "--tls-cert and --tls-key go together: the certificate and its private key";
    refuse(s.tls_cert.is_some() != s.tls_key.is_some(), pair)?;
    let redirect = "--tls-redirect needs --tls-cert FILE --tls-key FILE";
    refuse(s.tls_redirect && s.tls_cert.is_none(), redirect)?;
    Ok(Command::SetupServer(s))
}

/// The flags of a deploy of all, the backend or the frontend.
#[rustfmt::skip]
const RELEASE: &[&str] = &["--dry-run", "--skip-local-checks", "--redeploy", "--clean", "--recheck", "--batch",
    "--parallel", "--allow-unsafe-migration", "--maintenance"];

#[rustfmt::skip]
const DEPLOY: Cmd = Cmd {
    name: "deploy", title: "atomic release-based deploys with automatic rollback",
    about: "Deploy a release, list releases, roll back, unlock, show status",
    flags: &[
        flag("--dry-run", Switch, "print the plan, remote commands included, and change nothing"),
        flag("--skip-local-checks", Switch, "skip lint and tests (the build and the clean-tree check still run)"),
        flag("--redeploy", Switch, "make a new release even if current already runs this commit"),
        flag("--clean", Switch, "back to a known state after a suspected compromise: a new release with \
            nothing seeded from current (every file sent), its virtualenv built from a fresh uv cache \
            (which then replaces the shared one), its assets replacing same-named shared ones"),
        flag("--recheck", Switch, "run the local checks even if they passed for this tree before"),
        flag("--allow-unsafe-migration", Switch, "let the migration lint's refusals through (deploy.log says so)"),
        flag("--maintenance", Switch, "maintenance mode on before the migration, off after health or a failure \
            (left on if it was on)"),
        flag("--force", Switch, "rollback: past a database migration; unlock: stop a live job"),
        flag("--migrate-down", Switch, "rollback: take the database down to the release's migrations after the \
            switch (a snapshot first)"),
        flag("--yes", Switch, "unlock without asking; rollback --migrate-down: drop the rows its downgrade drops"),
        flag("--follow", Switch, "status: follow the running (or last) deploy job to its end"),
        flag("--batch", Num("N", (1, 1000, "hosts")), "several hosts: switch N hosts at a time (default 1: rolling)")
            .shape(Shape::Or("--parallel")),
        flag("--parallel", Switch, "several hosts: switch them all at once"),
        flag("-n, --lines", Num("N", (1, 10_000, "entries")), "log: the last N entries, of each host in a fleet \
            (default 20)"),
    ],
    subs: &[
        sub("all", "", RELEASE, "check, upload and activate backend and frontend"),
        sub("backend", "", RELEASE, "only the backend changes; the frontend is carried over from current"),
        sub("frontend", "", RELEASE, "only the frontend changes; the backend is carried over from current"),
        sub("list", "", &[], "releases newest first, with state, commit, age, what each adds on disk"),
        sub("rollback", "[RELEASE]", &["--force", "--migrate-down", "--yes", "--dry-run", "--batch", "--parallel"],
            "switch back to RELEASE (default: newest successful one before current); when the database is \
            ahead of that release's migrations, --migrate-down takes it down after the switch (a snapshot \
            first) and --force runs the release on it as it is"),
        sub("unlock", "", &["--yes", "--force"], "show the deploy lock and remove it (asks unless --yes); \
            refuses while the job holding it runs, unless --force (which stops that job first)"),
        sub("status", "", &["--follow"], "current release, units, lock, disk, database revision, the last \
            deploy job; --follow re-attaches to a running deploy's output"),
        sub("log", "", &["--lines"], "deploy.log as a table: who deployed what when, the result and why"),
    ],
    default: Some("all"),
    help: &[Section::Subs],
    env: &[
        ("DEPLOY_SERVER", "ssh destination (default: innercontext); several, comma separated, for a \
            fleet: the first (or the one marked #primary) migrates and runs the worker"),
        ("DEPLOY_ROOT", "absolute path on the server (default: /opt/innercontext)"),
        ("DEPLOY_ALLOW_DIRTY", "1 to deploy a tree with uncommitted changes"),
        ("DEPLOY_SSH_CONFIG", "ssh config file to use instead of ~/.ssh/config"),
        ("DEPLOY_HEALTH_TIMEOUT", "seconds to wait for health (default: 60)"),
        ("DEPLOY_KEEP", "successful releases to keep (default: 5)"),
        ("DEPLOY_DB_SNAPSHOT", "off: no snapshot of the database before a migration (default: on)"),
        ("DEPLOY_JOURNAL", "1: print a failing unit's journal lines in CI too (default: on a terminal \
            only), 0: never"),
    ],
    parse: deploy, ..NONE
};

fn deploy(mut args: Vec<String>) -> Result<Command, UsageError> {
    // The subcommand is optional, so flags may come first: it is the first word before `--`
    // that is not the value of a flag.
    let value = |a: &String| DEPLOY.flags.iter().any(|f| f.spelled(a) && f.takes_value());
    let words = args.iter().enumerate().take_while(|(_, a)| *a != "--");
    let mut words = words.filter(|(i, a)| !a.starts_with('-') && (*i == 0 || !value(&args[i - 1])));
    let name = words.next().map(|(i, _)| i).map(|i| args.remove(i));
    let sub = DEPLOY.sub(name.as_deref().or(DEPLOY.default).unwrap_or_default())?;
    let g = scan(args, &DEPLOY, Some(sub))?;
    let batch = (!g.on("--parallel")).then(|| g.num("--batch").unwrap_or(1) as usize);
    let (dry_run, force, release) = (g.on("--dry-run"), g.on("--force"), g.words.first().cloned());
    let (yes, follow, lines) = (
        g.on("--yes"),
        g.on("--follow"),
        g.num("--lines").unwrap_or(20),
    );
    refuse(
        force && g.on("--migrate-down"),
        "deploy rollback takes --migrate-down (take the database down to the release's migrations) \
         or --force (run the release on the database as it is), not both",
    )?;
    Ok(Command::Deploy(match sub.name {
        "list" => Deploy::List,
        "rollback" => Deploy::Rollback {
            release,
            force,
            migrate_down: g.on("--migrate-down"),
            yes,
            dry_run,
            batch,
        },
        "unlock" => Deploy::Unlock { yes, force },
        "status" => Deploy::Status { follow },
        "log" => Deploy::Log { lines },
        scope => Deploy::Release {
            scope: Scope::ALL[pick(Scope::WHAT, scope, Scope::NAMES)?],
            dry_run,
            skip_local_checks: g.on("--skip-local-checks"),
            redeploy: g.on("--redeploy"),
            clean: g.on("--clean"),
            recheck: g.on("--recheck"),
            batch,
            allow_unsafe_migration: g.on("--allow-unsafe-migration"),
            maintenance: g.on("--maintenance"),
        },
    }))
}

#[rustfmt::skip]
const DB: Cmd = Cmd {
    name: "db", title: "the database's snapshots, and putting one back",
    about: "List the database's snapshots; restore one",
    flags: &[
        flag("--yes", Switch, "restore: do not ask (needed without a terminal)"),
        flag("--dry-run", Switch, "restore: say what would be lost and the job's call, change nothing"),
    ],
    subs: &[
        sub("snapshots", "", &[], "the snapshots on the primary, newest first: release, revision, size, age, \
            whether their release is still kept"),
        sub("restore", "SNAPSHOT", &["--yes", "--dry-run"], "put the database back to SNAPSHOT (as listed) \
            and current on the release that ran on it; every change to the data since is lost"),
        sub("psql", "[PSQL-ARG...]", &[], "psql to the app's database through the primary (a terminal: \
            interactive; else stdin), the password in a 0600 file there, never on a command line"),
    ],
    help: &[
        Section::Subs,
        Section::Text("\
A restore says what will be lost (the snapshot's age, the releases deployed since) and asks you to
type the snapshot's name; without a terminal it needs --yes. The deploy job then takes the lock,
checks the snapshot again (its sha256, its release, its revision), stops the units and their
sockets, replaces the database in one transaction, switches current, starts and checks health.
See docs/database.md#restore."),
    ],
    env: &[("DEPLOY_SERVER", "as for deploy (the primary holds the snapshots; every host is restored)"),
        ("DEPLOY_SSH_CONFIG", "as for deploy")],
    parse: db, ..NONE
};

fn db(mut args: Vec<String>) -> Result<Command, UsageError> {
    let names: Vec<&str> = DB.visible().map(|s| s.name).collect();
    let none = format!("db needs a command (valid: {})", names.join(", "));
    refuse(args.is_empty(), &none)?;
    let sub = DB.sub(&args.remove(0))?;
    if sub.name == "psql" {
        // Every word is psql's (`db psql -c 'select 1'`), as `testhost ssh` takes its command.
        return Ok(Command::Db(Db::Psql { args }));
    }
    let g = scan(args, &DB, Some(sub))?;
    let (yes, dry_run) = (g.on("--yes"), g.on("--dry-run"));
    Ok(Command::Db(match sub.name {
        "snapshots" => match g.words.first() {
            Some(w) => return Err(g.see(format!("unexpected argument '{w}' for '{}'", g.label))),
            None => Db::Snapshots,
        },
        _ => {
            let snapshot = g
                .words
                .first()
                .ok_or_else(|| g.needs("a SNAPSHOT (see 'cargo xtask db snapshots')"))?;
            if let Some(w) = g.words.get(1) {
                return Err(g.see(format!("unexpected argument '{w}' for '{}'", g.label)));
            }
            Db::Restore {
                snapshot: snapshot.clone(),
                yes,
                dry_run,
            }
        }
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
    name: "logs", title: "the units' journal on the server, over one ssh connection",
    about: "Show (or follow) the units' logs on the server",
    args: "[api|web|worker|all]...",
    flags: &[
        flag("-f, --follow", Switch, "keep printing new entries until Ctrl-C"),
        flag("-n, --lines", Num("N", (0, LOGS_MAX_LINES, "entries")), "the last N entries of each host (default 100)"),
        flag("--since", Text("WHEN", Some(validate_since)), "entries since WHEN: \"2026-11-28 10:15:00\", \
            -1h, today (letters, digits, space and : . + - only)"),
        flag("--host", Text("HOST", None), "only this host of DEPLOY_SERVER"),
    ],
    help: &[
        Section::Words("", &[LOG_UNITS]),
        Section::Text("\
Reads through the log reader setup-server installs (sudo -n /usr/local/sbin/innercontext-journal):
the deploy user sees its own units' entries and nothing else of the journal. With several hosts in
DEPLOY_SERVER every line starts with its host ([app1] ...), all hosts at once; --host picks one."),
    ],
    env: &[("DEPLOY_SERVER", "as for deploy"), ("DEPLOY_SSH_CONFIG", "as for deploy")],
    parse: logs, ..NONE
};

fn logs(args: Vec<String>) -> Result<Command, UsageError> {
    use crate::contract::{API, UNITS, WEB, WORKER};
    let g = scan(args, &LOGS, None)?;
    let short = [
        ("api", API.name),
        ("web", WEB.name),
        ("worker", WORKER.name),
    ];
    let names: Vec<&str> = LOG_UNITS.iter().map(|(w, _)| *w).collect();
    let mut wanted: Vec<&'static str> = Vec::new();
    for w in &g.words {
        let unit = UNITS
            .iter()
            .map(|u| u.name)
            .find(|u| *u == w.trim_end_matches(".service"));
        match unit.or(short.iter().find(|(s, _)| s == w).map(|(_, u)| *u)) {
            Some(unit) => wanted.push(unit),
            None if w == "all" => wanted.extend(UNITS.iter().map(|u| u.name)),
            None => return Err(UsageError::choice("unit", w, &names)),
        }
    }
    let units = UNITS.iter().map(|u| u.name);
    let units = units
        .filter(|n| wanted.is_empty() || wanted.contains(n))
        .collect();
    let (follow, lines) = (g.on("--follow"), g.num("--lines").unwrap_or(100));
    let (since, host) = (g.text("--since"), g.text("--host"));
    Ok(Command::Logs(Logs {
        units,
        follow,
        lines,
        since,
        host,
    }))
}

#[rustfmt::skip]
const VERIFY: Cmd = Cmd {
    name: "verify", title: "compare what the servers hold with what this checkout ships, as root",
    about: "Check current's release, its virtualenv and the uv cache against this checkout",
    flags: &[flag("--host", Text("HOST", None), "only this host of DEPLOY_SERVER")],
    help: &[Section::Text("\
A tripwire, read-only: on each host of DEPLOY_SERVER, through the admin login and as root (never
as the app user it checks), compares current's release with this checkout's files (check out the
commit current was deployed from), its virtualenv with one built afresh from current's uv.lock in
a temp directory, and the uv cache's unpacked wheels with the same wheels unpacked afresh; lists
every file that differs or should not be there, one line each (HOST: PATH: WHY, on stdout).
Exit 0: all as shipped; 1: something differs, or a host could not be checked; 2: usage error.
'cargo xtask deploy --clean' is the way back to a known state.")],
    env: &[
        ("DEPLOY_SERVER", "as for deploy"),
        ("DEPLOY_ADMIN", "the admin login, as for setup-server (root, or passwordless sudo)"),
        ("DEPLOY_SSH_CONFIG", "as for deploy"),
    ],
    parse: |args| Ok(Command::Verify(Verify { host: scan(args, &VERIFY, None)?.text("--host") })),
    ..NONE
};

#[rustfmt::skip]
const DEMO: Cmd = Cmd {
    name: "demo", title: "the whole product on local test machines",
    about: "Boot the local test host, provision it, deploy, print the URL",
    flags: &[flag("--down", Switch, "take the demo's machines down, their disks too")],
    help: &[Section::Text("\
Boots the test host (an app machine and a db machine), runs setup-server, deploys, and prints the
URL of the app through nginx. The machines stay up until 'cargo xtask demo --down'.")],
    parse: |args| Ok(Command::Demo(Demo { down: scan(args, &DEMO, None)?.on("--down") })),
    ..NONE
};

#[rustfmt::skip]
const BENCH: Cmd = Cmd {
    name: "bench", title: "measure the deployer against the local test host",
    about: "Measure deploy speed, ssh handshakes, bytes sent and failed requests",
    flags: &[
        flag("--runs", Num("N", (1, 50, "runs")), "runs of each measurement (default 5)"),
        flag("--only", list::<BenchPhase>("PHASE"), "run only these phases (comma separated)"),
        flag("--hosts", Text("N[,N...]", Some(|v| parse_bench_hosts(v).map(drop))), "the hosts phase's \
            fleet sizes (default 1,2,4; 1 must be one of them, at most 8 per fleet and 12 machines in \
            all); without --only, runs that phase alone"),
    ],
    help: &[
        Section::Text("\
Boots two identical app machines and a db machine behind a 25 ms each-way latency proxy, and
measures `cargo xtask deploy` against a spec-faithful bash deploy (scripts/bench/) side by side,
interleaved. Prints one table: baseline and xtask medians (min/max) of N runs (default 5), their
ratio, the target, the floor measured in the same run, and the number of samples. The hosts
phase runs last, on machines of its own (a fleet per size, bfleet<N>a..., and bfleetdb), and
prints a table of its own: per fleet size, deploy and rollback and their ratio to one host,
ssh handshakes per host, failed requests through the balancer, and the targets."),
        Section::Words("Phases (default: all):", &[BenchPhase::ROWS]),
    ],
    parse: bench, ..NONE
};

/// The phases in their order, each once; `--only` adds up when repeated; `--hosts` alone runs
/// the hosts phase alone.
fn bench(args: Vec<String>) -> Result<Command, UsageError> {
    let g = scan(args, &BENCH, None)?;
    let hosts = g.text("--hosts").map(|v| parse_bench_hosts(&v));
    let (hosts, mut only) = (hosts.transpose()?, g.names("--only"));
    if only.is_empty() && hosts.is_some() {
        only.push(BenchPhase::Hosts);
    }
    let wanted = |p: &BenchPhase| only.is_empty() || only.contains(p);
    let phases: Vec<BenchPhase> = BenchPhase::ALL.into_iter().filter(wanted).collect();
    let why = "--hosts sizes the hosts phase, which --only leaves out: add hosts to --only";
    refuse(hosts.is_some() && !phases.contains(&BenchPhase::Hosts), why)?;
    let (runs, hosts) = (
        g.num("--runs").unwrap_or(5),
        hosts.unwrap_or(BENCH_HOSTS.into()),
    );
    Ok(Command::Bench(Bench {
        runs,
        phases,
        hosts,
    }))
}
