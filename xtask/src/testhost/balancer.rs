//! A load balancer in front of a fleet of machines: nginx on this host, listening on a free
//! loopback port, upstream = each machine's own nginx (port 80), and a failed or refused
//! upstream retried on the next one (`proxy_next_upstream`), as a balancer in front of a
//! rolling deploy is set up. Its access log says, per request, when it ended, the status, the
//! upstreams tried and their answers, and how long it took: what the end-to-end fleet scenario
//! and the benchmark's hosts phase read after a window of load.

use std::process::Command;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::machine::Machine;
use super::render;

/// nginx on this host in front of machines; stopped when dropped.
pub struct Balancer {
    dir: Utf8PathBuf,
    pub port: u16,
}

/// What the balancer's log says about a window of load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    /// Every request it logged.
    pub requests: usize,
    /// Answers other than 2xx/3xx before the client was stopped (a 499 after it is the client
    /// going away, not a failure), one log line each.
    pub failed: Vec<String>,
    /// Requests that took a second or more, one log line each.
    pub slow: Vec<String>,
    /// The longest request, in seconds.
    pub slowest: f64,
    /// The longest time between two answers it logged, in seconds: the balancer itself stalled
    /// (or every connection of the load waited on one slow upstream) for about that long.
    /// Requests a stalled balancer had not read yet do not show in their own duration.
    pub longest_gap: f64,
}

impl Balancer {
    /// Start nginx in `dir` (its config, pid and logs) in front of `apps`. A balancer that a
    /// run which died left in `dir` is stopped first.
    pub fn start(apps: &[Machine], dir: &Utf8Path) -> Result<Balancer> {
        fs_err::create_dir_all(dir)?;
        let conf = dir.join("nginx.conf");
        if dir.join("nginx.pid").exists() && conf.exists() {
            let _ = Command::new("nginx")
                .args(["-c", conf.as_str(), "-s", "stop"])
                .output();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let ips: Vec<&str> = apps.iter().map(|m| m.ip.as_str()).collect();
        fs_err::write(&conf, render::balancer_conf(dir, port, &ips))?;
        let out = Command::new("nginx")
            .args(["-c", conf.as_str()])
            .output()
            .context("starting nginx as the load balancer (apt-get install nginx-light)")?;
        if !out.status.success() {
            bail!(
                "nginx (the load balancer, {conf}) did not start ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Balancer {
            dir: dir.to_path_buf(),
            port,
        }
        .empty()
    }

    /// Where it listens: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Utf8PathBuf {
        self.dir.join("access.log")
    }

    /// Forget what it logged so far (the start of a window).
    pub fn empty(self) -> Result<Balancer> {
        fs_err::write(self.log(), "")?;
        Ok(self)
    }

    /// Read and empty its log: the window of load that the client stopped at `stopped_ms`
    /// (ms since the epoch).
    pub fn window(&self, stopped_ms: u128) -> Result<Window> {
        let text = fs_err::read_to_string(self.log()).unwrap_or_default();
        fs_err::write(self.log(), "")?;
        Ok(read_log(&text, stopped_ms))
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args(["-c", self.dir.join("nginx.conf").as_str(), "-s", "stop"])
            .output();
    }
}

/// Read the balancer's log (`render::balancer_conf`'s format: `$msec $status $upstream_addr
/// $upstream_status $request_time`).
pub fn read_log(text: &str, stopped_ms: u128) -> Window {
    let mut w = Window::default();
    let mut last_ms: Option<u128> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let at_ms = f
            .first()
            .and_then(|t| t.parse::<f64>().ok())
            .map_or(0, |t| (t * 1000.0) as u128);
        if let Some(last) = last_ms {
            w.longest_gap = w
                .longest_gap
                .max(at_ms.saturating_sub(last) as f64 / 1000.0);
        }
        last_ms = Some(at_ms);
        let status: u16 = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let took: f64 = f.last().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let answered = (200..400).contains(&status);
        let client_stopped = status == 499 && at_ms >= stopped_ms;
        w.requests += 1;
        if !answered && !client_stopped {
            w.failed.push(line.to_string());
        }
        if took >= 1.0 {
            w.slow.push(line.to_string());
        }
        w.slowest = w.slowest.max(took);
    }
    w
}

/// The current time in ms since the epoch (when a client stopped, for [`Balancer::window`]).
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tells_failures_from_a_client_that_went_away() {
        let log = "\
1700000000.100 200 10.213.5.2:80 200 0.004
1700000000.200 502 10.213.5.2:80, 10.213.6.2:80 502, 502 0.010
1700000001.500 200 10.213.5.2:80, 10.213.6.2:80 502, 200 1.250

1700000002.000 499 10.213.6.2:80 - 0.300
1700000003.000 499 10.213.6.2:80 - 0.100
";
        // The client stopped at ...2.500: the 499 at 2.000 is a failure, the one at 3.000 not.
        let w = read_log(log, 1_700_000_002_500);
        assert_eq!(w.requests, 5);
        assert_eq!(w.failed.len(), 2, "{w:?}");
        assert!(w.failed[0].contains(" 502 ") && w.failed[1].contains(" 499 "));
        assert_eq!(w.slow.len(), 1);
        assert!((w.slowest - 1.25).abs() < 1e-9);
        // Nothing logged from ...0.200 to ...1.500.
        assert!((w.longest_gap - 1.3).abs() < 1e-9, "{w:?}");
        assert_eq!(read_log("", 0), Window::default());
    }
}
