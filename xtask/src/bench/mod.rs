//! `cargo xtask bench`: the benchmark of record. `cargo xtask deploy` against a straightforward,
//! spec-faithful bash deploy (`scripts/bench/deploy-baseline.sh`), side by side in one run.
//!
//! Two identical app machines (`bench1` for the xtask, `benchsh` for the baseline) and one db
//! machine (`benchdb`), both app machines provisioned with `setup-server` and behind the test
//! host's latency proxy (25 ms each way). Each side deploys its own scratch copy of the
//! repository as a user would (child processes); runs are interleaved (baseline, xtask, ...)
//! and every figure is a median of `--runs` samples, printed with its target and its floor
//! (what the link and the machine allow, measured in the same run). See the README's
//! "Benchmark" section for what each row and floor means.
//!
//! Fleets are the hosts phase ([`fleet`], `--hosts`): machines of their own, booted after the
//! other phases' machines are down, and a table of their own.

pub mod crash;
mod fleet;
mod fleet_table;
mod load;
mod side;
mod table;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::Shell;

use crate::ci::{self, Noise};
use crate::demo::Environment;
use crate::deploy::release;
use crate::flags::{Bench, BenchPhase, CheckPart, Role};
use crate::scratch::Scratch;
use crate::testhost::{self, Machine};
use crate::{interrupt, tools, ui};

use side::{Kind, Op, Side};
use table::{Floor, FloorParts, Key, Row, Target, Unit};

/// One-way delay of the simulated WAN link (50 ms round trip).
const DELAY_MS: u32 = 25;
const DB: &str = "benchdb";
const BASELINE_HOST: &str = "benchsh";
const ROOT: &str = "/opt/innercontext";
/// Releases added on the server for the "how it grows" rows.
const EXTRA_RELEASES: u32 = 50;
/// Files (and bytes per file) added to the backend for the "how it grows" rows: ~500 MB.
const EXTRA_FILES: u32 = 20_000;
const EXTRA_FILE_BYTES: usize = 25_000;

/// The xtask side's machines: `bench1..benchN`.
pub fn xtask_hosts(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("bench{i}")).collect()
}

/// Every machine a bench run with `n` xtask hosts uses.
pub fn machines(n: u32) -> Vec<String> {
    let mut all = xtask_hosts(n);
    all.push(BASELINE_HOST.to_string());
    all.push(DB.to_string());
    all
}

/// The local checks alone, as `cargo xtask deploy all` runs them and waits for them, on the
/// checkout `dir`: each part of `cargo xtask check` as a child process, the backend beside the
/// frontend build and the frontend checks once the build is done (the order of
/// `deploy::checks`), each with `--recheck` (a tree checked for the first time). They record
/// the tree as checked: [`crate::check::forget`] before a deploy that must check it again.
pub fn local_checks(dir: &Utf8Path) -> Result<()> {
    std::thread::scope(|s| {
        let backend = s.spawn(|| check_part(dir, CheckPart::Backend));
        let frontend =
            check_part(dir, CheckPart::Build).and_then(|()| check_part(dir, CheckPart::Frontend));
        let backend = backend
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the backend checks panicked")));
        backend.and(frontend)
    })
}

/// `cargo xtask check PART --recheck` on the checkout `dir`, as the deploy starts it.
fn check_part(dir: &Utf8Path, part: CheckPart) -> Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["check", part.name(), "--recheck"])
        .current_dir(dir)
        .env("XTASK_PROJECT_ROOT", dir)
        .env("CI", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("starting the {} checks", part.name()))?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "the {} checks failed on {dir} ({}), ending with:\n{}",
            part.name(),
            out.status,
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    Ok(())
}

/// Stop the checks' PostgreSQL of the checkout `dir` (it stays warm between checks).
fn stop_checks_db(dir: &Utf8Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap_or_default())
        .args(["check", "--stop-db"])
        .current_dir(dir)
        .env("XTASK_PROJECT_ROOT", dir)
        .stdin(std::process::Stdio::null())
        .output();
    if !matches!(&out, Ok(o) if o.status.success()) {
        eprintln!(
            "warning: the checks' PostgreSQL of {dir} may still run: cd {dir} && cargo xtask check --stop-db"
        );
    }
}

