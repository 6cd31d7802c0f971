//! The floors' parts: what the link and the machine allow, measured in the same run (an ssh
//! handshake, one more command over an open connection, a restart until healthy, the frontend
//! build), and the timing helpers they share.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::Shell;

use super::side::{self, Side};
use super::table;
use crate::ci::{self, Noise};
use crate::contract::{Half, Unit, APP_USER, UNITS};
use crate::testhost::Machine;

/// The frontend build alone, as a deploy of a changed frontend must run it (a floor part):
/// the dependencies checked (`pnpm install --frozen-lockfile`, nothing to fetch) and the build.
pub fn frontend_build(dir: &Utf8Path) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(dir);
    ci::frontend_install(&sh, Noise::Quiet)?;
    ci::frontend_build(&sh, Noise::Quiet)
}

/// The median of `n` measurements.
pub fn median_of(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f()?);
    }
    table::median(&v).context("no measurement")
}

/// Seconds an ssh command took, if it succeeded.
pub fn timed_ok(cmd: std::process::Command) -> Result<f64> {
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
pub fn ssh(side: &Side, opts: &[&str], argv: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.arg("-F")
        .arg(side.machine().ssh_config.as_str())
        .args(opts)
        .arg(format!("{APP_USER}@{}", side.machine().name))
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null());
    c
}

/// One command over an open master connection: what each further remote step costs.
pub fn one_more_command(side: &Side) -> Result<f64> {
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

/// What a restart until healthy restarts (the contract's units of one half, or all of them)
/// and the probes it waits for (theirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub units: Vec<&'static str>,
    pub probes: Vec<&'static str>,
}

impl Restart {
    /// Every unit (`None`), or those of one half.
    pub fn of(half: Option<Half>) -> Restart {
        let units: Vec<&Unit> = UNITS
            .iter()
            .filter(|u| half.is_none_or(|h| u.half == h))
            .collect();
        Restart {
            units: units.iter().map(|u| u.name).collect(),
            probes: units.iter().filter_map(|u| u.probe).collect(),
        }
    }

    /// The script run inside the machine: the restart, then every probe until it answers,
    /// timed there; its output is the seconds.
    pub fn script(&self) -> String {
        let checks: Vec<String> = self
            .probes
            .iter()
            .map(|p| format!("curl -fsS -o /dev/null -m 2 {p}"))
            .collect();
        format!(
            "s=$(date +%s.%N); systemctl restart {units}; \
             for i in $(seq 1 3000); do {checks} && break; sleep 0.01; done; {checks} || exit 1; \
             e=$(date +%s.%N); awk -v s=$s -v e=$e 'BEGIN {{print e - s}}'",
            units = self.units.join(" "),
            checks = checks.join(" && ")
        )
    }
}

/// `systemctl restart UNITS` until every probe answers, timed on the server.
pub fn restart_until_healthy(side: &Side, restart: &Restart) -> Result<f64> {
    restart_until_healthy_on(side.machine(), restart)
}

/// [`restart_until_healthy`] on one machine.
fn restart_until_healthy_on(m: &Machine, restart: &Restart) -> Result<f64> {
    let out = side::exec(m, &restart.script())?;
    let secs: f64 = out
        .trim()
        .parse()
        .with_context(|| format!("restart timing on {}: '{}'", m.name, out.trim()))?;
    table::sample(secs, "restart until healthy")
}

/// [`restart_until_healthy`] on every machine of a fleet at once: the slowest host's time.
pub fn restart_all_until_healthy(hosts: &[Machine], restart: &Restart) -> Result<f64> {
    let times: Vec<Result<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|m| s.spawn(move || restart_until_healthy_on(m, restart)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_takes_the_contracts_units_and_probes() {
        let all = Restart::of(None);
        assert_eq!(
            all.units,
            [
                "innercontext",
                "innercontext-node",
                "innercontext-pricing-worker"
            ]
        );
        assert_eq!(
            all.probes,
            [
                "http://127.0.0.1:8000/health-check",
                "http://127.0.0.1:3000/"
            ]
        );
        let backend = Restart::of(Some(Half::Backend));
        assert_eq!(
            backend.units,
            ["innercontext", "innercontext-pricing-worker"]
        );
        assert_eq!(backend.probes, ["http://127.0.0.1:8000/health-check"]);
    }

    #[test]
    fn the_restart_script_is_bash_and_waits_for_every_probe() {
        let script = Restart::of(None).script();
        assert!(script.contains(
            "systemctl restart innercontext innercontext-node innercontext-pricing-worker;"
        ));
        assert!(script.contains("curl -fsS -o /dev/null -m 2 http://127.0.0.1:8000/health-check && curl -fsS -o /dev/null -m 2 http://127.0.0.1:3000/ && break"));
        let syntax = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(syntax.success(), "{script}");
    }
}
