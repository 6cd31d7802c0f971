//! Console output: one line per step with its duration.
//!
//! Everything goes through [`err`] and [`out`], which never fail: after a hang-up the terminal
//! is gone and writes return EIO; the deploy must still finish its work and tell the server.

use std::fmt::Arguments;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Write to stderr, ignoring errors (a closed terminal must not stop a deploy).
pub fn err(args: Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.flush();
}

/// Write to stdout, ignoring errors.
pub fn out(args: Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args);
    let _ = o.flush();
}

/// `say!(...)`: a line on stderr that cannot fail.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::ui::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `say_part!(...)`: stderr without a newline (the rest of a step line follows).
#[macro_export]
macro_rules! say_part {
    ($($arg:tt)*) => { $crate::ui::err(format_args!($($arg)*)) };
}

/// `show!(...)`: a line on stdout (tables, listings) that cannot fail.
#[macro_export]
macro_rules! show {
    ($($arg:tt)*) => { $crate::ui::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Format a duration the way every step line shows it.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The start of a step line: `==> name` padded, the outcome follows on the same line.
pub fn step_start(name: &str) {
    err(format_args!("==> {name:<44} "));
}

/// Run `f` as a named step: prints `==> name` when it starts and `ok (1.2s)` or
/// `FAILED (1.2s)` when it ends, on the same line unless the step printed something itself.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    step_start(name);
    let result = f();
    let took = secs(start.elapsed());
    match &result {
        Ok(_) => err(format_args!("ok ({took})\n")),
        Err(_) => err(format_args!("FAILED ({took})\n")),
    }
    result
}

/// Whether stderr is a terminal (progress bars) or a log (plain lines).
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("CI").is_none() && std::io::stderr().is_terminal()
}