/// The frontend build alone, as a deploy of a changed frontend must run it (a floor part):
/// the dependencies checked (`pnpm install --frozen-lockfile`, nothing to fetch) and the build.
fn frontend_build(dir: &Utf8Path) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(dir);
    ci::frontend_install(&sh, Noise::Quiet)?;
    ci::frontend_build(&sh, Noise::Quiet)
}

pub fn run(b: Bench, sh: &Shell) -> Result<()> {
    if !tools::is_root() {
        bail!("the benchmark boots local machines with systemd-nspawn and needs root: run it with sudo");
    }
    if tools::ensure_apt(sh, &[("wrk", "wrk")]).is_err() {
        bail!("wrk is needed for the load rows: apt-get install wrk");
    }
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
    for name in machines(hosts) {
        testhost::down(sh, &name)
            .with_context(|| format!("taking down the leftover bench machine {name}"))?;
    }
    let result = Bencher::provision(sh, hosts).and_then(|bench| bench.measure(b));
    for name in machines(hosts) {
        if let Err(e) = testhost::down(sh, &name) {
            eprintln!(
                "warning: could not take {name} down ({e:#}): cargo xtask testhost down {name}"
            );
        }
    }
    result
}

struct Bencher {
    baseline: Side,
    xtask: Side,
    /// The baseline's backend tests' database, kept for the whole run.
    _postgres: crate::pg::Throwaway,
}

