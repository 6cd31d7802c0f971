//! Several app hosts: three app machines and a db machine, behind a load balancer (nginx on
//! this host, upstream = the app machines). One command deploys, checks and rolls back the
//! fleet; every host serves the same release; one ssh handshake per host per command; the
//! migration runs once (on the primary); a host that fails sends the whole fleet back; a lock
//! held on one host stops everyone; and no request through the load balancer fails while the
//! fleet rolls. Then a fleet that drifts (a secondary rolled back alone), roles recorded on the
//! hosts (a #primary that disagrees, moving the primary with setup-server), `log` and `status`
//! of every host, and one host unreachable.

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
    /// `setup-server` with the fleet's deploy key and env files.
    pub setup_args: Vec<String>,
}

impl FleetSite {
    pub(crate) fn command(&self, args: &[&str]) -> Command {
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

    /// The same with another DEPLOY_SERVER (one host alone, other marks).
    fn xtask_to(&self, server: &str, args: &[&str]) -> Result<crate::support::Run> {
        let mut cmd = self.command(args);
        cmd.env("DEPLOY_SERVER", server);
        crate::support::Run::capture(cmd)
    }

    /// `setup-server` of every host of `server`, as root on each.
    fn setup_server(&self, server: &str) -> Result<crate::support::Run> {
        let args: Vec<&str> = self.setup_args.iter().map(String::as_str).collect();
        self.xtask_to(server, &args)
    }

    /// DEPLOY_SERVER for the fleet with app `primary` marked `#primary`.
    fn marked(&self, primary: usize) -> String {
        self.apps
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mark = if i == primary { "#primary" } else { "" };
                format!("{}{mark}", dest(m))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// deploy.log's length on each host.
    fn log_lengths(&self) -> Result<Vec<usize>> {
        self.apps
            .iter()
            .map(|m| {
                let n = m.ssh(&["bash", "-c", &format!("wc -l < {ROOT}/deploy.log")])?;
                Ok(n.trim().parse()?)
            })
            .collect()
    }

    /// Whether any host holds a deploy lock.
    fn any_lock(&self) -> Result<bool> {
        for m in &self.apps {
            if m.ssh(&["test", "-d", &format!("{ROOT}/.deploy.lock")])
                .is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The page's build version through each host's own nginx.
    fn versions(&self) -> Result<Vec<String>> {
        self.apps
            .iter()
            .map(|m| {
                let (s, body) = crate::support::http_get(&m.ip, 80, "/_app/version.json")?;
                ensure!(
                    s == 200,
                    "/_app/version.json through {} answered {s}",
                    m.name
                );
                Ok(body.trim().to_string())
            })
            .collect()
    }

    pub(crate) fn currents(&self) -> Result<Vec<String>> {
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
    pub(crate) fn assert_serving(&self) -> Result<()> {
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
                .map(|n| s.spawn(move || th::up(&Shell::new()?, n, crate::app_role())))
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
            setup_args: env
                .setup_server_args()
                .iter()
                .map(|s| s.to_string())
                .collect(),
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

/// `rollback --migrate-down` of a fleet: a release adds a column; the rollback switches every
/// host first, and only then (after the last host's switch) does the primary snapshot and take
/// the database down; every host ends on the old release, the column gone; forward again.
pub fn migrate_down_switches_every_host_first(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let psql = |sql: &str| -> Result<String> {
        Ok(f.db
            .ssh(&[
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-qtAX",
                "innercontext",
                "-c",
                sql,
            ])?
            .trim()
            .to_string())
    };
    let column = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'products' AND column_name = 'fleet_down'";
    f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let old = f.currents()?;
    let from = psql("SELECT version_num FROM alembic_version")?;
    let versions = "backend/alembic/versions";
    let n: u32 = from
        .get(..4)
        .unwrap_or("")
        .parse()
        .context("revision ids start with 4 digits")?;
    let id = format!("{:04}_fleet_down", n + 1);
    f.scratch.write(
        &format!("{versions}/{id}.py"),
        &format!(
            "\"\"\"A fleet's end-to-end migration.\"\"\"\n\nimport sqlalchemy as sa\n\nfrom alembic import op\n\nrevision = \"{id}\"\ndown_revision = \"{from}\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.add_column(\"products\", sa.Column(\"fleet_down\", sa.Text(), nullable=True))\n\n\ndef downgrade() -> None:\n    op.drop_column(\"products\", \"fleet_down\")\n"
        ),
    )?;
    f.scratch.commit("a fleet migration")?;
    f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let new = f.currents()?;
    ensure!(
        new[0] != old[0]
            && psql(column)? == "1"
            && psql("SELECT version_num FROM alembic_version")? == id
    );

    let run = f.xtask(&["deploy", "rollback", "--migrate-down"])?;
    println!("--- the fleet's rollback --migrate-down:\n{}", run.all());
    run.ok()?;
    let back = f.currents()?;
    ensure!(
        back.iter().all(|c| *c == old[0]),
        "not every host is back on {}: {back:?}",
        old[0]
    );
    ensure!(
        psql("SELECT version_num FROM alembic_version")? == from,
        "the database is not back at {from}"
    );
    ensure!(psql(column)? == "0", "the column is still there");
    // When: each host's switch (its newest job's events), then the primary's downgrade.
    let downgrade = newest_job_event(&f.apps[0], "step\tmigrate\tstart")?;
    for m in &f.apps {
        let switched = newest_job_event(m, "step\tswitch\tok")?;
        ensure!(
            switched < downgrade,
            "{} switched at {switched}, after the primary's downgrade began at {downgrade}",
            m.name
        );
    }
    for m in &f.apps[1..] {
        let none = m.ssh(&["bash", "-c", &format!("d=$(ls -td {ROOT}/jobs/*/ | head -n 1); grep -c 'step.migrate' \"$d/events\" || true")])?;
        ensure!(
            none.trim() == "0",
            "{} ran a migrate step in the rollback",
            m.name
        );
    }
    f.assert_serving()?;
    f.xtask(&["deploy", "all", "--skip-local-checks", "--redeploy"])?
        .ok()?;
    ensure!(psql(column)? == "1");
    f.assert_serving()
}

/// When (server ms) the newest job on `m` logged its first event `what` (tab-separated kind and
/// fields, e.g. "step\tswitch\tstart").
fn newest_job_event(m: &Machine, what: &str) -> Result<u64> {
    let t = m.ssh(&[
        "bash",
        "-c",
        &format!("d=$(ls -td {ROOT}/jobs/*/ | head -n 1); grep -P '\\t{what}' \"$d/events\" | head -n 1 | cut -f1"),
    ])?;
    t.trim()
        .parse()
        .with_context(|| format!("no '{what}' event on {}: '{t}'", m.name))
}

/// `--parallel` and `--batch N` switch as many hosts at once as they say: with `--parallel`
/// every host's switch starts before any host is healthy; a rollback with `--batch 2` of three
/// hosts switches the first two together and the third only once both are healthy.
pub fn batch_and_parallel_switch_as_told(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    ensure!(f.apps.len() == 3, "this scenario wants three app hosts");
    let times = |what: &str| -> Result<Vec<u64>> {
        f.apps.iter().map(|m| newest_job_event(m, what)).collect()
    };
    let run = f.xtask(&[
        "deploy",
        "all",
        "--skip-local-checks",
        "--redeploy",
        "--parallel",
    ])?;
    println!("--- deploy --parallel:\n{}", run.all());
    run.ok()?;
    let (switch, healthy) = (times("step\tswitch\tstart")?, times("step\thealth\tok")?);
    ensure!(
        switch.iter().max() < healthy.iter().min(),
        "--parallel: a host switched after another was healthy (switch starts {switch:?}, healthy {healthy:?})"
    );
    let run = f.xtask(&["deploy", "rollback", "--batch", "2"])?;
    println!("--- rollback --batch 2:\n{}", run.all());
    run.ok()?;
    let (switch, healthy) = (times("step\tswitch\tstart")?, times("step\thealth\tok")?);
    ensure!(
        switch[0].max(switch[1]) < healthy[0].min(healthy[1])
            && switch[2] > healthy[0].max(healthy[1]),
        "--batch 2: not the first two together, then the third (switch starts {switch:?}, healthy {healthy:?})"
    );
    let cur = f.currents()?;
    ensure!(cur.iter().all(|c| *c == cur[0]), "hosts differ: {cur:?}");
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
            "      {what}: {} requests, slowest {:.3}s at the balancer, which logged no answer for {:.3}s at most",
            w.requests, seen.slowest, seen.longest_gap
        );
        ensure!(w.requests > 100, "{what}: only {} requests", w.requests);
        let clean = w.errors == 0 && w.non2xx == 0 && seen.failed.is_empty();
        // What each host's API and nginx said meanwhile: a failed run names its cause.
        let journals = if clean {
            String::new()
        } else {
            apps.iter()
                .map(|m| {
                    let tail = m
                        .ssh(&[
                            "bash",
                            "-c",
                            "journalctl --sync; journalctl -u innercontext -u innercontext.socket --since -3min -o short-unix --no-pager | grep -v ' 200 OK$' | tail -n 40; tail -n 20 /var/log/nginx/error.log",
                        ])
                        .unwrap_or_else(|e| format!("{e:#}"));
                    format!("      {}:\n{tail}\n", m.name)
                })
                .collect()
        };
        ensure!(
            clean,
            "{what}: {} of {} requests failed ({}); the balancer's failed answers (time, status, upstreams, their answers, duration):\n{}      its slow ones ({} in all):\n{}      and the longest time it logged no answer: {:.3}s\n      the hosts' API journals and nginx errors:\n{journals}",
            w.errors + w.non2xx + seen.failed.len() as u64,
            w.requests,
            w.detail.trim(),
            show(&seen.failed),
            seen.slow.len(),
            show(&seen.slow),
            seen.longest_gap
        );
    }
    f.assert_serving()
}

/// The connection to the last host drops right before the verdict reaches it (every host
/// healthy, `commit` already sent to the others): the deployer re-attaches and sends `commit`
/// again, never `revert`. The fleet ends on the new release, every host succeeded, and the
/// deployer says so.
pub fn a_verdict_lost_on_the_way_is_sent_again(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let last = f.apps.last().context("no app machine")?.clone();
    let (status, out) = lost_before(
        f,
        &["deploy", "all", "--skip-local-checks", "--redeploy"],
        "commit",
        &last,
    )?;
    let cur = f.currents()?;
    ensure!(
        status.success() && out.contains(&format!("every host runs {}", cur[0])),
        "the deploy did not end on one release ({status}; hosts on {cur:?}):\n{out}"
    );
    ensure!(
        cur.iter().all(|c| *c == cur[0]),
        "hosts differ: {cur:?}\n{out}"
    );
    let log = last.ssh(&["tail", "-n", "1", &format!("{ROOT}/deploy.log")])?;
    ensure!(
        log.contains("result=success"),
        "{}: {log}\n{out}",
        last.name
    );
    f.assert_serving()
}

/// The connection to the second host drops right before its `go` in a rolling rollback: the
/// fleet goes back (the first host reverts, the others stop before the switch), and the
/// deployer says so and what each host ended with, read from the servers.
pub fn a_go_lost_on_the_way_sends_the_fleet_back(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    if f.xtask(&["deploy", "rollback", "--dry-run"])?.ok().is_err() {
        // Nothing to roll back to yet (this scenario alone): one more release.
        f.xtask(&["deploy", "all", "--skip-local-checks", "--redeploy"])?
            .ok()?;
    }
    let before = f.currents()?;
    let second = f.apps[1].clone();
    let (status, out) = lost_before(f, &["deploy", "rollback"], "go", &second)?;
    ensure!(!status.success(), "the rollback succeeded:\n{out}");
    ensure!(
        out.contains("==> the fleet goes back to its previous release"),
        "the deployer did not send the fleet back:\n{out}"
    );
    ensure!(
        out.contains(&format!("failed; every host runs {}", before[0])),
        "{out}"
    );
    ensure!(
        f.currents()? == before,
        "hosts are on {:?}, not {before:?}:\n{out}",
        f.currents()?
    );
    ensure!(!f.any_lock()?, "a lock was left:\n{out}");
    f.assert_serving()
}

/// The deployer SIGKILLed between two hosts' switches of a rolling deploy (the first host
/// switched and healthy, waiting for the verdict; the second about to get its `go`): every job
/// hears the silence and ends by itself, the first host going back, the others stopping before
/// their switch. Right after, and again after the next deploy: every host on one release, no
/// lock, no job process, each host's deploy.log with a line for it, no release left
/// `preparing`, the site answering.
pub fn a_deployer_killed_between_two_switches_leaves_one_release(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let before = f.currents()?;
    ensure!(
        before.iter().all(|c| *c == before[0]),
        "hosts differ: {before:?}"
    );
    let logs = f.log_lengths()?;
    let second = f.apps[1].clone();
    let hook = f.scratch.sidecar("pause-before-go-kill");
    fs_err::write(&hook, format!("go {}", second.name))?;
    let log = f.scratch.sidecar("killed-between-switches.log");
    let mut cmd = f.command(&["deploy", "all", "--skip-local-checks", "--redeploy"]);
    cmd.env("INNERCONTEXT_TEST_PAUSE_BEFORE_SEND", &hook);
    let mut bg = crate::support::Background::start(cmd, &log)?;
    let held = bg.wait_for(
        &format!("paused before sending 'go' to the job on {}", second.name),
        std::time::Duration::from_secs(600),
    );
    // Killed while it holds (the hook holds it while the file exists), then the file goes.
    let killed = held.and_then(|()| {
        let first = &f.apps[0];
        let switched = first.ssh(&["bash", "-c", &format!("readlink {ROOT}/current")])?;
        ensure!(
            !switched.contains(&before[0]),
            "the first host had not switched when the deployer was killed: {switched}"
        );
        bg.signal("KILL")
    });
    let _ = fs_err::remove_file(&hook);
    killed?;
    let (status, out) = bg.wait(std::time::Duration::from_secs(60))?;
    ensure!(!status.success(), "the killed deployer exited 0:\n{out}");
    // Every job ends by itself once it hears nothing (10 s), the first host after its restore.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    for m in &f.apps {
        loop {
            let state = m.ssh(&["bash", "-c", &format!(
                "l=free; test -d {ROOT}/.deploy.lock && l=held; j=none; pgrep -u innercontext -f '[d]eploy.sh job root=' >/dev/null && j=running; echo $l $j"
            )])?;
            if state.trim() == "free none" {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{}: lock and job are '{}' long after the deployer died",
                m.name,
                state.trim()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let after = f.currents()?;
    ensure!(
        after == before,
        "the fleet is split or moved after the deployer died: {before:?} -> {after:?}\n{out}"
    );
    let now = f.log_lengths()?;
    for (i, m) in f.apps.iter().enumerate() {
        ensure!(
            now[i] == logs[i] + 1,
            "{} has {} new deploy.log line(s), not one",
            m.name,
            now[i] - logs[i]
        );
        let last = m.ssh(&["tail", "-n", "1", &format!("{ROOT}/deploy.log")])?;
        let want = if i == 0 {
            "result=rolled-back"
        } else {
            "result=interrupted"
        };
        ensure!(last.contains(want), "{}: {last}", m.name);
        let preparing = m.ssh(&[
            "bash",
            "-c",
            &format!("grep -lx preparing {ROOT}/releases/*/.state 2>/dev/null || true"),
        ])?;
        ensure!(
            preparing.trim().is_empty(),
            "{} left preparing: {preparing}",
            m.name
        );
    }
    f.assert_serving()?;
    // The next deploy: one release everywhere.
    f.xtask(&["deploy", "all", "--skip-local-checks", "--redeploy"])?
        .ok()?;
    let next = f.currents()?;
    ensure!(
        next.iter().all(|c| *c == next[0]) && next[0] != before[0],
        "after the next deploy: {next:?}"
    );
    ensure!(!f.any_lock()?, "a lock was left by the next deploy");
    f.assert_serving()
}

/// Run the xtask with `args` until it is about to send `word` to the job on `m`; drop `m`'s
/// connection there (its latency proxy is killed, as a link that goes down, and every ssh
/// process to it ends), let the xtask write the message, and wait for its end.
fn lost_before(
    f: &FleetSite,
    args: &[&str],
    word: &str,
    m: &Machine,
) -> Result<(std::process::ExitStatus, String)> {
    let sh = Shell::new()?;
    let hook = f.scratch.sidecar(&format!("pause-before-{word}"));
    fs_err::write(&hook, format!("{word} {}", m.name))?;
    // The deployer's connection to `m` goes through the latency proxy, so it can be cut.
    th::delay(&sh, &m.name, 1)?;
    let log = f.scratch.sidecar(&format!("lost-before-{word}.log"));
    let mut cmd = f.command(args);
    cmd.env("INNERCONTEXT_TEST_PAUSE_BEFORE_SEND", &hook);
    let mut bg = crate::support::Background::start(cmd, &log)?;
    let cut = (|| -> Result<()> {
        bg.wait_for(
            &format!("paused before sending '{word}' to the job on {}", m.name),
            std::time::Duration::from_secs(600),
        )?;
        let proxy =
            fs_err::read_to_string(format!("{}/machines/{}/proxy.pid", th::STATE_DIR, m.name))?;
        crate::support::run_ok(
            Command::new("kill").args(["-KILL", proxy.trim()]),
            "kill the proxy",
        )?;
        // A reconnect goes straight to the host.
        th::delay(&sh, &m.name, 0)?;
        let dest = format!("innercontext@{}", m.name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = Command::new("pgrep")
                .args(["-f", &format!("^ssh .*{dest}")])
                .output()?;
            if !left.status.success() {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "ssh processes to {dest} outlived their link: {}",
                String::from_utf8_lossy(&left.stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    })();
    let _ = fs_err::remove_file(&hook);
    let _ = th::delay(&sh, &m.name, 0);
    cut.with_context(|| bg.output())?;
    bg.wait(std::time::Duration::from_secs(600))
}

/// `innercontext@NAME` of an app machine (its alias in the fleet's ssh config).
fn dest(m: &Machine) -> String {
    format!("innercontext@{}", m.name)
}

/// The worker's `is-enabled` and `is-active` on a machine.
fn worker(m: &Machine) -> Result<(String, String)> {
    let out = m.ssh(&[
        "bash",
        "-c",
        "systemctl is-enabled innercontext-pricing-worker || true; systemctl is-active innercontext-pricing-worker || true",
    ])?;
    let mut lines = out.lines().map(|l| l.trim().to_string());
    Ok((
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    ))
}

/// The worker runs on the app `primary` only: enabled and active there, disabled and stopped on
/// the others.
fn worker_only_on(f: &FleetSite, primary: usize) -> Result<()> {
    for (i, m) in f.apps.iter().enumerate() {
        let (enabled, active) = worker(m)?;
        if i == primary {
            ensure!(
                enabled == "enabled" && active == "active",
                "the worker on the primary {} is {enabled}, {active}",
                m.name
            );
        } else {
            ensure!(
                enabled == "disabled" && active != "active",
                "the worker on the secondary {} is {enabled}, {active}",
                m.name
            );
        }
    }
    Ok(())
}

/// The fleet, serving a release (deployed now when this scenario runs alone).
pub(crate) fn serving(ctx: &mut Ctx) -> Result<&FleetSite> {
    let f = fleet(ctx)?;
    if f.assert_serving().is_err() {
        f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
        f.assert_serving()?;
    }
    Ok(f)
}

/// A fleet that drifted: a secondary rolled back alone (DEPLOY_SERVER naming it alone; its role
/// is the one recorded on it, so the worker is neither started nor required there). Then `list`
/// flags the drift, a half deploy is refused before any lock naming the hosts and their
/// releases, and `deploy all` brings every host to one complete release: the same page build
/// through each host.
pub fn a_drifted_fleet_is_reconciled_by_deploy_all(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    // A new page (a new frontend build, so a new build version) on every host.
    let page = f.scratch.read("frontend/src/routes/+page.svelte")?;
    f.scratch.write(
        "frontend/src/routes/+page.svelte",
        &format!("{page}\n<!-- drift -->\n"),
    )?;
    f.scratch.commit("a new page")?;
    f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let new = f.currents()?;
    ensure!(new.iter().all(|c| *c == new[0]), "hosts differ: {new:?}");
    let page_new = f.versions()?;
    ensure!(
        page_new.iter().all(|v| *v == page_new[0]),
        "the hosts serve different builds after one deploy: {page_new:?}"
    );
    // The second host, a secondary, rolls back alone.
    let b = &f.apps[1];
    let alone = f
        .xtask_to(&dest(b), &["deploy", "rollback"])?
        .ok()
        .context("rolling back the secondary alone")?;
    let drifted = f.currents()?;
    ensure!(
        drifted[0] == new[0] && drifted[2] == new[0] && drifted[1] != new[0],
        "after the rollback of {} alone the hosts are on {drifted:?}\n{}",
        b.name,
        alone.all()
    );
    let old = drifted[1].clone();
    let (enabled, active) = worker(b)?;
    ensure!(
        enabled == "disabled" && active != "active",
        "the rollback of the secondary {} left its worker {enabled}, {active}",
        b.name
    );
    ensure!(
        f.versions()?[1] != page_new[0],
        "{} still serves the new page after its rollback",
        b.name
    );
    // The host says what it is, with or without the mark.
    let status = f
        .xtask_to(&format!("{}#secondary", dest(b)), &["deploy", "status"])?
        .ok()?;
    ensure!(
        status.stdout.contains("secondary"),
        "status of the secondary alone does not say so:\n{}",
        status.all()
    );
    f.xtask_to(&dest(b), &["deploy", "list"])?.ok()?;
    f.xtask_to(
        &format!("{}#secondary", dest(b)),
        &["logs", "api", "-n", "5"],
    )?
    .ok()?;
    // The fleet's list flags the drift.
    let list = f.xtask(&["deploy", "list"])?.ok()?;
    ensure!(
        list.stdout.contains("DRIFT") && list.stdout.contains(&format!("{} on {old}", b.name)),
        "list shows no drift of {} on {old}:\n{}",
        b.name,
        list.all()
    );
    eprintln!("      {}", list.stdout.trim().replace('\n', "\n      "));
    // A half deploy is refused before any lock, naming the hosts and their releases.
    let logs = f.log_lengths()?;
    let half = f
        .xtask(&["deploy", "backend", "--skip-local-checks"])?
        .failed()
        .context("a backend deploy of a drifted fleet")?;
    let said = half.all();
    ensure!(
        said.contains(&b.name)
            && said.contains(&old)
            && said.contains(&new[0])
            && said.contains("deploy all"),
        "the refusal does not name the hosts, their releases and 'deploy all':\n{said}"
    );
    eprintln!("      {}", half.stderr.trim().replace('\n', "\n      "));
    ensure!(f.currents()? == drifted, "a refused deploy moved a host");
    ensure!(
        f.log_lengths()? == logs && !f.any_lock()?,
        "the refused deploy reached a server (deploy.log or a lock)"
    );
    // deploy all reconciles: one release, one page build everywhere.
    f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    let after = f.currents()?;
    ensure!(
        after.iter().all(|c| *c == after[0]) && after[0] != new[0],
        "deploy all left the hosts on {after:?}"
    );
    let pages = f.versions()?;
    ensure!(
        pages.iter().all(|v| *v == pages[0]),
        "after deploy all the hosts serve different page builds: {pages:?}"
    );
    let list = f.xtask(&["deploy", "list"])?.ok()?;
    ensure!(!list.stdout.contains("DRIFT"), "{}", list.all());
    worker_only_on(f, 0)?;
    f.assert_serving()
}

/// DEPLOY_SERVER marks another host #primary than the hosts record: refused before any lock,
/// naming both and how to move the primary. setup-server with the new marks moves it (the
/// worker enabled and running on the new primary, stopped and disabled on the old one), the
/// next deploy works (and migrates there); a host without a record is refused with
/// setup-server, and setup-server with the old marks records it and moves the primary back.
pub fn the_primary_moves_only_with_setup_server(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let logs = f.log_lengths()?;
    let before = f.currents()?;
    let moved = f.marked(1);
    let run = f
        .xtask_to(
            &moved,
            &["deploy", "all", "--skip-local-checks", "--redeploy"],
        )?
        .failed()
        .context("a deploy whose #primary disagrees with the hosts")?;
    let said = run.all();
    let refusal = said
        .lines()
        .find(|l| l.contains("#primary"))
        .unwrap_or_default();
    ensure!(
        refusal.contains(&f.apps[0].name)
            && refusal.contains(&f.apps[1].name)
            && refusal.contains("setup-server"),
        "the refusal does not name both hosts and setup-server:\n{said}"
    );
    eprintln!("      {refusal}");
    ensure!(
        f.log_lengths()? == logs && !f.any_lock()? && f.currents()? == before,
        "the refused deploy reached a server (deploy.log, a lock or current):\n{said}"
    );
    // setup-server with the new marks moves the primary.
    f.setup_server(&moved)?
        .ok()
        .context("setup-server with the new #primary")?;
    worker_only_on(f, 1)?;
    // The plan names the primary recorded on the hosts.
    let plan = f
        .xtask_to(&moved, &["deploy", "all", "--dry-run", "--redeploy"])?
        .ok()?;
    ensure!(
        plan.all().contains(&format!(
            "fleet: the primary ({}, recorded in /etc/innercontext/role) migrates",
            f.apps[1].name
        )),
        "the dry run does not name the recorded primary:\n{}",
        plan.all()
    );
    let deploy = f
        .xtask_to(
            &moved,
            &["deploy", "all", "--skip-local-checks", "--redeploy"],
        )?
        .ok()
        .context("the first deploy after moving the primary")?;
    worker_only_on(f, 1)?;
    let migrated = f.apps[1].ssh(&[
        "bash",
        "-c",
        &format!("grep -c 'step\tmigrate\tstart' $(ls -t {ROOT}/jobs/*/events | head -1) || true"),
    ])?;
    ensure!(
        migrated.trim() == "1",
        "the new primary {} did not run the migration step:\n{}",
        f.apps[1].name,
        deploy.all()
    );
    // A host without a record (set up before roles were recorded) is refused with the command
    // that records it.
    f.apps[2].ssh(&["rm", "/etc/innercontext/role"])?;
    let run = f
        .xtask_to(&moved, &["deploy", "rollback", "--dry-run"])?
        .failed()
        .context("a rollback to a host without a recorded role")?;
    ensure!(
        run.all().contains(&format!("{} has none", f.apps[2].name))
            && run.all().contains("run 'cargo xtask setup-server'"),
        "the refusal does not name the host without a role and setup-server:\n{}",
        run.all()
    );
    // And back, with the fleet's own DEPLOY_SERVER (the first host is the primary).
    f.setup_server(&f.server)?
        .ok()
        .context("setup-server moving the primary back")?;
    worker_only_on(f, 0)?;
    f.xtask(&["deploy", "status"])?.ok()?;
    f.assert_serving()
}

/// Fleet `deploy log` reads every host: a row from each, with its host column.
pub fn log_reads_every_host(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let log = f.xtask(&["deploy", "log"])?.ok()?;
    // A row: when, host, who, ...
    for m in &f.apps {
        ensure!(
            log.stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(1) == Some(m.name.as_str())),
            "deploy log shows no line from {}:\n{}",
            m.name,
            log.all()
        );
    }
    Ok(())
}

/// Fleet `deploy status` names each host's own destination (and its recorded role).
pub fn status_names_each_host(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let status = f.xtask(&["deploy", "status"])?.ok()?;
    for m in &f.apps {
        let section: String = status
            .stdout
            .split("== ")
            .find(|s| s.starts_with(&format!("{}\n", m.name)))
            .unwrap_or_default()
            .to_string();
        ensure!(
            section.contains(&format!("({})", dest(m))),
            "deploy status does not name {}'s destination {} there:\n{}",
            m.name,
            dest(m),
            status.all()
        );
    }
    Ok(())
}

/// One host unreachable (its sshd stopped): `list`, `status` and `log` print what the others
/// say, name the unreachable host with why, and exit non-zero.
pub fn one_host_down_the_others_are_shown(ctx: &mut Ctx) -> Result<()> {
    let f = serving(ctx)?;
    let sh = Shell::new()?;
    let down = &f.apps[2];
    th::exec(
        &sh,
        &down.name,
        &["systemctl".into(), "stop".into(), "ssh".into()],
    )?;
    ensure!(
        std::net::TcpStream::connect((down.ip.as_str(), 22)).is_err(),
        "sshd on {} still answers after it was stopped",
        down.name
    );
    let runs: Vec<(&str, Result<crate::support::Run>)> = ["list", "status", "log"]
        .into_iter()
        .map(|c| (c, f.xtask(&["deploy", c])))
        .collect();
    th::exec(
        &sh,
        &down.name,
        &["systemctl".into(), "start".into(), "ssh".into()],
    )?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while down.ssh(&["true"]).is_err() {
        ensure!(
            std::time::Instant::now() < deadline,
            "sshd on {} did not come back",
            down.name
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for (what, run) in runs {
        let run = run?.failed().with_context(|| format!("deploy {what}"))?;
        let said = run.all();
        ensure!(
            said.contains(&down.name) && said.contains("cannot connect"),
            "deploy {what} does not name the unreachable {} and why:\n{said}",
            down.name
        );
        for m in &f.apps[..2] {
            ensure!(
                run.stdout.contains(&m.name),
                "deploy {what} shows nothing of the reachable {}:\n{said}",
                m.name
            );
        }
        if what == "list" {
            eprintln!("      {}", said.trim().replace('\n', "\n      "));
        }
    }
    Ok(())
}

/// SQL on the fleet's database, as postgres on the db machine; its output, trimmed.
fn fleet_psql(f: &FleetSite, sql: &str) -> Result<String> {
    Ok(f.db
        .ssh(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-qtAX",
            "innercontext",
            "-c",
            sql,
        ])?
        .trim()
        .to_string())
}

/// A snapshot on the fleet's primary: a migration deployed to every host (one is written when
/// the database is at the checkout's head), so the primary's job dumps the data current ran on.
/// Its name and its release.
fn fleet_snapshot(f: &FleetSite) -> Result<(String, String)> {
    if f.currents().is_err() {
        f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    }
    let before = f.currents()?;
    ensure!(
        before.iter().all(|c| *c == before[0]),
        "hosts differ: {before:?}"
    );
    let at = fleet_psql(f, "SELECT version_num FROM alembic_version")?;
    let (n, head) = crate::database::head(&f.scratch)?;
    if head == at {
        let column = format!("fleet_{}", n + 1);
        crate::database::add_revision(
            &f.scratch,
            &column,
            "",
            &[&format!(
                "op.add_column(\"products\", sa.Column(\"{column}\", sa.Text(), nullable=True))"
            )],
            &[&format!("op.drop_column(\"products\", \"{column}\")")],
        )?;
        f.scratch.commit("a fleet migration")?;
    }
    f.xtask(&["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    Ok((format!("{}-{at}", before[0]), before[0].clone()))
}

/// A fleet's restore whose load cannot finish (a session on the database holds a lock on
/// `products` longer than the load waits): the primary's load rolls back, every host starts its
/// units again on its own current and ends `failed` saying why, the database is unchanged (a
/// table made after the snapshot is still there), no lock is left, every host serves.
pub fn a_fleet_restore_whose_load_fails_starts_every_host_again(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let (name, _) = fleet_snapshot(f)?;
    fleet_psql(
        f,
        "SET ROLE innercontext; CREATE TABLE IF NOT EXISTS e2e_fleet_after (id int); INSERT INTO e2e_fleet_after VALUES (1)",
    )?;
    let rows = fleet_psql(f, "SELECT count(*) FROM e2e_fleet_after")?;
    let currents = f.currents()?;
    let lens = f.log_lengths()?;
    let reader = f.db.ssh_args(
        None,
        &[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-qtAX",
            "innercontext",
            "-c",
            "SELECT pg_sleep(120) FROM (SELECT count(*) FROM products) AS c",
        ]
        .map(str::to_string),
    );
    let mut reader = Command::new("ssh")
        .args(reader)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                WHERE c.relname = 'products' AND l.pid <> pg_backend_pid()";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fleet_psql(f, held)? == "0" {
        ensure!(
            std::time::Instant::now() < deadline,
            "the reader never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let run = f.xtask(&["db", "restore", &name, "--yes"]);
    let _ = fleet_psql(
        f,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()",
    );
    let _ = reader.wait();
    let run = run?.failed()?;
    let out = run.all();
    println!("--- db restore on the fleet while a reader holds a lock:\n{out}");
    ensure!(
        out.contains("it was rolled back, the database is unchanged")
            && out.matches("the units run again on").count() >= f.apps.len(),
        "not every host says it runs again with the database unchanged:\n{out}"
    );
    ensure!(f.currents()? == currents, "current moved on a host");
    ensure!(
        fleet_psql(f, "SELECT count(*) FROM e2e_fleet_after")? == rows,
        "the database changed although the load failed"
    );
    for (m, len) in f.apps.iter().zip(lens) {
        let tail = m.ssh(&[
            "bash",
            "-c",
            &format!("tail -n +{} {ROOT}/deploy.log", len + 1),
        ])?;
        ensure!(
            tail.lines()
                .last()
                .is_some_and(|l| l.contains("result=failed")),
            "{}'s deploy.log does not end with the failed restore:\n{tail}",
            m.name
        );
    }
    ensure!(!f.any_lock()?, "a lock was left");
    fleet_psql(f, "DROP TABLE e2e_fleet_after")?;
    f.assert_serving()
}

/// `db restore` on a fleet: the primary verifies the snapshot, every host stops its units, the
/// primary replaces the database, then every host switches to the snapshot's release and
/// starts; every host's deploy.log ends `result=restored`, the rows deleted after the snapshot
/// are back and every host serves.
pub fn restore_restores_every_host(ctx: &mut Ctx) -> Result<()> {
    let f = fleet(ctx)?;
    let psql = |sql: &str| fleet_psql(f, sql);
    if f.currents().is_err() {
        f.xtask(&["deploy", "all", "--skip-local-checks"])?.ok()?;
    }
    psql("INSERT INTO products (name) VALUES ('fleet restore kept')")?;
    let kept = psql("SELECT count(*) FROM products")?;
    let (name, release) = fleet_snapshot(f)?;
    let (before, at) = (vec![release.clone()], name[release.len() + 1..].to_string());
    psql("DELETE FROM products WHERE name = 'fleet restore kept'")?;
    let lens = f.log_lengths()?;
    let run = f.xtask(&["db", "restore", &name, "--yes"])?;
    let out = run.all();
    println!("--- db restore on the fleet:\n{out}");
    let run = run.ok()?;
    ensure!(
        run.all().contains("restored"),
        "the fleet's restore does not say restored:\n{out}"
    );
    let now = f.currents()?;
    ensure!(
        now.iter().all(|c| *c == before[0]),
        "not every host is on the snapshot's release {}: {now:?}",
        before[0]
    );
    ensure!(
        psql("SELECT count(*) FROM products")? == kept,
        "the deleted row is not back"
    );
    ensure!(
        psql("SELECT version_num FROM alembic_version")? == at,
        "the database is not at {at}"
    );
    for (m, len) in f.apps.iter().zip(lens) {
        let tail = m.ssh(&[
            "bash",
            "-c",
            &format!("tail -n +{} {ROOT}/deploy.log", len + 1),
        ])?;
        ensure!(
            tail.lines()
                .last()
                .is_some_and(|l| l.contains("result=restored")),
            "{}'s deploy.log does not end with the restore:\n{tail}",
            m.name
        );
    }
    ensure!(!f.any_lock()?, "a lock was left");
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
