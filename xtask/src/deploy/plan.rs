//! Pure planning: from what the server looks like (a [`Snapshot`]), who deploys what and the
//! configuration, decide what a deploy or rollback asks the server job to do, or why there is
//! nothing to do. Rendered into the `run` call (and printed by `--dry-run`); no I/O here.

use anyhow::{bail, Result};
use time::OffsetDateTime;

use crate::config::{Config, HostRole};
use crate::contract::{self, Half, Unit};
use crate::deploy::drift;
use crate::deploy::local::Local;
use crate::deploy::snapshot::{Current, Snapshot};
use crate::flags::Scope;
use crate::release;
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
            .any(|r| r.name == target && r.state == release::State::Succeeded);
        if !ok {
            let what = snap
                .releases
                .iter()
                .find(|r| r.name == target)
                .map(|r| format!("is {} there", r.state.name()))
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
            ("deployer", crate::lock::clean(who.deployer)),
            ("commit", crate::lock::clean(who.commit)),
            ("dirty", yn(who.dirty)),
            ("command", self.command()),
            ("client_pid", std::process::id().to_string()),
            ("client_host", crate::lock::clean(who.host)),
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
        Call::deploy("run", &args)
    }
}

/// Test hook (`INNERCONTEXT_TEST_PAUSE_AT=STEP`, a step of the job as the contract names it):
/// the job writes `.deploy.lock/paused` when STEP is about to start and waits while it exists.
/// The server refuses a value that is not a step.
fn test_pause_at() -> Option<String> {
    std::env::var("INNERCONTEXT_TEST_PAUSE_AT")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| crate::lock::clean(&s))
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
mod tests {
    use super::*;
    use crate::deploy::snapshot::Recorded;
    use crate::release::{Made, Release, State};

    fn snap(current: Current, releases: &[(&str, State)]) -> Snapshot {
        Snapshot {
            now: release::parse_name("20261128T120000Z")
                .unwrap()
                .unix_timestamp(),
            host: "app".into(),
            role: Recorded::Role(HostRole::Primary),
            current,
            current_made: Made {
                state: State::Succeeded,
                backend_commit: "abc".into(),
                frontend_commit: "abc".into(),
            },
            restored: None,
            releases: releases
                .iter()
                .map(|(n, s)| Release {
                    name: n.to_string(),
                    state: *s,
                    commit: "abc".into(),
                    revision: "-".into(),
                })
                .collect(),
            junk: vec![],
            lock: None,
            last_job: None,
            units: vec![],
            disk: None,
            db: Err("not asked".into()),
            sizes: vec![],
            dumps: vec![],
        }
    }

    fn local(commit: &str) -> Local {
        Local {
            commit: commit.into(),
            dirty: false,
            deployer: "alice@laptop".into(),
            host: "laptop".into(),
        }
    }

    fn cfg() -> Config {
        Config::from_lookup(|_| None).unwrap()
    }

    #[test]
    fn nothing_to_deploy_when_current_runs_the_commit() {
        let s = snap(
            Current::Release("20261128T110000Z".into()),
            &[("20261128T110000Z", State::Succeeded)],
        );
        let d = deploy(
            &s,
            &local("abc"),
            &cfg(),
            Scope::All,
            false,
            0,
            HostRole::Primary,
        )
        .unwrap();
        assert!(matches!(d, Decision::Nothing(m) if m.contains("already runs commit abc")));
        let d = deploy(
            &s,
            &local("abc"),
            &cfg(),
            Scope::All,
            true,
            0,
            HostRole::Primary,
        )
        .unwrap();
        assert!(matches!(d, Decision::Deploy(_)));
    }

    #[test]
    fn a_plan_names_the_release_on_the_servers_clock_and_prunes() {
        let mut rs = vec![];
        for i in 0..6 {
            rs.push((format!("20261128T10000{i}Z"), State::Succeeded));
        }
        let rs: Vec<(&str, State)> = rs.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let s = snap(Current::Release("20261128T100005Z".into()), &rs);
        let Decision::Deploy(p) = deploy(
            &s,
            &local("def"),
            &cfg(),
            Scope::Backend,
            false,
            10 << 20,
            HostRole::Primary,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.release(), "20261128T120000Z");
        assert_eq!(p.expect_current, "releases/20261128T100005Z");
        assert_eq!(
            p.restart,
            vec!["innercontext", "innercontext-pricing-worker"]
        );
        assert_eq!(p.check.len(), 3);
        assert_eq!(p.probes[0], contract::API.probe.unwrap(), "the API first");
        // Keep 5 = the new one, current and three more.
        assert_eq!(p.prune, vec!["20261128T100000Z", "20261128T100001Z"]);
        assert_eq!(p.need_mb, 160);
        let call = p.run_call(
            &cfg(),
            &Asker {
                token: "1-2",
                deployer: "alice@laptop",
                host: "laptop",
                commit: "def",
                dirty: false,
            },
        );
        let r = call.render();
        assert!(r.starts_with("scripts/deploy.sh run root=/opt/innercontext token=1-2 mode=deploy release=20261128T120000Z scope=backend expect_current=releases/20261128T100005Z"), "{r}");
        assert!(r.contains(" 'command=deploy backend' "), "{r}");
        assert!(
            r.contains(" prune=20261128T100000Z,20261128T100001Z"),
            "{r}"
        );
    }

