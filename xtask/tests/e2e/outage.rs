//! The world failing around a deploy (issue 25), as cells of the fault matrix
//! (`outage::FAULT_at_STEP`): PostgreSQL stopped during `alembic upgrade` and during the health
//! checks (`pgstop`), the app host cut from the database host during the health checks
//! (`partition`: nftables on the test host, which owns the machines' network), the disk full at
//! seed (`diskfull_at_lock`: the lock is held, the job seeds), at prepare's virtualenv build
//! (`diskfull_at_sync`) and at record (`diskfull_at_record`), and the deployer's connection
//! lost for good after the checks passed (`lost_at_record`: the latency proxy in front of sshd
//! killed and not restarted).
//!
//! Each strikes inside its step: the job is held before the step by the test pause point
//! (`INNERCONTEXT_TEST_PAUSE_AT`), struck, then let go. What must hold right after the fault,
//! and again after the next deploy (which takes over what the job left): `deploy status` says
//! what the lock directory is; `current` is the release before the fault, or the new one with
//! the deployer saying so; no job process and none of its children is left; the job's result
//! is in deploy.log (or kept in the lock when the disk was full, and said); no release is left
//! `preparing` (after the fault: but a kept lock's); the site answers through nginx.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use xshell::Shell;

use crate::state::{fill_disk, free_disk};
use crate::support::{
    change, log_len, log_since, paused, paused_with, resume, wait_quiet, Run, Scratch, Site, ROOT,
};
use crate::Ctx;

/// A health timeout for the cells whose checks must fail: long enough for the API's database
/// connect timeout (3 s) to answer each probe, short enough to keep the group cheap.
const SHORT_HEALTH: &str = "8";

/// How long the deployer of a deploy whose connection went for good may take to end: its
/// reconnect window (120 s, `deploy::job::RECONNECT_FOR`), with room for a loaded machine.
const DEPLOYER_ENDS: Duration = Duration::from_secs(240);

fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.outage_scratch.is_none() {
        let s = crate::support::scratch("outage")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.outage_scratch = Some(s);
    }
    Ok(ctx.outage_scratch.as_ref().unwrap())
}

/// The deployer's last non-empty line.
fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn line_of<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
}

// --- the database -------------------------------------------------------------------------------

fn psql(site: &Site, sql: &str) -> Result<String> {
    Ok(site
        .db
        .ssh(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-tAq",
            "innercontext",
            "-c",
            sql,
        ])?
        .trim()
        .to_string())
}

/// The alembic revision the database is at.
fn revision(site: &Site) -> Result<String> {
    psql(site, "SELECT version_num FROM alembic_version")
}

fn postgresql(site: &Site, verb: &str) -> Result<()> {
    site.db.ssh(&["systemctl", verb, "postgresql"])?;
    Ok(())
}

/// A migration chained to `head` that sleeps in the database (so it is still running when the
/// database stops), committed; returns its file.
fn sleeping_migration(s: &Scratch, head: &str) -> Result<String> {
    let rev = format!("0900_outage_{}", std::process::id());
    let path = format!("backend/alembic/versions/{rev}.py");
    s.write(
        &path,
        &format!("\"\"\"A migration that sleeps (outage cells).\"\"\"\n\nfrom alembic import op\n\nrevision = \"{rev}\"\ndown_revision = \"{head}\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.execute(\"SELECT pg_sleep(120)\")\n\n\ndef downgrade() -> None:\n    pass\n"),
    )?;
    s.commit("a migration that sleeps")?;
    Ok(path)
}

/// Wait until the migration's sleep runs in the database (its backend in pg_stat_activity).
fn wait_for_sleeping_backend(site: &Site) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = psql(
            site,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'",
        )?;
        if n != "0" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the migration's sleep never ran in the database"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- the network between the app and the database -----------------------------------------------

/// The app machine's traffic to the database's port dropped on the test host (a table of this
/// run's own in nftables); removed when dropped, whatever the cell did.
struct Partition {
    table: String,
}

