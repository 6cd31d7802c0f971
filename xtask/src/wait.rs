//! Waiting that no clock can stretch: every deadline is an [`Instant`] plus a duration (one
//! monotonic source), and every wait is a short relative sleep that looks at the deadline and
//! at the signals between naps.
//!
//! Not std's blocking waits with a timeout (`recv_timeout`, `park_timeout`,
//! `Condvar::wait_timeout`): they turn the deadline into an absolute futex time, computed from
//! what `clock_gettime` says but counted by the kernel's own monotonic clock. Under a faked
//! clock (libfaketime's `faketime -f '+1h'` shifts `CLOCK_MONOTONIC` too) a 50 ms
//! `recv_timeout` was measured to wait forever, and the signal handler's flag was never looked
//! at. A relative sleep (`nanosleep`) cannot be fooled that way.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::interrupt;

/// How long a wait naps between two looks at what it waits for.
pub const TICK: Duration = Duration::from_millis(10);

/// A point in time on the monotonic clock, `after` a duration from now.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// None: so far away that it never comes.
    end: Option<Instant>,
}

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline {
            end: Instant::now().checked_add(d),
        }
    }

    pub fn passed(&self) -> bool {
        self.end.is_some_and(|e| Instant::now() >= e)
    }

    /// What is left of it (zero once it passed).
    pub fn left(&self) -> Duration {
        match self.end {
            Some(e) => e.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        }
    }

    /// Sleep for `max` at most, never past the deadline.
    pub fn nap(&self, max: Duration) {
        let d = self.left().min(max);
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

/// How a wait ended without what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// The deadline passed.
    TimedOut,
    /// A signal arrived (Ctrl-C, SIGTERM, SIGHUP) since the wait began.
    Interrupted,
    /// The channel's sender is gone (nothing more will come).
    Disconnected,
}

/// Call `probe` every [`TICK`] until it gives a value, the deadline passes, or `stop` says so
/// (looked at before every nap).
pub fn poll_until<T>(
    deadline: Deadline,
    stop: impl Fn() -> bool,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, Missed> {
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if stop() {
            return Err(Missed::Interrupted);
        }
        if deadline.passed() {
            return Err(Missed::TimedOut);
        }
        deadline.nap(TICK);
    }
}

/// The same, ended by the first signal that arrives after the call.
pub fn poll<T>(deadline: Deadline, probe: impl FnMut() -> Option<T>) -> Result<T, Missed> {
    let mark = interrupt::mark();
    poll_until(deadline, || mark.passed(), probe)
}

/// Receive from `rx` until the deadline, polling (see the module's doc for why not
/// `recv_timeout`). `stop` ends the wait early (a signal).
pub fn recv_until<T>(
    rx: &Receiver<T>,
    deadline: Deadline,
    stop: impl Fn() -> bool,
) -> Result<T, Missed> {
    // Some(None): the sender is gone.
    let got = poll_until(deadline, stop, || match rx.try_recv() {
        Ok(v) => Some(Some(v)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(None),
    })?;
    got.ok_or(Missed::Disconnected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_and_naps_stop_at_it() {
        let d = Deadline::after(Duration::from_millis(30));
        assert!(!d.passed());
        assert!(d.left() <= Duration::from_millis(30));
        let start = Instant::now();
        d.nap(Duration::from_secs(5));
        assert!(
            d.passed(),
            "a nap never ends before its max or the deadline"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "napped past the deadline"
        );
        assert_eq!(d.left(), Duration::ZERO);
        let far = Deadline::after(Duration::MAX);
        assert!(
            !far.passed(),
            "a deadline beyond the clock's range never comes"
        );
    }

    #[test]
    fn polling_ends_on_a_value_a_deadline_or_a_stop() {
        let mut n = 0;
        let got = poll_until(
            Deadline::after(Duration::from_secs(5)),
            || false,
            || {
                n += 1;
                (n == 3).then_some(n)
            },
        );
        assert_eq!(got, Ok(3));
        let start = Instant::now();
        let none: Result<(), _> = poll_until(
            Deadline::after(Duration::from_millis(40)),
            || false,
            || None,
        );
        assert_eq!(none, Err(Missed::TimedOut));
        assert!(start.elapsed() >= Duration::from_millis(40));
        let start = Instant::now();
        let stopped: Result<(), _> =
            poll_until(Deadline::after(Duration::from_secs(30)), || true, || None);
        assert_eq!(stopped, Err(Missed::Interrupted));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a stop must end the wait at once"
        );
    }

    #[test]
    fn receiving_polls_the_channel() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(
            recv_until(&rx, Deadline::after(Duration::from_secs(5)), || false),
            Ok(7)
        );
        assert_eq!(
            recv_until(&rx, Deadline::after(Duration::from_secs(5)), || false),
            Err(Missed::Disconnected),
            "the sender is gone"
        );
        let (_tx, rx) = std::sync::mpsc::channel::<u8>();
        assert_eq!(
            recv_until(&rx, Deadline::after(Duration::from_millis(20)), || false),
            Err(Missed::TimedOut)
        );
    }
}
