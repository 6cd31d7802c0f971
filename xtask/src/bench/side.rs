//! The two sides of the benchmark: `cargo xtask deploy` and the spec-faithful bash baseline
//! (`scripts/bench/deploy-baseline.sh`), each with its own identical app machine and its own
//! scratch checkout, run as a user runs them (child processes), with the same operations. The
//! hosts phase's fleets are xtask sides with several app machines.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::contract::{layout, APP_USER, BACKEND_PACKAGE, DEFAULT_ROOT};
use crate::demo::Environment;
use crate::scratch::Scratch;
use crate::testhost::{self, Machine};

/// Which deployer a side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Baseline,
    Xtask,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Xtask => "xtask",
        }
    }
}

/// What the benchmark asks a deployer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `deploy all` without local checks (the frontend is still built).
    Incremental,
    /// `deploy all` with every local check.
    WithChecks,
    /// A backend deploy although nothing changed (xtask: `--redeploy`).
    RedeployBackend,
    /// Deploy a tree that already runs (xtask: "nothing to deploy"; the baseline deploys).
    Noop,
    Rollback,
    /// A fleet's `deploy all --skip-local-checks --parallel`: every host switches at once
    /// (xtask only).
    ParallelDeploy,
    /// A fleet's `deploy rollback --parallel` (xtask only).
    ParallelRollback,
    /// Back to a named release (xtask only: undoes a measured rollback, not measured itself).
    RollbackTo(String),
    /// `deploy backend` of a release that must fail (xtask only: the crash phase).
    FailingBackend,
    /// `deploy backend --skip-local-checks` of a changed tree (the database phase).
    Backend,
    /// `deploy rollback --migrate-down --yes` (xtask only: the database phase's downgrade).
    RollbackMigrateDown,
    /// `db restore SNAPSHOT --yes` (xtask only: the database phase's restore).
    DbRestore(String),
    List,
    /// `verify` (xtask only: what the tripwire of issue 26 takes on the side's current).
    Verify,
    /// `exec -- true` (xtask only: a command in the release, one ssh).
    Exec,
}

impl Op {
    pub fn label(&self) -> &'static str {
        match self {
            Op::Incremental => "incremental deploy",
            Op::WithChecks => "deploy with checks",
            Op::RedeployBackend => "backend redeploy",
            Op::Noop => "no-op deploy",
            Op::Rollback => "rollback",
            Op::ParallelDeploy => "deploy --parallel",
            Op::ParallelRollback => "rollback --parallel",
            Op::RollbackTo(_) => "rollback to the newest",
            Op::FailingBackend => "failing backend deploy",
            Op::Backend => "backend deploy",
            Op::RollbackMigrateDown => "rollback --migrate-down",
            Op::DbRestore(_) => "db restore",
            Op::List => "list",
            Op::Verify => "verify",
            Op::Exec => "exec -- true",
        }
    }
}

/// The command line of an operation, for each deployer.
pub fn argv(kind: Kind, op: &Op) -> Vec<String> {
    let words: Vec<&str> = match (kind, op) {
        (Kind::Xtask, Op::Incremental | Op::Noop) => vec!["deploy", "all", "--skip-local-checks"],
        (Kind::Xtask, Op::WithChecks) => vec!["deploy", "all"],
        (Kind::Xtask, Op::RedeployBackend) => {
            vec!["deploy", "backend", "--redeploy", "--skip-local-checks"]
        }
        (Kind::Xtask, Op::FailingBackend | Op::Backend) => {
            vec!["deploy", "backend", "--skip-local-checks"]
        }
        (Kind::Xtask, Op::Rollback) => vec!["deploy", "rollback"],
        (Kind::Xtask, Op::RollbackMigrateDown) => {
            vec!["deploy", "rollback", "--migrate-down", "--yes"]
        }
        (Kind::Xtask, Op::DbRestore(name)) => vec!["db", "restore", name.as_str(), "--yes"],
        (Kind::Xtask, Op::ParallelDeploy) => {
            vec!["deploy", "all", "--skip-local-checks", "--parallel"]
        }
        (Kind::Xtask, Op::ParallelRollback) => vec!["deploy", "rollback", "--parallel"],
        (Kind::Xtask, Op::RollbackTo(r)) => vec!["deploy", "rollback", r.as_str()],
        (Kind::Xtask, Op::List) => vec!["deploy", "list"],
        (Kind::Xtask | Kind::Baseline, Op::Verify) => vec!["verify"],
        (Kind::Xtask | Kind::Baseline, Op::Exec) => vec!["exec", "--", "true"],
        (Kind::Baseline, Op::Incremental | Op::Noop | Op::WithChecks | Op::ParallelDeploy) => {
            vec![BASELINE, "all"]
        }
        (Kind::Baseline, Op::RedeployBackend | Op::FailingBackend | Op::Backend) => {
            vec![BASELINE, "backend"]
        }
        (
            Kind::Baseline,
            Op::Rollback
            | Op::RollbackTo(_)
            | Op::ParallelRollback
            | Op::RollbackMigrateDown
            | Op::DbRestore(_),
        ) => {
            vec![BASELINE, "rollback"]
        }
        (Kind::Baseline, Op::List) => vec![BASELINE, "list"],
    };
    words.into_iter().map(str::to_string).collect()
}

