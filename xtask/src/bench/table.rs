//! The benchmark's figures: rows of samples (baseline and xtask), their targets and floors, and
//! the printed table. Pure: everything here is unit-tested without a machine.

use anyhow::{bail, Result};

/// How a row's figures read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Secs,
    Count,
    /// A size, shown in MB (10^6 bytes).
    Bytes,
    Ratio,
}

/// What the xtask's figures must meet (baseline figures are never judged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    None,
    /// Median at most this.
    Max(f64),
    /// Median at most this, and at most `ratio` times the baseline's median.
    MaxAndRatio(f64, f64),
    /// Median at most `factor` times row `of`'s xtask median, plus `plus`.
    Relative {
        of: Key,
        factor: f64,
        plus: f64,
    },
    /// Every sample at most this (failed requests: 0).
    EverySampleMax(f64),
    /// Every sample exactly this (handshakes per command: 1; a command that counted none is
    /// not one that did better).
    EverySample(f64),
    /// Median at most the row's floor (its median over the rounds) plus this.
    FloorPlus(f64),
}

/// The measurements one round's floors are made of.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FloorParts {
    /// A fresh `ssh … true` to the app machine (connection, key exchange, login, one command).
    pub handshake: f64,
    /// One more command over the open connection (ssh's channel open, exec and exit: about
    /// two round trips).
    pub command: f64,
    /// `systemctl restart` of all three units until both probes answer, timed on the server.
    pub restart_all: f64,
    /// `systemctl restart` of the API and the worker until the API answers, on the server.
    pub restart_backend: f64,
    /// The frontend build on the deploying machine (`pnpm install` check and `vite build`).
    pub build: f64,
    /// The local checks alone on this round's tree (None when the checks phase did not run).
    pub checks: Option<f64>,
    /// A plain `pg_dump --format=custom` of the app's database into a file, timed on the app
    /// machine (the database phase; None when it did not run).
    pub pg_dump: Option<f64>,
    /// The app's database's size in bytes (`pg_database_size`; the database phase).
    pub db_bytes: Option<f64>,
}

/// What physics allows for a row: composed from [`FloorParts`] (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    None,
    /// A changed tree: the frontend build (the handshake happens meanwhile), one command that
    /// sends the change and activates it, and the restart of every unit until healthy.
    Incremental,
    /// Nothing to send: a handshake, one command, the backend units' restart until healthy.
    BackendRestart,
    /// The checks (the upload happens meanwhile), one command, the restart of every unit.
    Checks,
    /// A handshake, one command, the restart of every unit until healthy.
    Rollback,
    /// A handshake that runs one command (a read-only look).
    Look,
    /// An exact figure: no failed request, one handshake.
    Exactly(u32),
    /// A plain `pg_dump` of the database (what a snapshot is at least).
    PgDump,
    /// A backend deploy that snapshots: the backend's floor plus a plain `pg_dump`.
    BackendRestartPgDump,
    /// The database's own size (`pg_database_size`: a dump of it is compressed, and smaller).
    DatabaseSize,
}

impl Floor {
    pub fn value(self, p: &FloorParts) -> Option<f64> {
        match self {
            Floor::None => None,
            Floor::Incremental => Some(p.build.max(p.handshake) + p.command + p.restart_all),
            Floor::BackendRestart => Some(p.handshake + p.command + p.restart_backend),
            Floor::Checks => p
                .checks
                .map(|c| c.max(p.handshake) + p.command + p.restart_all),
            Floor::Rollback => Some(p.handshake + p.command + p.restart_all),
            Floor::Look => Some(p.handshake),
            Floor::Exactly(n) => Some(f64::from(n)),
            Floor::PgDump => p.pg_dump,
            Floor::BackendRestartPgDump => p
                .pg_dump
                .map(|d| p.handshake + p.command + p.restart_backend + d),
            Floor::DatabaseSize => p.db_bytes,
        }
    }
}

/// Rows are addressed by key, so measuring code and targets name the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Incremental,
    IncrementalFiles,
    IncrementalReleases,
    Redeploy,
    Seal,
    SealFiles,
    Verify,
    VerifyFiles,
    ChecksAlone,
    ChecksFirst,
    ChecksAgain,
    Rollback,
    Noop,
    List,
    ListReleases,
    RequestsDeploy,
    FailedDeploy,
    RequestsRollback,
    FailedRollback,
    CrashNamed,
    DbDeployWithout,
    DbDeployWith,
    DbOverhead,
    DbSnapshot,
    DbSnapshotSize,
    DbMigrate,
    DbRollbackDown,
    DbDowngrade,
    DbRestore,
    DbLoad,
    /// `exec -- true`: one ssh, one round trip.
    Exec,
    /// A redeploy with every hook over one without (a ratio).
    Hooked,
    Handshakes,
}

