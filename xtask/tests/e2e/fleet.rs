//! Several app hosts: three app machines and a db machine, behind a load balancer (nginx on
//! this host, upstream = the app machines). One command deploys, checks and rolls back the
//! fleet; every host serves the same release; one ssh handshake per host per command; the
//! migration runs once (on the primary); a host that fails sends the whole fleet back; a lock
//! held on one host stops everyone; and no request through the load balancer fails while the
//! fleet rolls.

use anyhow::{ensure, Context, Result};
use camino::Utf8PathBuf;
use std::process::Command;
use xshell::Shell;
use xtask::flags::Role;
use xtask::testhost::balancer::{self, Balancer};
use xtask::testhost::{self as th, Machine};

use crate::support::{Scratch, ROOT};
use crate::Ctx;

/// The fleet's machines and how a user would reach them.
pub struct FleetSite {
    pub apps: Vec<Machine>,
    pub db: Machine,
    /// One ssh config naming every app machine.
    pub ssh_config: Utf8PathBuf,
    pub server: String,
    pub scratch: Scratch,
    pub lb: Option<Balancer>,
}

impl FleetSite {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::support::xtask_bin());
        cmd.args(args)
            .current_dir(&self.scratch.dir)
            .env("XTASK_PROJECT_ROOT", &self.scratch.dir)
            .env("DEPLOY_SSH_CONFIG", &self.ssh_config)
            .env("DEPLOY_SERVER", &self.server)
            .env("DEPLOY_HEALTH_TIMEOUT", "20")
            .env("CI", "true")
            .env_remove("DEPLOY_ALLOW_DIRTY")
            .env_remove("DEPLOY_ROOT")
            .env_remove("DEPLOY_ADMIN")
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn xtask(&self, args: &[&str]) -> Result<crate::support::Run> {
        crate::support::Run::capture(self.command(args))
    }

    fn currents(&self) -> Result<Vec<String>> {
        self.apps
            .iter()
            .map(|m| {
                Ok(m.ssh(&["readlink", &format!("{ROOT}/current")])?
                    .trim()
                    .trim_start_matches("releases/")
                    .to_string())
            })
            .collect()
    }

    fn logins(&self) -> Result<Vec<usize>> {
        self.apps
            .iter()
            .map(|m| {
                let out = m.ssh(&[
                    "bash",
                    "-c",
                    "journalctl --sync; journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey for innercontext ' || true",
                ])?;
                Ok(out.trim().parse().unwrap_or(0))
            })
            .collect()
    }

    /// Each app machine serves through its own nginx, and the load balancer answers.
    fn assert_serving(&self) -> Result<()> {
        for m in &self.apps {
            let (s, _) = crate::support::http_get(&m.ip, 80, "/api/health-check")?;
            ensure!(s == 200, "{} answered {s}", m.name);
        }
        if let Some(lb) = &self.lb {
            let (s, _) = crate::support::http_get("127.0.0.1", lb.port, "/")?;
            ensure!(s == 200, "the load balancer answered {s}");
        }
        Ok(())
    }
}

/// Boot, provision and combine the fleet's machines (once per run).
fn fleet(ctx: &mut Ctx) -> Result<&FleetSite> {
    if ctx.fleet.is_none() {
        let sh = Shell::new()?;
        th::build(&sh, false)?;
        let names: Vec<String> = ["f1", "f2", "f3"]
            .iter()
            .map(|n| crate::machine_name(n))
            .collect();
        let db_name = crate::machine_name("fdb");
        let (apps, db) = std::thread::scope(|s| {
            let db = s.spawn(|| th::up(&Shell::new()?, &db_name, Role::Db));
            let apps: Vec<_> = names
                .iter()
                .map(|n| s.spawn(move || th::up(&Shell::new()?, n, Role::App)))
                .collect();
            let apps: Result<Vec<Machine>> = apps
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("boot panicked")))
                })
                .collect();
            (
                apps,
                db.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("boot panicked"))),
            )
        });
        let (apps, db) = (apps?, db?);
        let scratch = crate::support::scratch("fleet")?;
        // One ssh config naming every app machine; DEPLOY_SERVER lists them, primary first.
        let env = xtask::demo::Environment::for_fleet(&apps, &db)?;
        let (ssh_config, server) = (env.ssh_config.clone(), env.server.clone());
        // setup-server provisions every host of the fleet (the worker only on the primary).
        let run = crate::support::Run::capture({
            let mut c = Command::new(crate::support::xtask_bin());
            c.args(env.setup_server_args())
                .current_dir(&scratch.dir)
                .env("XTASK_PROJECT_ROOT", &scratch.dir)
                .env("DEPLOY_SSH_CONFIG", &ssh_config)
                .env("DEPLOY_SERVER", &server)
                .env_remove("DEPLOY_ADMIN")
                .env("CI", "true");
            c
        })?;
        run.ok().context("setup-server for the fleet")?;
        for m in &apps[1..] {
            let state = m.ssh(&[
                "bash",
                "-c",
                "systemctl is-enabled innercontext-pricing-worker || true",
            ])?;
            ensure!(
                state.trim() == "disabled",
                "the worker is {} on secondary {}",
                state.trim(),
                m.name
            );
        }
        ctx.fleet = Some(FleetSite {
            apps,
            db,
            ssh_config,
            server,
            scratch,
            lb: None,
        });
    }
    Ok(ctx.fleet.as_ref().unwrap())
}

