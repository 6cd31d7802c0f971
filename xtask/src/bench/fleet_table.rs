//! The hosts phase's figures: per fleet size, the deploy and the rollback (medians, min/max,
//! ratio to one host), ssh handshakes per host and command, failed requests through the load
//! balancer and the slowest request it logged; then the targets of issue 15, judged. Pure:
//! unit-tested without a machine.

use anyhow::{bail, Result};

use super::table::{align, median, min_max, num, with_unit, Unit};

/// A fleet's deploy may take at most this many times one host's (issue 15).
pub const SCALING: f64 = 1.3;

/// The samples of one fleet size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetRow {
    pub hosts: u32,
    /// Samples each per-run list must have (one per run).
    pub want: usize,
    /// `deploy all --skip-local-checks` (rolling), seconds.
    pub deploy: Vec<f64>,
    /// `deploy rollback`, seconds.
    pub rollback: Vec<f64>,
    /// The same two with `--parallel`: every host switches at once.
    pub deploy_parallel: Vec<f64>,
    pub rollback_parallel: Vec<f64>,
    /// ssh logins of the deploy user, one sample per host and command (every command that
    /// ran, timed or not).
    pub handshakes: Vec<f64>,
    /// wrk through the balancer during a deploy and a rollback: requests, failed ones.
    pub requests_deploy: Vec<f64>,
    pub failed_deploy: Vec<f64>,
    pub requests_rollback: Vec<f64>,
    pub failed_rollback: Vec<f64>,
    /// The slowest request the balancer logged in each load window, seconds.
    pub slowest: Vec<f64>,
    /// Every unit of every host restarted at once until healthy (timed on the servers), the
    /// slowest host, seconds: what switching them all at once costs at least on this machine.
    pub restart: Vec<f64>,
}

impl FleetRow {
    pub fn new(hosts: u32, want: usize) -> FleetRow {
        FleetRow {
            hosts,
            want,
            ..FleetRow::default()
        }
    }

    fn per_run(&self) -> [(&'static str, &Vec<f64>); 9] {
        [
            ("deploy", &self.deploy),
            ("rollback", &self.rollback),
            ("deploy --parallel", &self.deploy_parallel),
            ("rollback --parallel", &self.rollback_parallel),
            ("requests during a deploy", &self.requests_deploy),
            ("failed requests during a deploy", &self.failed_deploy),
            ("requests during a rollback", &self.requests_rollback),
            ("failed requests during a rollback", &self.failed_rollback),
            ("restart until healthy", &self.restart),
        ]
    }

    /// Every figure is complete and a number; a fleet whose load saw no request is an error.
    pub fn check(&self) -> Result<()> {
        let all = self
            .per_run()
            .into_iter()
            .chain([("handshakes", &self.handshakes), ("slowest", &self.slowest)]);
        for (what, v) in all {
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                bail!(
                    "{} hosts, {what}: a run produced no figure ({bad})",
                    self.hosts
                );
            }
        }
        for (what, v) in self.per_run() {
            if v.len() != self.want {
                bail!(
                    "{} hosts, {what}: {} of {} runs produced a figure",
                    self.hosts,
                    v.len(),
                    self.want
                );
            }
        }
        if self.handshakes.is_empty() {
            bail!(
                "{} hosts: no command counted its ssh handshakes",
                self.hosts
            );
        }
        Ok(())
    }
}

/// Picks one list of samples out of a row.
pub type Figure = fn(&FleetRow) -> &Vec<f64>;

/// A row's median of `f` over one host's.
pub fn ratio(rows: &[FleetRow], row: &FleetRow, f: Figure) -> Option<f64> {
    let one = rows.iter().find(|r| r.hosts == 1)?;
    let (x, b) = (median(f(row))?, median(f(one))?);
    (b > 0.0).then_some(x / b)
}

/// One target, judged: what it asks, what was measured, and whether it is met (None: it
/// could not be judged).
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub rule: String,
    pub got: String,
    pub met: Option<bool>,
}