impl Partition {
    fn cut(site: &Site) -> Result<Partition> {
        let table = format!("{}_cut", site.app.name);
        let part = Partition { table };
        let script = format!(
            "add table inet {t}\nadd chain inet {t} hcut {{ type filter hook forward priority -10; }}\nadd rule inet {t} hcut iifname \"ve-{app}\" ip daddr {db} tcp dport 5432 drop\n",
            t = part.table,
            app = site.app.name,
            db = site.db.ip
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes())?;
        ensure!(child.wait()?.success(), "nft refused:\n{script}");
        Ok(part)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let ok = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not delete the nftables table inet {}", self.table);
        }
    }
}

// --- a small disk ---------------------------------------------------------------------------------

const UNITS: &str = "innercontext innercontext-node innercontext-pricing-worker";

/// The deploy root on a small tmpfs (holding a copy of what it held) while `cell` runs; the
/// disk underneath comes back afterwards, whatever the cell did.
fn on_a_small_disk(site: &Site, cell: impl FnOnce() -> Result<()>) -> Result<()> {
    let used_mb: u64 = site
        .sh(&format!("du -smx {ROOT} | cut -f1"))?
        .trim()
        .parse()?;
    // Room for the preflight's estimate of a backend upload (+150 MB) and a little more.
    let size_mb = used_mb + 300;
    site.sh(&format!(
        "set -e; d=$(mktemp -d /var/tmp/e2e-root.XXXXXX); cp -a {ROOT}/. $d/; \
         systemctl stop {UNITS}; \
         mount -t tmpfs -o size={size_mb}m,mode=755 tmpfs {ROOT}; cp -a $d/. {ROOT}/; rm -rf $d; \
         chown innercontext: {ROOT}; systemctl start {UNITS}"
    ))?;
    let result = cell();
    let _ = free_disk(site, ROOT);
    let back = site.sh(&format!(
        "systemctl stop {UNITS}; umount {ROOT} || umount -l {ROOT}; systemctl start {UNITS}; echo done"
    ));
    result?;
    back?;
    Ok(())
}

// --- the invariants -------------------------------------------------------------------------------

/// What the server must look like after a fault.
struct Want<'a> {
    /// The release current must be.
    current: &'a str,
    /// The faulted deploy's release.
    release: &'a str,
    /// Its results deploy.log may say.
    results: &'a [&'a str],
    /// Whether its result may be kept in the lock (a full disk) instead of deploy.log.
    kept: bool,
}

/// The invariants (see the module's doc), read from the server and from `deploy status`.
fn invariants(site: &Site, s: &Scratch, from: usize, want: &Want) -> Result<()> {
    // No job process left (a job that kept its result in the lock leaves the lock too).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let jobs =
            site.sh("pgrep -a -u innercontext -f '[d]eploy.sh job root=' | cut -c1-200 || true")?;
        if jobs.trim().is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a deploy job still runs on the server: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stray = site.sh(
        "ps -u innercontext -o pid=,cgroup=,args= 2>/dev/null | grep -v 'system.slice/innercontext' | grep -E '[/ ]uv |deploytool|alembic' | cut -c1-200 || true",
    )?;
    ensure!(
        stray.trim().is_empty(),
        "the job's children outlived it:\n{stray}"
    );
    ensure!(
        site.current()? == want.current,
        "current is {}, not {}",
        site.current()?,
        want.current
    );
    site.assert_serving()?;
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let said = status.all();
    let (current, lock, job) = (
        line_of(&status.stdout, "current:"),
        line_of(&status.stdout, "lock:"),
        line_of(&status.stdout, "last job:"),
    );
    ensure!(
        current.contains(want.current),
        "status does not say current is {}: {current}\n{said}",
        want.current
    );
    ensure!(
        !job.contains("RUNNING") && !lock.contains("is running"),
        "status says a job runs:\n{said}"
    );
    let locked = site.locked()?;
    ensure!(
        locked != lock.ends_with("free"),
        "the lock directory {} there, and status says: {lock}\n{said}",
        if locked { "is" } else { "is not" }
    );
    // The job's result: in deploy.log, or (a full disk) kept in the lock, and status says which.
    let log = log_since(site, from)?;
    let ours: Vec<_> = log.iter().filter(|(r, _, _)| r == want.release).collect();
    if ours.is_empty() {
        ensure!(
            want.kept && locked && job.contains("NOT RECORDED"),
            "no deploy.log line for {} and no result kept in the lock:\n{log:#?}\n{said}",
            want.release
        );
    } else {
        ensure!(
            ours.len() == 1 && want.results.contains(&ours[0].1.as_str()),
            "deploy.log says for {}: {ours:#?}, expected one line with one of {:?}",
            want.release,
            want.results
        );
        ensure!(
            !job.contains("NOT RECORDED"),
            "status says the result was not recorded, deploy.log has it:\n{said}"
        );
    }
    let lock_release = site
        .sh(&format!(
            "sed -n 's/^release=//p' {ROOT}/.deploy.lock/info 2>/dev/null || true"
        ))?
        .trim()
        .to_string();
    for r in site.releases()? {
        if site.state(&r).unwrap_or_default() == "preparing" {
            ensure!(locked && r == lock_release, "release {r} is left preparing");
        }
    }
    // No file half-written by the job's own writes (the temp + rename of put and switch_to).
    let tmp = site.sh(&format!(
        "find {ROOT} -xdev \\( -name '*.tmp.*' -o -name '.current.tmp.*' \\) | head -n 5"
    ))?;
    ensure!(tmp.trim().is_empty(), "files left half-written: {tmp}");
    Ok(())
}

