//! Signals as flags, so the xtask decides what an interrupt means at each point.
//!
//! A terminal's Ctrl-C (SIGINT) and hang-up (SIGHUP) go to the whole foreground process group;
//! the xtask's children run in process groups of their own ([`crate::proc`]), so only the xtask
//! receives them. SIGINT, SIGTERM and SIGHUP are handled alike: the handler counts them and
//! remembers the last one; the pipeline looks at [`count`] between and during its waits. A third
//! signal exits at once (a safety net for a process stuck where nobody looks).
//!
//! Only std is available, so the handlers are installed through libc's `signal(2)`, which std
//! already links. They only touch atomics and `_exit`, which are async-signal-safe.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use anyhow::{bail, Result};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_signal(sig: i32) {
    LAST.store(sig, Ordering::SeqCst);
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(128 + sig) }
    }
}

/// Install the handlers for SIGINT, SIGTERM and SIGHUP. Idempotent.
pub fn install() {
    // The handler only touches atomics and calls _exit.
    handle(SIGINT, on_signal);
    handle(SIGTERM, on_signal);
    handle(SIGHUP, on_signal);
}

/// Make `handler` the handler of `sig`. It must make only async-signal-safe calls.
pub fn handle(sig: i32, handler: extern "C" fn(i32)) {
    // SAFETY: installing a handler has no memory effects; what it may do is the caller's.
    unsafe {
        signal(sig, handler);
    }
}

/// End this process at once with `status` (`_exit`: async-signal-safe, for handlers).
pub fn exit_now(status: i32) -> ! {
    // SAFETY: _exit ends the process without running anything of ours.
    unsafe { _exit(status) }
}

/// How many signals arrived so far.
pub fn count() -> usize {
    SIGNALS.load(Ordering::SeqCst)
}

/// Whether the user (or the system) asked us to stop.
pub fn requested() -> bool {
    count() > 0
}

/// The signals received so far, to tell later whether another one came: a wait that the next
/// signal ends takes a mark when it begins.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

pub fn mark() -> Mark {
    Mark(count())
}

impl Mark {
    /// Whether a signal arrived since the mark was taken.
    pub fn passed(self) -> bool {
        count() != self.0
    }

    /// A mark that a signal has passed already (unit tests of interrupted waits).
    #[cfg(test)]
    pub(crate) fn already_passed() -> Mark {
        Mark(usize::MAX)
    }
}

/// The last signal received (0: none).
pub fn last() -> i32 {
    LAST.load(Ordering::SeqCst)
}

/// What the last signal was, in words.
pub fn describe() -> &'static str {
    match last() {
        SIGINT => "Ctrl-C (SIGINT)",
        SIGHUP => "a hang-up (SIGHUP: terminal closed)",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The exit status a run ended by a signal reports (128 + the signal, as shells do).
pub fn exit_status() -> u8 {
    match last() {
        0 => 1,
        s => (128 + s).clamp(0, 255) as u8,
    }
}

/// Fail with a clear error if an interrupt arrived: called between local steps.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted by {}", describe());
    }
    Ok(())
}