impl Bencher {
    fn provision(sh: &Shell, hosts: u32) -> Result<Bencher> {
        testhost::build(sh, false)?;
        let db = ui::step(&format!("boot {DB}"), || testhost::up(sh, DB, Role::Db))?;
        let x_name = xtask_hosts(hosts).remove(0);
        let (xm, bm) = ui::step(&format!("boot {x_name} and {BASELINE_HOST}"), || {
            std::thread::scope(|s| {
                let x = s.spawn(|| testhost::up(&Shell::new()?, &x_name, Role::App));
                let b = s.spawn(|| testhost::up(&Shell::new()?, BASELINE_HOST, Role::App));
                let join = |h: std::thread::ScopedJoinHandle<'_, Result<Machine>>| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("booting panicked")))
                };
                Ok((join(x)?, join(b)?))
            })
        })?;
        let postgres = crate::pg::Throwaway::start().context("the baseline's test database")?;
        let side = |kind: Kind, m: Machine| -> Result<Side> {
            Ok(Side {
                kind,
                env: Environment::for_machines(&m, &db)?,
                hosts: vec![m],
                scratch: Scratch::new(&format!("bench-{}", kind.name()))?,
                test_database_url: Some(postgres.url()),
            })
        };
        let bench = Bencher {
            baseline: side(Kind::Baseline, bm)?,
            xtask: side(Kind::Xtask, xm)?,
            _postgres: postgres,
        };
        ui::step("setup-server on both app machines", || {
            std::thread::scope(|s| {
                let handles: Vec<_> = bench
                    .sides()
                    .map(|side| s.spawn(move || side.setup_server()))
                    .collect();
                for h in handles {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("setup-server panicked")))?;
                }
                Ok(())
            })
        })?;
        for side in bench.sides() {
            testhost::delay(sh, &side.machine().name, DELAY_MS)?;
        }
        for side in bench.sides() {
            ui::step(&format!("first deploy ({})", side.kind.name()), || {
                side.run(&Op::Incremental).map(drop)
            })?;
        }
        Ok(bench)
    }

    /// Baseline first, then the xtask: the order of every interleaved pair.
    fn sides(&self) -> impl Iterator<Item = &Side> {
        [&self.baseline, &self.xtask].into_iter()
    }

    fn measure(&self, b: &Bench) -> Result<()> {
        let mut m = Measurements::new(b);
        let result = self.rounds(b, &mut m);
        // The table of whatever was measured, also when a run failed (its row shows n/N).
        print!("{}", m.render(b));
        result?;
        for row in &m.rows {
            row.check()?;
        }
        Ok(())
    }

    fn rounds(&self, b: &Bench, m: &mut Measurements) -> Result<()> {
        if b.wants(BenchPhase::Checks) {
            // Once, untimed: the checks' PostgreSQL starts and stays warm and the backend's
            // environment exists, as on a machine that deployed before.
            let dir = &self.xtask.scratch.dir;
            ui::step("local checks once (warm-up, not measured)", || {
                local_checks(dir)
            })?;
        }
        let mut change = 0;
        for round in 1..=b.runs {
            interrupt::check()?;
            let tag = format!("round {round}/{}", b.runs);
            let mut parts = ui::step(&format!("{tag}: floors"), || self.floor_parts())?;
            if b.wants(BenchPhase::Deploys) {
                change += 1;
                self.change_both(change)?;
                for (op, key) in [
                    (Op::Incremental, Key::Incremental),
                    (Op::Noop, Key::Noop),
                    (Op::RedeployBackend, Key::Redeploy),
                    (Op::Rollback, Key::Rollback),
                    (Op::List, Key::List),
                ] {
                    for side in self.sides() {
                        let secs = self.timed(m, side, &op, &tag)?;
                        m.push(key, side.kind, secs)?;
                    }
                    if op == Op::Rollback {
                        self.forward(m)?;
                    }
                }
            }
            if b.wants(BenchPhase::Load) {
                change += 1;
                self.change_both(change)?;
                for (op, requests, failed) in [
                    (Op::Incremental, Key::RequestsDeploy, Key::FailedDeploy),
                    (Op::Rollback, Key::RequestsRollback, Key::FailedRollback),
                ] {
                    for side in self.sides() {
                        let what = format!("{tag}: {} {} under load", side.kind.name(), op.label());
                        let (done, load) =
                            ui::step(&what, || load::during(&side.machine().ip, || side.run(&op)))?;
                        m.push_handshakes(side.kind, &done)?;
                        m.push(requests, side.kind, load.requests)?;
                        m.push(failed, side.kind, load.failed)?;
                    }
                    if op == Op::Rollback {
                        self.forward(m)?;
                    }
                }
            }
            if b.wants(BenchPhase::Checks) {
                change += 1;
                self.change_both(change)?;
                let dir = self.xtask.scratch.dir.clone();
                let start = Instant::now();
                ui::step(&format!("{tag}: local checks alone"), || local_checks(&dir))?;
                let checks = table::sample(start.elapsed().as_secs_f64(), "local checks")?;
                // The deploy that follows checks this tree for the first time.
                crate::check::forget(&dir)?;
                parts.checks = Some(checks);
                m.push(Key::ChecksAlone, Kind::Xtask, checks)?;
                for side in self.sides() {
                    let secs = self.timed(m, side, &Op::WithChecks, &tag)?;
                    m.push(Key::ChecksFirst, side.kind, secs)?;
                }
                // The same tree again: back to the previous release, then deploy it again.
                for side in self.sides() {
                    self.untimed(m, side, &Op::Rollback)?;
                    let secs = self.timed(m, side, &Op::WithChecks, &tag)?;
                    m.push(Key::ChecksAgain, side.kind, secs)?;
                }
            }
            m.floors.push(parts);
        }
        if b.wants(BenchPhase::Releases) {
            for round in 1..=b.runs {
                interrupt::check()?;
                let tag = format!("{EXTRA_RELEASES} more releases, {round}/{}", b.runs);
                change += 1;
                self.change_both(change)?;
                for side in self.sides() {
                    ui::step(
                        &format!("{tag}: add releases ({})", side.kind.name()),
                        || self.add_releases(side),
                    )?;
                    let secs = self.timed(m, side, &Op::List, &tag)?;
                    m.push(Key::ListReleases, side.kind, secs)?;
                    let secs = self.timed(m, side, &Op::Incremental, &tag)?;
                    m.push(Key::IncrementalReleases, side.kind, secs)?;
                }
            }
        }
        if b.wants(BenchPhase::Files) {
            ui::step(
                &format!("add {EXTRA_FILES} files to the backend and commit"),
                || self.add_files(),
            )?;
            for side in self.sides() {
                ui::step(
                    &format!("first deploy with the files ({})", side.kind.name()),
                    || self.untimed(m, side, &Op::Incremental),
                )?;
            }
            for round in 1..=b.runs {
                interrupt::check()?;
                let tag = format!("{EXTRA_FILES} more files, {round}/{}", b.runs);
                change += 1;
                self.change_both(change)?;
                for side in self.sides() {
                    let secs = self.timed(m, side, &Op::Incremental, &tag)?;
                    m.push(Key::IncrementalFiles, side.kind, secs)?;
                }
            }
        }
        if b.wants(BenchPhase::Crash) {
            for round in 1..=b.runs {
                interrupt::check()?;
                let what = format!(
                    "crash loop {round}/{}: xtask deploy of an API that crashes at import",
                    b.runs
                );
                let (secs, done) = ui::step(&what, || crash::measure(&self.xtask, round))?;
                m.push_handshakes(Kind::Xtask, &done)?;
                m.push(Key::CrashNamed, Kind::Xtask, secs)?;
            }
        }
        Ok(())
    }

    /// Run a measured operation; its seconds (its handshakes are recorded too).
    fn timed(&self, m: &mut Measurements, side: &Side, op: &Op, tag: &str) -> Result<f64> {
        interrupt::check()?;
        let done = ui::step(
            &format!("{tag}: {} {}", side.kind.name(), op.label()),
            || side.run(op),
        )?;
        m.push_handshakes(side.kind, &done)?;
        table::sample(done.secs, "a timed command")
    }

    fn untimed(&self, m: &mut Measurements, side: &Side, op: &Op) -> Result<()> {
        interrupt::check()?;
        let done = side.run(op)?;
        m.push_handshakes(side.kind, &done)
    }

    /// After a measured rollback, the xtask goes back to its newest release (not measured;
    /// the baseline's next deploy makes a new release anyway).
    fn forward(&self, m: &mut Measurements) -> Result<()> {
        let newest = self.xtask.newest_release()?;
        self.untimed(m, &self.xtask, &Op::RollbackTo(newest))
    }

    fn change_both(&self, n: u32) -> Result<()> {
        for side in self.sides() {
            side.change_both(n)?;
        }
        Ok(())
    }

    /// This round's floor parts, measured on the xtask's machine (the baseline's is identical).
    fn floor_parts(&self) -> Result<FloorParts> {
        let side = &self.xtask;
        let handshake = median_of(3, || timed_ok(ssh(side, &[], &["true"])))?;
        let command = one_more_command(side)?;
        let restart_all = restart_until_healthy(
            side,
            "innercontext innercontext-node innercontext-pricing-worker",
            &[
                "http://127.0.0.1:8000/health-check",
                "http://127.0.0.1:3000/",
            ],
        )?;
        let restart_backend = restart_until_healthy(
            side,
            "innercontext innercontext-pricing-worker",
            &["http://127.0.0.1:8000/health-check"],
        )?;
        let start = Instant::now();
        frontend_build(&side.scratch.dir)?;
        let build = start.elapsed().as_secs_f64();
        Ok(FloorParts {
            handshake,
            command,
            restart_all,
            restart_backend,
            build,
            checks: None,
        })
    }

    /// 50 more releases on the side's server: hard-linked copies of `current`, named older
    /// than every real one, every second one marked failed where releases record a state.
    fn add_releases(&self, side: &Side) -> Result<()> {
        let base = time::OffsetDateTime::now_utc() - time::Duration::days(400);
        let names: Vec<String> = (0..EXTRA_RELEASES)
            .map(|i| {
                let t = base + time::Duration::minutes(i64::from(i));
                match side.kind {
                    Kind::Xtask => release::name_for(t),
                    Kind::Baseline => format!(
                        "{:04}{:02}{:02}{:02}{:02}{:02}",
                        t.year(),
                        u8::from(t.month()),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    ),
                }
            })
            .collect();
        let script = format!(
            "set -euo pipefail; cd {ROOT}/releases; cur=$(basename \"$(readlink {ROOT}/current)\"); i=0; \
             for name in {names}; do \
               runuser -u innercontext -- cp -al \"$cur\" \"$name\"; i=$((i + 1)); \
               if [ $((i % 2)) = 0 ] && [ -f \"$name/.state\" ]; then \
                 runuser -u innercontext -- sh -c 'rm -f \"$1/.state\" && echo failed > \"$1/.state\"' sh \"$name\"; \
               fi; \
             done; ls -1 | wc -l",
            names = names.join(" ")
        );
        let count = side.exec(&script)?;
        let count: u32 = count.trim().parse().context("counting releases")?;
        if count < EXTRA_RELEASES {
            bail!(
                "only {count} releases on {} after adding {EXTRA_RELEASES}",
                side.machine().name
            );
        }
        Ok(())
    }

    /// ~500 MB in 20,000 files under backend/static/bench/, committed on both sides.
    fn add_files(&self) -> Result<()> {
        let rel = "backend/static/bench";
        let dir = self.xtask.scratch.dir.join(rel);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; EXTRA_FILE_BYTES];
        for i in 0..EXTRA_FILES {
            let sub = dir.join(format!("d{:03}", i / 100));
            if i % 100 == 0 {
                fs_err::create_dir_all(&sub)?;
            }
            for chunk in buf.chunks_mut(8) {
                // xorshift64: incompressible, and the same bytes on every run.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            fs_err::write(sub.join(format!("f{i:05}.bin")), &buf)?;
        }
        let target = self.baseline.scratch.dir.join(rel);
        fs_err::create_dir_all(target.parent().unwrap())?;
        crate::scratch::run_ok(
            std::process::Command::new("cp").args(["-al", dir.as_str(), target.as_str()]),
            "cp -al",
        )?;
        for side in self.sides() {
            side.scratch
                .git(&["-c", "core.looseCompression=0", "add", "-A"])?;
            side.scratch
                .commit(&format!("{EXTRA_FILES} static files"))?;
        }
        Ok(())
    }
}

