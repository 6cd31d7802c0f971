//! The side-by-side rounds: both sides' machines provisioned, then each phase's commands run
//! interleaved (baseline, xtask), timed, with the floors measured in the same round; and the
//! changes that make the "how it grows" rows (more releases, more files).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use time::OffsetDateTime;
use xshell::Shell;

use super::floor::{self, Restart};
use super::rows::Measurements;
use super::side::{Kind, Op, Side, DELAY_MS};
use super::table::{self, FloorParts, Key};
use super::{checks, crash, database, hooked, load, seal, side};
use crate::contract::{layout, Half, APP_USER, DEFAULT_ROOT};
use crate::demo::Environment;
use crate::deploy::release::{self, State};
use crate::flags::{Bench, BenchPhase, Role};
use crate::scratch::Scratch;
use crate::testhost::{self, Machine};
use crate::{interrupt, ui};

/// Releases added on the server for the "how it grows" rows.
const EXTRA_RELEASES: u32 = 50;
/// Files (and bytes per file) added to the backend for the "how it grows" rows: ~500 MB.
const EXTRA_FILES: u32 = 20_000;
const EXTRA_FILE_BYTES: usize = 25_000;

pub struct Bencher {
    baseline: Side,
    xtask: Side,
    /// The db machine both sides use (the database phase seeds and reads it).
    db: Machine,
    /// The baseline's backend tests' database, kept for the whole run.
    _postgres: crate::pg::Throwaway,
}

