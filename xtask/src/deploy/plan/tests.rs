use super::*;
use crate::deploy::release::{Made, Release, State};
use crate::deploy::snapshot::Recorded;

fn snap(current: Current, releases: &[(&str, State)]) -> Snapshot {
    Snapshot {
        now: release::parse_name("20261128T120000Z")
            .unwrap()
            .unix_timestamp(),
        host: "app".into(),
        role: Recorded::Role(HostRole::Primary),
        current,
        current_made: Made {
            state: Some(State::Succeeded),
            backend_commit: "abc".into(),
            frontend_commit: "abc".into(),
        },
        restored: None,
        releases: releases
            .iter()
            .map(|(n, s)| Release {
                name: n.to_string(),
                state: Some(*s),
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
        maintenance: Default::default(),
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
    let lines = p.dry_run(&cfg(), "innercontext@app", &s, false, &r);
    assert_eq!(
        lines[0],
        "Plan for 'deploy backend' to innercontext@app (app), nothing will be changed:"
    );
    assert_eq!(
        lines[1],
        "  local, beside the upload: clean tree, backend ruff + pytest"
    );
    assert_eq!(lines[3], format!("      {r}"));
    assert_eq!(lines[4], "  upload: rsync into /opt/innercontext/releases/20261128T120000Z (seeded from current; only what changed travels)");
    assert!(lines[5].starts_with("  then on the server: prepare, snapshot the database and migrate (when there is something to migrate), switch, restart innercontext, innercontext-pricing-worker, health checks ("), "{lines:?}");
    assert_eq!(
        lines[6],
        "  after success: prune 20261128T100000Z, 20261128T100001Z"
    );
    let skipped = p.dry_run(&cfg(), "app", &s, true, &r);
    assert_eq!(
        skipped[1],
        "  local, beside the upload: none (checks skipped)"
    );
}

#[test]
fn a_clean_deploy_asks_for_it_and_says_what_it_does() {
    let s = snap(
        Current::Release("20261128T100005Z".into()),
        &[("20261128T100005Z", State::Succeeded)],
    );
    let who = Asker {
        token: "1-2",
        deployer: "alice@laptop",
        host: "laptop",
        commit: "def",
        dirty: false,
    };
    let Decision::Deploy(mut p) = deploy(
        &s,
        &local("def"),
        &cfg(),
        Scope::All,
        true,
        0,
        HostRole::Primary,
    )
    .unwrap() else {
        panic!()
    };
    assert!(!p.run_call(&cfg(), &who).render().contains("clean="));
    p.clean = true;
    let r = p.run_call(&cfg(), &who).render();
    assert!(r.ends_with(" clean=yes"), "{r}");
    let lines = p.dry_run(&cfg(), "app", &s, false, &r);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("(--clean: nothing seeded from current; every file travels)")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l
            .starts_with("  --clean, in prepare: the virtualenv built anew (shared/venvs/KEY.")
            && l.contains("from an empty uv cache, which replaces shared/uv-cache once")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("--maintenance")));
    p.maintenance = true;
    let r = p.run_call(&cfg(), &who).render();
    assert!(r.ends_with(" clean=yes maintenance=yes"), "{r}");
    let lines = p.dry_run(&cfg(), "app", &s, false, &r);
    assert!(
        lines.iter().any(|l| l.starts_with("  --maintenance: ")
            && l.contains("/maintenance.on written before the migration")),
        "{lines:?}"
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
        state: Some(State::Failed),
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

#[test]
fn the_fleet_dry_run_names_the_recorded_primary() {
    use crate::config::HostRole::{Primary, Secondary};
    let line = fleet_plan_line(
        &[("app1", Secondary), ("app2", Primary), ("app3", Secondary)],
        usize::MAX,
    );
    assert_eq!(
        line,
        "  fleet: the primary (app2, recorded in /etc/innercontext/role) migrates; hosts switch 3 at a time, each health-gated; if one fails, every switched host goes back"
    );
    assert!(fleet_plan_line(&[("a", Primary), ("b", Secondary)], 1)
        .contains("(a, recorded in /etc/innercontext/role) migrates; hosts switch 1 at a time"));
}