/// Whether the baseline runs without lint and tests (it always builds the frontend).
fn skips_checks(op: &Op) -> bool {
    !matches!(op, Op::WithChecks)
}

/// One-way delay of the simulated WAN link (50 ms round trip) in front of every app machine.
pub const DELAY_MS: u32 = 25;

/// The bench's run id: a prefix of every machine and scratch checkout it makes, so benches of
/// several people on one machine never take each other's machines down (1 to 3 lowercase
/// letters or digits starting with a letter; none by default).
pub const ID_ENV: &str = "INNERCONTEXT_BENCH_ID";

/// The run id from [`ID_ENV`], checked: "" when unset.
pub fn check_id() -> Result<String> {
    let id = std::env::var(ID_ENV).unwrap_or_default();
    if !valid_id(&id) {
        bail!(
            "invalid {ID_ENV} '{}': use 1 to 3 lowercase letters or digits, starting with a letter",
            id.escape_debug()
        );
    }
    Ok(id)
}

/// Empty, or 1 to 3 lowercase letters or digits starting with a letter (the longest machine
/// name, `bfleet8h`, stays within 12 characters with it).
fn valid_id(id: &str) -> bool {
    id.len() <= 3
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.chars().next().is_none_or(|c| c.is_ascii_lowercase())
}

/// `name` with the run id in front (the id is checked when the bench starts).
pub fn named(name: &str) -> String {
    format!("{}{name}", check_id().unwrap_or_default())
}

/// The side-by-side phases' db machine and the baseline's app machine.
pub fn db() -> String {
    named("benchdb")
}

pub fn baseline_host() -> String {
    named("benchsh")
}

/// The xtask side's machines: `bench1..benchN`.
pub fn xtask_hosts(n: u32) -> Vec<String> {
    (1..=n).map(|i| named(&format!("bench{i}"))).collect()
}

/// Every machine a bench run with `n` xtask hosts uses.
pub fn machines(n: u32) -> Vec<String> {
    let mut all = xtask_hosts(n);
    all.push(baseline_host());
    all.push(db());
    all
}

/// The baseline script, relative to the checkout it deploys.
pub const BASELINE: &str = "scripts/bench/deploy-baseline.sh";

/// A finished, timed command.
pub struct Done {
    pub secs: f64,
    /// ssh logins of the deploy user during the command, on each of the side's machines.
    pub handshakes: Vec<f64>,
}

pub struct Side {
    pub kind: Kind,
    /// The side's app machines: one, or a fleet (the first is the primary).
    pub hosts: Vec<Machine>,
    pub env: Environment,
    pub scratch: Scratch,
    /// The backend tests' database (the baseline's local checks; the xtask brings its own).
    pub test_database_url: Option<String>,
}

impl Side {
    /// The side's (first) app machine.
    pub fn machine(&self) -> &Machine {
        &self.hosts[0]
    }

    fn command(&self, op: &Op) -> Result<Command> {
        let argv = argv(self.kind, op);
        let mut cmd = match self.kind {
            Kind::Xtask => {
                let args: Vec<&str> = argv.iter().map(String::as_str).collect();
                self.env
                    .command(std::env::current_exe()?, &self.scratch.dir, &args)
            }
            Kind::Baseline => {
                let mut args: Vec<&str> = vec!["--noprofile", "--norc"];
                args.extend(argv.iter().map(String::as_str));
                let mut c = self.env.command("bash", &self.scratch.dir, &args);
                c.env("PATH", crate::tools::path_with_tools())
                    .env("UV_PYTHON_DOWNLOADS", "never");
                if let Some(url) = &self.test_database_url {
                    c.env("TEST_DATABASE_URL", url);
                }
                c
            }
        };
        cmd.env_remove("DEPLOY_SKIP_CHECKS");
        if self.kind == Kind::Baseline && skips_checks(op) {
            cmd.env("DEPLOY_SKIP_CHECKS", "1");
        }
        Ok(cmd)
    }