impl Bencher {
    pub fn provision(sh: &Shell, hosts: u32) -> Result<Bencher> {
        testhost::build(sh, false)?;
        let (db_name, b_name) = (side::db(), side::baseline_host());
        let db = ui::step(&format!("boot {db_name}"), || {
            testhost::up(sh, &db_name, Role::Db)
        })?;
        let x_name = side::xtask_hosts(hosts).remove(0);
        let (xm, bm) = ui::step(&format!("boot {x_name} and {b_name}"), || {
            std::thread::scope(|s| {
                let x = s.spawn(|| testhost::up(&Shell::new()?, &x_name, Role::App));
                let b = s.spawn(|| testhost::up(&Shell::new()?, &b_name, Role::App));
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
                scratch: Scratch::new(&side::named(&format!("bench-{}", kind.name())))?,
                test_database_url: Some(postgres.url()),
            })
        };
        let bench = Bencher {
            baseline: side(Kind::Baseline, bm)?,
            xtask: side(Kind::Xtask, xm)?,
            db,
            _postgres: postgres,
        };
        ui::step("setup-server on both app machines", || {
            side::setup_all(bench.sides())
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

    pub fn measure(&self, b: &Bench) -> Result<()> {
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
                checks::local_checks(dir)
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
                self.seal(m, Key::Seal, &tag)?;
                let secs = self.timed(m, &self.xtask, &Op::Verify, &tag)?;
                m.push(Key::Verify, Kind::Xtask, secs)?;
            }
            if b.wants(BenchPhase::Exec) {
                let secs = self.timed(m, &self.xtask, &Op::Exec, &tag)?;
                m.push(Key::Exec, Kind::Xtask, secs)?;
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
                        m.push_handshakes(side.kind, &done, side.hosts.len())?;
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
                ui::step(&format!("{tag}: local checks alone"), || {
                    checks::local_checks(&dir)
                })?;
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
                self.seal(m, Key::SealFiles, &tag)?;
                let secs = self.timed(m, &self.xtask, &Op::Verify, &tag)?;
                m.push(Key::VerifyFiles, Kind::Xtask, secs)?;
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
                m.push_handshakes(Kind::Xtask, &done, self.xtask.hosts.len())?;
                m.push(Key::CrashNamed, Kind::Xtask, secs)?;
            }
        }
        if b.wants(BenchPhase::Hooks) {
            for round in 1..=b.runs {
                interrupt::check()?;
                let what = format!("hooks {round}/{}: redeploy with and without", b.runs);
                let (ratio, done) = ui::step(&what, || hooked::measure(&self.xtask, round))?;
                for d in &done {
                    m.push_handshakes(Kind::Xtask, d, self.xtask.hosts.len())?;
                }
                m.push(Key::Hooked, Kind::Xtask, ratio)?;
            }
        }
        if b.wants(BenchPhase::Database) {
            self.database(b, m)?;
        }
        Ok(())
    }

    /// The database phase, last (see [`database`]): the seed, then per round its floors and
    /// each row's function; the overhead is the round's pair.
    fn database(&self, b: &Bench, m: &mut Measurements) -> Result<()> {
        let (products, prices) = (
            database::PRODUCTS,
            database::PRODUCTS * database::PRICES_PER_PRODUCT,
        );
        let what = format!("seed {products} products and {prices} price rows");
        let start = Instant::now();
        ui::step(&what, || database::seed(&self.db))?;
        let seeded = start.elapsed().as_secs_f64();
        m.notes.push(format!(
            "database: seeded {products} products and {prices} price rows in {seeded:.1} s (one INSERT ... SELECT generate_series per table through psql on {}, then VACUUM ANALYZE); database {:.1} MB",
            self.db.name,
            database::size(&self.db)? / 1e6
        ));
        let phase = database::Phase {
            side: &self.xtask,
            db: &self.db,
            taken: Default::default(),
        };
        for round in 1..=b.runs {
            interrupt::check()?;
            let tag = format!("database {round}/{}", b.runs);
            let parts = m
                .floors
                .get_mut(round as usize - 1)
                .context("no floor parts for this round")?;
            ui::step(
                &format!("{tag}: floors (plain pg_dump, database size)"),
                || database::floors(&phase, parts),
            )?;
            let mut samples = Vec::new();
            for (what, row) in database::ROUND {
                interrupt::check()?;
                let (got, done) = ui::step(&format!("{tag}: xtask {what}"), || row(&phase, round))?;
                m.push_handshakes(Kind::Xtask, &done, self.xtask.hosts.len())?;
                samples.extend(got);
            }
            if let Some(overhead) = database::overhead(&samples) {
                samples.push((Key::DbOverhead, overhead));
            }
            for (key, value) in samples {
                m.push(key, Kind::Xtask, value)?;
            }
        }
        Ok(())
    }

    /// What the seal costs a deploy of the xtask's current release (see [`seal`]), as row
    /// `key`; its parts of the last round go under the table.
    fn seal(&self, m: &mut Measurements, key: Key, tag: &str) -> Result<()> {
        let what = format!("{tag}: the seal of current (hashes, the virtualenv's check)");
        let cost = ui::step(&what, || seal::cost(&self.xtask))?;
        m.push(key, Kind::Xtask, table::sample(cost.total(), "the seal")?)?;
        m.notes
            .retain(|n| !n.starts_with(&format!("{}: ", key.short())));
        m.notes.push(format!("{}: {}", key.short(), cost.parts()));
        Ok(())
    }

    /// Run a measured operation; its seconds (its handshakes are recorded too, but verify's:
    /// it logs in through the admin login, never as the deploy user the row counts).
    fn timed(&self, m: &mut Measurements, side: &Side, op: &Op, tag: &str) -> Result<f64> {
        interrupt::check()?;
        let done = ui::step(
            &format!("{tag}: {} {}", side.kind.name(), op.label()),
            || side.run(op),
        )?;
        if *op != Op::Verify {
            m.push_handshakes(side.kind, &done, side.hosts.len())?;
        }
        table::sample(done.secs, "a timed command")
    }

    fn untimed(&self, m: &mut Measurements, side: &Side, op: &Op) -> Result<()> {
        interrupt::check()?;
        let done = side.run(op)?;
        m.push_handshakes(side.kind, &done, side.hosts.len())
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
        let handshake = floor::median_of(3, || floor::timed_ok(floor::ssh(side, &[], &["true"])))?;
        let command = floor::one_more_command(side)?;
        let restart_all = floor::restart_until_healthy(side, &Restart::of(None))?;
        let restart_backend =
            floor::restart_until_healthy(side, &Restart::of(Some(Half::Backend)))?;
        let start = Instant::now();
        floor::frontend_build(&side.scratch.dir)?;
        let build = start.elapsed().as_secs_f64();
        Ok(FloorParts {
            handshake,
            command,
            restart_all,
            restart_backend,
            build,
            ..FloorParts::default()
        })
    }

    /// 50 more releases on the side's server: hard-linked copies of `current`, named older
    /// than every real one, every second one marked failed where releases record a state.
    fn add_releases(&self, side: &Side) -> Result<()> {
        let base = time::OffsetDateTime::now_utc() - time::Duration::days(400);
        let names = older_names(side.kind, base, EXTRA_RELEASES);
        let count = side.exec(&add_releases_script(&names))?;
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
            fill(&mut state, &mut buf);
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
        checks::stop_checks_db(&self.xtask.scratch.dir);
    }
}

/// `n` release names a minute apart from `base` on, as each side names its releases (the
/// baseline: `date +%Y%m%d%H%M%S`).
fn older_names(kind: Kind, base: OffsetDateTime, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            let t = base + time::Duration::minutes(i64::from(i));
            match kind {
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
        .collect()
}

/// The script (run as root inside the machine) that adds releases `names` as hard-linked
/// copies of current, as the app user, every second one marked failed where releases record
/// a state; it prints how many releases there are then.
fn add_releases_script(names: &[String]) -> String {
    let (releases, current, state) = (layout::RELEASES, layout::CURRENT, layout::STATE_FILE);
    let failed = State::Failed.name();
    format!(
        "set -euo pipefail; cd {DEFAULT_ROOT}/{releases}; cur=$(basename \"$(readlink {DEFAULT_ROOT}/{current})\"); i=0; \
         for name in {names}; do \
           runuser -u {APP_USER} -- cp -al \"$cur\" \"$name\"; i=$((i + 1)); \
           if [ $((i % 2)) = 0 ] && [ -f \"$name/{state}\" ]; then \
             runuser -u {APP_USER} -- sh -c 'rm -f \"$1/{state}\" && echo {failed} > \"$1/{state}\"' sh \"$name\"; \
           fi; \
         done; ls -1 | wc -l",
        names = names.join(" ")
    )
}

/// Fill `buf` from the xorshift64 generator `state`: incompressible bytes, the same on every
/// run.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_releases_are_named_as_each_side_names_them() {
        let base = time::macros::datetime!(2025-10-24 09:05:00 UTC);
        let x = older_names(Kind::Xtask, base, 3);
        assert_eq!(
            x,
            ["20251024T090500Z", "20251024T090600Z", "20251024T090700Z"]
        );
        assert!(x.iter().all(|n| release::is_name(n)));
        assert_eq!(older_names(Kind::Baseline, base, 1), ["20251024090500"]);
    }

    #[test]
    fn the_add_releases_script_works_in_the_layout() {
        let script = add_releases_script(&["20251024T090500Z".to_string()]);
        assert!(script.starts_with("set -euo pipefail; cd /opt/innercontext/releases; cur=$(basename \"$(readlink /opt/innercontext/current)\")"), "{script}");
        assert!(
            script.contains("runuser -u innercontext -- cp -al"),
            "{script}"
        );
        assert!(script.contains("echo failed > \"$1/.state\""), "{script}");
        let syntax = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(syntax.success(), "{script}");
    }

    #[test]
    fn the_added_files_do_not_compress() {
        let (mut state, mut a, mut b) = (0x9e37_79b9_7f4a_7c15, vec![0u8; 1000], vec![0u8; 1000]);
        fill(&mut state, &mut a);
        fill(&mut state, &mut b);
        assert_ne!(a, b, "each file its own bytes");
        let mut again = 0x9e37_79b9_7f4a_7c15;
        let mut c = vec![0u8; 1000];
        fill(&mut again, &mut c);
        assert_eq!(a, c, "the same bytes on every run");
        let distinct: std::collections::BTreeSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200, "{} distinct bytes", distinct.len());
    }
}
