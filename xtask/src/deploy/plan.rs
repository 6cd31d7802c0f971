//! Pure planning: from what the server looks like (a [`Snapshot`]), who deploys what and the
//! configuration, decide what a deploy or rollback asks the server job to do, or why there is
//! nothing to do. Rendered into the `run` call (and printed by `--dry-run`); no I/O here.

use anyhow::{bail, Result};
use time::OffsetDateTime;

use crate::config::{Config, HostRole};
use crate::contract::{self, Half, Unit};
use crate::deploy::drift;
use crate::deploy::local::Local;
use crate::deploy::release;
use crate::deploy::snapshot::{Current, Snapshot};
use crate::flags::Scope;
use crate::remote::Call;

/// The units a host of `role` runs, in the contract's order.
pub fn units_of(role: HostRole) -> Vec<Unit> {
    contract::UNITS
        .into_iter()
        .filter(|u| role == HostRole::Primary || !u.primary_only)
        .collect()
}

/// The units a deploy of `scope` restarts on a host of `role`.
pub fn units_to_restart(scope: Scope, role: HostRole) -> Vec<&'static str> {
    units_of(role)
        .into_iter()
        .filter(|u| match u.half {
            Half::Backend => scope.backend(),
            Half::Frontend => scope.frontend(),
        })
        .map(|u| u.name)
        .collect()
}

/// What the server job is asked to do on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    pub mode: Mode,
    /// The link `current` must still be when the job takes the lock (`-`: none).
    pub expect_current: String,
    pub restart: Vec<&'static str>,
    pub check: Vec<&'static str>,
    pub probes: Vec<&'static str>,
    pub prune: Vec<String>,
    pub need_mb: u64,
    pub role: HostRole,
    /// Fleets: a healthy host waits for the client's verdict before it counts as done.
    pub wait_for_verdict: bool,
    /// Fleets: the job takes the lock and waits for `begin` before it changes anything.
    pub begin: bool,
    /// `deploy --clean`: no seed, a fresh virtualenv from a fresh uv cache, fresh assets.
    pub clean: bool,
    /// `deploy --maintenance`: maintenance mode on before the migration, off in the record step.
    pub maintenance: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Deploy { release: String, scope: Scope },
    Rollback { target: String, force: bool },
}

/// What a deploy comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// current already runs this commit: say so and stop.
    Nothing(String),
    Deploy(JobPlan),
}

/// Plan a deploy of `scope` on the host `snap` describes.
pub fn deploy(
    snap: &Snapshot,
    local: &Local,
    cfg: &Config,
    scope: Scope,
    redeploy: bool,
    upload_bytes: u64,
    role: HostRole,
) -> Result<Decision> {
    if scope != Scope::All {
        if let Some(problem) = match &snap.current {
            Current::Release(_) => None,
            other => Some(other.describe()),
        } {
            bail!(
                "a '{}' deploy takes the other half from the current release, and current on {} is {problem}: deploy all first",
                scope.name(),
                snap.host
            );
        }
    }
    if !redeploy && snap.current_made.runs(scope, &local.commit, local.dirty) {
        return Ok(Decision::Nothing(format!(
            "nothing to deploy: the current release {} on {} already runs commit {} ({}); use --redeploy to make a new release anyway",
            snap.current.name().unwrap_or("?"),
            snap.host,
            local.commit,
            scope.name()
        )));
    }
    let now = OffsetDateTime::from_unix_timestamp(snap.now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let name = release::next_name(now, &snap.releases);
    let prune = release::prune(
        &snap.releases,
        snap.current.name(),
        Some(&name),
        cfg.keep.saturating_sub(1),
        now,
    );
    Ok(Decision::Deploy(JobPlan {
        mode: Mode::Deploy {
            release: name,
            scope,
        },
        expect_current: snap.current.link(),
        restart: units_to_restart(scope, role),
        check: units_of(role).iter().map(|u| u.name).collect(),
        probes: units_of(role).iter().filter_map(|u| u.probe).collect(),
        prune,
        // What the upload may need at most, plus room for a new virtualenv and bytecode.
        need_mb: upload_bytes / (1024 * 1024) + 150,
        role,
        wait_for_verdict: false,
        begin: true,
        clean: false,
        maintenance: false,
    }))
}

/// What a deploy to a fleet comes to: one release for every host, or nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetDecision {
    Nothing(String),
    Deploy(Vec<JobPlan>),
}

