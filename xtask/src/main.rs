//! `cargo xtask`: dispatch only. The grammar is in `flags`, each command in its own module.

use std::process::ExitCode;

use anyhow::Result;
use xshell::Shell;
use xtask::flags::{self, Command, Db, Parsed};
use xtask::{
    bench, check, ci, demo, deploy, exec, logs, proc, project_root, setup_server, testhost, verify,
};

fn main() -> ExitCode {
    // As the OS gave them: exec's command may hold any bytes (flags::parse_os).
    let parsed = match flags::parse_os(std::env::args_os().skip(1)) {
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
        Command::Db(Db::Psql { args }) => exec::psql(&args),
        Command::Db(d) => deploy::db(d),
        Command::Demo(d) => demo::run(d, &sh),
        Command::Bench(b) => bench::run(b, &sh),
        Command::Logs(l) => logs::run(l),
        Command::Verify(v) => verify::run(v, &sh),
        Command::Exec(e) => exec::run(&e),
    }
}
