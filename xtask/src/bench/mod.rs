//! `cargo xtask bench`: the benchmark of record. `cargo xtask deploy` against a straightforward,
//! spec-faithful bash deploy (`scripts/bench/deploy-baseline.sh`), side by side in one run.
//!
//! Two identical app machines (`bench1` for the xtask, `benchsh` for the baseline) and one db
//! machine (`benchdb`), both app machines provisioned with `setup-server` and behind the test
//! host's latency proxy (25 ms each way). Each side deploys its own scratch copy of the
//! repository as a user would (child processes); runs are interleaved (baseline, xtask, ...)
//! and every figure is a median of `--runs` samples, printed with its target and its floor
//! (what the link and the machine allow, measured in the same run). See docs/bench.md for
//! what each row and floor means.
//!
//! The rooms: [`side`] (a side, its machines and commands), [`rounds`] (the interleaved
//! rounds), [`rows`] (the table's rows and the samples), [`floor`] (the floors' parts),
//! [`checks`] (the local checks alone), [`seal`] (what the seal costs), [`load`], [`crash`],
//! [`database`], [`hooked`] (what the hooks cost), and the pure tables [`table`], [`fleet_table`].
//!
//! Fleets are the hosts phase ([`fleet`], `--hosts`): machines of their own, booted after the
//! other phases' machines are down, and a table of their own.

mod checks;
pub mod crash;
mod database;
mod fleet;
mod fleet_table;
mod floor;
mod hooked;
mod load;
mod rounds;
mod rows;
mod seal;
mod side;
mod table;

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::flags::{Bench, BenchPhase};
use crate::testhost;
use crate::{interrupt, tools};

use rounds::Bencher;

pub fn run(b: Bench, sh: &Shell) -> Result<()> {
    if !tools::is_root() {
        bail!("the benchmark boots local machines with systemd-nspawn and needs root: run it with sudo");
    }
    if tools::ensure_apt(sh, &[("wrk", "wrk")]).is_err() {
        bail!("wrk is needed for the load rows: apt-get install wrk");
    }
    side::check_id()?;
    interrupt::install();
    if b.phases.iter().any(|p| *p != BenchPhase::Hosts) {
        side_by_side(&b, sh)?;
    }
    if b.wants(BenchPhase::Hosts) {
        interrupt::check()?;
        fleet::run(sh, &b)?;
    }
    Ok(())
}

/// Every phase but the hosts phase: the xtask and the baseline side by side.
fn side_by_side(b: &Bench, sh: &Shell) -> Result<()> {
    let hosts = 1;
    // The bench's own machines, from a clean slate (a run that died may have left them).
    for name in side::machines(hosts) {
        testhost::down(sh, &name)
            .with_context(|| format!("taking down the leftover bench machine {name}"))?;
    }
    let result = Bencher::provision(sh, hosts).and_then(|bench| bench.measure(b));
    for name in side::machines(hosts) {
        if let Err(e) = testhost::down(sh, &name) {
            eprintln!(
                "warning: could not take {name} down ({e:#}): cargo xtask testhost down {name}"
            );
        }
    }
    result
}