impl Drop for Bencher {
    /// The xtask side's checks keep a PostgreSQL warm in its checkout: stop it before the
    /// checkout goes.
    fn drop(&mut self) {
        stop_checks_db(&self.xtask.scratch.dir);
    }
}

/// The samples of one bench run.
struct Measurements {
    rows: Vec<Row>,
    floors: Vec<FloorParts>,
}

/// A row's definition: its key, its phase (None: measured whatever runs), label, unit,
/// target and floor.
type RowSpec = (Key, Option<BenchPhase>, &'static str, Unit, Target, Floor);

/// Every row, in the order of the table.
const ROWS: &[RowSpec] = &[
    (
        Key::Incremental,
        Some(BenchPhase::Deploys),
        "incremental deploy all (no local checks)",
        Unit::Secs,
        Target::MaxAndRatio(3.0, 0.25),
        Floor::Incremental,
    ),
    (
        Key::IncrementalFiles,
        Some(BenchPhase::Files),
        "same, 20,000 more files (500 MB)",
        Unit::Secs,
        Target::Relative {
            of: Key::Incremental,
            factor: 2.0,
            plus: 0.0,
        },
        Floor::Incremental,
    ),
    (
        Key::IncrementalReleases,
        Some(BenchPhase::Releases),
        "same, 50 more releases (and their prune)",
        Unit::Secs,
        Target::Relative {
            of: Key::Incremental,
            factor: 1.2,
            plus: 0.0,
        },
        Floor::Incremental,
    ),
    (
        Key::Redeploy,
        Some(BenchPhase::Deploys),
        "backend redeploy, nothing changed",
        Unit::Secs,
        Target::Max(2.5),
        Floor::BackendRestart,
    ),
    (
        Key::ChecksAlone,
        Some(BenchPhase::Checks),
        "local checks alone (same tree)",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::ChecksFirst,
        Some(BenchPhase::Checks),
        "deploy all with checks, new tree",
        Unit::Secs,
        Target::Relative {
            of: Key::ChecksAlone,
            factor: 1.0,
            plus: 2.0,
        },
        Floor::Checks,
    ),
    (
        Key::ChecksAgain,
        Some(BenchPhase::Checks),
        "deploy all with checks, same tree again",
        Unit::Secs,
        Target::Relative {
            of: Key::Incremental,
            factor: 1.3,
            plus: 0.0,
        },
        Floor::Incremental,
    ),
    (
        Key::Rollback,
        Some(BenchPhase::Deploys),
        "rollback until healthy",
        Unit::Secs,
        Target::Max(2.0),
        Floor::Rollback,
    ),
    (
        Key::Noop,
        Some(BenchPhase::Deploys),
        "no-op deploy (nothing to deploy)",
        Unit::Secs,
        Target::Max(1.0),
        Floor::Look,
    ),
    (
        Key::List,
        Some(BenchPhase::Deploys),
        "list releases",
        Unit::Secs,
        Target::None,
        Floor::Look,
    ),
    (
        Key::ListReleases,
        Some(BenchPhase::Releases),
        "list, 50 more releases",
        Unit::Secs,
        Target::Relative {
            of: Key::List,
            factor: 1.2,
            plus: 0.1,
        },
        Floor::Look,
    ),
    (
        Key::RequestsDeploy,
        Some(BenchPhase::Load),
        "requests during a deploy (wrk)",
        Unit::Count,
        Target::None,
        Floor::None,
    ),
    (
        Key::FailedDeploy,
        Some(BenchPhase::Load),
        "failed requests during a deploy",
        Unit::Count,
        Target::EverySampleMax(0.0),
        Floor::Exactly(0),
    ),
    (
        Key::RequestsRollback,
        Some(BenchPhase::Load),
        "requests during a rollback (wrk)",
        Unit::Count,
        Target::None,
        Floor::None,
    ),
    (
        Key::FailedRollback,
        Some(BenchPhase::Load),
        "failed requests during a rollback",
        Unit::Count,
        Target::EverySampleMax(0.0),
        Floor::Exactly(0),
    ),
    (
        Key::CrashNamed,
        Some(BenchPhase::Crash),
        "crash-looping API named (restart to failure)",
        Unit::Secs,
        Target::Max(5.0),
        Floor::None,
    ),
    (
        Key::Handshakes,
        None,
        "ssh handshakes per command",
        Unit::Count,
        Target::EverySampleMax(1.0),
        Floor::Exactly(1),
    ),
];

impl Measurements {
    /// The rows of the selected phases, each wanting one sample per run and side (the
    /// checks alone have no baseline; handshakes want one per command that ran).
    fn new(b: &Bench) -> Measurements {
        let runs = b.runs as usize;
        let rows = ROWS
            .iter()
            .filter(|(_, phase, ..)| phase.is_none_or(|p| b.wants(p)))
            .map(|&(key, phase, label, unit, target, floor)| {
                let mut row = Row::new(key, label, unit, target, floor);
                if phase.is_some() {
                    row.want_xtask = runs;
                    row.want_baseline = if key.xtask_only() { 0 } else { runs };
                }
                row
            })
            .collect();
        Measurements {
            rows,
            floors: Vec::new(),
        }
    }

    fn push(&mut self, key: Key, kind: Kind, value: f64) -> Result<()> {
        let row = self
            .rows
            .iter_mut()
            .find(|r| r.key == key)
            .with_context(|| format!("no row {key:?} in this run"))?;
        let value = table::sample(value, row.label)?;
        match kind {
            Kind::Baseline => row.baseline.push(value),
            Kind::Xtask => row.xtask.push(value),
        }
        // Every command reports its handshakes: that row wants whatever ran.
        if key == Key::Handshakes {
            row.want_baseline = row.baseline.len();
            row.want_xtask = row.xtask.len();
        }
        Ok(())
    }

    /// The ssh handshakes of a command: one sample per host.
    fn push_handshakes(&mut self, kind: Kind, done: &side::Done) -> Result<()> {
        for &n in &done.handshakes {
            self.push(Key::Handshakes, kind, n)?;
        }
        Ok(())
    }

    fn render(&self, b: &Bench) -> String {
        let title = format!(
            "\ninnercontext deploy benchmark: {} runs; one app machine per side behind {DELAY_MS} ms each way ({} ms round trip); baseline = {}",
            b.runs,
            2 * DELAY_MS,
            side::BASELINE
        );
        let mut out = table::render(&title, &self.rows, &self.floors);
        out.push_str(&table::render_floor_parts(&self.floors));
        out
    }
}

/// The median of `n` measurements.
fn median_of(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f()?);
    }
    table::median(&v).context("no measurement")
}

