//! Console output: one line per step with its duration.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Format a duration the way every step line shows it.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Run `f` as a named step: prints `==> name` when it starts and `ok (1.2s)` or
/// `FAILED (1.2s)` when it ends, on the same line unless the step printed something itself.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    eprint!("==> {name:<44} ");
    let result = f();
    let took = secs(start.elapsed());
    match &result {
        Ok(_) => eprintln!("ok ({took})"),
        Err(_) => eprintln!("FAILED ({took})"),
    }
    result
}

/// Whether stderr is a terminal (progress bars) or a log (plain lines).
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("CI").is_none() && std::io::stderr().is_terminal()
}