/// First deploy to all, an incremental deploy, a rollback: every host on the same release,
/// one handshake per host per command, the migration on the primary only.
pub fn deploys_and_rolls_back_as_one(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let before = f.logins()?;
    let first = f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let cur = f.currents()?;
    ensure!(
        cur.iter().all(|c| *c == cur[0]),
        "hosts differ: {cur:?}\n{}",
        first.all()
    );
    let after = f.logins()?;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        ensure!(
            a - b == 1,
            "{} had {} logins for one deploy",
            f.apps[i].name,
            a - b
        );
    }
    // The migration ran on the primary only.
    for (i, m) in f.apps.iter().enumerate() {
        let migrated = m.ssh(&[
            "bash",
            "-c",
            &format!("grep -l 'step\tmigrate\tstart' {ROOT}/jobs/*/events | wc -l"),
        ])?;
        let n: usize = migrated.trim().parse()?;
        ensure!(
            (n > 0) == (i == 0),
            "{} ran the migration step {n} time(s)",
            m.name
        );
    }
    f.assert_serving()?;
    // Incremental.
    let text = f.scratch.read("backend/innercontext/pricing.py")?;
    f.scratch.write(
        "backend/innercontext/pricing.py",
        &format!("{text}\n# fleet\n"),
    )?;
    f.scratch.commit("fleet incremental")?;
    let before = f.logins()?;
    let inc = f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let now = f.currents()?;
    ensure!(
        now.iter().all(|c| *c == now[0]) && now[0] != cur[0],
        "{now:?}\n{}",
        inc.all()
    );
    let after = f.logins()?;
    ensure!(
        before.iter().zip(&after).all(|(b, a)| a - b == 1),
        "logins {before:?} -> {after:?}"
    );
    let list = f.xtask(&["deploy", "list"])?.ok()?;
    ensure!(!list.stdout.contains("DRIFT"), "{}", list.stdout);
    // Rollback: every host to the same release.
    f.xtask(&["deploy", "rollback"])?.ok()?;
    let back = f.currents()?;
    ensure!(back.iter().all(|c| *c == cur[0]), "{back:?}");
    f.xtask(&["deploy", "rollback", &now[0]])?.ok()?;
    f.assert_serving()
}

/// A release that is unhealthy on the second host only: hosts 1 and 2 go back, host 3 never
/// switches; every host serves the old release; the client says so.
pub fn a_failing_host_sends_the_fleet_back(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let old = f.currents()?;
    let main = f.scratch.read("backend/innercontext/main.py")?;
    f.scratch.write(
        "backend/innercontext/main.py",
        &format!("{main}\nimport os  # noqa: E402\n\nif os.path.exists(\"/etc/innercontext-e2e-unhealthy\"):\n    raise RuntimeError(\"e2e: this host cannot start this release\")\n"),
    )?;
    f.scratch.commit("unhealthy on one host")?;
    f.apps[1].ssh(&["touch", "/etc/innercontext-e2e-unhealthy"])?;
    let run = f
        .command(&["deploy", "all", "--skip-local-checks"])
        .env("DEPLOY_HEALTH_TIMEOUT", "8")
        .output();
    f.apps[1].ssh(&["rm", "-f", "/etc/innercontext-e2e-unhealthy"])?;
    f.scratch.undo()?;
    let run = run?;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(!run.status.success(), "the fleet deploy succeeded:\n{out}");
    ensure!(out.contains("goes back"), "{out}");
    ensure!(
        out.contains(&format!("every host runs {}", old[0])),
        "{out}"
    );
    ensure!(
        f.currents()? == old,
        "hosts are on {:?}, not {old:?}",
        f.currents()?
    );
    let logs: Vec<String> = f
        .apps
        .iter()
        .map(|m| m.ssh(&["tail", "-n", "1", &format!("{ROOT}/deploy.log")]))
        .collect::<Result<_>>()?;
    ensure!(
        logs[0].contains("result=rolled-back"),
        "host 1: {}",
        logs[0]
    );
    ensure!(
        logs[1].contains("result=rolled-back"),
        "host 2: {}",
        logs[1]
    );
    ensure!(logs[2].contains("result=failed"), "host 3: {}", logs[2]);
    let switched = f.apps[2].ssh(&[
        "bash",
        "-c",
        &format!("tail -n 1 {ROOT}/deploy.log >/dev/null; grep -c 'step\tswitch\tstart' $(ls -t {ROOT}/jobs/*/events | head -1) || true"),
    ])?;
    ensure!(switched.trim() == "0", "host 3 switched");
    f.assert_serving()
}