/// Seconds an ssh command took, if it succeeded.
fn timed_ok(cmd: std::process::Command) -> Result<f64> {
    let mut cmd = cmd;
    let start = Instant::now();
    let out = cmd.output().context("running ssh")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "ssh for a floor measurement failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

/// `ssh` as the deploy user to the side's machine, through its ssh_config (and proxy).
fn ssh(side: &Side, opts: &[&str], argv: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.arg("-F")
        .arg(side.machine().ssh_config.as_str())
        .args(opts)
        .arg(format!("innercontext@{}", side.machine().name))
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null());
    c
}

/// One command over an open master connection: what each further remote step costs.
fn one_more_command(side: &Side) -> Result<f64> {
    let sock = side.scratch.sidecar("ssh-master");
    let _ = fs_err::remove_file(&sock);
    let control = format!("ControlPath={sock}");
    timed_ok(ssh(
        side,
        &["-o", "ControlMaster=yes", "-o", &control, "-f", "-N"],
        &[],
    ))?;
    let result = median_of(5, || {
        timed_ok(ssh(
            side,
            &["-o", "ControlMaster=no", "-o", &control],
            &["true"],
        ))
    });
    let _ = ssh(side, &["-o", &control, "-O", "exit"], &[]).output();
    result
}

/// `systemctl restart UNITS` until every probe answers, timed on the server.
fn restart_until_healthy(side: &Side, units: &str, probes: &[&str]) -> Result<f64> {
    restart_until_healthy_on(side.machine(), units, probes)
}

