//! Console output: one line per step with its duration.
//!
//! Everything goes through [`err`] and [`out`], which never fail: after a hang-up the terminal
//! is gone and writes return EIO; the deploy must still finish its work and tell the server.
//!
//! On a terminal (stderr is a TTY and `CI` is unset) an open step line shows a spinner and the
//! time so far, and results are coloured (unless `NO_COLOR` is set or `TERM=dumb`); anywhere
//! else the output is plain lines, the same text without the decoration.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;

/// The open step line: its text and when it started; whether the spinner drew (terminals);
/// which step opened it.
struct Open {
    text: String,
    started: Instant,
    drawn: bool,
    id: u64,
}

static OPEN: Mutex<Option<Open>> = Mutex::new(None);
/// What the spinner shows after the time (a transfer's bytes and rate), for the open line.
static DETAIL: Mutex<String> = Mutex::new(String::new());
static NEXT_STEP: AtomicU64 = AtomicU64::new(1);
static TICKER: Once = Once::new();

/// Whether stderr is a terminal (progress, spinner) or a log (plain lines).
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("CI").is_none() && std::io::stderr().is_terminal()
}

/// Whether a failing unit's journal lines are printed (its tail, in a deploy's failure): on a
/// terminal always, in CI (`CI` set) only when asked with `DEPLOY_JOURNAL=1` (they can hold
/// client addresses, and a CI log is read by more people than the server's journal).
/// `DEPLOY_JOURNAL=0` keeps them out everywhere (`Config` refuses any other value).
pub fn journal_shown() -> bool {
    journal_shown_with(
        std::env::var("CI").ok().as_deref(),
        std::env::var("DEPLOY_JOURNAL").ok().as_deref(),
    )
}

/// [`journal_shown`], given the values of `CI` and `DEPLOY_JOURNAL`.
pub fn journal_shown_with(ci: Option<&str>, asked: Option<&str>) -> bool {
    match asked {
        Some("1") => true,
        Some("0") => false,
        _ => ci.is_none(),
    }
}

/// What stands for the journal lines [`journal_shown`] keeps out (once per block of them).
pub const JOURNAL_HIDDEN: &str =
    "(the unit's journal lines are kept out of CI output, they can hold client addresses: DEPLOY_JOURNAL=1 shows them, 'cargo xtask logs' reads them)";

/// Whether to colour (a terminal, and nobody said no).
pub fn colour() -> bool {
    interactive()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").is_ok_and(|t| t != "dumb")
}

/// `text` with the step results coloured: `ok` green, `FAILED` red, `warning:` yellow,
/// `error:` red (terminals only; the text is unchanged otherwise).
pub fn paint(text: &str) -> String {
    if !colour() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let l = if let Some(rest) = line.strip_prefix("error:") {
            format!("\x1b[1;31merror:\x1b[0m{rest}")
        } else if let Some(rest) = line.strip_prefix("warning:") {
            format!("\x1b[33mwarning:\x1b[0m{rest}")
        } else {
            line.replacen("FAILED", "\x1b[1;31mFAILED\x1b[0m", 1)
                .replacen("refused (", "\x1b[1;31mrefused\x1b[0m (", 1)
        };
        let l = match l.find("ok (") {
            Some(p) if p == 0 || l[..p].ends_with(' ') => {
                format!("{}\x1b[32mok\x1b[0m{}", &l[..p], &l[p + 2..])
            }
            _ => l,
        };
        out.push_str(&l);
    }
    out
}

/// Write to stderr, ignoring errors (a closed terminal must not stop a deploy). On a
/// terminal, the spinner of an open step line is wiped first.
pub fn err(args: Arguments<'_>) {
    let text = args.to_string();
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut e = std::io::stderr().lock();
    let at_start = ERR_AT_START.load(Ordering::Relaxed);
    let (plain, next) = prefixed(&text, prefix(), at_start);
    ERR_AT_START.store(next, Ordering::Relaxed);
    if let Some(o) = open.as_mut() {
        if o.drawn {
            let _ = write!(e, "\r\x1b[K{}", o.text);
            o.drawn = false;
        }
        if text.contains('\n') {
            *open = None;
        } else {
            o.text.push_str(&plain);
        }
    }
    let (painted, _) = prefixed(&paint(&text), prefix(), at_start);
    let _ = e.write_all(painted.as_bytes());
    let _ = e.flush();
}