impl Key {
    /// A row only the xtask has (the baseline does nothing of the kind).
    pub fn xtask_only(self) -> bool {
        matches!(
            self,
            Key::ChecksAlone
                | Key::Seal
                | Key::SealFiles
                | Key::Verify
                | Key::VerifyFiles
                | Key::CrashNamed
                | Key::DbDeployWithout
                | Key::DbDeployWith
                | Key::DbOverhead
                | Key::DbSnapshot
                | Key::DbSnapshotSize
                | Key::DbMigrate
                | Key::DbRollbackDown
                | Key::DbDowngrade
                | Key::DbRestore
                | Key::DbLoad
                | Key::Exec
                | Key::Hooked
        )
    }

    /// How a target refers to this row.
    pub fn short(self) -> &'static str {
        match self {
            Key::Incremental => "incremental",
            Key::IncrementalFiles => "incremental, more files",
            Key::IncrementalReleases => "incremental, more releases",
            Key::Redeploy => "redeploy",
            Key::Seal => "seal",
            Key::SealFiles => "seal, more files",
            Key::Verify => "verify",
            Key::VerifyFiles => "verify, more files",
            Key::ChecksAlone => "checks alone",
            Key::ChecksFirst => "with checks",
            Key::ChecksAgain => "with checks again",
            Key::Rollback => "rollback",
            Key::Noop => "no-op",
            Key::List => "list",
            Key::ListReleases => "list, more releases",
            Key::RequestsDeploy => "requests, deploy",
            Key::FailedDeploy => "failed, deploy",
            Key::RequestsRollback => "requests, rollback",
            Key::FailedRollback => "failed, rollback",
            Key::CrashNamed => "crash loop named",
            Key::DbDeployWithout => "without a migration",
            Key::DbDeployWith => "with a migration",
            Key::DbOverhead => "migration overhead",
            Key::DbSnapshot => "snapshot's own",
            Key::DbSnapshotSize => "snapshot size",
            Key::DbMigrate => "migration",
            Key::DbRollbackDown => "rollback --migrate-down",
            Key::DbDowngrade => "downgrade",
            Key::DbRestore => "db restore",
            Key::DbLoad => "load",
            Key::Exec => "exec",
            Key::Hooked => "hooks",
            Key::Handshakes => "handshakes",
        }
    }
}

/// One row: the samples of both sides, and what they are judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: Key,
    pub label: &'static str,
    pub unit: Unit,
    pub target: Target,
    pub floor: Floor,
    /// Samples each side must have (0 for a side that is not measured).
    pub want_baseline: usize,
    pub want_xtask: usize,
    pub baseline: Vec<f64>,
    pub xtask: Vec<f64>,
}

impl Row {
    pub fn new(key: Key, label: &'static str, unit: Unit, target: Target, floor: Floor) -> Row {
        Row {
            key,
            label,
            unit,
            target,
            floor,
            want_baseline: 0,
            want_xtask: 0,
            baseline: Vec::new(),
            xtask: Vec::new(),
        }
    }

    /// The samples are complete and every one is a number.
    pub fn check(&self) -> Result<()> {
        for (side, got, want) in [
            ("baseline", &self.baseline, self.want_baseline),
            ("xtask", &self.xtask, self.want_xtask),
        ] {
            if let Some(bad) = got.iter().find(|v| !v.is_finite()) {
                bail!("{}: a {side} run produced no figure ({bad})", self.label);
            }
            if got.len() != want {
                bail!(
                    "{}: {} of {want} {side} runs produced a figure",
                    self.label,
                    got.len()
                );
            }
        }
        Ok(())
    }
}

/// Every sample must be a finite number: a run without a figure is an error, never a gap.
pub fn sample(value: f64, what: &str) -> Result<f64> {
    if !value.is_finite() {
        bail!("{what} produced no figure ({value})");
    }
    Ok(value)
}

/// The median of finite samples; None for none.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The smallest and the largest sample; None for none.
pub fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// xtask median / baseline median.
pub fn ratio(xtask: &[f64], baseline: &[f64]) -> Option<f64> {
    let (x, b) = (median(xtask)?, median(baseline)?);
    (b > 0.0).then_some(x / b)
}

pub fn num(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Secs => format!("{v:.2}"),
        Unit::Count => format!("{v:.0}"),
        Unit::Bytes => format!("{:.1}", v / 1e6),
        Unit::Ratio => format!("{v:.2}"),
    }
}

pub fn with_unit(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Secs => format!("{v:.2} s"),
        Unit::Count => format!("{v:.0}"),
        Unit::Bytes => format!("{:.1} MB", v / 1e6),
        Unit::Ratio => format!("{v:.2}x"),
    }
}

/// Whether a target is met, and how it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub text: String,
    pub met: Option<bool>,
}

