//! Load during a command: `wrk` through nginx, started before the command and stopped with
//! SIGINT after it, so its report covers the command's whole window. A wrk that failed,
//! printed no report, sent no request or stopped early is an error, never "0 failed of 0".

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::interrupt::SIGINT;
use crate::proc;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub requests: f64,
    /// Non-2xx/3xx answers plus socket errors (connect, read, write, timeout).
    pub failed: f64,
    /// How long wrk ran, as it says, in seconds; and the precision of that figure.
    pub secs: f64,
    pub precision: f64,
}

/// Parse wrk's report. A report without the `N requests in T` line is an error.
pub fn parse_report(out: &str) -> Result<Report> {
    let mut found = None;
    let mut failed = 0.0;
    for line in out.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            let requests: f64 = n
                .trim()
                .parse()
                .with_context(|| format!("wrk's request count in '{line}'"))?;
            let span = rest.split(',').next().unwrap_or("").trim();
            let (secs, precision) =
                parse_span(span).with_context(|| format!("wrk's duration in '{line}'"))?;
            found = Some((requests, secs, precision));
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            failed += n
                .trim()
                .parse::<f64>()
                .with_context(|| format!("wrk's non-2xx count in '{line}'"))?;
        } else if let Some(errs) = line.strip_prefix("Socket errors:") {
            for part in errs.split(',') {
                let n = part
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse::<f64>().ok())
                    .with_context(|| format!("wrk's socket errors in '{line}'"))?;
                failed += n;
            }
        }
    }
    let Some((requests, secs, precision)) = found else {
        bail!("wrk printed no report:\n{}", out.trim());
    };
    if failed > 0.0 {
        // Which kind of failure it was, for the reader of the table.
        let lines: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
            .collect();
        crate::say!("    wrk: {}", lines.join("; "));
    }
    Ok(Report {
        requests,
        failed,
        secs,
        precision,
    })
}

/// wrk's duration: `12.08s`, `950.00ms`, `1.02m`, `1.00h`; seconds and the unit of the last
/// printed digit.
fn parse_span(s: &str) -> Option<(f64, f64)> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len());
    let precision = scale / 10f64.powi(decimals as i32);
    Some((v * scale, precision))
}

/// How late wrk's clock may start after the bench saw it start. wrk opens its connections and
/// loads before it prints its two first lines ("Running ...", "N threads and M connections")
/// and reads its clock right after the second (wrk.c, main), so the load runs from before the
/// bench's reference; only the clock, scheduled after a write to a pipe, may start a little
/// later (seen: 30 ms on this 2-core machine while the units restarted).
pub const CLOCK_LAG: f64 = 0.1;

/// One running wrk.
struct Wrk {
    url: String,
    child: Child,
    /// Lines of its stdout, read on a thread (the first two say it is running).
    lines: mpsc::Receiver<String>,
    head: Vec<String>,
}