/// Plan a deploy of `scope` on every host (`hosts` and their snapshots, in DEPLOY_SERVER's
/// order): each host's role is the one recorded on it (it must agree with DEPLOY_SERVER); a
/// half deploy needs every host on one release (it carries the other half over from each
/// host's current); one release name (the primary's clock, past every host's newest release),
/// each host checked against its own `current`; with more than one host each job takes its
/// lock and waits for `begin`, and a healthy host waits for the fleet's verdict.
pub fn fleet_deploy(
    hosts: &[(crate::config::Host, Snapshot)],
    local: &Local,
    cfg: &Config,
    scope: Scope,
    redeploy: bool,
    upload_bytes: u64,
) -> Result<FleetDecision> {
    let fleet = hosts.len() > 1;
    let roles = drift::roles(hosts)?;
    if scope != Scope::All {
        let snaps: Vec<&Snapshot> = hosts.iter().map(|(_, s)| s).collect();
        if let Some(d) = drift::current(&snaps) {
            bail!(
                "a '{}' deploy carries the other half over from each host's current release, and {}: 'cargo xtask deploy all' gives every host the same complete release (nothing was changed)",
                scope.name(),
                d.describe()
            );
        }
    }
    let primary = primary_of(hosts, &roles);
    let same_release = hosts
        .iter()
        .all(|(_, s)| s.current.name() == primary.current.name());
    if !redeploy && same_release {
        let all_run = hosts
            .iter()
            .all(|(_, s)| s.current_made.runs(scope, &local.commit, local.dirty));
        if all_run {
            let n = hosts.len();
            return Ok(FleetDecision::Nothing(format!(
                "nothing to deploy: the current release {} on {} already runs commit {} ({}); use --redeploy to make a new release anyway",
                primary.current.name().unwrap_or("?"),
                if n == 1 {
                    primary.host.clone()
                } else {
                    format!("all {n} hosts")
                },
                local.commit,
                scope.name()
            )));
        }
    }
    let now =
        OffsetDateTime::from_unix_timestamp(primary.now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let every: Vec<release::Release> = hosts
        .iter()
        .flat_map(|(_, s)| release::present(&s.releases, s.now))
        .collect();
    let name = release::next_name(now, &every);
    let mut plans = Vec::new();
    for ((_, snap), role) in hosts.iter().zip(&roles) {
        let Decision::Deploy(mut p) = deploy(snap, local, cfg, scope, true, upload_bytes, *role)?
        else {
            unreachable!("a redeploy always deploys")
        };
        p.mode = Mode::Deploy {
            release: name.clone(),
            scope,
        };
        p.prune = release::prune(
            &snap.releases,
            snap.current.name(),
            Some(&name),
            cfg.keep.saturating_sub(1),
            now,
        );
        p.begin = !fleet;
        p.wait_for_verdict = fleet;
        plans.push(p);
    }
    Ok(FleetDecision::Deploy(plans))
}

/// The primary's snapshot (the first host's when none of them is the primary).
fn primary_of<'a>(
    hosts: &'a [(crate::config::Host, Snapshot)],
    roles: &[HostRole],
) -> &'a Snapshot {
    hosts
        .iter()
        .zip(roles)
        .find(|(_, r)| **r == HostRole::Primary)
        .map(|((_, s), _)| s)
        .unwrap_or(&hosts[0].1)
}

/// Plan a rollback to `requested` (or the newest successful release before current).
pub fn rollback(
    snap: &Snapshot,
    requested: Option<&str>,
    force: bool,
    role: HostRole,
) -> Result<JobPlan> {
    if let Some(name) = requested {
        release::validate_user_name(name)?;
    }
    let target =
        release::rollback_target(&snap.releases, snap.current.named(), requested, snap.now)?;
    Ok(JobPlan {
        mode: Mode::Rollback { target, force },
        expect_current: snap.current.link(),
        restart: units_of(role).iter().map(|u| u.name).collect(),
        check: units_of(role).iter().map(|u| u.name).collect(),
        probes: units_of(role).iter().filter_map(|u| u.probe).collect(),
        prune: Vec::new(),
        need_mb: 1,
        role,
        wait_for_verdict: false,
        begin: true,
        clean: false,
        maintenance: false,
    })
}

