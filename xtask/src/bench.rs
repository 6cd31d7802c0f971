//! `cargo xtask bench`: how fast and how disruptive a deploy is, measured on the local test host.
//!
//! Boots its own app + db machines, provisions them, deploys a scratch copy of the repository,
//! then measures (median, min and max of N runs) incremental, full-check and no-op deploys,
//! rollback until healthy, ssh handshakes and bytes sent per deploy, failed requests under
//! `wrk` load through nginx during a deploy and a rollback, and the floor: a bare unit restart
//! until the first healthy probe. Everything once on the direct veth link and once through the
//! test host's latency proxy (25 ms each way). It prints figures; it asserts nothing.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::demo::Environment;
use crate::flags::{Bench, Role};
use crate::scratch::Scratch;
use crate::testhost::{self, Machine};
use crate::{tools, ui};

const APP: &str = "bench";
const DB: &str = "benchdb";
const ROOT: &str = "/opt/innercontext";
/// One-way delay of the simulated WAN link (50 ms round trip).
const WAN_DELAY_MS: u32 = 25;

pub fn run(b: Bench, sh: &Shell) -> Result<()> {
    if !tools::is_root() {
        bail!("the benchmark boots local machines with systemd-nspawn and needs root: run it with sudo");
    }
    which("wrk")?;
    let bench = Bencher::provision(sh)?;
    let result = bench.measure(sh, &b);
    let _ = testhost::delay(sh, APP, 0);
    for name in [APP, DB] {
        let _ = testhost::down(sh, name);
    }
    let rows = result?;
    print_table(&rows, b.runs);
    Ok(())
}

fn which(bin: &str) -> Result<()> {
    if tools::ensure_apt(&Shell::new()?, &[(bin, bin)]).is_err() {
        bail!("{bin} is needed for the load test: apt-get install {bin}");
    }
    Ok(())
}

struct Bencher {
    app: Machine,
    env: Environment,
    scratch: Scratch,
}

/// One row of the table.
struct Row {
    metric: String,
    link: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    target: &'static str,
}

impl Bencher {
    fn provision(sh: &Shell) -> Result<Bencher> {
        ui::step("build the test host image", || testhost::build(sh, false))?;
        let db = ui::step("boot the db machine", || testhost::up(sh, DB, Role::Db))?;
        let app = ui::step("boot the app machine", || testhost::up(sh, APP, Role::App))?;
        testhost::delay(sh, APP, 0)?;
        let env = Environment::for_machines(&app, &db)?;
        let scratch = Scratch::new("bench")?;
        let bench = Bencher { app, env, scratch };
        ui::step("setup-server", || {
            bench.xtask(&bench.env.setup_server_args()).map(drop)
        })?;
        ui::step("first deploy", || {
            bench.deploy(&["all", "--skip-local-checks"]).map(drop)
        })?;
        Ok(bench)
    }

    fn command(&self, args: &[&str]) -> Result<Command> {
        Ok(self
            .env
            .command(std::env::current_exe()?, &self.scratch.dir, args))
    }

