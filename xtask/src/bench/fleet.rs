//! The hosts phase (`cargo xtask bench --hosts 1,2,4`): how deploy and rollback grow with the
//! number of app hosts (issue 15).
//!
//! Each size N is a fleet of its own, so the rounds can interleave the sizes on fleets that
//! stay in a steady state: app machines `bfleet<N>a`, `bfleet<N>b`, ... (the first is the
//! primary), all of them using one db machine `bfleetdb`. Each fleet has its own scratch
//! checkout, is provisioned with one `setup-server` for all its hosts (as a user does), sits
//! behind the test host's latency proxy like `bench1` (25 ms each way, every host), and has its
//! own load balancer: nginx on this host, upstream = the fleet's machines
//! ([`crate::testhost::balancer`], the same one the end-to-end fleet scenario uses).
//!
//! A round, for each size in turn: one backend and one frontend file changed and committed,
//! `deploy all --skip-local-checks` (rolling, the default) and `deploy rollback` timed, then
//! back to the newest release (untimed); the same with `--parallel` (every host switches at
//! once: what parallel upload and prepare cost without the rolling activation); then the same deploy and rollback again under `wrk`
//! through the balancer ([`super::load`]), counting failed requests and reading the slowest
//! request from the balancer's log. The ssh logins of the deploy user are counted on every host
//! around every command. Each round also restarts every unit of every host of each fleet at
//! once until healthy (timed on the servers): on one host, what rolling activation adds per
//! further host at least; on a fleet, what `--parallel` costs at least on this machine.

use anyhow::{Context, Result};
use xshell::Shell;

use crate::demo::Environment;
use crate::flags::{Bench, Role};
use crate::scratch::Scratch;
use crate::testhost::balancer::{self, Balancer};
use crate::testhost::{self, Machine};
use crate::{contract, interrupt, ui};

use super::fleet_table::{self, FleetRow};
use super::floor::{self, Restart};
use super::load;
use super::side::{Done, Kind, Op, Side, DELAY_MS};
use super::table;

/// The db machine every fleet uses.
pub fn db() -> String {
    super::side::named("bfleetdb")
}
/// How many machines boot at once.
const BOOT_AT_ONCE: usize = 4;

/// The app machines of the fleet of size `n`: `bfleet<n>a`, `bfleet<n>b`, ...
pub fn hosts_of(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| super::side::named(&format!("bfleet{n}{}", char::from(b'a' + i as u8))))
        .collect()
}

/// "1 host", "4 hosts".
fn hosts_label(n: u32) -> String {
    format!("{n} host{}", if n == 1 { "" } else { "s" })
}

/// Every machine the hosts phase uses for these fleet sizes.
pub fn machines(sizes: &[u32]) -> Vec<String> {
    let mut all: Vec<String> = sizes.iter().flat_map(|&n| hosts_of(n)).collect();
    all.push(db());
    all
}

/// Run the hosts phase: boot, provision, measure, print the table; the machines go down at
/// the end whatever happened (an interrupt included: it ends the measuring with an error).
pub fn run(sh: &Shell, b: &Bench) -> Result<()> {
    let names = machines(&b.hosts);
    // A clean slate (a run that died may have left them).
    for name in &names {
        testhost::down(sh, name)
            .with_context(|| format!("taking down the leftover bench machine {name}"))?;
    }
    let result = Fleets::provision(sh, &b.hosts).and_then(|f| f.measure(b));
    for name in &names {
        if let Err(e) = testhost::down(sh, name) {
            eprintln!(
                "warning: could not take {name} down ({e:#}): cargo xtask testhost down {name}"
            );
        }
    }
    result
}

/// One fleet: an xtask side with several machines, and its load balancer.
struct Fleet {
    side: Side,
    balancer: Balancer,
}

impl Fleet {
    fn hosts(&self) -> u32 {
        self.side.hosts.len() as u32
    }
}

struct Fleets {
    fleets: Vec<Fleet>,
}

/// Boot machines a few at a time.
fn boot(names: &[String], role: Role) -> Result<Vec<Machine>> {
    let mut up = Vec::new();
    for chunk in names.chunks(BOOT_AT_ONCE) {
        let booted: Vec<Result<Machine>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|n| s.spawn(move || testhost::up(&Shell::new()?, n, role)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("booting panicked")))
                })
                .collect()
        });
        for m in booted {
            up.push(m?);
        }
    }
    Ok(up)
}

