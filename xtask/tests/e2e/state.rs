//! What the server's files say after the server itself was struck (issue 22): a job killed or
//! stopped by a shutdown's SIGTERM at a step (held there by the test pause point,
//! `INNERCONTEXT_TEST_PAUSE_AT`), two deploys started at the same moment, and a disk that fills
//! right after the switch.
//!
//! Each fault is one helper ([`kill_job`], [`term_job`], [`fill_disk`]) applied to a deploy held
//! at a step ([`paused`]), so the same checks extend to a reboot or a power cut of the machine.
//! What must hold afterwards: no `unlock` is ever needed (the next deploy takes a dead job's lock
//! over and says so in one line), deploy.log and each release's `.state` say what happened,
//! `current` is a succeeded release (or the one the job put back), and the site serves.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::support::{
    change, fresh, held_after_switch, kill_job, log_len, log_since, paused, resume, took_over_line,
    wait_gone, wait_quiet, Background, Paused, Run, Scratch, Site, ROOT,
};
use crate::Ctx;

const UNITS: &str = "innercontext innercontext-node innercontext-pricing-worker";

fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.state_scratch.is_none() {
        let s = crate::support::scratch("state")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.state_scratch = Some(s);
    }
    Ok(ctx.state_scratch.as_ref().unwrap())
}

/// The fault: SIGTERM to the job, what a shutdown sends every process of the session.
fn term_job(site: &Site, p: &Paused) -> Result<()> {
    site.sh(&format!("kill -TERM {}", p.pid))?;
    wait_gone(site, p.pid)
}

/// The deployer of a struck job ends by itself (what it says is another scenario's subject).
fn deployer_ends(p: Paused) -> Result<(std::process::ExitStatus, String)> {
    p.bg.wait(Duration::from_secs(180))
}

