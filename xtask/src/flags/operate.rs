//! The tables of the commands that live with a running server (`env`, `exec`, `maintenance`),
//! each followed by the function that makes its [`Command`]: `commands.rs` lists them.

use super::table::{flag, pick, scan, Value::*, NONE};
use super::table::{sub, Cmd, Section};
use super::*;

#[rustfmt::skip]
pub(super) const ENV: Cmd = Cmd {
    name: "env", title: "the server's env files, without ssh",
    about: "Show, compare, replace the server's env files; put the last one back",
    flags: &[
        flag("--reveal", Switch, "show: print the values too (else each is masked)"),
    ],
    subs: &[
        sub("show", "backend|frontend", &["--reveal"], "the file's keys on each host, values masked"),
        sub("diff", "[backend|frontend] FILE", &[], "the keys FILE adds, removes and changes against the \
            server's, values masked"),
        sub("push", "[backend|frontend] FILE", &[], "FILE replaces the server's file under the deploy lock \
            (a backup kept), the units that read it restart, health-checked; if they are not healthy \
            the backup goes back (host by host)"),
        sub("rollback", "backend|frontend", &[], "the newest backup goes back the same way"),
    ],
    help: &[
        Section::Subs,
        Section::Text("\
Without the kind, FILE's basename says it: .env is the backend's, .env.production the frontend's.
FILE must pass the env-file format (KEY=value, blank lines, # comments; no CRLF, no key twice):
a file that does not is refused before anything changes. Values never appear in the output, in
deploy.log or in the job's events. See docs/env-files.md."),
    ],
    env: &[("DEPLOY_SERVER", "as for deploy (a fleet: every host, one after the other)"),
        ("DEPLOY_SSH_CONFIG", "as for deploy")],
    parse: env, ..NONE
};

fn env(mut args: Vec<String>) -> Result<Command, UsageError> {
    let names: Vec<&str> = ENV.visible().map(|s| s.name).collect();
    let none = format!("env needs a command (valid: {})", names.join(", "));
    refuse(args.is_empty(), &none)?;
    let sub = ENV.sub(&args.remove(0))?;
    let g = scan(args, &ENV, Some(sub))?;
    let kinds: Vec<&str> = EnvKind::ALL.iter().map(|k| k.name()).collect();
    let kind_of = |w: &str| EnvKind::ALL.iter().copied().find(|k| k.name() == w);
    let too_many = |i: usize| match g.words.get(i) {
        Some(w) => Err(g.see(format!("unexpected argument '{w}' for '{}'", g.label))),
        None => Ok(()),
    };
    Ok(Command::Env(match sub.name {
        "show" | "rollback" => {
            let w = g
                .words
                .first()
                .ok_or_else(|| g.needs(&kinds.join(" or ")))?;
            let kind = EnvKind::ALL[pick(EnvKind::WHAT, w, EnvKind::NAMES)?];
            too_many(1)?;
            if sub.name == "show" {
                Env::Show {
                    kind,
                    reveal: g.on("--reveal"),
                }
            } else {
                Env::Rollback { kind }
            }
        }
        _ => {
            let (kind, file) = match g.words.as_slice() {
                [k, f, ..] if kind_of(k).is_some() => (kind_of(k), f.clone()),
                [k] if kind_of(k).is_some() => return Err(g.needs("a FILE")),
                [f, ..] => (None, f.clone()),
                [] => return Err(g.needs("a FILE")),
            };
            too_many(if kind.is_some() { 2 } else { 1 })?;
            let kind = match kind.or_else(|| env_kind_of_file(&file)) {
                Some(k) => k,
                None => return Err(g.see(format!(
                    "which env file is {file} for? say it: 'env {} backend {file}' or 'env {} frontend {file}' \
                     (only a file named .env or .env.production says it by itself)",
                    sub.name, sub.name
                ))),
            };
            if sub.name == "diff" {
                Env::Diff { kind, file }
            } else {
                Env::Push { kind, file }
            }
        }
    }))
}

/// The env file a FILE is for when its basename says it: `.env` the backend's,
/// `.env.production` the frontend's.
pub fn env_kind_of_file(file: &str) -> Option<EnvKind> {
    match file.rsplit('/').next() {
        Some(".env") => Some(EnvKind::Backend),
        Some(".env.production") => Some(EnvKind::Frontend),
        _ => None,
    }
}

#[rustfmt::skip]
pub(super) const EXEC: Cmd = Cmd {
    name: "exec", title: "a command on the server, in the current release, as the app runs",
    about: "Run a command on the server in the current release, as the app runs",
    args: "-- CMD [ARG...]",
    flags: &[flag("--host", Text("HOST", None), "this host of DEPLOY_SERVER (default: the primary)")],
    help: &[Section::Text("\
Runs CMD as the app user in current/backend (where alembic.ini is), with the release's virtualenv
first on PATH and shared/backend/.env in the environment: 'exec -- alembic current', 'exec --
python -m innercontext.deploytool revision'. One ssh connection, no lock. With a terminal on both
ends it gets one (a REPL, Ctrl-C reaches it); without, stdin, stdout, stderr and the exit code pass
through byte for byte. Each exec is a line in deploy.log (who, the command, the exit code).
See docs/exec.md.")],
    env: &[("DEPLOY_SERVER", "as for deploy"), ("DEPLOY_ROOT", "as for deploy"),
        ("DEPLOY_SSH_CONFIG", "as for deploy")],
    parse: exec, ..NONE
};

/// Flags before `--`, the command after it, as given.
fn exec(mut args: Vec<String>) -> Result<Command, UsageError> {
    let cut = args.iter().position(|a| a == "--");
    let command = cut
        .map(|i| args.split_off(i).split_off(1))
        .unwrap_or_default();
    let g = scan(args, &EXEC, None)?;
    let usage = "cargo xtask exec [--host HOST] -- CMD [ARG...]";
    if let Some(w) = g.words.first() {
        return Err(g.see(format!(
            "put the command after --, as in {usage} (got '{w}' before it)"
        )));
    }
    refuse(
        command.is_empty(),
        &format!("exec needs a command after --: {usage}"),
    )?;
    let command = command.into_iter().map(Into::into).collect();
    Ok(Command::Exec(Exec {
        host: g.text("--host"),
        command,
    }))
}

#[rustfmt::skip]
pub(super) const MAINTENANCE: Cmd = Cmd {
    name: "maintenance", title: "a maintenance page instead of the site, on every host",
    about: "Turn maintenance mode on or off on every host, or show it",
    flags: &[
        flag("--message", Text("TEXT", Some(validate_maintenance_message)), "on: the page's message (one line, \
            at most 500 bytes; HTML-escaped)"),
    ],
    subs: &[
        sub("on", "", &["--message"], "write the page, then the flag: nginx answers every request from outside \
            with 503, Retry-After and the page"),
        sub("off", "", &[], "remove the flag: nginx serves the site again"),
        sub("status", "", &[], "on or off on each host, since when, by whom, the message"),
    ],
    help: &[
        Section::Subs,
        Section::Text("\
The flag and the page are files in the deploy root, written by the deploy user: no sudo, no nginx
reload. Requests from the server itself (loopback) and the deployer's probes still reach the app.
'cargo xtask deploy --maintenance' turns it on for a deploy. See docs/site.md#maintenance-mode."),
    ],
    env: &[("DEPLOY_SERVER", "as for deploy (every host)"), ("DEPLOY_SSH_CONFIG", "as for deploy")],
    parse: maintenance, ..NONE
};

fn maintenance(mut args: Vec<String>) -> Result<Command, UsageError> {
    let names: Vec<&str> = MAINTENANCE.visible().map(|s| s.name).collect();
    let none = format!("maintenance needs a command (valid: {})", names.join(", "));
    refuse(args.is_empty(), &none)?;
    let sub = MAINTENANCE.sub(&args.remove(0))?;
    let g = scan(args, &MAINTENANCE, Some(sub))?;
    if let Some(w) = g.words.first() {
        return Err(g.see(format!("unexpected argument '{w}' for '{}'", g.label)));
    }
    Ok(Command::Maintenance(match sub.name {
        "on" => Maintenance::On {
            message: g.text("--message"),
        },
        "off" => Maintenance::Off,
        _ => Maintenance::Status,
    }))
}