impl Fleets {
    fn provision(sh: &Shell, sizes: &[u32]) -> Result<Fleets> {
        testhost::build(sh, false)?;
        let db_name = db();
        let db = ui::step(&format!("boot {db_name}"), || {
            testhost::up(sh, &db_name, Role::Db)
        })?;
        let mut sides = Vec::new();
        for &n in sizes {
            interrupt::check()?;
            let names = hosts_of(n);
            let hosts = ui::step(&format!("boot {}", names.join(", ")), || {
                boot(&names, Role::App)
            })?;
            sides.push(Side {
                kind: Kind::Xtask,
                env: Environment::for_fleet(&hosts, &db)?,
                hosts,
                scratch: Scratch::new(&super::side::named(&format!("bench-fleet{n}")))?,
                test_database_url: None,
            });
        }
        ui::step("setup-server on every fleet", || {
            super::side::setup_all(sides.iter())
        })?;
        for side in &sides {
            for m in &side.hosts {
                testhost::delay(sh, &m.name, DELAY_MS)?;
            }
        }
        let mut fleets = Vec::new();
        for side in sides {
            interrupt::check()?;
            ui::step(
                &format!("first deploy ({})", hosts_label(side.hosts.len() as u32)),
                || side.run(&Op::Incremental).map(drop),
            )?;
            let balancer = Balancer::start(&side.hosts, &side.scratch.sidecar("lb"))?;
            fleets.push(Fleet { side, balancer });
        }
        Ok(Fleets { fleets })
    }

    fn measure(&self, b: &Bench) -> Result<()> {
        let mut m = Measured {
            rows: self
                .fleets
                .iter()
                .map(|f| FleetRow::new(f.hosts(), b.runs as usize))
                .collect(),
            failures: Vec::new(),
        };
        let result = self.rounds(b, &mut m);
        print!("{}", fleet_table::render(&title(b), &m.rows));
        for f in &m.failures {
            println!("{f}");
        }
        result?;
        for row in &m.rows {
            row.check()?;
        }
        Ok(())
    }

    fn rounds(&self, b: &Bench, m: &mut Measured) -> Result<()> {
        let mut change = 0;
        for round in 1..=b.runs {
            interrupt::check()?;
            let tag = format!("fleets, round {round}/{}", b.runs);
            for (i, f) in self.fleets.iter().enumerate() {
                let what = format!("{tag}: {}, restart until healthy", hosts_label(f.hosts()));
                let secs = ui::step(&what, || {
                    floor::restart_all_until_healthy(&f.side.hosts, &Restart::of(None))
                })?;
                m.rows[i].restart.push(secs);
            }
            for (i, f) in self.fleets.iter().enumerate() {
                change += 1;
                f.side.change_both(change)?;
                let what = |op: &Op| format!("{tag}: {}, {}", hosts_label(f.hosts()), op.label());
                let done = ui::step(&what(&Op::Incremental), || self.run(f, &Op::Incremental))?;
                m.rows[i]
                    .deploy
                    .push(table::sample(done.secs, "a fleet deploy")?);
                m.rows[i].handshakes.extend(done.handshakes);
                let done = ui::step(&what(&Op::Rollback), || self.run(f, &Op::Rollback))?;
                m.rows[i]
                    .rollback
                    .push(table::sample(done.secs, "a fleet rollback")?);
                m.rows[i].handshakes.extend(done.handshakes);
                m.rows[i].handshakes.extend(self.forward(f)?);

                change += 1;
                f.side.change_both(change)?;
                let done = ui::step(&what(&Op::ParallelDeploy), || {
                    self.run(f, &Op::ParallelDeploy)
                })?;
                m.rows[i]
                    .deploy_parallel
                    .push(table::sample(done.secs, "a fleet deploy --parallel")?);
                m.rows[i].handshakes.extend(done.handshakes);
                let done = ui::step(&what(&Op::ParallelRollback), || {
                    self.run(f, &Op::ParallelRollback)
                })?;
                m.rows[i]
                    .rollback_parallel
                    .push(table::sample(done.secs, "a fleet rollback --parallel")?);
                m.rows[i].handshakes.extend(done.handshakes);
                m.rows[i].handshakes.extend(self.forward(f)?);
            }
            for (i, f) in self.fleets.iter().enumerate() {
                change += 1;
                f.side.change_both(change)?;
                for op in [Op::Incremental, Op::Rollback] {
                    let what = format!(
                        "{tag}: {}, {} under load",
                        hosts_label(f.hosts()),
                        op.label()
                    );
                    let (done, seen) = ui::step(&what, || self.under_load(f, &op))?;
                    let row = &mut m.rows[i];
                    row.handshakes.extend(done.handshakes);
                    let failed = seen.wrk.failed.max(seen.window.failed.len() as f64);
                    if op == Op::Incremental {
                        row.requests_deploy.push(seen.wrk.requests);
                        row.failed_deploy.push(failed);
                    } else {
                        row.requests_rollback.push(seen.wrk.requests);
                        row.failed_rollback.push(failed);
                    }
                    row.slowest.push(seen.window.slowest);
                    if failed > 0.0 {
                        let answers = if seen.window.failed.is_empty() {
                            "the balancer logged no failed answer (wrk's failures are its own: timeouts or socket errors, on the step line)".to_string()
                        } else {
                            format!(
                                "the balancer's failed answers (time, status, upstreams, their answers, seconds):\n    {}",
                                seen.window.failed.iter().take(10).cloned().collect::<Vec<_>>().join("\n    ")
                            )
                        };
                        m.failures.push(format!(
                            "{what}: {failed} failed\n  {answers}\n{}",
                            app_warnings(f)
                        ));
                    }
                }
                m.rows[i].handshakes.extend(self.forward(f)?);
            }
        }
        Ok(())
    }