    /// Run the xtask on the scratch checkout; its combined output.
    fn xtask(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args)?.output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("xtask {} failed:\n{text}", args.join(" "));
        }
        Ok(text)
    }

    fn deploy(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["deploy"];
        full.extend(args);
        self.xtask(&full)
    }

    /// Wall time of a deploy command.
    fn timed(&self, args: &[&str]) -> Result<(f64, String)> {
        let start = Instant::now();
        let out = self.deploy(args)?;
        Ok((start.elapsed().as_secs_f64(), out))
    }

    /// Change one backend file and one frontend file and commit.
    fn change_both(&self, n: u32) -> Result<()> {
        for (path, comment) in [
            (
                "backend/innercontext/__init__.py",
                format!("# bench change {n}\n"),
            ),
            (
                "frontend/src/app.css",
                format!("\n/* bench change {n} */\n"),
            ),
        ] {
            let text = self.scratch.read(path)?;
            self.scratch.write(path, &format!("{text}{comment}"))?;
        }
        self.scratch.commit(&format!("bench change {n}"))
    }

    fn ssh_logins(&self) -> Result<f64> {
        let out = self.app.ssh(&[
            "bash",
            "-c",
            "journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey for innercontext ' || true",
        ])?;
        Ok(out.trim().parse().unwrap_or(0.0))
    }

    /// Bytes of release files whose content is new (not hard-linked to another release).
    fn changed_bytes(&self) -> Result<f64> {
        let script = format!(
            "cd {ROOT}/current/ && find backend frontend scripts systemd nginx \\( -name .venv -o -name __pycache__ \\) -prune -o -type f -links 1 -printf '%s\\n' | awk '{{s += $1}} END {{print s + 0}}'"
        );
        let out = self.app.ssh(&["bash", "-c", &script])?;
        Ok(out.trim().parse().unwrap_or(0.0))
    }

    /// A bare restart of the API until its first healthy answer, timed on the server.
    fn floor(&self) -> Result<f64> {
        let script = "s=$(date +%s.%N); systemctl restart innercontext; \
            until curl -fsS -o /dev/null -m 1 http://127.0.0.1:8000/health-check; do sleep 0.01; done; \
            e=$(date +%s.%N); awk -v s=$s -v e=$e 'BEGIN {print e - s}'";
        let out = self.app.ssh(&["bash", "-c", script])?;
        out.trim().parse().context("floor measurement")
    }

    /// Run `action` under wrk load through nginx; (requests, failed requests).
    fn under_load(&self, seconds: u64, action: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
        let url = format!("http://{}/api/health-check", self.app.ip);
        let page = format!("http://{}/", self.app.ip);
        let d = format!("{seconds}s");
        let api = duct::cmd("wrk", ["-t1", "-c8", "-d", &d, &url])
            .stdout_capture()
            .stderr_to_stdout()
            .unchecked()
            .start()?;
        let web = duct::cmd("wrk", ["-t1", "-c4", "-d", &d, &page])
            .stdout_capture()
            .stderr_to_stdout()
            .unchecked()
            .start()?;
        let acted = action();
        let mut total = 0.0;
        let mut failed = 0.0;
        for h in [api, web] {
            let out = h.wait()?;
            let (t, f) = parse_wrk(&String::from_utf8_lossy(&out.stdout));
            total += t;
            failed += f;
        }
        acted?;
        Ok((total, failed))
    }

    fn measure(&self, sh: &Shell, b: &Bench) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        let links: Vec<(&'static str, u32)> = [("lan", 0), ("wan", WAN_DELAY_MS)]
            .into_iter()
            .filter(|(l, _)| if *l == "lan" { b.lan } else { b.wan })
            .collect();
        let mut change = 0;
        for (link, delay) in links {
            testhost::delay(sh, APP, delay)?;
            let mut row = |metric: &str, unit, values, target| {
                rows.push(Row {
                    metric: metric.to_string(),
                    link,
                    unit,
                    values,
                    target,
                })
            };
            let runs = b.runs;
            let (mut inc, mut inc_checks, mut noop, mut redeploy, mut rollback, mut floor) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            let (mut handshakes, mut sent, mut changed) = (vec![], vec![], vec![]);
            for _ in 0..runs {
                change += 1;
                self.change_both(change)?;
                let logins = self.ssh_logins()?;
                let (t, out) = ui::step(&format!("{link}: incremental deploy"), || {
                    self.timed(&["all", "--skip-local-checks"])
                })?;
                inc.push(t);
                handshakes.push(self.ssh_logins()? - logins);
                sent.push(sent_bytes(&out).unwrap_or(f64::NAN));
                changed.push(self.changed_bytes()?);
                let (t, out) = ui::step(&format!("{link}: no-op deploy"), || {
                    self.timed(&["all", "--skip-local-checks"])
                })?;
                if !out.contains("nothing to deploy") {
                    bail!("the no-op deploy made a release:\n{out}");
                }
                noop.push(t);
                let (t, _) = ui::step(&format!("{link}: redeploy, nothing changed"), || {
                    self.timed(&["all", "--skip-local-checks", "--redeploy"])
                })?;
                redeploy.push(t);
                let (t, _) = ui::step(&format!("{link}: rollback"), || self.timed(&["rollback"]))?;
                rollback.push(t);
                // Forward again so the next round starts from the newest release.
                let newest = self.newest()?;
                self.deploy(&["rollback", &newest])?;
                floor.push(ui::step(&format!("{link}: bare restart"), || self.floor())?);
            }
            for _ in 0..runs.min(3) {
                change += 1;
                self.change_both(change)?;
                let (t, _) = ui::step(&format!("{link}: deploy with local checks"), || {
                    self.timed(&["all"])
                })?;
                inc_checks.push(t);
            }
            change += 1;
            self.change_both(change)?;
            let window = (median(&inc) + 6.0).ceil() as u64;
            let (req, fail) = ui::step(&format!("{link}: deploy under load"), || {
                self.under_load(window, || {
                    self.deploy(&["all", "--skip-local-checks"]).map(drop)
                })
            })?;
            let window = (median(&rollback) + 6.0).ceil() as u64;
            let (rreq, rfail) = ui::step(&format!("{link}: rollback under load"), || {
                self.under_load(window, || self.deploy(&["rollback"]).map(drop))
            })?;
            let newest = self.newest()?;
            self.deploy(&["rollback", &newest])?;
            row("incremental deploy all, no local checks", "s", inc, "");
            row(
                "incremental deploy all, with local checks",
                "s",
                inc_checks,
                "",
            );
            row(
                "no-op deploy (nothing to deploy)",
                "s",
                noop,
                "<= floor + 2 s",
            );
            row("redeploy, nothing changed (--redeploy)", "s", redeploy, "");
            row("rollback until healthy", "s", rollback, "< 3 s");
            row("floor: bare API restart until healthy", "s", floor, "");
            row("ssh handshakes per deploy", "", handshakes, "1");
            row(
                "bytes sent, incremental deploy",
                "B",
                sent,
                "<= 1.1 x changed + file list",
            );
            row("bytes of changed files", "B", changed, "");
            row("requests during deploy (wrk)", "", vec![req], "");
            row("failed requests during deploy", "", vec![fail], "0");
            row("requests during rollback (wrk)", "", vec![rreq], "");
            row("failed requests during rollback", "", vec![rfail], "0");
        }
        testhost::delay(sh, APP, 0)?;
        Ok(rows)
    }

    fn newest(&self) -> Result<String> {
        let out = self.app.ssh(&[
            "bash",
            "-c",
            &format!("ls -1 {ROOT}/releases | sort | tail -n 1"),
        ])?;
        Ok(out.trim().to_string())
    }
}