    #[test]
    fn half_deploys_need_a_real_current() {
        for current in [
            Current::Missing,
            Current::Dangling("releases/20261128T110000Z".into()),
        ] {
            let s = snap(current, &[]);
            let e = deploy(
                &s,
                &local("abc"),
                &cfg(),
                Scope::Frontend,
                false,
                0,
                HostRole::Primary,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("deploy all first"), "{e}");
            // deploy all works without one.
            assert!(deploy(
                &s,
                &local("abc"),
                &cfg(),
                Scope::All,
                false,
                0,
                HostRole::Primary
            )
            .is_ok());
        }
    }

    #[test]
    fn secondaries_do_not_run_the_worker() {
        assert_eq!(
            units_to_restart(Scope::All, HostRole::Secondary),
            vec!["innercontext", "innercontext-node"]
        );
        assert_eq!(
            units_to_restart(Scope::Frontend, HostRole::Primary),
            vec!["innercontext-node"]
        );
        assert_eq!(units_of(HostRole::Primary).len(), 3);
    }

    #[test]
    fn a_fleet_gets_one_release_and_waits_for_its_verdict() {
        use crate::config::Host;
        let host = |d: &str, role| Host {
            dest: d.into(),
            role,
            stated: true,
        };
        let a = snap(
            Current::Release("20261128T110000Z".into()),
            &[("20261128T110000Z", State::Succeeded)],
        );
        let mut b = a.clone();
        b.host = "app2".into();
        b.role = Recorded::Role(HostRole::Secondary);
        // app2 once had a release a little later (say, a deploy that failed there only).
        b.releases.push(Release {
            name: "20261128T115959Z".into(),
            state: State::Failed,
            commit: "x".into(),
            revision: "-".into(),
        });
        let hosts = vec![
            (host("app1", HostRole::Primary), a.clone()),
            (host("app2", HostRole::Secondary), b),
        ];
        let FleetDecision::Deploy(plans) =
            fleet_deploy(&hosts, &local("def"), &cfg(), Scope::All, false, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].release(), "20261128T120000Z");
        assert_eq!(plans[1].release(), "20261128T120000Z", "one name for all");
        assert!(plans.iter().all(|p| !p.begin && p.wait_for_verdict));
        assert_eq!(plans[1].restart, vec!["innercontext", "innercontext-node"]);
        // Nothing to deploy only when every host runs the commit.
        let mut a2 = a.clone();
        a2.role = Recorded::Role(HostRole::Secondary);
        let hosts = vec![
            (host("app1", HostRole::Primary), a.clone()),
            (host("app2", HostRole::Secondary), a2),
        ];
        assert!(matches!(
            fleet_deploy(&hosts, &local("abc"), &cfg(), Scope::All, false, 0).unwrap(),
            FleetDecision::Nothing(m) if m.contains("all 2 hosts")
        ));
        // One host alone plans as before.
        let FleetDecision::Deploy(one) = fleet_deploy(
            &[(host("app1", HostRole::Primary), a)],
            &local("def"),
            &cfg(),
            Scope::All,
            false,
            0,
        )
        .unwrap() else {
            panic!()
        };
        assert!(one[0].begin && !one[0].wait_for_verdict);
    }

    #[test]
    fn a_fleet_rolls_back_only_to_a_release_every_host_has() {
        use crate::config::Host;
        let host = |d: &str, role| Host {
            dest: d.into(),
            role,
            stated: true,
        };
        let both = [
            ("20261128T100000Z", State::Succeeded),
            ("20261128T110000Z", State::Succeeded),
        ];
        let a = snap(Current::Release("20261128T110000Z".into()), &both);
        let mut b = snap(
            Current::Release("20261128T110000Z".into()),
            &[("20261128T110000Z", State::Succeeded)],
        );
        b.host = "app2".into();
        b.role = Recorded::Role(HostRole::Secondary);
        let hosts = vec![
            (host("app1", HostRole::Primary), a.clone()),
            (host("app2", HostRole::Secondary), b),
        ];
        let e = fleet_rollback(&hosts, None, false).unwrap_err().to_string();
        assert!(
            e.contains("20261128T100000Z does not exist there (app2)"),
            "{e}"
        );
        let mut a2 = a.clone();
        a2.role = Recorded::Role(HostRole::Secondary);
        let hosts = vec![
            (host("app1", HostRole::Primary), a.clone()),
            (host("app2", HostRole::Secondary), a2.clone()),
        ];
        let plans = fleet_rollback(&hosts, None, false).unwrap();
        assert!(plans
            .iter()
            .all(|p| p.release() == "20261128T100000Z" && !p.begin && p.wait_for_verdict));
        // A secondary alone (DEPLOY_SERVER names it without a mark): its record decides, and
        // its worker is neither restarted nor checked.
        let alone = Host {
            dest: "app2".into(),
            role: HostRole::Primary,
            stated: false,
        };
        let plans = fleet_rollback(&[(alone, a2)], None, false).unwrap();
        assert_eq!(plans[0].role, HostRole::Secondary);
        assert_eq!(plans[0].restart, vec!["innercontext", "innercontext-node"]);
        assert_eq!(plans[0].check, plans[0].restart);
        // A mark that disagrees with the records is refused at plan time.
        let hosts = vec![
            (host("app1", HostRole::Secondary), a.clone()),
            (host("app2", HostRole::Primary), a),
        ];
        let e = fleet_rollback(&hosts, None, false).unwrap_err().to_string();
        assert!(e.contains("disagree"), "{e}");
    }

    #[test]
    fn a_drifted_fleet_gets_no_half_deploy() {
        use crate::config::Host;
        let host = |d: &str, role| Host {
            dest: d.into(),
            role,
            stated: true,
        };
        let both = [
            ("20261128T100000Z", State::Succeeded),
            ("20261128T110000Z", State::Succeeded),
        ];
        let mut a = snap(Current::Release("20261128T110000Z".into()), &both);
        a.host = "app1".into();
        // app2 was rolled back alone.
        let mut b = snap(Current::Release("20261128T100000Z".into()), &both);
        b.host = "app2".into();
        b.role = Recorded::Role(HostRole::Secondary);
        let hosts = vec![
            (host("app1", HostRole::Primary), a.clone()),
            (host("app2", HostRole::Secondary), b.clone()),
        ];
        for scope in [Scope::Backend, Scope::Frontend] {
            let e = fleet_deploy(&hosts, &local("def"), &cfg(), scope, false, 0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("the hosts run different releases (app1 on 20261128T110000Z, app2 on 20261128T100000Z)")
                    && e.contains("'cargo xtask deploy all'"),
                "{e}"
            );
        }
        // deploy all reconciles: one release for both.
        let FleetDecision::Deploy(plans) =
            fleet_deploy(&hosts, &local("def"), &cfg(), Scope::All, false, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(plans[0].release(), plans[1].release());
        // Same name, different halves (what a half deploy made of a drifted fleet).
        b.current = a.current.clone();
        b.current_made.frontend_commit = "old".into();
        let hosts = vec![
            (host("app1", HostRole::Primary), a),
            (host("app2", HostRole::Secondary), b),
        ];
        let e = fleet_deploy(&hosts, &local("def"), &cfg(), Scope::Backend, false, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the same build everywhere"), "{e}");
    }

    #[test]
    fn rollback_from_a_dangling_current() {
        let s = snap(
            Current::Dangling("releases/20261128T110000Z".into()),
            &[("20261128T100000Z", State::Succeeded)],
        );
        let p = rollback(&s, None, false, HostRole::Primary).unwrap();
        assert_eq!(p.release(), "20261128T100000Z");
        assert_eq!(p.expect_current, "releases/20261128T110000Z");
        assert_eq!(p.restart.len(), 3);
        let missing = snap(Current::Missing, &[("20261128T100000Z", State::Succeeded)]);
        assert!(rollback(&missing, None, false, HostRole::Primary).is_err());
        assert_eq!(
            rollback(&missing, Some("20261128T100000Z"), false, HostRole::Primary)
                .unwrap()
                .release(),
            "20261128T100000Z"
        );
    }
}