    fn run(&self, f: &Fleet, op: &Op) -> Result<Done> {
        interrupt::check()?;
        f.side.run(op)
    }

    /// `op` under wrk through the fleet's balancer, and what the balancer logged meanwhile.
    fn under_load(&self, f: &Fleet, op: &Op) -> Result<(Done, Seen)> {
        interrupt::check()?;
        f.balancer.window(0)?;
        let mut stopped = 0;
        let (done, wrk) = load::during(&f.balancer.addr(), || {
            let done = f.side.run(op);
            stopped = balancer::now_ms();
            done
        })?;
        let window = f.balancer.window(stopped)?;
        Ok((done, Seen { wrk, window }))
    }

    /// Back to the newest release after a rollback (untimed); its handshakes.
    fn forward(&self, f: &Fleet) -> Result<Vec<f64>> {
        let newest = f.side.newest_release()?;
        Ok(self.run(f, &Op::RollbackTo(newest))?.handshakes)
    }
}

/// The API's own account of a failed window: its warnings and errors of the last two minutes
/// on every host of the fleet (a 503 from the API is its health check failing to reach the
/// database, and it logs why).
fn app_warnings(f: &Fleet) -> String {
    // Python's log lines reach the journal through stderr, all at one priority: grep them.
    let units: String = [contract::API, contract::WEB]
        .iter()
        .map(|u| format!("-u {} ", u.name))
        .collect();
    let script = format!("journalctl {units}--since -120s --no-pager -o short-precise | grep -iE 'warn|error|fail|traceback' | tail -n 8 || true");
    f.side
        .hosts
        .iter()
        .map(|m| match super::side::exec(m, &script) {
            Ok(out) if out.trim().is_empty() => format!("  {}'s journal: no warnings", m.name),
            Ok(out) => format!(
                "  {}'s journal (warnings):\n    {}",
                m.name,
                out.trim().replace('\n', "\n    ")
            ),
            Err(e) => format!("  {}'s journal: not read ({e:#})", m.name),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a window of load saw: wrk's count, and the balancer's log.
struct Seen {
    wrk: load::Outcome,
    window: balancer::Window,
}

struct Measured {
    rows: Vec<FleetRow>,
    /// The balancer's lines for windows with failed requests, printed under the table.
    failures: Vec<String>,
}

fn title(b: &Bench) -> String {
    format!(
        "\ninnercontext fleet benchmark: {} runs; fleets of {} app machines, each behind {} ms each way ({} ms round trip), one db machine; load balancer: nginx on this host; deploy all --skip-local-checks (one backend and one frontend file changed) and deploy rollback, rolling and --parallel",
        b.runs,
        b.hosts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        DELAY_MS,
        2 * DELAY_MS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_machines_have_names_of_their_own() {
        assert_eq!(hosts_of(1), ["bfleet1a"]);
        assert_eq!(
            hosts_of(4),
            ["bfleet4a", "bfleet4b", "bfleet4c", "bfleet4d"]
        );
        let all = machines(&[1, 2, 4]);
        assert_eq!(all.len(), 8);
        assert_eq!(all.last(), Some(&db()));
        for name in machines(&[1, 2, crate::flags::BENCH_MAX_HOSTS]) {
            crate::flags::validate_machine_name(&name).unwrap();
            // Never one of the other phases' machines, nor an end-to-end run's (<id>app, ...).
            assert!(!super::super::side::machines(1).contains(&name), "{name}");
            assert!(name.starts_with("bfleet"), "{name}");
        }
    }
}