/// Issue 15's targets: each fleet's deploy within [`SCALING`] times one host's, rolling (the
/// default) and `--parallel`; one ssh handshake per host for every command; no failed request
/// through the balancer.
pub fn targets(rows: &[FleetRow]) -> Vec<Judged> {
    let mut out = Vec::new();
    let modes: [(&str, Figure); 2] = [
        ("deploy all", |r| &r.deploy),
        ("deploy all --parallel", |r| &r.deploy_parallel),
    ];
    for (what, f) in modes {
        let one = rows
            .iter()
            .find(|r| r.hosts == 1)
            .and_then(|r| median(f(r)));
        for row in rows.iter().filter(|r| r.hosts > 1) {
            let q = ratio(rows, row, f);
            out.push(Judged {
                rule: format!(
                    "{} hosts' {what} <= {SCALING}x one host's{}",
                    row.hosts,
                    one.map_or(String::new(), |o| format!(
                        " = {}",
                        with_unit(o * SCALING, Unit::Secs)
                    ))
                ),
                got: match (median(f(row)), q) {
                    (Some(m), Some(q)) => format!("{} = {q:.2}x", with_unit(m, Unit::Secs)),
                    _ => "-".to_string(),
                },
                met: q.map(|q| q <= SCALING),
            });
        }
    }
    let handshakes: Vec<f64> = rows.iter().flat_map(|r| r.handshakes.clone()).collect();
    out.push(Judged {
        rule: "1 ssh handshake per host and command".to_string(),
        got: match min_max(&handshakes) {
            Some((lo, hi)) if lo == hi => format!("{lo:.0} in all {}", handshakes.len()),
            Some((lo, hi)) => format!("{lo:.0} to {hi:.0} ({} samples)", handshakes.len()),
            None => "-".to_string(),
        },
        met: min_max(&handshakes).map(|(lo, hi)| lo == 1.0 && hi == 1.0),
    });
    let failed: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.failed_deploy.iter().chain(&r.failed_rollback).copied())
        .collect();
    out.push(Judged {
        rule: "0 failed requests through the balancer".to_string(),
        got: if failed.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} in all", failed.iter().sum::<f64>())
        },
        met: min_max(&failed).map(|(_, hi)| hi == 0.0),
    });
    out
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

fn median_min_max(v: &[f64]) -> String {
    match (median(v), min_max(v)) {
        (Some(m), Some((lo, hi))) => format!(
            "{} ({}/{})",
            with_unit(m, Unit::Secs),
            num(lo, Unit::Secs),
            num(hi, Unit::Secs)
        ),
        _ => "-".to_string(),
    }
}

/// `F of R`: failed requests of all runs, of all requests.
fn failed_of(failed: &[f64], requests: &[f64]) -> String {
    if failed.is_empty() {
        return "-".to_string();
    }
    format!(
        "{:.0} of {:.0}",
        failed.iter().sum::<f64>(),
        requests.iter().sum::<f64>()
    )
}

