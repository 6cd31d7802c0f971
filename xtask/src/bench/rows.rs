//! The rows of the benchmark's table (what each measures, its phase, unit, target and floor)
//! and the samples one run collects for them.

use anyhow::{Context, Result};

use super::side::{self, Done, Kind, DELAY_MS};
use super::table::{self, Floor, FloorParts, Key, Row, Target, Unit};
use crate::flags::{Bench, BenchPhase};

/// The samples of one bench run.
pub struct Measurements {
    pub rows: Vec<Row>,
    pub floors: Vec<FloorParts>,
    /// Lines printed under the table (what a phase did once, e.g. seeding the database).
    pub notes: Vec<String>,
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
        Key::Seal,
        Some(BenchPhase::Deploys),
        "the seal: hash the shipped files (here and there), check the virtualenv",
        Unit::Secs,
        Target::Max(0.5),
        Floor::None,
    ),
    (
        Key::SealFiles,
        Some(BenchPhase::Files),
        "same, 20,000 more files",
        Unit::Secs,
        Target::Max(2.0),
        Floor::None,
    ),
    (
        Key::Verify,
        Some(BenchPhase::Deploys),
        "verify: current, its virtualenv, the uv cache as root",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::VerifyFiles,
        Some(BenchPhase::Files),
        "same, 20,000 more files",
        Unit::Secs,
        Target::None,
        Floor::None,
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
        Key::DbDeployWithout,
        Some(BenchPhase::Database),
        "database: backend deploy, nothing to migrate",
        Unit::Secs,
        Target::None,
        Floor::BackendRestart,
    ),
    (
        Key::DbDeployWith,
        Some(BenchPhase::Database),
        "database: same with a migration (+ snapshot)",
        Unit::Secs,
        Target::None,
        Floor::BackendRestartPgDump,
    ),
    (
        Key::DbOverhead,
        Some(BenchPhase::Database),
        "database: overhead of the migration",
        Unit::Secs,
        Target::Relative {
            of: Key::DbSnapshot,
            factor: 1.0,
            plus: 0.5,
        },
        Floor::PgDump,
    ),
    (
        Key::DbSnapshot,
        Some(BenchPhase::Database),
        "database: snapshot (the job's step)",
        Unit::Secs,
        Target::None,
        Floor::PgDump,
    ),
    (
        Key::DbSnapshotSize,
        Some(BenchPhase::Database),
        "database: snapshot size (its record)",
        Unit::Bytes,
        Target::None,
        Floor::DatabaseSize,
    ),
    (
        Key::DbMigrate,
        Some(BenchPhase::Database),
        "database: migration (the job's step)",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::DbRollbackDown,
        Some(BenchPhase::Database),
        "database: rollback --migrate-down (+ snapshot)",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::DbDowngrade,
        Some(BenchPhase::Database),
        "database: downgrade (the job's step)",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::DbRestore,
        Some(BenchPhase::Database),
        "database: db restore (units stopped to started)",
        Unit::Secs,
        Target::None,
        Floor::None,
    ),
    (
        Key::DbLoad,
        Some(BenchPhase::Database),
        "database: restore's load (the job's step)",
        Unit::Secs,
        Target::None,
        Floor::PgDump,
    ),
    (
        Key::Exec,
        Some(BenchPhase::Exec),
        "exec -- true (one ssh, one round trip)",
        Unit::Secs,
        Target::FloorPlus(0.15),
        Floor::Look,
    ),
    (
        Key::Hooked,
        Some(BenchPhase::Hooks),
        "backend redeploy with every hook (each `true`) / without",
        Unit::Ratio,
        Target::None,
        Floor::None,
    ),
    (
        Key::Handshakes,
        None,
        "ssh handshakes per command",
        Unit::Count,
        Target::EverySample(1.0),
        Floor::Exactly(1),
    ),
];

impl Measurements {
    /// The rows of the selected phases, each wanting one sample per run and side (the
    /// checks alone have no baseline; handshakes want one per command that ran).
    pub fn new(b: &Bench) -> Measurements {
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
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, key: Key, kind: Kind, value: f64) -> Result<()> {
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
        Ok(())
    }

