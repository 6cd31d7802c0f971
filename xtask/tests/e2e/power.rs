//! The server's power cut and reboot under a deploy (issue 22, finding 4), with the test host's
//! own commands: a deploy held at a step by the job's test pause point
//! (`INNERCONTEXT_TEST_PAUSE_AT`), then the app machine's power cut (`testhost poweroff --hard`:
//! every process killed at once, no shutdown) and the same disk booted again (`testhost start`),
//! or a clean `testhost reboot`.
//!
//! What must hold after the boot, and again after the next deploy: the lock is what `deploy
//! status` says it is (free, or left by a job that died, which the next deploy takes over in one
//! line: never an unlock); current is the release before the fault or the new one, and the
//! units run it; no job process is left; no release is left `preparing` (but the dead lock's,
//! which `list` shows so); the site answers through nginx. The deployer that was attached when
//! the server went ends with what the server's files say once it reaches the server again (or
//! says the outcome is unknown here), never a forecast.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use xshell::Shell;

use crate::support::{
    change, held_after_switch, lock_token, log_len, log_since, paused, took_over_line, wait_quiet,
    Run, Scratch, Site, ROOT,
};
use crate::Ctx;

/// How long the deployer of a deploy whose server went may take to end: noticing the dead
/// connection (ssh's keepalive, 15 s), then trying again for its reconnect window (120 s,
/// `deploy::job::RECONNECT_FOR`), with room for a loaded machine.
pub const DEPLOYER_ENDS: Duration = Duration::from_secs(300);

/// The units, all of which a boot starts from current.
pub const EVERY_UNIT: [&str; 3] = [
    xtask::contract::API.name,
    xtask::contract::WEB.name,
    xtask::contract::WORKER.name,
];

/// This group's checkout; the site has a current release before the first scenario.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.power_scratch.is_none() {
        let s = crate::support::scratch("power")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.power_scratch = Some(s);
    }
    Ok(ctx.power_scratch.as_ref().unwrap())
}

/// The fault: the app machine's power cut, then the same disk booted again.
pub fn cut_power(site: &Site) -> Result<()> {
    let sh = Shell::new()?;
    xtask::testhost::poweroff(&sh, &site.app.name, true).context("cutting the power")?;
    xtask::testhost::start(&sh, &site.app.name).context("starting the machine again")?;
    Ok(())
}

/// The fault: a clean reboot of the app machine (`systemctl reboot` inside).
fn reboot(site: &Site) -> Result<()> {
    let sh = Shell::new()?;
    xtask::testhost::reboot(&sh, &site.app.name).context("rebooting the machine")?;
    Ok(())
}

/// The deployer's last non-empty line.
pub fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// The line of `out` that starts with `prefix` ('' when there is none).
pub fn line_of<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
}

/// The release each unit's process runs (its working directory, which the unit names through
/// `current`, resolved when the process started).
fn running_releases(site: &Site, units: &[&str]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for name in units {
        let cwd = site.sh(&format!(
            "p=$(systemctl show -p MainPID --value {name}); [ \"$p\" != 0 ] && readlink /proc/$p/cwd || echo 'not running'"
        ))?;
        let release = cwd
            .trim()
            .strip_prefix(&format!("{ROOT}/releases/"))
            .and_then(|r| r.split('/').next())
            .unwrap_or(cwd.trim())
            .to_string();
        out.push((name.to_string(), release));
    }
    Ok(out)
}

/// What the server must look like after a fault, and after the next deploy.
pub struct Want<'a> {
    /// The release current must be.
    pub current: &'a str,
    /// The units that must run it: every unit after a boot; after a deploy, those it restarted
    /// (a backend deploy leaves the web unit running the frontend it started with).
    pub units: &'a [&'a str],
    /// The token of a lock its dead job left for the next deploy to take over; None: no lock.
    pub dead_lock: Option<&'a str>,
}