/// `floor`: the row's floor, its median over the rounds (None: none measured).
pub fn judge(row: &Row, rows: &[Row], floor: Option<f64>) -> Verdict {
    let m = median(&row.xtask);
    let unit = row.unit;
    let (text, met) = match row.target {
        Target::None => (String::new(), None),
        Target::Max(max) => (format!("<= {}", with_unit(max, unit)), m.map(|m| m <= max)),
        Target::MaxAndRatio(max, r) => {
            let ratio = ratio(&row.xtask, &row.baseline);
            (
                format!("<= {}, <= {r:.2}x", with_unit(max, unit)),
                m.zip(ratio).map(|(m, q)| m <= max && q <= r),
            )
        }
        Target::Relative { of, factor, plus } => {
            let base = rows
                .iter()
                .find(|r| r.key == of)
                .and_then(|o| median(&o.xtask));
            let name = of.short();
            let rule = match (factor == 1.0, plus == 0.0) {
                (true, false) => format!("<= [{name}] + {}", with_unit(plus, unit)),
                (false, true) => format!("<= {factor}x [{name}]"),
                _ => format!("<= {factor}x [{name}] + {}", with_unit(plus, unit)),
            };
            match base {
                Some(b) => {
                    let limit = b * factor + plus;
                    (
                        format!("{rule} = {}", with_unit(limit, unit)),
                        m.map(|m| m <= limit),
                    )
                }
                None => (rule, None),
            }
        }
        Target::EverySampleMax(max) => (
            if max == 0.0 {
                "0".to_string()
            } else {
                format!("<= {} each", with_unit(max, unit))
            },
            min_max(&row.xtask).map(|(_, hi)| hi <= max),
        ),
        Target::EverySample(want) => (
            format!("{} each", with_unit(want, unit)),
            min_max(&row.xtask).map(|(lo, hi)| lo == want && hi == want),
        ),
        Target::FloorPlus(plus) => match floor {
            Some(f) => (
                format!(
                    "<= floor + {} = {}",
                    with_unit(plus, unit),
                    with_unit(f + plus, unit)
                ),
                m.map(|m| m <= f + plus),
            ),
            None => (format!("<= floor + {}", with_unit(plus, unit)), None),
        },
    };
    Verdict { text, met }
}

/// The table: one line per row, then what failed to measure.
pub fn render(title: &str, rows: &[Row], floors: &[FloorParts]) -> String {
    let mut out = String::new();
    out.push_str(title);
    out.push('\n');
    let header = [
        "scenario",
        "baseline",
        "xtask median (min/max)",
        "ratio",
        "target",
        "",
        "floor",
        "samples",
    ];
    let mut lines: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for row in rows {
        let b = median(&row.baseline).map_or("-".to_string(), |v| with_unit(v, row.unit));
        let x = match (median(&row.xtask), min_max(&row.xtask)) {
            (Some(m), Some((lo, hi))) => format!(
                "{} ({}/{})",
                with_unit(m, row.unit),
                num(lo, row.unit),
                num(hi, row.unit)
            ),
            _ => "-".to_string(),
        };
        let q = ratio(&row.xtask, &row.baseline).map_or("-".to_string(), |q| format!("{q:.2}"));
        let per_round: Vec<f64> = floors.iter().filter_map(|p| row.floor.value(p)).collect();
        let verdict = judge(row, rows, median(&per_round));
        let met = match verdict.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None if row.target == Target::None => "",
            None => "n/a",
        };
        let floor = median(&per_round).map_or("-".to_string(), |v| with_unit(v, row.unit));
        let samples = match (row.want_baseline, row.want_xtask) {
            (0, _) => format!("{}", row.xtask.len()),
            _ => format!("{}/{}", row.baseline.len(), row.xtask.len()),
        };
        lines.push([
            row.label.to_string(),
            b,
            x,
            q,
            verdict.text,
            met.to_string(),
            floor,
            samples,
        ]);
    }
    out.push_str(&align(&lines, &[0, 4, 5]));
    out
}

/// Lines of cells in columns, two spaces apart: the columns in `text` left-aligned, the
/// others (figures) right-aligned; trailing blanks trimmed.
pub fn align<L: AsRef<[String]>>(lines: &[L], text: &[usize]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for l in lines {
        for (i, cell) in l.as_ref().iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, cell) in l.as_ref().iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if text.contains(&i) {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The floor's parts (medians over the rounds), printed under the table (the database's only
/// when its phase ran).
pub fn render_floor_parts(floors: &[FloorParts]) -> String {
    let m = |f: fn(&FloorParts) -> Option<f64>| {
        let v: Vec<f64> = floors.iter().filter_map(f).collect();
        median(&v).map_or("-".to_string(), |v| format!("{v:.2} s"))
    };
    let dumps: Vec<f64> = floors.iter().filter_map(|p| p.pg_dump).collect();
    let sizes: Vec<f64> = floors.iter().filter_map(|p| p.db_bytes).collect();
    let database = match (median(&dumps), median(&sizes)) {
        (Some(d), Some(b)) => format!(
            ", plain pg_dump {d:.2} s of a database of {}",
            with_unit(b, Unit::Bytes)
        ),
        _ => String::new(),
    };
    format!(
        "floor parts (medians of {} rounds): ssh handshake with one command {}, one more command {}, restart of all units until healthy {}, of the backend units {}, frontend build {}, local checks {}{database}\n",
        floors.len(),
        m(|p| Some(p.handshake)),
        m(|p| Some(p.command)),
        m(|p| Some(p.restart_all)),
        m(|p| Some(p.restart_backend)),
        m(|p| Some(p.build)),
        m(|p| p.checks),
    )
}

#[cfg(test)]
mod tests;