/// The table, then the targets, then what rolling and parallel activation cost at least
/// (from the rows' restart figures).
pub fn render(title: &str, rows: &[FleetRow]) -> String {
    let mut lines: Vec<Vec<String>> = vec![[
        "hosts",
        "deploy all, rolling (min/max)",
        "x 1 host",
        "rollback (min/max)",
        "x 1 host",
        "deploy --parallel",
        "x 1 host",
        "rollback --parallel",
        "x 1 host",
        "handshakes/host",
        "failed during deploy",
        "failed during rollback",
        "slowest request",
        "runs",
    ]
    .map(str::to_string)
    .to_vec()];
    for row in rows {
        let q = |f: Figure| ratio(rows, row, f).map_or("-".to_string(), |q| format!("{q:.2}"));
        let handshakes = match (median(&row.handshakes), min_max(&row.handshakes)) {
            (Some(m), Some((lo, hi))) => format!("{m:.0} ({lo:.0}/{hi:.0})"),
            _ => "-".to_string(),
        };
        let runs = [
            &row.deploy,
            &row.rollback,
            &row.deploy_parallel,
            &row.rollback_parallel,
            &row.failed_deploy,
            &row.failed_rollback,
        ]
        .iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0);
        lines.push(vec![
            row.hosts.to_string(),
            median_min_max(&row.deploy),
            q(|r| &r.deploy),
            median_min_max(&row.rollback),
            q(|r| &r.rollback),
            median_min_max(&row.deploy_parallel),
            q(|r| &r.deploy_parallel),
            median_min_max(&row.rollback_parallel),
            q(|r| &r.rollback_parallel),
            handshakes,
            failed_of(&row.failed_deploy, &row.requests_deploy),
            failed_of(&row.failed_rollback, &row.requests_rollback),
            min_max(&row.slowest).map_or("-".to_string(), |(_, hi)| with_unit(hi, Unit::Secs)),
            format!("{runs}/{}", row.want),
        ]);
    }
    let mut out = format!("{title}\n");
    out.push_str(&align(&lines, &[]));
    out.push_str("targets (issue 15):\n");
    let judged: Vec<Vec<String>> = targets(rows)
        .into_iter()
        .map(|j| vec![format!("  {}", j.rule), j.got, met_text(j.met).to_string()])
        .collect();
    out.push_str(&align(&judged, &[0, 2]));
    out.push_str(&bounds(rows));
    out
}