/// [`restart_until_healthy`] on one machine.
fn restart_until_healthy_on(m: &Machine, units: &str, probes: &[&str]) -> Result<f64> {
    let checks: Vec<String> = probes
        .iter()
        .map(|p| format!("curl -fsS -o /dev/null -m 2 {p}"))
        .collect();
    let script = format!(
        "s=$(date +%s.%N); systemctl restart {units}; \
         for i in $(seq 1 3000); do {checks} && break; sleep 0.01; done; {checks} || exit 1; \
         e=$(date +%s.%N); awk -v s=$s -v e=$e 'BEGIN {{print e - s}}'",
        checks = checks.join(" && ")
    );
    let out = side::exec(m, &script)?;
    let secs: f64 = out
        .trim()
        .parse()
        .with_context(|| format!("restart timing on {}: '{}'", m.name, out.trim()))?;
    table::sample(secs, "restart until healthy")
}

/// [`restart_until_healthy`] on every machine of a fleet at once: the slowest host's time.
fn restart_all_until_healthy(hosts: &[Machine], units: &str, probes: &[&str]) -> Result<f64> {
    let times: Vec<Result<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|m| s.spawn(move || restart_until_healthy_on(m, units, probes)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a restart panicked")))
            })
            .collect()
    });
    let mut slowest: f64 = 0.0;
    for t in times {
        slowest = slowest.max(t?);
    }
    Ok(slowest)
}
