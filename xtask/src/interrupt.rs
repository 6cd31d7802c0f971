//! Ctrl-C and SIGTERM as a flag, so every exit path can clean up (lock, rollback).
//!
//! Only std is available, so the handler is installed through libc's `signal(2)`, which std
//! already links. The handler only stores to an atomic (async-signal-safe); long-running child
//! processes are polled by [`wait`] and killed when the flag is set. A second signal exits at
//! once with status 130.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static CLEANUP: AtomicBool = AtomicBool::new(false);
static NOTIFIED: AtomicBool = AtomicBool::new(false);
static SHIELDED: AtomicUsize = AtomicUsize::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_signal(_sig: i32) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(130) }
    }
}

/// Install the handlers for SIGINT and SIGTERM. Idempotent.
pub fn install() {
    // SAFETY: the handler only touches an atomic and calls _exit.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

/// Whether the user asked us to stop.
pub fn requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Fail with a clear error if an interrupt arrived: called between steps.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// From now on, waits no longer abort on an interrupt that already arrived: the cleanup
/// (restore the previous release, release the lock) must run to its end. A second Ctrl-C still
/// exits at once.
pub fn enter_cleanup() {
    CLEANUP.store(true, Ordering::SeqCst);
}

/// Run `f` without letting an interrupt kill the remote call in progress: for short steps
/// whose outcome we must know (taking the lock, preparing the release). The interrupt is
/// still seen by the next [`check`].
pub fn shielded<T>(f: impl FnOnce() -> T) -> T {
    SHIELDED.fetch_add(1, Ordering::SeqCst);
    let out = f();
    SHIELDED.fetch_sub(1, Ordering::SeqCst);
    out
}

/// Wait for a started child, killing it if an interrupt arrives meanwhile.
pub fn wait(handle: &duct::Handle, what: &str) -> Result<std::process::Output> {
    loop {
        if let Some(out) = handle
            .wait_timeout(Duration::from_millis(50))
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(out.clone());
        }
        if requested() {
            if !CLEANUP.load(Ordering::SeqCst) && SHIELDED.load(Ordering::SeqCst) == 0 {
                let _ = handle.kill();
                bail!("interrupted during {what}");
            }
            if !NOTIFIED.swap(true, Ordering::SeqCst) {
                eprintln!("\n(interrupt received: finishing {what} so the server is left consistent; Ctrl-C again to stop waiting)");
            }
        }
    }
}
