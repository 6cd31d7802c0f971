//! `cargo xtask`: dispatch only. The grammar is in `flags`, each command in its own module.

use std::process::ExitCode;

use anyhow::Result;
use xshell::Shell;
use xtask::flags::{self, Command, Db, Parsed};
use xtask::{
    bench, check, ci, demo, deploy, destination, envcmd, exec, logs, proc, project_root,
    setup_server, testhost, verify,
};

fn main() -> ExitCode {
    // As the OS gave them: exec's command may hold any bytes (flags::parse_os).
    let parsed = flags::global(std::env::args_os().skip(1).collect())
        .and_then(|(global, rest)| Ok((global, flags::parse_os(rest)?)));
    let (global, parsed) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cmd = match parsed {
        Parsed::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Run(cmd) => cmd,
    };
    if global.to.is_some() && !cmd.takes_destination() {
        eprintln!("error: --to names a destination for the commands that reach servers (setup-server, deploy, db, logs, verify, ...); this one does not");
        return ExitCode::from(2);
    }
    match choose_destination(&cmd, global.to.as_deref()).and_then(|()| run(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            xtask::say!("error: {e:#}");
            // A run ended by a signal says so the way shells do (130 for Ctrl-C).
            if xtask::interrupt::requested() {
                ExitCode::from(xtask::interrupt::exit_status())
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The destination of a command that reaches servers (`--to`, `DEPLOY_TO`, `deploy/default`),
/// made the run's environment before anything runs.
fn choose_destination(cmd: &Command, to: Option<&str>) -> Result<()> {
    if !cmd.takes_destination() {
        return Ok(());
    }
    let found = destination::load(&project_root(), to, |k| std::env::var(k).ok())?;
    if let Some(d) = found {
        destination::apply(&d);
    }
    Ok(())
}

/// Run one parsed command from the repository root.
fn run(cmd: Command) -> Result<()> {
    proc::group_dies_with_parent();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cmd {
        Command::Ci(c) => ci::run(c, &sh),
        Command::Check(c) => check::run(c, &sh),
        Command::Testhost(t) => testhost::run(t, &sh),
        Command::SetupServer(s) => setup_server::run(s, &sh),
        Command::Deploy(d) => deploy::run(d, &sh),
        Command::Db(Db::Psql { args }) => exec::psql(&args),
        Command::Db(d) => deploy::db(d),
        Command::Env(e) => envcmd::run(e),
        Command::Demo(d) => demo::run(d, &sh),
        Command::Bench(b) => bench::run(b, &sh),
        Command::Logs(l) => logs::run(l),
        Command::Verify(v) => verify::run(v, &sh),
        Command::Exec(e) => exec::run(&e),
        Command::Maintenance(m) => deploy::maintenance::run(m),
    }
}