/// A lock held on one host: nobody switches, and the locks taken on the others are released.
pub fn a_held_lock_stops_everyone(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let old = f.currents()?;
    // Held by a live job (a lock no process holds would be taken over).
    let lock = crate::support::LiveLock::hold(
        &f.apps[1],
        "user=someone\\nhost=elsewhere\\npid=1\\nstarted=2026-01-01T00:00:00Z\\nstarted_epoch=1767225600\\ncommand=deploy all\\ncommit=abc\\nrelease=-\\ntoken=held-1\\n",
    )?;
    f.scratch.commit("against a held lock")?;
    let run = f.xtask(&["deploy", "all", "--skip-local-checks"]);
    let held = f.apps[1]
        .ssh(&["test", "-d", &format!("{ROOT}/.deploy.lock")])
        .is_ok();
    lock.release()?;
    let run = run?.failed()?;
    ensure!(held, "the held lock was removed");
    ensure!(
        run.all().contains(&f.apps[1].name) && run.all().contains("someone@elsewhere"),
        "{}",
        run.all()
    );
    for m in [&f.apps[0], &f.apps[2]] {
        ensure!(
            m.ssh(&["test", "-d", &format!("{ROOT}/.deploy.lock")])
                .is_err(),
            "{} is still locked",
            m.name
        );
    }
    ensure!(f.currents()? == old, "someone switched");
    Ok(())
}

/// wrk through the load balancer during a rolling deploy and a rollback: no failed request.
pub fn no_failed_request_through_the_load_balancer(ctx: &mut Ctx) -> Result<()> {
    fleet(ctx)?;
    let lb_dir = ctx.fleet.as_ref().unwrap().scratch.sidecar("lb");
    let apps = ctx.fleet.as_ref().unwrap().apps.clone();
    if ctx.fleet.as_ref().unwrap().lb.is_none() {
        ctx.fleet.as_mut().unwrap().lb = Some(Balancer::start(&apps, &lb_dir)?);
    }
    let f = ctx.fleet.as_ref().unwrap();
    let port = f.lb.as_ref().unwrap().port;
    // The load is on a serving fleet: a first deploy (when this scenario runs alone) is not
    // what is measured.
    if f.assert_serving().is_err() {
        f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
        f.assert_serving()?;
    }
    for (what, args) in [
        (
            "a rolling deploy",
            vec!["deploy", "all", "--skip-local-checks", "--redeploy"],
        ),
        ("a rollback", vec!["deploy", "rollback"]),
    ] {
        let lb = f.lb.as_ref().unwrap();
        lb.window(0)?;
        let wrk = crate::support::Wrk::start(&format!("http://127.0.0.1:{port}/api/health-check"))?;
        let run = f.xtask(&args);
        let stopped_ms = balancer::now_ms();
        let w = wrk.stop()?;
        run?.ok()?;
        let seen = lb.window(stopped_ms)?;
        let show = |lines: &[String]| -> String {
            lines
                .iter()
                .take(20)
                .map(|l| format!("      {l}\n"))
                .collect()
        };
        eprintln!(
            "      {what}: {} requests, slowest {:.3}s at the balancer",
            w.requests, seen.slowest
        );
        ensure!(w.requests > 100, "{what}: only {} requests", w.requests);
        ensure!(
            w.errors == 0 && w.non2xx == 0 && seen.failed.is_empty(),
            "{what}: {} of {} requests failed ({}); the balancer's failed answers (time, status, upstreams, their answers, duration):\n{}      and its slow ones:\n{}",
            w.errors + w.non2xx + seen.failed.len() as u64,
            w.requests,
            w.detail.trim(),
            show(&seen.failed),
            show(&seen.slow)
        );
    }
    f.assert_serving()
}

/// Take the fleet down (the last fleet scenario).
pub fn down(ctx: &mut Ctx) -> Result<()> {
    if let Some(f) = ctx.fleet.take() {
        let sh = Shell::new()?;
        let names: Vec<String> = f
            .apps
            .iter()
            .map(|m| m.name.clone())
            .chain([f.db.name.clone()])
            .collect();
        drop(f);
        for n in names {
            th::down(&sh, &n)?;
        }
    }
    Ok(())
}