/// Plan a rollback of every host to one release: `requested`, or the newest successful release
/// before the primary's current; it must be present and succeeded on every host. Each host's
/// role is the one recorded on it (it must agree with DEPLOY_SERVER).
pub fn fleet_rollback(
    hosts: &[(crate::config::Host, Snapshot)],
    requested: Option<&str>,
    force: bool,
) -> Result<Vec<JobPlan>> {
    let fleet = hosts.len() > 1;
    let roles = drift::roles(hosts)?;
    let primary = primary_of(hosts, &roles);
    let target = rollback(primary, requested, force, HostRole::Primary)?
        .release()
        .to_string();
    let mut plans = Vec::new();
    for ((_, snap), role) in hosts.iter().zip(&roles) {
        let ok = snap
            .releases
            .iter()
            .any(|r| r.name == target && r.state == Some(release::State::Succeeded));
        if !ok {
            let what = snap
                .releases
                .iter()
                .find(|r| r.name == target)
                .map(|r| format!("is {} there", release::state_name(r.state)))
                .unwrap_or_else(|| "does not exist there".to_string());
            bail!(
                "release {target} {what} ({}): a fleet rolls back only to a release every host has and ran successfully; see 'cargo xtask deploy list'",
                snap.host
            );
        }
        if snap.current.name() == Some(target.as_str()) && !fleet {
            bail!("release {target} is already current on {}", snap.host);
        }
        let mut p = rollback(snap, Some(&target), force, *role).or_else(|e| {
            // A host already on the target still takes part (it restarts onto the same release).
            if e.to_string().contains("already current") {
                let mut p = rollback(primary, Some(&target), force, *role)?;
                p.expect_current = snap.current.link();
                Ok(p)
            } else {
                Err(e)
            }
        })?;
        p.begin = !fleet;
        p.wait_for_verdict = fleet;
        plans.push(p);
    }
    Ok(plans)
}

/// Who asks: what the lock and deploy.log record about the deployer.
pub struct Asker<'a> {
    pub token: &'a str,
    pub deployer: &'a str,
    pub host: &'a str,
    pub commit: &'a str,
    pub dirty: bool,
}

impl JobPlan {
    pub fn release(&self) -> &str {
        match &self.mode {
            Mode::Deploy { release, .. } => release,
            Mode::Rollback { target, .. } => target,
        }
    }

    pub fn command(&self) -> String {
        match &self.mode {
            Mode::Deploy { scope, .. } => format!("deploy {}", scope.name()),
            Mode::Rollback { target, .. } => format!("rollback {target}"),
        }
    }

    /// The `run` call that starts the job.
    pub fn run_call(&self, cfg: &Config, who: &Asker) -> Call {
        let (mode, release, scope, target, force) = match &self.mode {
            Mode::Deploy { release, scope } => (
                "deploy",
                release.clone(),
                scope.name().to_string(),
                String::new(),
                "no",
            ),
            Mode::Rollback { target, force } => (
                "rollback",
                String::new(),
                String::new(),
                target.clone(),
                if *force { "yes" } else { "no" },
            ),
        };
        let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
        let mut args = vec![
            ("root", cfg.root.clone()),
            ("token", who.token.to_string()),
            ("mode", mode.to_string()),
            ("release", release),
            ("scope", scope),
            ("expect_current", self.expect_current.clone()),
            ("target", target),
            ("force", force.to_string()),
            ("deployer", crate::deploy::lock::clean(who.deployer)),
            ("commit", crate::deploy::lock::clean(who.commit)),
            ("dirty", yn(who.dirty)),
            ("command", self.command()),
            ("client_pid", std::process::id().to_string()),
            ("client_host", crate::deploy::lock::clean(who.host)),
            ("restart", self.restart.join(",")),
            ("check", self.check.join(",")),
            ("probe", self.probes.join(",")),
            ("timeout", cfg.health_timeout.to_string()),
            ("stable_ms", cfg.health_stable_ms.to_string()),
            ("role", self.role.name().to_string()),
            (
                "verdict",
                if self.wait_for_verdict {
                    "wait"
                } else {
                    "auto"
                }
                .to_string(),
            ),
            ("begin", yn(self.begin)),
            ("need_mb", self.need_mb.to_string()),
            ("prune", self.prune.join(",")),
            ("asset_grace", asset_grace().to_string()),
        ];
        if let Some(step) = test_pause_at() {
            args.push(("pause_at", step));
        }
        if self.clean {
            args.push(("clean", yn(true)));
        }
        if let Some(name) = crate::destination::name() {
            args.push(("destination", name.to_string()));
        }
        if self.maintenance {
            args.push(("maintenance", yn(true)));
        }
        Call::deploy("run", &args)
    }
}