/// The next deploy after a fault: it succeeds and says so, the invariants hold with its
/// release current and no lock, and the faulted release has its deploy.log line.
fn next_deploy(
    site: &Site,
    s: &Scratch,
    from: usize,
    release: &str,
    results: &[&str],
) -> Result<Run> {
    change(s, "the deploy after an outage")?;
    let next = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    let out = next.all();
    ensure!(
        next.status.success(),
        "the deploy after the fault failed:\n{out}"
    );
    let new = site.current()?;
    ensure!(
        last_line(&out).contains("success")
            && last_line(&out).contains(&format!("current is {new}")),
        "the deploy's last line does not say it succeeded with {new} current:\n{out}"
    );
    wait_quiet(site, Duration::from_secs(30))?;
    invariants(
        site,
        s,
        from,
        &Want {
            current: &new,
            release,
            results,
            kept: false,
        },
    )
    .context("after the next deploy")?;
    Ok(next)
}

// --- the cells --------------------------------------------------------------------------------------

/// PostgreSQL stopped while `alembic upgrade` runs (its sleeping backend seen in
/// pg_stat_activity): the migration's transaction is rolled back (the revision is what it
/// was), the job fails with a line naming the database, current is the release before, and the
/// site answers once PostgreSQL is back.
pub fn pgstop_at_migrate(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let rev = revision(&site)?;
    let from = log_len(&site)?;
    let migration = sleeping_migration(s, &rev)?;
    let p = paused(
        &site,
        s,
        "migrate",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let release = p.release.clone();
    let struck = (|| -> Result<()> {
        resume(&site)?;
        wait_for_sleeping_backend(&site)?;
        postgresql(&site, "stop")
    })();
    let ended = p.bg.wait(Duration::from_secs(180));
    let started = postgresql(&site, "start");
    fs_err::remove_file(s.dir.join(&migration))?;
    s.commit("no sleeping migration")?;
    struck?;
    started?;
    let (status, out) = ended?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deploy succeeded:\n{out}");
    let failure = line_of(&out, "error:");
    ensure!(
        failure.contains("database") && failure.contains(&format!("current is {prev}")),
        "the deployer's error line does not name the database and current ({prev}): {failure}\n{out}"
    );
    ensure!(
        revision(&site)? == rev,
        "the database is at {}, not {rev} from before the migration",
        revision(&site)?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter()
            .any(|(r, res, why)| r == &release && res == "failed" && why.contains("database")),
        "deploy.log has no failed line naming the database for {release}:\n{log:#?}"
    );
    let want = Want {
        current: &prev,
        release: &release,
        results: &["failed"],
        kept: false,
    };
    invariants(&site, s, from, &want).context("after PostgreSQL came back")?;
    next_deploy(&site, s, from, &release, &["failed"])?;
    Ok(())
}

/// A deploy held before its health checks, struck by `fault`, let go with a short health
/// timeout; `heal` undoes the fault once the deployer has ended. The checks fail, the job puts
/// the release before back (the database still gone, its own checks fail too: rollback-failed),
/// and every line says the API's database is the cause.
fn health_without_database(
    ctx: &mut Ctx,
    strike: impl FnOnce(&Site) -> Result<Box<dyn FnOnce() -> Result<()>>>,
) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let from = log_len(&site)?;
    change(s, "health checks without the database")?;
    let p = paused_with(
        &site,
        s,
        "health",
        &["deploy", "backend", "--skip-local-checks"],
        &[("DEPLOY_HEALTH_TIMEOUT", SHORT_HEALTH)],
    )?;
    let release = p.release.clone();
    ensure!(
        site.current()? == release,
        "held at health, current is not {release}"
    );
    let heal = strike(&site);
    let resumed = heal.as_ref().map_err(|_| ()).ok().map(|_| resume(&site));
    let ended = p.bg.wait(Duration::from_secs(180));
    let healed = match heal {
        Ok(heal) => heal(),
        Err(e) => return Err(e),
    };
    resumed.transpose()?;
    healed?;
    let (status, out) = ended?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deploy succeeded:\n{out}");
    let failure = line_of(&out, "error:");
    ensure!(
        failure.contains("database unavailable") && failure.contains(&format!("current is {prev}")),
        "the deployer's error line does not say the API's database is unavailable and current is {prev}: {failure}\n{out}"
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter().any(|(r, res, why)| r == &release
            && (res == "rolled-back" || res == "rollback-failed")
            && why.contains("database unavailable")),
        "deploy.log has no line for {release} saying the database was unavailable:\n{log:#?}"
    );
    let want = Want {
        current: &prev,
        release: &release,
        results: &["rolled-back", "rollback-failed"],
        kept: false,
    };
    invariants(&site, s, from, &want).context("after the database came back")?;
    next_deploy(&site, s, from, &release, want.results)?;
    Ok(())
}