    /// Run an operation; its wall time, output and ssh handshakes. A failure is an error (and
    /// so is a success of [`Op::FailingBackend`]).
    pub fn run(&self, op: &Op) -> Result<Done> {
        let before = self.all_logins()?;
        let mut cmd = self.command(op)?;
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running the {} deployer", self.kind.name()))?;
        let secs = start.elapsed().as_secs_f64();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if *op == Op::FailingBackend {
            if out.status.success() {
                bail!("the deploy of a release that must fail succeeded:\n{output}");
            }
        } else if !out.status.success() {
            bail!(
                "{} '{}' on {} failed ({}):\n{output}",
                self.kind.name(),
                argv(self.kind, op).join(" "),
                self.env.server,
                out.status
            );
        }
        if *op == Op::Noop && self.kind == Kind::Xtask && !output.contains("nothing to deploy") {
            bail!("the xtask's no-op deploy made a release:\n{output}");
        }
        let after = self.all_logins()?;
        let handshakes = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        Ok(Done { secs, handshakes })
    }

    fn all_logins(&self) -> Result<Vec<f64>> {
        self.hosts.iter().map(logins).collect()
    }

    /// Run a bash script inside the (first) machine as root (nsenter: no ssh, no network).
    pub fn exec(&self, script: &str) -> Result<String> {
        exec(self.machine(), script)
    }

    /// The newest release on the (first) machine's server.
    pub fn newest_release(&self) -> Result<String> {
        let (root, releases) = (DEFAULT_ROOT, layout::RELEASES);
        let newest = self.exec(&format!("ls -1 {root}/{releases} | sort | tail -n 1"))?;
        let newest = newest.trim();
        if !crate::deploy::release::is_name(newest) {
            bail!(
                "no release to go back to on {}: '{newest}'",
                self.machine().name
            );
        }
        Ok(newest.to_string())
    }

    /// Change one backend and one frontend source file, and commit.
    pub fn change_both(&self, n: u32) -> Result<()> {
        for (path, comment) in [
            (
                format!("backend/{BACKEND_PACKAGE}/__init__.py"),
                format!("# bench change {n}\n"),
            ),
            (
                "frontend/src/app.css".to_string(),
                format!("\n/* bench change {n} */\n"),
            ),
        ] {
            let text = self.scratch.read(&path)?;
            self.scratch.write(&path, &format!("{text}{comment}"))?;
        }
        self.scratch.commit(&format!("bench change {n}"))
    }
}

/// Accepted ssh logins of the deploy user on `m` so far, from sshd's journal (read inside the
/// machine, so reading it is no login itself). `journalctl --sync` first: journald stores what
/// sshd logged a moment ago before it is counted (a busy machine's journal lags, and a login
/// of the command just timed would count for the next one, or for none).
pub fn logins(m: &Machine) -> Result<f64> {
    let out = exec(
        m,
        &format!("journalctl --sync; journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey for {APP_USER} ' || true"),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("counting ssh logins on {}: got '{}'", m.name, out.trim()))
}

/// Run a bash script inside machine `m` as root (nsenter: no ssh, no network).
pub fn exec(m: &Machine, script: &str) -> Result<String> {
    let sh = xshell::Shell::new()?;
    testhost::exec(&sh, &m.name, &["bash".into(), "-c".into(), script.into()])
}

/// `setup-server` on every side at once (each side's own machines), the first failure the result.
pub fn setup_all<'a>(sides: impl Iterator<Item = &'a Side>) -> Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = sides
            .map(|side| s.spawn(move || side.setup_server()))
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("setup-server panicked")))?;
        }
        Ok(())
    })
}

impl Side {
    /// `cargo xtask setup-server` for the side's machines, as a user runs it.
    pub fn setup_server(&self) -> Result<()> {
        let args = self.env.setup_server_args();
        let out = self
            .env
            .command(std::env::current_exe()?, &self.scratch.dir, &args)
            .output()
            .context("running setup-server")?;
        if !out.status.success() {
            bail!(
                "setup-server on {} failed ({}):\n{}{}",
                self.env.server,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_short_and_plain() {
        for ok in ["", "ga", "h1", "abc"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["abcd", "1a", "G", "a-b", "a b", "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
        for name in ["bfleet8h", "bfleetdb", "benchsh", "bench1"] {
            crate::flags::validate_machine_name(&format!("abc{name}")).unwrap();
        }
    }
}