/// The invariants (see the module's doc), read from the server and from what `deploy status`
/// and `deploy list` say.
pub fn invariants(site: &Site, s: &Scratch, want: &Want) -> Result<()> {
    let jobs =
        site.sh("pgrep -a -u innercontext -f '[d]eploy.sh job root=' | cut -c1-200 || true")?;
    ensure!(
        jobs.trim().is_empty(),
        "a deploy job runs on the server: {jobs}"
    );
    // Nor any of a job's children (uv, the deploy tool's migrations) outside the app's units.
    let stray = site.sh(
        "ps -u innercontext -o pid=,cgroup=,args= 2>/dev/null | grep -v 'system.slice/innercontext' | grep -E '[/ ]uv |deploytool|alembic' | cut -c1-200 || true",
    )?;
    ensure!(
        stray.trim().is_empty(),
        "a deploy job's children outlived it:\n{stray}"
    );
    ensure!(
        site.current()? == want.current,
        "current is {}, not {}",
        site.current()?,
        want.current
    );
    // The site first: a socket-activated unit starts on its first request.
    site.assert_serving()?;
    for (unit, release) in running_releases(site, want.units)? {
        ensure!(
            release == want.current,
            "unit {unit} runs {release}, not current ({})",
            want.current
        );
    }
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
    let token = lock_token(site)?;
    match want.dead_lock {
        None => {
            ensure!(token.is_empty(), "a lock is left (token {token}):\n{said}");
            ensure!(lock.ends_with("free"), "status says: {lock}\n{said}");
        }
        Some(dead) => {
            ensure!(token == dead, "the lock's token is '{token}', not {dead}");
            // Provably dead: nothing holds its flock.
            let held = site.sh(&format!(
                "runuser -u innercontext -- flock -n -s {ROOT}/.deploy.lock/job.lock true && echo free || echo held"
            ))?;
            ensure!(held.trim() == "free", "a process holds the lock's flock");
            ensure!(
                lock.contains("STALE") && job.contains(dead) && job.contains("DIED"),
                "status does not say the lock's job died:\n{said}"
            );
        }
    }
    let lock_release = site
        .sh(&format!(
            "sed -n 's/^release=//p' {ROOT}/.deploy.lock/info 2>/dev/null || true"
        ))?
        .trim()
        .to_string();
    let list = site.xtask(&s.dir, &["deploy", "list"])?.ok()?;
    for r in site.releases()? {
        if site.state(&r)? != "preparing" {
            continue;
        }
        let row = list.stdout.lines().find(|l| l.contains(&r)).unwrap_or("");
        ensure!(
            want.dead_lock.is_some() && r == lock_release && row.contains("preparing (dead)"),
            "release {r} is left preparing (list: {row})"
        );
    }
    Ok(())
}