/// PostgreSQL stopped during the health checks, started again once the job ended.
pub fn pgstop_at_activate(ctx: &mut Ctx) -> Result<()> {
    health_without_database(ctx, |site| {
        postgresql(site, "stop")?;
        let site = site.clone();
        Ok(Box::new(move || postgresql(&site, "start")))
    })
}

/// The app host cut from the database host's port during the health checks (nftables on the
/// test host), the rule removed once the job ended (and whatever happens).
pub fn partition_at_activate(ctx: &mut Ctx) -> Result<()> {
    health_without_database(ctx, |site| {
        let cut = Partition::cut(site)?;
        Ok(Box::new(move || {
            drop(cut);
            Ok(())
        }))
    })
}

/// A deploy held at `step` on a small disk, the disk filled, let go; returns the release,
/// the log length before, and what the deployer said.
fn full_at(site: &Site, s: &Scratch, step: &str) -> Result<(String, usize, String)> {
    let from = log_len(site)?;
    let p = paused(site, s, step, &["deploy", "backend", "--skip-local-checks"])?;
    let release = p.release.clone();
    let filled = fill_disk(site, ROOT);
    let resumed = resume(site);
    let ended = p.bg.wait(Duration::from_secs(180));
    filled?;
    resumed?;
    let (status, out) = ended?;
    println!("the deployer ({status}):\n{out}");
    Ok((release, from, out))
}

/// After a full disk: the invariants with the disk still full, then with space back and the
/// next deploy.
fn after_full(
    site: &Site,
    s: &Scratch,
    from: usize,
    release: &str,
    prev: &str,
    results: &[&str],
) -> Result<()> {
    let want = Want {
        current: prev,
        release,
        results,
        kept: true,
    };
    invariants(site, s, from, &want).context("with the disk full")?;
    free_disk(site, ROOT)?;
    next_deploy(site, s, from, release, results)?;
    Ok(())
}

/// The disk full when the job seeds the release: the deploy fails saying so, nothing of the
/// release is left half-made, current is untouched.
pub fn diskfull_at_lock(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    change(s, "disk full at seed")?;
    on_a_small_disk(&site, || {
        let (release, from, out) = full_at(&site, s, "seed")?;
        let failure = line_of(&out, "error:");
        ensure!(
            failure.contains("No space left on device"),
            "the deployer's error line does not say the disk is full: {failure}\n{out}"
        );
        ensure!(site.current()? == prev, "current moved on a failed seed");
        after_full(&site, s, from, &release, &prev, &["failed"])
    })
}