/// `[N files changed, B bytes sent]` from a deploy's output.
fn sent_bytes(out: &str) -> Option<f64> {
    let after = out.split("files changed, ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// (requests, failures) from wrk's report: non-2xx/3xx answers plus socket errors.
fn parse_wrk(out: &str) -> (f64, f64) {
    let mut total = 0.0;
    let mut failed = 0.0;
    for line in out.lines().map(str::trim) {
        if line.contains(" requests in ") {
            total = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            failed += n.trim().parse().unwrap_or(0.0);
        } else if let Some(errs) = line.strip_prefix("Socket errors:") {
            failed += errs
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    (total, failed)
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{v:.2} s"),
        "B" => format!("{v:.0} B"),
        _ => format!("{v:.0}"),
    }
}

fn print_table(rows: &[Row], runs: u32) {
    println!();
    println!("innercontext deploy benchmark ({runs} runs per figure; median, min, max)");
    println!(
        "{:<44} {:<4} {:>12} {:>12} {:>12}  target",
        "metric", "link", "median", "min", "max"
    );
    for r in rows {
        let min = r.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<44} {:<4} {:>12} {:>12} {:>12}  {}",
            r.metric,
            r.link,
            fmt(median(&r.values), r.unit),
            fmt(min, r.unit),
            fmt(max, r.unit),
            r.target
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_parses() {
        let out = "Running 10s test @ http://10.213.3.2/\n  3769 requests in 12.08s, 798.70KB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec: 312.0\n";
        assert_eq!(parse_wrk(out), (3769.0, 7.0));
        assert_eq!(parse_wrk("  10 requests in 1.00s, 1KB read\n"), (10.0, 0.0));
    }

    #[test]
    fn medians_and_bytes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(
            sent_bytes("==> upload 171 files   [2 files changed, 11706 bytes sent] ok"),
            Some(11706.0)
        );
    }
}