/// The next deploy after a fault: it succeeds and says so, and the invariants hold with its
/// release current and no lock. Returns the run.
pub fn next_deploy(site: &Site, s: &Scratch, what: &str) -> Result<Run> {
    change(s, what)?;
    let next = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    let out = next.all();
    ensure!(
        next.status.success(),
        "the deploy after the fault failed:\n{out}"
    );
    // Its release, as its last line names it (a takeover line names the dead job's first).
    let new = last_line(&out)
        .split_once("deploy of ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .filter(|r| xtask::deploy::release::is_name(r))
        .with_context(|| format!("the deploy's last line names no release:\n{out}"))?
        .to_string();
    ensure!(
        last_line(&out).contains("success")
            && last_line(&out).contains(&format!("current is {new}")),
        "the deploy's last line does not say it succeeded with {new} current:\n{out}"
    );
    ensure!(
        !out.contains("deploy unlock"),
        "the deploy advises an unlock:\n{out}"
    );
    wait_quiet(site, Duration::from_secs(30))?;
    let backend: Vec<&str> = xtask::contract::UNITS
        .iter()
        .filter(|u| u.half == xtask::contract::Half::Backend)
        .map(|u| u.name)
        .collect();
    invariants(
        site,
        s,
        &Want {
            current: &new,
            units: &backend,
            dead_lock: None,
        },
    )
    .context("after the next deploy")?;
    Ok(next)
}

/// The power cut while the job prepares: after the boot `status` says the lock was left by a
/// job that died at prepare (not RUNNING) and current is still the previous release, which
/// serves; the deployer ends with what the server's files say once it reaches the server again
/// (or that the outcome is unknown here); the next deploy takes the lock over in one line,
/// marks the dead job's release failed, logs `interrupted` for it, and succeeds. No unlock.
pub fn a_power_cut_in_prepare_leaves_a_lock_the_next_deploy_takes_over(
    ctx: &mut Ctx,
) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let from = log_len(&site)?;
    change(s, "power cut in prepare")?;
    let p = paused(
        &site,
        s,
        "prepare",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let (token, release) = (p.token.clone(), p.release.clone());
    cut_power(&site)?;
    let (status, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    ensure!(
        !out.contains("by itself"),
        "the deployer foretold instead of reading:\n{out}"
    );
    let last = last_line(&out);
    ensure!(
        last.contains("outcome is unknown here")
            || (last.contains(&format!("current is {prev}")) && last.contains("died")),
        "the deployer's last line is neither what the server says (its job died, current is {prev}) nor that the outcome is unknown: {last}"
    );
    invariants(
        &site,
        s,
        &Want {
            current: &prev,
            units: &EVERY_UNIT,
            dead_lock: Some(&token),
        },
    )
    .context("after the power cut")?;
    let next = next_deploy(&site, s, "after a power cut in prepare")?;
    let line = took_over_line(&next.all())?;
    ensure!(
        line.contains(&token) && line.contains("prepare") && line.contains("failed"),
        "the takeover line does not say which job, the step it died in, and what became of its release: {line}"
    );
    ensure!(
        site.state(&release)? == "failed",
        "the dead job's release {release} is {}",
        site.state(&release)?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter()
            .any(|(r, res, why)| r == &release && res == "interrupted" && why.contains("prepare")),
        "no interrupted line for {release}:\n{log:#?}"
    );
    Ok(())
}

/// A clean reboot while the job checks health (after its switch and restart): the shutdown's
/// SIGTERM stops the job, which puts current back to the previous release and records that;
/// after the boot the units run the previous release, the release's state, its deploy.log line
/// and current agree, and the deployer's last line is what the server's files say (current is
/// the previous release), not what it planned.
pub fn a_reboot_after_the_switch_puts_current_back(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let from = log_len(&site)?;
    change(s, "reboot after the switch")?;
    let p = held_after_switch(&site, s, &["deploy", "backend", "--skip-local-checks"])?;
    let release = p.release.clone();
    reboot(&site)?;
    let (status, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    let last = last_line(&out);
    ensure!(
        last.contains(&format!("current is {prev}"))
            && !last.contains(&format!("current is {release}")),
        "the deployer's last line does not say current is {prev} (the previous release): {last}"
    );
    ensure!(
        site.current()? == prev,
        "after the reboot current is {}, not {prev}",
        site.current()?
    );
    let log = log_since(&site, from)?;
    let ours: Vec<_> = log.iter().filter(|(r, _, _)| r == &release).collect();
    ensure!(
        ours.len() == 1
            && ours[0].1 == "interrupted"
            && ours[0].2.contains(&format!("put back to {prev}")),
        "deploy.log does not say the job put current back to {prev}:\n{log:#?}\n(its last lines: {})",
        site.sh(&format!("tail -n 4 {ROOT}/deploy.log"))?
    );
    ensure!(
        site.state(&release)? == "failed",
        "release {release} is {}, deploy.log says {}",
        site.state(&release)?,
        ours[0].1
    );
    let list = site.xtask(&s.dir, &["deploy", "list"])?.ok()?;
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&release))
        .unwrap_or("");
    ensure!(
        row.contains("failed") && !row.starts_with('*'),
        "deploy list shows {release} as: {row}"
    );
    invariants(
        &site,
        s,
        &Want {
            current: &prev,
            units: &EVERY_UNIT,
            dead_lock: None,
        },
    )
    .context("after the reboot")?;
    next_deploy(&site, s, "after a reboot after the switch")?;
    Ok(())
}

/// The power cut right after the switch (the job held at health): at boot the release check
/// moves current back to the newest succeeded, intact release and logs `restored-at-boot`; the
/// deployer and `status` say so; the next deploy takes the dead lock over, marks the unverified
/// release failed, and succeeds.
pub fn a_power_cut_after_the_switch_is_restored_at_boot(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    ensure!(site.state(&prev)? == "succeeded");
    let from = log_len(&site)?;
    change(s, "power cut after the switch")?;
    let p = held_after_switch(&site, s, &["deploy", "backend", "--skip-local-checks"])?;
    let (token, release) = (p.token.clone(), p.release.clone());
    cut_power(&site)?;
    let (status, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    let log = log_since(&site, from)?;
    ensure!(
        log.iter()
            .any(|(r, res, why)| r == &prev && res == "restored-at-boot" && why.contains(&release)),
        "deploy.log has no restored-at-boot line for {prev}:\n{log:#?}"
    );
    let last = last_line(&out);
    ensure!(
        last.contains("outcome is unknown here")
            || (last.contains(&format!("current is {prev} again"))
                && last.contains("restored at boot")),
        "the deployer's last line does not say current is {prev} again, restored at boot: {last}"
    );
    invariants(
        &site,
        s,
        &Want {
            current: &prev,
            units: &EVERY_UNIT,
            dead_lock: Some(&token),
        },
    )
    .context("after the power cut")?;
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let current = line_of(&status.stdout, "current:");
    ensure!(
        current.contains("restored at boot"),
        "status does not say current was restored at boot: {current}\n{}",
        status.all()
    );
    let next = next_deploy(&site, s, "after a power cut after the switch")?;
    let line = took_over_line(&next.all())?;
    ensure!(line.contains(&token) && line.contains("health"), "{line}");
    ensure!(
        site.state(&release)? == "failed",
        "the unverified release {release} is {}",
        site.state(&release)?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter()
            .any(|(r, res, _)| r == &release && res == "interrupted"),
        "no interrupted line for {release}:\n{log:#?}"
    );
    Ok(())
}