    /// The ssh handshakes of a command that ran on `hosts` hosts: one sample per host is
    /// wanted, whatever came back (a count that went missing leaves the row incomplete).
    pub fn push_handshakes(&mut self, kind: Kind, done: &Done, hosts: usize) -> Result<()> {
        let row = self
            .rows
            .iter_mut()
            .find(|r| r.key == Key::Handshakes)
            .context("no handshakes row in this run")?;
        match kind {
            Kind::Baseline => row.want_baseline += hosts,
            Kind::Xtask => row.want_xtask += hosts,
        }
        for &n in &done.handshakes {
            self.push(Key::Handshakes, kind, n)?;
        }
        Ok(())
    }

    pub fn render(&self, b: &Bench) -> String {
        let title = format!(
            "\ninnercontext deploy benchmark: {} runs; one app machine per side behind {DELAY_MS} ms each way ({} ms round trip); baseline = {}",
            b.runs,
            2 * DELAY_MS,
            side::BASELINE
        );
        let mut out = table::render(&title, &self.rows, &self.floors);
        out.push_str(&table::render_floor_parts(&self.floors));
        for note in &self.notes {
            out.push_str(note);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(phases: &[BenchPhase]) -> Bench {
        Bench {
            runs: 3,
            phases: phases.to_vec(),
            hosts: vec![1],
        }
    }

    #[test]
    fn a_run_has_the_rows_of_its_phases_and_the_handshakes() {
        let m = Measurements::new(&bench(&[BenchPhase::Deploys]));
        let keys: Vec<Key> = m.rows.iter().map(|r| r.key).collect();
        assert_eq!(
            keys,
            [
                Key::Incremental,
                Key::Redeploy,
                Key::Seal,
                Key::Verify,
                Key::Rollback,
                Key::Noop,
                Key::List,
                Key::Handshakes
            ]
        );
        let r = &m.rows[0];
        assert_eq!((r.want_xtask, r.want_baseline), (3, 3));
        // The checks alone have no baseline.
        let m = Measurements::new(&bench(&[BenchPhase::Checks]));
        let alone = m.rows.iter().find(|r| r.key == Key::ChecksAlone).unwrap();
        assert_eq!((alone.want_xtask, alone.want_baseline), (3, 0));
        // Every phase's rows, once each, in the table's order.
        let all = Measurements::new(&bench(&[
            BenchPhase::Deploys,
            BenchPhase::Load,
            BenchPhase::Checks,
            BenchPhase::Releases,
            BenchPhase::Files,
            BenchPhase::Crash,
            BenchPhase::Database,
            BenchPhase::Exec,
            BenchPhase::Hooks,
        ]));
        assert_eq!(all.rows.len(), ROWS.len());
    }

    #[test]
    fn samples_go_to_their_side_and_handshakes_want_what_ran() {
        let mut m = Measurements::new(&bench(&[BenchPhase::Deploys]));
        m.push(Key::Noop, Kind::Xtask, 0.4).unwrap();
        m.push(Key::Noop, Kind::Baseline, 1.5).unwrap();
        let noop = m.rows.iter().find(|r| r.key == Key::Noop).unwrap();
        assert_eq!(
            (noop.xtask.clone(), noop.baseline.clone()),
            (vec![0.4], vec![1.5])
        );
        let done = Done {
            secs: 1.0,
            handshakes: vec![1.0, 1.0],
        };
        m.push_handshakes(Kind::Xtask, &done, 2).unwrap();
        let h = m.rows.iter().find(|r| r.key == Key::Handshakes).unwrap();
        assert_eq!((h.want_xtask, h.want_baseline), (2, 0));
        // A command whose count went missing: wanted all the same, so the row is incomplete.
        let lost = Done {
            secs: 1.0,
            handshakes: vec![],
        };
        m.push_handshakes(Kind::Xtask, &lost, 1).unwrap();
        let h = m.rows.iter().find(|r| r.key == Key::Handshakes).unwrap();
        assert!(h.check().is_err(), "2 of 3 samples must not pass");
        let e = m.push(Key::ChecksAlone, Kind::Xtask, 1.0).unwrap_err();
        assert!(e.to_string().contains("no row ChecksAlone"), "{e}");
        assert!(
            m.push(Key::Noop, Kind::Xtask, f64::NAN).is_err(),
            "a sample is a number"
        );
    }

    #[test]
    fn the_title_names_the_link() {
        let m = Measurements::new(&bench(&[BenchPhase::Deploys]));
        let text = m.render(&bench(&[BenchPhase::Deploys]));
        assert!(
            text.contains(
                "3 runs; one app machine per side behind 25 ms each way (50 ms round trip)"
            ),
            "{text}"
        );
    }
}
