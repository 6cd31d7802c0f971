//! The crash phase: the xtask deploys a release whose API crashes at import, and the row is
//! the time from the server job's restart command (its restart step's start) to the failure it
//! names (a crash loop), both read from the job's own events, so neither the link nor the
//! deployer's clock is in the figure. Target: 5 s (issue 22; the health timeout is 60 s). The
//! baseline has no such row: it knows no crash loop and polls until its timeout.

use anyhow::{bail, Context, Result};

use super::side::{Done, Op, Side};
use crate::contract::{layout, Step, StepStatus, API, BACKEND_PACKAGE, DEFAULT_ROOT};
use crate::deploy::event::Event;

/// The API module the release breaks (the worker does not import it, so only the API loops).
pub fn broken() -> String {
    format!("backend/{BACKEND_PACKAGE}/main.py")
}

/// From a job's events: seconds from the start of its first restart step to the failure that
/// ended the activation (that restart step's own, or the health step's), and its words.
pub fn restart_to_failure(events: &str) -> Option<(f64, String)> {
    let mut restart: Option<u64> = None;
    for e in events.lines().filter_map(Event::parse) {
        match e.step() {
            Some((Some(Step::Restart), StepStatus::Start)) if restart.is_none() => {
                restart = Some(e.ms)
            }
            Some((Some(Step::Restart | Step::Health), StepStatus::Failed)) => {
                let start = restart?;
                let ms = e.ms.checked_sub(start)?;
                return Some((ms as f64 / 1000.0, e.field(3).to_string()));
            }
            _ => {}
        }
    }
    None
}

/// Whether the failure names the API as crash-looping (not a timeout, not another unit).
pub fn names_the_crash_loop(why: &str) -> bool {
    why.starts_with(&format!("unit {} crashes", API.name))
}

/// Deploy a release whose API crashes at import (round `n`) and go back to the tree before it;
/// the seconds from the job's restart to the named crash loop, and the command's handshakes.
pub fn measure(side: &Side, n: u32) -> Result<(f64, Done)> {
    let text = side.scratch.read(&broken())?;
    side.scratch.write(
        &broken(),
        &format!("{text}\nraise RuntimeError(\"bench: the API crashes at import ({n})\")\n"),
    )?;
    side.scratch
        .commit(&format!("bench: an API that crashes at import ({n})"))?;
    let done = side.run(&Op::FailingBackend);
    side.scratch.undo()?;
    let done = done?;
    let events = side.exec(&format!(
        "cat \"$(ls -1td {DEFAULT_ROOT}/{}/*/ | head -n 1)events\"",
        layout::JOBS
    ))?;
    let (secs, why) = restart_to_failure(&events).with_context(|| {
        format!(
            "no restart and failure in the events of the job on {}",
            side.machine().name
        )
    })?;
    if !names_the_crash_loop(&why) {
        bail!(
            "the deploy failed, but not by naming the API's crash loop ({secs:.1}s after the restart): {why}"
        );
    }
    Ok((secs, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_the_jobs_own() {
        let events = "1000\tstep\tswitch\tstart\tswitch current -> R\n\
                      1100\tstep\trestart\tstart\trestart innercontext, innercontext-pricing-worker\n\
                      1400\tstep\trestart\tok\t0.3\n\
                      4600\tstep\thealth\tfailed\t3.2\tunit innercontext crashes: systemd restarted it 2 times on its own since the deploy restarted it\n\
                      4700\tdetail\t---- systemctl status innercontext\n\
                      4800\tstep\trestore\tstart\trestore R0\n\
                      5000\tstep\trestart\tstart\tnever: restore restarts inside its own step\n";
        let (secs, why) = restart_to_failure(events).unwrap();
        assert!((secs - 3.5).abs() < 1e-9, "{secs}");
        assert!(names_the_crash_loop(&why), "{why}");
        // A restart that fails by itself is the named failure too.
        let (secs, why) = restart_to_failure(
            "10\tstep\trestart\tstart\tx\n2010\tstep\trestart\tfailed\t2.0\trestart failed on app: innercontext-pricing-worker: Job failed\n",
        )
        .unwrap();
        assert_eq!(secs, 2.0);
        assert!(!names_the_crash_loop(&why));
        // A timeout is not a crash loop; no restart, no figure.
        assert!(!names_the_crash_loop(
            "not healthy after 60s: unit innercontext is activating"
        ));
        assert_eq!(
            restart_to_failure("10\tstep\thealth\tfailed\t1.0\tx\n"),
            None
        );
        assert_eq!(restart_to_failure("garbage\n"), None);
    }
}