/// The disk full when prepare builds a new virtualenv.
pub fn diskfull_at_sync(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let py = s.read("backend/pyproject.toml")?;
    s.write(
        "backend/pyproject.toml",
        &format!("{py}\n# outage {}\n", std::process::id()),
    )?;
    s.commit("a new virtualenv on a full disk")?;
    on_a_small_disk(&site, || {
        let (release, from, out) = full_at(&site, s, "prepare")?;
        let failure = line_of(&out, "error:");
        ensure!(
            failure.contains("No space left on device"),
            "the deployer's error line does not say the disk is full: {failure}\n{out}"
        );
        ensure!(site.current()? == prev, "current moved on a failed prepare");
        after_full(&site, s, from, &release, &prev, &["failed"])
    })
}

/// The disk full when the job records its success (after the switch): the deployer says the
/// deploy succeeded but could not be recorded; current is the new release.
pub fn diskfull_at_record(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    change(s, "disk full at record")?;
    on_a_small_disk(&site, || {
        let (release, from, out) = full_at(&site, s, "record")?;
        ensure!(
            out.lines()
                .any(|l| l.contains("could not record") && l.contains("No space left on device")),
            "the deployer does not say the result could not be recorded:\n{out}"
        );
        ensure!(site.current()? == release, "current is not {release}");
        after_full(&site, s, from, &release, &release, &["success"])
    })
}

/// The connection dropped for good after the checks passed (the job held before record, the
/// latency proxy the deployer goes through killed and never started again): the job finishes on
/// its own, `deploy status` says so, and the deployer ends after its reconnect window saying the
/// outcome is unknown here and that `deploy status` tells it.
pub fn lost_at_record(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let from = log_len(&site)?;
    change(s, "the connection lost for good")?;
    let sh = Shell::new()?;
    let app = site.app.name.clone();
    // The deployer goes through the proxy with a config of its own, which keeps naming the
    // proxy's port after the machine's own config goes straight to sshd again.
    xtask::testhost::delay(&sh, &app, 1)?;
    let config = s.sidecar("ssh_config-through-proxy");
    let copied = fs_err::copy(&site.app.ssh_config, &config);
    let held = copied.map_err(anyhow::Error::from).and_then(|_| {
        paused_with(
            &site,
            s,
            "record",
            &["deploy", "backend", "--skip-local-checks"],
            &[("DEPLOY_SSH_CONFIG", config.as_str())],
        )
    });
    let killed = held.as_ref().map_err(|_| ()).ok().map(|_| {
        let pid = fs_err::read_to_string(format!(
            "{}/machines/{app}/proxy.pid",
            xtask::testhost::STATE_DIR
        ))?;
        crate::support::run_ok(
            std::process::Command::new("kill").args(["-KILL", pid.trim()]),
            "kill the proxy",
        )?;
        anyhow::Ok(())
    });
    let direct = xtask::testhost::delay(&sh, &app, 0);
    let p = held?;
    killed.transpose()?;
    direct?;
    let release = p.release.clone();
    resume(&site)?;
    // The job finishes by itself, and what the server's files say is the truth.
    wait_quiet(&site, Duration::from_secs(90))?;
    let want = Want {
        current: &release,
        release: &release,
        results: &["success"],
        kept: false,
    };
    invariants(&site, s, from, &want).context("after the job finished on its own")?;
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let (job, current) = (
        line_of(&status.stdout, "last job:"),
        line_of(&status.stdout, "current:"),
    );
    ensure!(
        job.contains("success") && current.contains(&release),
        "status does not say the job succeeded with {release} current: {job}\n{}",
        status.all()
    );
    // The next deploy runs while the first deployer still tries to reconnect.
    next_deploy(&site, s, from, &release, &["success"])?;
    let (code, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({code}):\n{out}");
    ensure!(
        !code.success(),
        "the deployer that lost its connection succeeded:\n{out}"
    );
    let last = last_line(&out);
    ensure!(
        last.contains("outcome is unknown here") && last.contains("deploy status"),
        "the deployer's last line does not say the outcome is unknown here and that deploy status tells it: {last}"
    );
    ensure!(
        !out.contains(": success") && !out.contains(": failed"),
        "the deployer foretold an outcome it could not read:\n{out}"
    );
    Ok(())
}
