//! `cargo xtask`: dispatch only. The grammar is in `flags`, each command in its own module.

use std::process::ExitCode;

use anyhow::Result;
use xshell::Shell;
use xtask::flags::{self, Command, Parsed};
use xtask::{
    bench, check, ci, demo, deploy, envcmd, logs, proc, project_root, setup_server, testhost,
    verify,
};

fn main() -> ExitCode {
    let parsed = match flags::parse(std::env::args().skip(1)) {
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
    match run(cmd) {
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
        Command::Db(d) => deploy::db(d),
        Command::Env(e) => envcmd::run(e),
        Command::Demo(d) => demo::run(d, &sh),
        Command::Bench(b) => bench::run(b, &sh),
        Command::Logs(l) => logs::run(l),
        Command::Verify(v) => verify::run(v, &sh),
    }
}