/// Write to stdout, ignoring errors.
pub fn out(args: Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let (text, next) = prefixed(
        &args.to_string(),
        prefix(),
        OUT_AT_START.load(Ordering::Relaxed),
    );
    OUT_AT_START.store(next, Ordering::Relaxed);
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// What starts every line printed (`[staging] ` when a destination was chosen).
static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// Whether the next text written to stderr (stdout) starts a line.
static ERR_AT_START: AtomicBool = AtomicBool::new(true);
static OUT_AT_START: AtomicBool = AtomicBool::new(true);

/// Start every line printed from now on with `prefix` (set once: the destination's).
pub fn set_prefix(prefix: String) {
    let _ = PREFIX.set(prefix);
}

fn prefix() -> &'static str {
    PREFIX.get().map(String::as_str).unwrap_or("")
}

/// `text` with `prefix` at the start of each line it starts (the first only if `at_start`),
/// and whether the text after it starts a line.
pub fn prefixed(text: &str, prefix: &str, at_start: bool) -> (String, bool) {
    let next = if text.is_empty() {
        at_start
    } else {
        text.ends_with('\n')
    };
    if prefix.is_empty() {
        return (text.to_string(), next);
    }
    let mut out = String::with_capacity(text.len() + prefix.len());
    let mut start = at_start;
    for piece in text.split_inclusive('\n') {
        if start {
            out.push_str(prefix);
        }
        out.push_str(piece);
        start = piece.ends_with('\n');
    }
    (out, next)
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

/// `say_event!(...)`: an [`event_line`] on stderr (something that happened between the step
/// lines: a lost connection, a signal, the fleet going back).
#[macro_export]
macro_rules! say_event {
    ($($arg:tt)*) => { $crate::ui::err(format_args!("{}\n", $crate::ui::event_line(&format!($($arg)*)))) };
}

/// `show!(...)`: a line on stdout (tables, listings) that cannot fail.
#[macro_export]
macro_rules! show {
    ($($arg:tt)*) => { $crate::ui::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A whole step line: `==> NAME` padded so that the outcomes line up, then the outcome
/// (`ok (1.2s)`, `FAILED (3.0s)`, `ok [notes]`). Every step line of the project is this one.
pub fn step_line(name: &str, outcome: &str) -> String {
    format!("==> {name:<44} {outcome}")
}

/// A line that says what happened between the step lines (`==> the connection to app was
/// lost ...`): the step lines' marker without the padding.
pub fn event_line(text: &str) -> String {
    format!("==> {text}")
}

/// Format a duration the way every step line shows it.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The start of a step line: `==> name` padded, the outcome follows on the same line. On a
/// terminal a spinner with the time so far runs until the line ends. A step that starts while
/// another's line is open (a step inside a step: an install inside a check) ends that line
/// first; the outer step then prints its whole line again when it ends. Returns the step's id.
pub fn step_start(name: &str) -> u64 {
    let id = NEXT_STEP.fetch_add(1, Ordering::SeqCst);
    {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = std::io::stderr().lock();
        if let Some(o) = open.take() {
            if o.drawn {
                let _ = write!(e, "\r\x1b[K{}", o.text.trim_end());
            }
            let _ = writeln!(e);
            ERR_AT_START.store(true, Ordering::Relaxed);
        }
        let (text, _) = prefixed(
            &step_line(name, ""),
            prefix(),
            ERR_AT_START.swap(false, Ordering::Relaxed),
        );
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
        *open = Some(Open {
            text,
            started: Instant::now(),
            drawn: false,
            id,
        });
    }
    step_detail("");
    if interactive() {
        TICKER.call_once(|| {
            std::thread::spawn(tick);
        });
    }
    id
}

/// Whether the line step `id` started is still open (nothing else was printed since).
fn still_open(id: u64) -> bool {
    OPEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|o| o.id == id)
}

/// End step `id` with `outcome` (`ok (1.2s)`, `FAILED (1.2s)`, ...): on its own line if that
/// is still open, else on a new line that repeats the step's name.
pub fn step_end(id: u64, name: &str, outcome: &str) {
    if still_open(id) {
        err(format_args!("{outcome}\n"));
    } else {
        err(format_args!("{}\n", step_line(name, outcome)));
    }
}

/// End the open step line here (a note that is not its outcome follows on a line of its own);
/// its step's outcome later repeats the step's name ([`step_end`]).
pub fn break_line() {
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(o) = open.take() {
        let mut e = std::io::stderr().lock();
        if o.drawn {
            let _ = write!(e, "\r\x1b[K{}", o.text.trim_end());
        }
        let _ = writeln!(e);
        let _ = e.flush();
        ERR_AT_START.store(true, Ordering::Relaxed);
    }
}

/// The spinner: redraws the open step line with a frame and its time so far.
fn tick() {
    const FRAMES: [&str; 8] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧"];
    let mut n = 0;
    loop {
        std::thread::sleep(Duration::from_millis(120));
        if !interactive() {
            continue;
        }
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let Some(o) = open.as_mut() else { continue };
        if o.started.elapsed() < Duration::from_millis(400) {
            continue;
        }
        n = (n + 1) % FRAMES.len();
        let detail = DETAIL.lock().map(|d| d.clone()).unwrap_or_default();
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[K{}{} {}{}{}",
            o.text,
            FRAMES[n],
            secs(o.started.elapsed()),
            if detail.is_empty() { "" } else { "  " },
            detail
        );
        let _ = e.flush();
        o.drawn = true;
    }
}

/// What the spinner of the open step line shows after its time (`12.3 MB, 40%, 5.1MB/s`);
/// empty for nothing. Cleared when the next step starts.
pub fn step_detail(text: &str) {
    if let Ok(mut d) = DETAIL.lock() {
        text.clone_into(&mut d);
    }
}

/// Run `f` as a named step: prints `==> name` when it starts and `ok (1.2s)` or
/// `FAILED (1.2s)` when it ends, on the same line unless something was printed meanwhile (then
/// the name is repeated on a line of its own).
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let id = step_start(name);
    let result = f();
    let took = secs(start.elapsed());
    match &result {
        Ok(_) => step_end(id, name, &format!("ok ({took})")),
        Err(_) => step_end(id, name, &format!("FAILED ({took})")),
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_destination_starts_every_line_once() {
        let p = "[staging] ";
        assert_eq!(
            prefixed("a\nb\n", p, true),
            ("[staging] a\n[staging] b\n".into(), true)
        );
        // A step line written in two parts gets one prefix.
        let (first, next) = prefixed("==> upload ", p, true);
        assert_eq!((first.as_str(), next), ("[staging] ==> upload ", false));
        assert_eq!(
            prefixed("ok (1.0s)\n", p, next),
            ("ok (1.0s)\n".into(), true)
        );
        assert_eq!(prefixed("", p, false), (String::new(), false));
        assert_eq!(prefixed("x\ny", "", true), ("x\ny".into(), false));
    }

    use super::*;

    #[test]
    fn journal_lines_reach_ci_logs_only_when_asked() {
        assert!(journal_shown_with(None, None), "a terminal shows them");
        assert!(!journal_shown_with(Some("true"), None), "CI keeps them out");
        assert!(!journal_shown_with(Some("true"), Some("yes")));
        assert!(journal_shown_with(Some("true"), Some("1")));
        assert!(!journal_shown_with(None, Some("0")));
        assert!(!JOURNAL_HIDDEN.contains('\n'));
    }

    #[test]
    fn plain_output_is_the_text_itself() {
        // Tests never run on a terminal with CI unset in this project's CI; force plain.
        std::env::set_var("NO_COLOR", "1");
        assert_eq!(paint("==> x ok (1.2s)\n"), "==> x ok (1.2s)\n");
        assert_eq!(paint("error: no\n"), "error: no\n");
    }

    #[test]
    fn a_broken_line_is_no_longer_open() {
        // (No other unit test prints step lines: the open line is this test's.)
        let id = step_start("upload 3 of 9 files");
        assert!(still_open(id));
        break_line();
        assert!(
            !still_open(id),
            "its outcome must come on a line of its own, with its name"
        );
    }
}