impl JobPlan {
    /// What `deploy --dry-run` prints for this deploy's plan on one host (`dest`, as DEPLOY_SERVER
    /// reaches it), `run` being its rendered `run` call: nothing is changed.
    pub fn dry_run(
        &self,
        cfg: &Config,
        dest: &str,
        snap: &Snapshot,
        skip_local_checks: bool,
        run: &str,
    ) -> Vec<String> {
        let scope = match &self.mode {
            Mode::Deploy { scope, .. } => *scope,
            Mode::Rollback { .. } => Scope::All,
        };
        let checks = match (skip_local_checks, scope) {
            (true, s) if s.frontend() => "build the frontend (checks skipped)".to_string(),
            (true, _) => "none (checks skipped)".to_string(),
            (false, s) => format!(
                "clean tree{}{}",
                if s.backend() {
                    ", backend ruff + pytest"
                } else {
                    ""
                },
                if s.frontend() {
                    ", frontend build + svelte-check + tests"
                } else {
                    ""
                }
            ),
        };
        let mut lines = vec![
            format!(
                "Plan for '{}' to {dest} ({}), nothing will be changed:",
                self.command(),
                snap.host
            ),
            format!("  local, beside the upload: {checks}"),
            format!(
                "  server job (takes the lock, checks current is still {}):",
                self.expect_current
            ),
            format!("      {run}"),
            format!(
                "  upload: rsync into {}/{}/{} ({})",
                cfg.root,
                contract::layout::RELEASES,
                self.release(),
                if self.clean {
                    "--clean: nothing seeded from current; every file travels"
                } else {
                    "seeded from current; only what changed travels"
                }
            ),
            format!(
                "  then on the server: prepare, {}switch, restart {}, health checks ({}s); on failure restore {}",
                if scope.backend() {
                    "snapshot the database and migrate (when there is something to migrate), "
                } else {
                    ""
                },
                self.restart.join(", "),
                cfg.health_timeout,
                snap.current.name().unwrap_or("nothing (current is removed)")
            ),
        ];
        if self.clean {
            lines.push(format!(
                "  --clean, in prepare: the virtualenv built anew ({}/KEY.{}) from an empty uv cache, which replaces {} once the virtualenv is built and checked; the release's assets replace same-named files in {}",
                contract::layout::VENVS,
                self.release(),
                contract::layout::UV_CACHE,
                contract::layout::ASSETS
            ));
        }
        if self.maintenance {
            lines.push(format!(
                "  --maintenance: {}/{} written before the migration (nginx answers 503 with the page), removed in the record step whatever the result (left on if it was on)",
                cfg.root,
                contract::layout::MAINTENANCE_FLAG
            ));
        }
        if !self.prune.is_empty() {
            lines.push(format!("  after success: prune {}", self.prune.join(", ")));
        }
        lines
    }
}

/// The dry run's line about the fleet: the primary is the host whose plan is the primary's (the
/// role recorded on it, which DEPLOY_SERVER must agree with), named as the host names itself.
pub fn fleet_plan_line(roles: &[(&str, HostRole)], batch: usize) -> String {
    let primary = roles
        .iter()
        .find(|(_, r)| *r == HostRole::Primary)
        .map_or("none".to_string(), |(h, _)| {
            format!("{h}, recorded in {}", contract::ROLE_FILE)
        });
    format!(
        "  fleet: the primary ({primary}) migrates; hosts switch {} at a time, each health-gated; if one fails, every switched host goes back",
        batch.min(roles.len())
    )
}

/// Test hook (`INNERCONTEXT_TEST_PAUSE_AT=STEP`, a step of the job as the contract names it):
/// the job writes `.deploy.lock/paused` when STEP is about to start and waits while it exists.
/// The server refuses a value that is not a step.
fn test_pause_at() -> Option<String> {
    std::env::var("INNERCONTEXT_TEST_PAUSE_AT")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| crate::deploy::lock::clean(&s))
}

/// How long assets of a release that stopped being current stay served (seconds): the
/// contract's, or the test hook `INNERCONTEXT_ASSET_GRACE`.
fn asset_grace() -> i64 {
    std::env::var("INNERCONTEXT_ASSET_GRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &i64| *s >= 0)
        .unwrap_or(crate::contract::ASSET_GRACE_SECS)
}

/// A fresh token for a job: this process and the time, unique enough to name a lock.
pub fn token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    )
}

#[cfg(test)]
mod tests;
