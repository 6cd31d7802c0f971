//! `cargo xtask`: dispatch only. The grammar is in `flags`, each command in its own module.

use std::process::ExitCode;

use xtask::flags::{self, Parsed};

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
    match xtask::run(cmd) {
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