/// A job SIGKILLed in prepare: the next deploy takes its lock over in one line (which job, when,
/// the step), marks its release failed, logs `interrupted` for it, and succeeds; no unlock.
pub fn a_job_killed_in_prepare_is_taken_over(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let cur = site.current()?;
    let from = log_len(&site)?;
    change(s, "killed in prepare")?;
    let p = paused(
        &site,
        s,
        "prepare",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let (token, release) = (p.token.clone(), p.release.clone());
    kill_job(&site, &p)?;
    deployer_ends(p)?;
    ensure!(site.current()? == cur, "current moved");
    change(s, "after a killed job")?;
    let next = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    let out = next.all();
    ensure!(
        next.status.success(),
        "the deploy after a killed job failed:\n{out}"
    );
    let line = took_over_line(&out)?;
    ensure!(
        line.contains(&token) && line.contains("prepare") && line.contains("failed"),
        "the takeover line does not say which job, the step it died in, and what became of its release: {line}"
    );
    ensure!(
        !out.contains("deploy unlock"),
        "the takeover advises an unlock:\n{out}"
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
    ensure!(
        log.last().map(|l| l.1.as_str()) == Some("success"),
        "{log:#?}"
    );
    wait_quiet(&site, Duration::from_secs(30))?;
    site.assert_serving()
}

/// A job SIGKILLed after the switch (in restart): the takeover's deploy.log line says it died
/// after the switch, and a next deploy that fails restores the newest succeeded release, never
/// the dead job's unverified one.
pub fn a_job_killed_after_the_switch_is_never_restored_to(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let good = site.current()?;
    ensure!(site.state(&good)? == "succeeded");
    let from = log_len(&site)?;
    change(s, "killed after the switch")?;
    let p = paused(
        &site,
        s,
        "restart",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let dead = p.release.clone();
    kill_job(&site, &p)?;
    deployer_ends(p)?;
    ensure!(
        site.current()? == dead,
        "the job was killed after its switch, but current is {}",
        site.current()?
    );
    // A release that fails its health check.
    let main = "backend/innercontext/main.py";
    let text = s.read(main)?;
    s.write(main, &format!("{text}{UNHEALTHY}"))?;
    s.commit("unhealthy after a killed job")?;
    let mut cmd = site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    cmd.env("DEPLOY_HEALTH_TIMEOUT", "12");
    let next = Run::capture(cmd);
    s.undo()?;
    let next = next?;
    let out = next.all();
    ensure!(
        !next.status.success(),
        "the unhealthy deploy succeeded:\n{out}"
    );
    let line = took_over_line(&out)?;
    ensure!(line.contains("after the switch"), "{line}");
    ensure!(
        site.current()? == good,
        "the failed deploy restored {} instead of {good} (the newest succeeded release):\n{out}",
        site.current()?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter().any(|(r, res, why)| r == &dead
            && res == "interrupted"
            && why.contains("after the switch")),
        "no interrupted line saying {dead} died after the switch:\n{log:#?}"
    );
    ensure!(
        log.last().map(|l| l.1.as_str()) == Some("rolled-back"),
        "{log:#?}"
    );
    ensure!(
        site.state(&dead)? == "failed",
        "the dead, unverified release {dead} is {}",
        site.state(&dead)?
    );
    wait_quiet(&site, Duration::from_secs(30))?;
    site.assert_serving()
}

/// Two deploys let go at the same moment: the loser is refused because the winner's job holds
/// the lock, and it is never told STALE or to unlock; its deploy.log line names no release
/// (`-`: it made none). Meanwhile a watcher on the server looks at the lock in a tight loop, as
/// a probe does: a visible lock always has a live holder (no window between the lock and its
/// flock).
pub fn two_deploys_at_once_never_call_a_live_lock_stale(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    fresh(&site, s)?;
    change(s, "two at once")?;
    let from = log_len(&site)?;
    let lock = format!("{ROOT}/.deploy.lock");
    site.sh("touch /tmp/e2e-lockwatch")?;
    let watcher = format!(
        "runuser -u innercontext -- bash -c 'L={lock}; seen=0; dead=0; end=$((SECONDS + 300)); \
         while [ -e /tmp/e2e-lockwatch ] && [ $SECONDS -lt $end ]; do \
           if [ ! -d $L ]; then sleep 0.002; continue; fi; seen=$((seen + 1)); \
           if [ -f $L/job.lock ] && ! flock -n -s $L/job.lock true; then continue; fi; \
           [ -d $L ] && dead=$((dead + 1)); \
         done; echo seen=$seen dead=$dead'"
    );
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(
        site.app
            .ssh_args(None, &["bash".into(), "-c".into(), watcher]),
    );
    let watch = Background::start(cmd, &s.sidecar("lockwatch.log"))?;
    let gate = s.sidecar("gate");
    fs_err::write(&gate, "")?;
    let start = |n: usize| -> Result<Background> {
        let mut cmd = site.command(
            &s.dir,
            &["deploy", "backend", "--skip-local-checks", "--redeploy"],
        );
        cmd.env("INNERCONTEXT_TEST_PAUSE_BEFORE_LOCK", &gate);
        Background::start(cmd, &s.sidecar(&format!("twin{n}.log")))
    };
    let mut a = start(1)?;
    let mut b = start(2)?;
    let waited = a
        .wait_for("paused before the lock", Duration::from_secs(120))
        .and_then(|_| b.wait_for("paused before the lock", Duration::from_secs(120)));
    fs_err::remove_file(&gate)?;
    waited?;
    let (sa, oa) = a.wait(Duration::from_secs(300))?;
    let (sb, ob) = b.wait(Duration::from_secs(300))?;
    site.sh("rm -f /tmp/e2e-lockwatch")?;
    let (_, seen) = watch.wait(Duration::from_secs(60))?;
    let count = |k: &str| -> Option<u64> {
        seen.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|n| n.parse().ok())
    };
    ensure!(
        count("seen=").is_some_and(|n| n > 0) && count("dead=") == Some(0),
        "a watcher saw the lock of a running deploy without a live holder (what a probe calls STALE): {seen}"
    );
    let (winner, loser) = match (sa.success(), sb.success()) {
        (true, false) => (oa, ob),
        (false, true) => (ob, oa),
        _ => bail!("expected one deploy to win:\n--- first:\n{oa}\n--- second:\n{ob}"),
    };
    ensure!(
        loser.contains("another deploy holds") && loser.contains("its job is running"),
        "the loser was not refused for a running job:\n{loser}\n--- winner:\n{winner}"
    );
    ensure!(
        !loser.contains("STALE") && !loser.contains("deploy unlock"),
        "the loser was told the live lock is stale:\n{loser}"
    );
    let refused: Vec<_> = log_since(&site, from)?
        .into_iter()
        .filter(|(_, r, _)| r == "refused")
        .collect();
    ensure!(
        refused.len() == 1 && refused[0].0 == "-",
        "the refused deploy's deploy.log line should name no release (it made none): {refused:#?}"
    );
    wait_quiet(&site, Duration::from_secs(30))?;
    site.assert_serving()
}

/// SIGTERM (a shutdown) to the job after the switch: current goes back to the previous release
/// (flushed; not restarted: the units start it at boot), and the result says so.
pub fn a_shutdown_after_the_switch_puts_current_back(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let from = log_len(&site)?;
    change(s, "terminated after the switch")?;
    let p = held_after_switch(&site, s, &["deploy", "backend", "--skip-local-checks"])?;
    let release = p.release.clone();
    term_job(&site, &p)?;
    let (status, out) = deployer_ends(p)?;
    let result = (|| -> Result<()> {
        wait_quiet(&site, Duration::from_secs(30))?;
        ensure!(
            site.current()? == prev,
            "after SIGTERM past the switch current is {}, not {prev} (the previous release)",
            site.current()?
        );
        let log = log_since(&site, from)?;
        let ours: Vec<_> = log.iter().filter(|(r, _, _)| r == &release).collect();
        ensure!(
            ours.len() == 1
                && ours[0].1 == "interrupted"
                && ours[0].2.contains("put back")
                && ours[0].2.contains("boot"),
            "deploy.log does not say current was put back:\n{log:#?}"
        );
        ensure!(site.state(&release)? == "failed");
        ensure!(!status.success(), "{out}");
        Ok(())
    })();
    // The units still run what they were restarted into; a boot would start current.
    site.sh(&format!("systemctl restart {UNITS}"))?;
    result.with_context(|| format!("deployer output:\n{out}"))?;
    site.assert_serving()
}

/// SIGTERM to the job before the switch: it stops like an abort (release failed, interrupted,
/// lock released).
pub fn a_shutdown_before_the_switch_stops_the_job(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let cur = site.current()?;
    let from = log_len(&site)?;
    change(s, "terminated in prepare")?;
    let p = paused(
        &site,
        s,
        "prepare",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let release = p.release.clone();
    term_job(&site, &p)?;
    let (_, out) = deployer_ends(p)?;
    wait_quiet(&site, Duration::from_secs(30)).context("the lock after SIGTERM")?;
    ensure!(site.current()? == cur, "current moved");
    ensure!(
        site.state(&release)? == "failed",
        "release {release} is {}",
        site.state(&release)?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.len() == 1 && log[0].0 == release && log[0].1 == "interrupted",
        "{log:#?}\n{out}"
    );
    site.assert_serving()
}

/// Fill the filesystem of `dir` on the app machine (as root) and prove it is full.
pub fn fill_disk(site: &Site, dir: &str) -> Result<()> {
    let out = site.sh(&format!(
        "set -e; f={dir}/.e2e-filler; a=$(df -B1 --output=avail {dir} | tail -n 1 | tr -d ' '); \
         fallocate -l \"$a\" $f.1 || true; dd if=/dev/zero of=$f.2 bs=4k 2>/dev/null || true; \
         echo avail=$(df -B1 --output=avail {dir} | tail -n 1 | tr -d ' '); \
         if runuser -u innercontext -- bash -c 'printf x >{dir}/.e2e-probe' 2>/dev/null; then echo write=ok; else echo write=failed; fi; \
         rm -f {dir}/.e2e-probe"
    ))?;
    ensure!(
        out.contains("avail=0") && out.contains("write=failed"),
        "the disk is not full: {out}"
    );
    Ok(())
}

pub fn free_disk(site: &Site, dir: &str) -> Result<()> {
    site.sh(&format!("rm -f {dir}/.e2e-filler.1 {dir}/.e2e-filler.2"))?;
    Ok(())
}

/// The disk fills right after the switch (the job held before `record`, the deploy root on a
/// small tmpfs): the deployer warns that the deploy succeeded but was not recorded and what to
/// do; no temporary file stays; current's `.state` is not emptied; `list` and `status` say the
/// truth; the boot check (disk still full) leaves current alone; once space is back, the next
/// deploy records the pending success and succeeds itself.
pub fn a_full_disk_after_the_switch_is_recorded_later(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
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
    let result = full_disk_cell(&site, s);
    let _ = free_disk(&site, ROOT);
    // Back to the disk underneath (what it held before this scenario).
    let back = site.sh(&format!(
        "systemctl stop {UNITS}; umount {ROOT} || umount -l {ROOT}; systemctl start {UNITS}; echo done"
    ));
    result?;
    back?;
    site.assert_serving()
}

fn full_disk_cell(site: &Site, s: &Scratch) -> Result<()> {
    site.assert_serving()?;
    let from = log_len(site)?;
    change(s, "disk full after the switch")?;
    let p = paused(
        site,
        s,
        "record",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    let release = p.release.clone();
    let filled = fill_disk(site, ROOT);
    let resumed = resume(site);
    let (status, out) = deployer_ends(p)?;
    filled?;
    resumed?;
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("could not record"))
        .with_context(|| format!("no warning that the result could not be recorded:\n{out}"))?
        .to_string();
    ensure!(
        warning.contains("succeeded")
            && warning.contains("No space left on device")
            && warning.contains("next deploy"),
        "the warning does not say what is true and what to do: {warning}"
    );
    ensure!(
        status.success(),
        "the deploy succeeded on the server, but the deployer says otherwise:\n{out}"
    );
    let tmp = site.sh(&format!("find {ROOT} -xdev -name '*.tmp.*' | head -n 5"))?;
    ensure!(tmp.trim().is_empty(), "temporary files left behind: {tmp}");
    ensure!(site.current()? == release, "current is not {release}");
    let state = site.state(&release)?;
    ensure!(!state.is_empty(), "current's .state is empty");
    let list = site.xtask(&s.dir, &["deploy", "list"])?.ok()?;
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&release))
        .unwrap_or("")
        .to_string();
    ensure!(
        row.contains("succeeded") && !row.contains("unknown") && !row.contains("dead"),
        "deploy list shows {release} as: {row}\n{}",
        list.all()
    );
    let status_run = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let last = status_run
        .stdout
        .lines()
        .find(|l| l.starts_with("last job:"))
        .unwrap_or("")
        .to_string();
    ensure!(
        last.contains("success") && last.contains("NOT RECORDED") && !last.contains("RUNNING"),
        "status says: {last}\n{}",
        status_run.all()
    );
    // A boot now (the disk still full) keeps current.
    let boot = site.sh(
        "systemctl restart innercontext-release-check.service; journalctl -u innercontext-release-check -n 3 -o cat --no-pager",
    )?;
    ensure!(
        site.current()? == release,
        "the boot check moved current from the succeeded {release} to {}: {boot}",
        site.current()?
    );
    free_disk(site, ROOT)?;
    change(s, "space is back")?;
    let next = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    took_over_line(&next.all())?;
    let log = log_since(site, from)?;
    ensure!(
        log.iter()
            .any(|(r, res, _)| r == &release && res == "success"),
        "deploy.log has no success line for {release}:\n{log:#?}"
    );
    ensure!(site.state(&release)? == "succeeded");
    wait_quiet(site, Duration::from_secs(30))?;
    site.assert_serving()
}

/// A health check that answers 503 (the release fails after its switch).
const UNHEALTHY: &str = "\n\nfrom starlette.responses import JSONResponse  # noqa: E402\n\n\n@app.middleware(\"http\")\nasync def _e2e_unhealthy(request, call_next):\n    if request.url.path == \"/health-check\":\n        return JSONResponse({\"status\": \"unavailable\", \"reason\": \"e2e\"}, status_code=503)\n    return await call_next(request)\n";