impl Wrk {
    fn start(url: &str, connections: u32) -> Result<Wrk> {
        // Line-buffered (stdbuf), so its first line arrives while it runs, not at its exit.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "wrk", "-t1", &format!("-c{connections}"), "-d60m"])
            .args(["--timeout", "5s", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wrk (apt-get install wrk)")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // wrk prints "Running 60m test @ URL" and "N threads and M connections" once its
        // threads run, and starts its clock right after (see CLOCK_LAG).
        let mut head = Vec::new();
        for _ in 0..2 {
            match lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) => head.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output()?;
                    bail!(
                        "wrk against {url} did not start ({}): {}{}",
                        out.status,
                        head.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        if !head[0].starts_with("Running ") {
            let _ = child.kill();
            bail!("wrk against {url} said '{}' instead of starting", head[0]);
        }
        Ok(Wrk {
            url: url.to_string(),
            child,
            lines,
            head,
        })
    }

    /// SIGINT (wrk prints its report and exits 0), then the report and when it was stopped.
    fn stop(mut self) -> Result<(Report, Instant)> {
        let stopped = Instant::now();
        proc::signal(self.child.id(), SIGINT);
        let status = self.child.wait()?;
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let mut out = self.head;
        out.extend(self.lines.iter());
        let out = out.join("\n");
        if !status.success() {
            bail!(
                "wrk against {} failed ({status}): {}{}",
                self.url,
                out.trim(),
                stderr.trim()
            );
        }
        let report = parse_report(&out).with_context(|| format!("wrk against {}", self.url))?;
        Ok((report, stopped))
    }
}

/// Requests and failures of a command under load, and the window the load covered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub requests: f64,
    pub failed: f64,
}

/// Check one report: it counted requests, and ran at least from the command's start until
/// it was stopped after the command's end (`window` = when it was stopped - command start),
/// its clock's late start ([`CLOCK_LAG`]) allowed for.
pub fn check_coverage(r: &Report, window: f64, what: &str) -> Result<()> {
    if r.requests <= 0.0 {
        bail!("{what}: wrk sent no request: the load figure would be meaningless");
    }
    if r.secs + r.precision + CLOCK_LAG < window {
        bail!(
            "{what}: wrk ran {:.2} s but the command's window was {window:.2} s: the load did not cover the whole command",
            r.secs
        );
    }
    Ok(())
}

/// Run `action` while wrk loads the page and the API through nginx at `host`.
pub fn during<T>(host: &str, action: impl FnOnce() -> Result<T>) -> Result<(T, Outcome)> {
    let api = Wrk::start(&format!("http://{host}/api/health-check"), 8)?;
    let web = match Wrk::start(&format!("http://{host}/"), 4) {
        Ok(w) => w,
        Err(e) => {
            let _ = api.stop();
            return Err(e);
        }
    };
    let start = Instant::now();
    let acted = action();
    let reports = [api.stop(), web.stop()];
    let value = acted?;
    let mut outcome = Outcome {
        requests: 0.0,
        failed: 0.0,
    };
    for (report, what) in reports.into_iter().zip(["API load", "page load"]) {
        let (r, stopped) = report?;
        // It ran before the command started and until it was stopped after the command.
        check_coverage(&r, (stopped - start).as_secs_f64(), what)?;
        outcome.requests += r.requests;
        outcome.failed += r.failed;
    }
    Ok((value, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 60m test @ http://10.213.3.2/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.06ms  743.07us   5.35ms   68.26%\n  3769 requests in 12.08s, 798.70KB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:    312.00\nTransfer/sec:     66.12KB\n";

    #[test]
    fn report_counts_requests_failures_and_time() {
        let r = parse_report(REPORT).unwrap();
        assert_eq!((r.requests, r.failed), (3769.0, 7.0));
        assert!((r.secs - 12.08).abs() < 1e-9 && (r.precision - 0.01).abs() < 1e-12);
        let clean = parse_report("  10 requests in 1.02m, 1KB read\n").unwrap();
        assert_eq!((clean.requests, clean.failed), (10.0, 0.0));
        assert!((clean.secs - 61.2).abs() < 1e-9 && (clean.precision - 0.6).abs() < 1e-9);
        let (secs, precision) = parse_span("950.00ms").unwrap();
        assert!((secs - 0.95).abs() < 1e-9 && (precision - 1e-5).abs() < 1e-12);
        assert_eq!(parse_span("3.5x"), None);
    }

    #[test]
    fn a_missing_or_garbled_report_is_an_error() {
        let e = parse_report("unable to connect to 10.213.3.2:80 Connection refused\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrk printed no report"), "{e}");
        assert!(parse_report("  many requests in 1.00s, 1KB read\n").is_err());
        assert!(parse_report("  5 requests in 1.00s\n  Non-2xx or 3xx responses: lots\n").is_err());
    }

    #[test]
    fn load_must_cover_the_command() {
        let r = Report {
            requests: 100.0,
            failed: 0.0,
            secs: 9.99,
            precision: 0.01,
        };
        assert!(check_coverage(&r, 10.0, "api").is_ok());
        // Its clock started after the bench saw it start (seen: 3.53 s reported for a
        // 3.56 s window): within CLOCK_LAG that is no gap in the load.
        let late = Report { secs: 3.53, ..r };
        assert!(check_coverage(&late, 3.56, "page").is_ok());
        assert!(check_coverage(&late, 3.53 + 0.01 + CLOCK_LAG + 0.01, "page").is_err());
        let e = check_coverage(&r, 10.5, "api").unwrap_err().to_string();
        assert!(e.contains("did not cover the whole command"), "{e}");
        let none = Report { requests: 0.0, ..r };
        assert!(check_coverage(&none, 1.0, "api")
            .unwrap_err()
            .to_string()
            .contains("no request"));
    }

    /// Against a local server: wrk started before, stopped after, its report covers the
    /// action; a wrk against a closed port is an error.
    #[test]
    fn wrk_runs_around_an_action() {
        // Never skipped: the test command installs wrk (apt), and a test that passes without
        // it would say nothing.
        assert!(
            Command::new("wrk").arg("--version").output().is_ok(),
            "wrk is not installed: apt-get install wrk (cargo xtask ci installs it)"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0
                            || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        let host = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let ((), outcome) = during(&host, || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .unwrap();
        assert!(
            outcome.requests > 0.0 && outcome.failed == 0.0,
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("127.0.0.1:{}", closed.local_addr().unwrap().port());
        drop(closed);
        assert!(during(&dead, || Ok(())).is_err());
    }
}