/// What activation costs at least, from the restart figures: rolling switches one host at a
/// time, so N hosts need one host's deploy plus N - 1 restarts until healthy; `--parallel`
/// restarts every host at once, so N hosts need one host's parallel deploy plus what
/// restarting them all at once takes more than restarting one (here, where the hosts share
/// this machine's cores).
fn bounds(rows: &[FleetRow]) -> String {
    let Some(one) = rows.iter().find(|r| r.hosts == 1) else {
        return String::new();
    };
    let further: Vec<&FleetRow> = rows.iter().filter(|r| r.hosts > 1).collect();
    let mut out = String::new();
    if further.is_empty() {
        return out;
    }
    if let (Some(deploy), Some(restart)) = (median(&one.deploy), median(&one.restart)) {
        let each: Vec<String> = further
            .iter()
            .map(|r| {
                let at_least = deploy + f64::from(r.hosts - 1) * restart;
                format!(
                    "{} hosts >= {} ({:.2}x)",
                    r.hosts,
                    with_unit(at_least, Unit::Secs),
                    at_least / deploy
                )
            })
            .collect();
        out.push_str(&format!(
            "rolling switches one host at a time, each restarted until healthy ({} on one host): at least one host's {} plus that per further host: {}\n",
            with_unit(restart, Unit::Secs),
            with_unit(deploy, Unit::Secs),
            each.join(", ")
        ));
    }
    if let (Some(deploy), Some(restart)) = (median(&one.deploy_parallel), median(&one.restart)) {
        let each: Vec<String> = further
            .iter()
            .filter_map(|r| {
                let all = median(&r.restart)?;
                let at_least = deploy + (all - restart).max(0.0);
                Some(format!(
                    "{} hosts {} at once, so >= {} ({:.2}x)",
                    r.hosts,
                    with_unit(all, Unit::Secs),
                    with_unit(at_least, Unit::Secs),
                    at_least / deploy
                ))
            })
            .collect();
        if !each.is_empty() {
            out.push_str(&format!(
                "--parallel restarts every host at once; here they share this machine's cores: one host {}, {}\n",
                with_unit(restart, Unit::Secs),
                each.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hosts: u32, deploy: &[f64], rollback: &[f64]) -> FleetRow {
        let n = deploy.len();
        FleetRow {
            hosts,
            want: n,
            deploy: deploy.to_vec(),
            rollback: rollback.to_vec(),
            deploy_parallel: deploy.iter().map(|d| d * 0.9).collect(),
            rollback_parallel: rollback.iter().map(|d| d * 0.8).collect(),
            handshakes: vec![1.0; n * 3 * hosts as usize],
            requests_deploy: vec![1000.0; n],
            failed_deploy: vec![0.0; n],
            requests_rollback: vec![500.0; n],
            failed_rollback: vec![0.0; n],
            slowest: vec![0.2; 2 * n],
            restart: vec![0.9 + 0.3 * f64::from(hosts - 1); n],
        }
    }

    fn fleet() -> Vec<FleetRow> {
        vec![
            row(1, &[5.0, 5.2, 4.8], &[2.7, 2.6, 2.8]),
            row(2, &[6.0, 6.4, 6.2], &[3.5, 3.6, 3.4]),
            row(4, &[7.0, 6.6, 6.4], &[5.0, 5.5, 5.2]),
        ]
    }

    #[test]
    fn ratios_are_to_one_host() {
        let rows = fleet();
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(ratio(&rows, &rows[0], |r| &r.deploy), 1.0));
        assert!(close(ratio(&rows, &rows[1], |r| &r.deploy), 1.24));
        assert!(close(ratio(&rows, &rows[2], |r| &r.rollback), 5.2 / 2.7));
        // Without a one-host row there is nothing to compare with.
        assert_eq!(ratio(&rows[1..], &rows[1], |r| &r.deploy), None);
    }

    #[test]
    fn the_scaling_target_is_judged_for_every_fleet() {
        let mut rows = fleet();
        // With --parallel, 4 hosts: 5.4 / 4.5 (one host's 5.0 x 0.9) = 1.2.
        rows[2].deploy_parallel = vec![5.0, 5.4, 5.6];
        let t = targets(&rows);
        assert_eq!(t.len(), 6, "{t:?}");
        assert_eq!(t[0].rule, "2 hosts' deploy all <= 1.3x one host's = 6.50 s");
        assert_eq!(
            (t[0].got.as_str(), t[0].met),
            ("6.20 s = 1.24x", Some(true))
        );
        // 4 hosts: 6.6 / 5.0 = 1.32 > 1.3.
        assert_eq!(
            (t[1].got.as_str(), t[1].met),
            ("6.60 s = 1.32x", Some(false))
        );
        // The same fleets switching at once, judged on their own figures.
        assert_eq!(
            t[3].rule,
            "4 hosts' deploy all --parallel <= 1.3x one host's = 5.85 s"
        );
        assert_eq!(
            (t[3].got.as_str(), t[3].met),
            ("5.40 s = 1.20x", Some(true))
        );
        assert_eq!(t[4].met, Some(true), "{:?}", t[4]);
        // 3 runs x 3 commands x (1 + 2 + 4) hosts.
        assert_eq!(t[4].got, "1 in all 63");
        assert_eq!((t[5].got.as_str(), t[5].met), ("0 in all", Some(true)));
        // Exactly at the limit is met.
        rows[2].deploy = vec![6.5, 6.5, 6.5];
        assert_eq!(targets(&rows)[1].met, Some(true));
        // Two handshakes on one host for one command misses; so does none (a host skipped).
        rows[2].handshakes[5] = 2.0;
        assert_eq!(targets(&rows)[4].met, Some(false));
        assert_eq!(targets(&rows)[4].got, "1 to 2 (63 samples)");
        rows[2].handshakes[5] = 0.0;
        assert_eq!(targets(&rows)[4].met, Some(false));
        // One failed request in one rollback misses.
        rows[1].failed_rollback[2] = 1.0;
        assert_eq!(targets(&rows)[5].met, Some(false));
        assert_eq!(targets(&rows)[5].got, "1 in all");
        // Without one host, the scaling cannot be judged.
        let t = targets(&fleet()[1..]);
        assert_eq!((t[0].met, t[0].got.as_str()), (None, "-"));
        assert_eq!((t[2].met, t[2].got.as_str()), (None, "-"));
    }

    #[test]
    fn a_fleet_row_must_be_complete() {
        let mut r = row(2, &[6.0, 6.4], &[3.5, 3.6]);
        assert!(r.check().is_ok());
        r.rollback.pop();
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("2 hosts, rollback: 1 of 2 runs"), "{e}");
        let mut r = row(2, &[6.0, 6.4], &[3.5, 3.6]);
        r.slowest[0] = f64::NAN;
        assert!(r.check().unwrap_err().to_string().contains("slowest"));
        let mut r = row(2, &[6.0, 6.4], &[3.5, 3.6]);
        r.handshakes.clear();
        assert!(r.check().unwrap_err().to_string().contains("handshakes"));
    }

    #[test]
    fn the_table_shows_every_column_the_targets_and_rolling_cost() {
        let mut rows = fleet();
        rows[2].slowest[3] = 1.75;
        let t = render("fleets", &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "fleets");
        for col in [
            "hosts",
            "deploy all, rolling (min/max)",
            "x 1 host",
            "rollback (min/max)",
            "deploy --parallel",
            "rollback --parallel",
            "handshakes/host",
            "failed during deploy",
            "failed during rollback",
            "slowest request",
            "runs",
        ] {
            assert!(lines[1].contains(col), "{}", lines[1]);
        }
        assert!(lines[2].trim_start().starts_with("1 "), "{t}");
        for cell in [
            "5.00 s (4.80/5.20)",
            "1.00",
            "2.70 s (2.60/2.80)",
            "1 (1/1)",
        ] {
            assert!(lines[2].contains(cell), "no {cell} in {}", lines[2]);
        }
        for cell in [
            "6.60 s (6.40/7.00)",
            "1.32",
            "1.93",
            "5.94 s (5.76/6.30)",
            "0 of 3000",
            "0 of 1500",
            "1.75 s",
            "3/3",
        ] {
            assert!(lines[4].contains(cell), "no {cell} in {}", lines[4]);
        }
        // Figures are right-aligned: the runs column ends at the same place on every line.
        let end = |l: &str| l.trim_end().len();
        assert_eq!(end(lines[1]), end(lines[2]));
        assert_eq!(end(lines[2]), end(lines[4]));
        assert_eq!(lines[5], "targets (issue 15):");
        assert!(lines[6].contains("2 hosts' deploy all <= 1.3x") && lines[6].ends_with("met"));
        assert!(
            lines[7].contains("4 hosts'") && lines[7].ends_with("MISSED"),
            "{t}"
        );
        assert!(lines[8].contains("2 hosts' deploy all --parallel") && lines[8].ends_with("met"));
        assert!(lines[9].contains("4 hosts' deploy all --parallel"), "{t}");
        assert!(lines[10].contains("1 ssh handshake per host") && lines[10].ends_with("met"));
        assert!(lines[11].contains("0 failed requests") && lines[11].ends_with("met"));
        // 1 host 5.0 s, 0.9 s per further host: 2 hosts >= 5.9 s, 4 hosts >= 7.7 s.
        assert!(
            lines[12].contains("2 hosts >= 5.90 s (1.18x), 4 hosts >= 7.70 s (1.54x)"),
            "{}",
            lines[12]
        );
        // With --parallel: one host's 4.5 s, plus what restarting them all at once takes more
        // than one (2 hosts 1.2 s, 4 hosts 1.8 s, against 0.9 s).
        assert!(
            lines[13].contains("one host 0.90 s, 2 hosts 1.20 s at once, so >= 4.80 s (1.07x), 4 hosts 1.80 s at once, so >= 5.40 s (1.20x)"),
            "{}",
            lines[13]
        );
        assert_eq!(lines.len(), 14);
        // Without the restart figures, no such lines.
        for r in &mut rows {
            r.restart.clear();
        }
        assert_eq!(render("fleets", &rows).lines().count(), 12);
    }
}
