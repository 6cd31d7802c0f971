//! The server-side lifecycle where real servers and real people bend it: a `current` whose
//! release is gone, a release named in the future, a masked unit, env files that are not
//! files, an old release that cannot be pruned, two `unlock`s at once, an `unlock` of a live
//! job, a deploy that lands between another's plan and its lock, and re-attaching to a deploy.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::support::{paused, resume, wait_quiet};
use crate::support::{Background, Scratch, Site, ROOT};
use crate::Ctx;

fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.lifecycle_scratch.is_none() {
        let s = crate::support::scratch("lifecycle")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.lifecycle_scratch = Some(s);
    }
    Ok(ctx.lifecycle_scratch.as_ref().unwrap())
}

fn deploy(site: &Site, s: &Scratch, args: &[&str]) -> Result<crate::support::Run> {
    let mut full = vec!["deploy"];
    full.extend(args);
    site.xtask(&s.dir, &full)
}

/// `current`'s release removed by hand: status says DANGLING (not "none"), a half deploy
/// refuses with why, a rollback to a named release works, and so does `deploy all`.
pub fn dangling_current_is_recoverable(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("two releases to have an older one")?;
    deploy(&site, s, &["all", "--skip-local-checks"])?.ok()?;
    let cur = site.current()?;
    let older = site
        .releases()?
        .into_iter()
        .filter(|r| r.as_str() < cur.as_str() && site.state(r).is_ok_and(|st| st == "succeeded"))
        .max()
        .context("no older succeeded release")?;
    site.sh(&format!("mv {ROOT}/releases/{cur} /root/{cur}.away"))?;
    let result = (|| -> Result<()> {
        let status = deploy(&site, s, &["status"])?.ok()?;
        ensure!(
            status.stdout.contains("DANGLING") && status.stdout.contains(&cur),
            "status does not say current dangles:\n{}",
            status.stdout
        );
        let half = deploy(&site, s, &["backend", "--skip-local-checks", "--redeploy"])?.failed()?;
        ensure!(
            half.all().contains("DANGLING") && half.all().contains("deploy all first"),
            "{}",
            half.all()
        );
        let rb = deploy(&site, s, &["rollback", &older])?.ok()?;
        ensure!(
            site.current()? == older,
            "rollback did not switch:\n{}",
            rb.all()
        );
        site.assert_serving()?;
        // Dangling again, then a full deploy recovers without a seed.
        site.sh(&format!("ln -sfn releases/{cur} {ROOT}/current"))?;
        s.commit("after a dangling current")?;
        let run = deploy(&site, s, &["all", "--skip-local-checks"])?.ok()?;
        ensure!(site.current()? != cur, "{}", run.all());
        site.assert_serving()
    })();
    site.sh(&format!("mv /root/{cur}.away {ROOT}/releases/{cur}"))?;
    result
}

/// A release directory named in the future (a wrong clock once): reported, never the newest,
/// the prune anchor or the rollback target; deploys name releases by the server's clock.
pub fn future_release_is_never_newest(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let future = "20991231T000000Z";
    let cur = site.current()?;
    site.sh(&format!(
        "cp -al {ROOT}/releases/{cur} {ROOT}/releases/{future} && chown -h innercontext: {ROOT}/releases/{future}"
    ))?;
    let result = (|| -> Result<()> {
        let list = deploy(&site, s, &["list"])?.ok()?;
        // The future release's own line is marked, and no other.
        let marked: Vec<&str> = list
            .stdout
            .lines()
            .filter(|l| l.contains("(FUTURE)"))
            .collect();
        ensure!(
            marked.len() == 1 && marked[0].contains(future),
            "want only {future}'s line marked (FUTURE):\n{}",
            list.stdout
        );
        ensure!(
            list.stderr.contains("named in the future"),
            "{}",
            list.all()
        );
        s.commit("with a release from the future around")?;
        let run = deploy(&site, s, &["all", "--skip-local-checks"]).map(|r| r.ok())??;
        let name = site.current()?;
        ensure!(
            name.as_str() < future,
            "the new release is {name}:\n{}",
            run.all()
        );
        ensure!(
            site.releases()?.contains(&future.to_string()),
            "the future release was pruned"
        );
        let rb = deploy(&site, s, &["rollback", future])?.failed()?;
        ensure!(rb.all().contains("in the future"), "{}", rb.all());
        Ok(())
    })();
    site.sh(&format!("rm -rf {ROOT}/releases/{future}"))?;
    result
}

/// A masked unit: refused in preflight, naming the unit and what to do; nothing changed.
pub fn masked_unit_is_refused(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("with a masked unit")?;
    let before = site.releases()?;
    // The unit file is below /etc (xtask::contract::UNIT_DIR): an admin's mask is a link there.
    site.sh(
        "systemctl mask -q innercontext-pricing-worker && test \"$(systemctl show -p LoadState --value innercontext-pricing-worker)\" = masked",
    )?;
    let run = deploy(&site, s, &["all", "--skip-local-checks"]);
    site.sh("systemctl unmask -q innercontext-pricing-worker")?;
    let run = run?.failed()?;
    ensure!(
        run.all()
            .contains("unit innercontext-pricing-worker is masked"),
        "{}",
        run.all()
    );
    ensure!(
        site.releases()? == before,
        "a refused deploy made a release"
    );
    ensure!(!site.locked()?);
    ensure!(
        site.last_log()?.contains("result=refused"),
        "{}",
        site.last_log()?
    );
    Ok(())
}

/// Env files that are a directory or a symlink: each diagnosed as what it is, with a fix that
/// is safe to run; nothing changed.
pub fn env_file_shapes_are_diagnosed(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("env file shapes")?;
    let env = format!("{ROOT}/shared/backend/.env");
    site.sh(&format!(
        "mv {env} /root/env.saved && mkdir {env} && chown innercontext: {env}"
    ))?;
    let as_dir = deploy(&site, s, &["backend", "--skip-local-checks"]);
    site.sh(&format!(
        "rmdir {env} && ln -s /root/env.saved {env} && chown -h innercontext: {env}"
    ))?;
    let as_link = deploy(&site, s, &["backend", "--skip-local-checks"]);
    site.sh(&format!("rm {env} && mv /root/env.saved {env}"))?;
    let as_dir = as_dir?.failed()?;
    ensure!(
        as_dir.all().contains("is a directory, not a file"),
        "{}",
        as_dir.all()
    );
    let as_link = as_link?.failed()?;
    ensure!(
        as_link.all().contains("is a symlink (to /root/env.saved)")
            && !as_link.all().contains("chmod"),
        "{}",
        as_link.all()
    );
    ensure!(!site.locked()?);
    site.assert_serving()
}

/// An old release that cannot be removed: the deploy still succeeds, records its result and
/// releases the lock; the prune says what it left.
pub fn unprunable_release_does_not_break_the_deploy(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let oldest = site
        .releases()?
        .into_iter()
        .filter(|r| site.state(r).is_ok_and(|st| st == "succeeded"))
        .min()
        .context("no release")?;
    site.sh(&format!(
        "mkdir -p {ROOT}/releases/{oldest}/stuck && touch {ROOT}/releases/{oldest}/stuck/f && chown -R root: {ROOT}/releases/{oldest}/stuck"
    ))?;
    s.commit("prune something stuck")?;
    let run = site
        .command(&s.dir, &["deploy", "all", "--skip-local-checks"])
        .env("DEPLOY_KEEP", "1")
        .output();
    let cleanup = site.sh(&format!("rm -rf {ROOT}/releases/{oldest}/stuck"));
    let run = run?;
    cleanup?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(run.status.success(), "{all}");
    ensure!(
        all.contains(&format!("could not remove {ROOT}/releases/{oldest}")),
        "{all}"
    );
    ensure!(!site.locked()?);
    ensure!(
        site.last_log()?.contains("result=success"),
        "{}",
        site.last_log()?
    );
    wait_quiet(&site, Duration::from_secs(30))
}

/// A stale lock (its job is gone) and two `unlock --yes` at once: exactly one removes it, the
/// other says it is gone; deploy.log records one unlock; a lock taken meanwhile is untouched.
pub fn concurrent_unlocks_remove_one_lock(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let lines = |site: &Site| -> Result<usize> {
        Ok(site
            .sh(&format!("wc -l < {ROOT}/deploy.log"))?
            .trim()
            .parse()?)
    };
    let before = lines(&site)?;
    site.sh(&format!(
        "mkdir {ROOT}/.deploy.lock && printf 'user=ghost\\nhost=gone\\npid=1\\nstarted=2026-01-01T00:00:00Z\\nstarted_epoch=1767225600\\ncommand=deploy all\\ncommit=abc\\nrelease=-\\ntoken=stale-1\\n' > {ROOT}/.deploy.lock/info && chown -R innercontext: {ROOT}/.deploy.lock"
    ))?;
    let status = deploy(&site, s, &["status"])?.ok()?;
    ensure!(status.stdout.contains("STALE"), "{}", status.stdout);
    let a = site
        .command(&s.dir, &["deploy", "unlock", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let b = site
        .command(&s.dir, &["deploy", "unlock", "--yes"])
        .output()?;
    let a = a.wait_with_output()?;
    // One removed it and says so; the other says there is no lock (seen before its probe: a
    // success; at its call: a refusal that removed nothing; or gone between the server's own
    // look and its removal: "removed meanwhile", also nothing removed). Never two removals.
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let (sa, sb) = (said(&a), said(&b));
    let removed = |t: &str| t.contains("lock removed on");
    let (winner, loser, loser_ok) = match (removed(&sa), removed(&sb)) {
        (true, false) => (&a, &sb, b.status.success()),
        (false, true) => (&b, &sa, a.status.success()),
        _ => bail!(
            "want exactly one unlock to say it removed the lock:\n--- one:\n{sa}--- other:\n{sb}"
        ),
    };
    ensure!(winner.status.success(), "the winner failed: {sa}{sb}");
    ensure!(
        (loser.contains("no deploy lock on") && (loser_ok || loser.contains("nothing to remove")))
            || (!loser_ok
                && loser.contains("was removed meanwhile")
                && loser.contains("nothing left to remove")),
        "the other unlock did not say there was no lock left:\n{loser}"
    );
    ensure!(!site.locked()?);
    let added = lines(&site)? - before;
    ensure!(
        added == 1,
        "deploy.log gained {added} lines, expected one unlock"
    );
    ensure!(
        site.last_log()?.contains("result=unlocked"),
        "{}",
        site.last_log()?
    );
    // Shown one lock, another taken since: the unlock of the first token removes nothing.
    site.sh(&format!(
        "mkdir {ROOT}/.deploy.lock && printf 'user=other\\ntoken=live-2\\n' > {ROOT}/.deploy.lock/info && chown -R innercontext: {ROOT}/.deploy.lock"
    ))?;
    let wrong = site.app.ssh(&[
        "runuser",
        "-u",
        "innercontext",
        "--",
        "bash",
        "-c",
        &format!(
            "cd /tmp && bash {ROOT}/current/scripts/deploy.sh unlock root={ROOT} token=stale-1 force=no deployer=e2e@test; echo rc=$?"
        ),
    ])?;
    let still = site.locked()?;
    site.sh(&format!("rm -rf {ROOT}/.deploy.lock"))?;
    ensure!(
        still,
        "an unlock of another token removed the lock: {wrong}"
    );
    ensure!(wrong.contains("changed since it was shown"), "{wrong}");
    Ok(())
}

/// A terminal's Ctrl-C at unlock's question (`Remove it? [y/N]`, on a real terminal: `script`
/// gives it one, and the Ctrl-C is the character typed into it, which the terminal turns into
/// SIGINT for the foreground process group): the command stops at once with exit 130, the lock
/// is still there and deploy.log records no unlock.
pub fn ctrl_c_at_the_unlock_question_removes_nothing(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    site.sh(&format!(
        "rm -rf {ROOT}/.deploy.lock && mkdir {ROOT}/.deploy.lock && printf 'user=ghost\\nhost=gone\\npid=1\\nstarted=2026-01-01T00:00:00Z\\nstarted_epoch=1767225600\\ncommand=deploy all\\ncommit=abc\\nrelease=-\\ntoken=stale-ctrl-c\\n' > {ROOT}/.deploy.lock/info && chown -R innercontext: {ROOT}/.deploy.lock"
    ))?;
    let log_before = site.sh(&format!("cat {ROOT}/deploy.log 2>/dev/null || true"))?;
    let inner = site.command(&crate::support::repo(), &["deploy", "unlock"]);
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qefc",
        &format!(
            "exec {} deploy unlock",
            xtask::quote::sh(crate::support::xtask_bin())
        ),
        "/dev/null",
    ]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(inner.get_current_dir().context("a directory")?)
        .stdin(std::process::Stdio::piped());
    let log = camino::Utf8PathBuf::from(format!(
        "/tmp/innercontext-{}-unlock-ctrl-c.log",
        crate::run_id()
    ));
    let mut bg = Background::start(cmd, &log)?;
    let mut terminal = bg.child.stdin.take().context("script's stdin")?;
    let result = (|| -> Result<()> {
        bg.wait_for("[y/N]", Duration::from_secs(60))?;
        std::io::Write::write_all(&mut terminal, b"\x03")?;
        std::io::Write::flush(&mut terminal)?;
        let started = std::time::Instant::now();
        while bg.child.try_wait()?.is_none() {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "Ctrl-C at the question did not stop 'deploy unlock' within 10s:\n{}",
                bg.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    if bg.child.try_wait()?.is_none() {
        // Answer no, so the command ends without removing anything.
        let _ = std::io::Write::write_all(&mut terminal, b"n\n");
    }
    drop(terminal);
    let (status, out) = bg.wait(Duration::from_secs(30))?;
    let locked = site.locked()?;
    let log_after = site.sh(&format!("cat {ROOT}/deploy.log 2>/dev/null || true"))?;
    site.sh(&format!("rm -rf {ROOT}/.deploy.lock"))?;
    result?;
    ensure!(status.code() == Some(130), "exit {status}, not 130:\n{out}");
    ensure!(
        out.contains("interrupted by Ctrl-C (SIGINT) before the lock was removed"),
        "{out}"
    );
    ensure!(locked, "the lock was removed:\n{out}");
    ensure!(log_after == log_before, "deploy.log changed:\n{out}");
    Ok(())
}

/// `unlock` while the job runs: refused; `--force` stops the job, which records the deploy as
/// interrupted and releases the lock; the deployer says so.
pub fn unlock_refuses_a_live_job_unless_forced(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let css = s.read("frontend/src/app.css")?;
    s.write("frontend/src/app.css", &format!("{css}\n/* unlock */\n"))?;
    s.commit("a deploy to unlock")?;
    // With the backend checks, the job waits a while for `checked`.
    let log = s.sidecar("unlock.log");
    let mut bg = Background::start(site.command(&s.dir, &["deploy", "all", "--recheck"]), &log)?;
    bg.wait_for("==> prepare", Duration::from_secs(180))?;
    let refused = deploy(&site, s, &["unlock", "--yes"])?.failed()?;
    ensure!(refused.all().contains("is running"), "{}", refused.all());
    ensure!(site.locked()?, "a refused unlock removed the lock");
    let forced = deploy(&site, s, &["unlock", "--yes", "--force"])?.ok()?;
    ensure!(
        forced.all().contains("released the lock") || forced.all().contains("lock removed"),
        "{}",
        forced.all()
    );
    let (status, out) = bg.wait(Duration::from_secs(120))?;
    ensure!(
        !status.success(),
        "the deploy succeeded after a forced unlock:\n{out}"
    );
    ensure!(
        out.contains(": interrupted") && out.contains("deploy unlock --force"),
        "{out}"
    );
    wait_quiet(&site, Duration::from_secs(30))?;
    ensure!(
        site.last_log()?.contains("result=interrupted"),
        "{}",
        site.last_log()?
    );
    site.assert_serving()
}

/// A deploy that lands between another deploy's plan and its lock: the second one refuses
/// (current is not what it planned against) instead of reverting the first.
pub fn a_deploy_landing_meanwhile_is_not_reverted(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("the slow one")?;
    let pause = s.sidecar("pause");
    fs_err::write(&pause, "")?;
    let log = s.sidecar("meanwhile.log");
    let mut cmd = site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    cmd.env("INNERCONTEXT_TEST_PAUSE_BEFORE_LOCK", &pause);
    let mut slow = Background::start(cmd, &log)?;
    slow.wait_for("paused before the lock", Duration::from_secs(120))?;
    let fast = deploy(&site, s, &["all", "--skip-local-checks", "--redeploy"]);
    fs_err::remove_file(&pause)?;
    let landed = fast?.ok()?;
    let cur = site.current()?;
    let (status, out) = slow.wait(Duration::from_secs(120))?;
    ensure!(!status.success(), "the stale deploy went through:\n{out}");
    ensure!(out.contains("another deploy landed meanwhile"), "{out}");
    ensure!(
        site.current()? == cur,
        "current changed from {cur}:\n{}",
        landed.all()
    );
    ensure!(
        site.last_log()?.contains("result=refused"),
        "{}",
        site.last_log()?
    );
    Ok(())
}

/// `deploy status --follow` re-attaches to a running deploy and prints its steps to the end.
pub fn status_follow_reattaches(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let css = s.read("frontend/src/app.css")?;
    s.write("frontend/src/app.css", &format!("{css}\n/* follow */\n"))?;
    s.commit("a deploy to follow")?;
    // The deploy held before its switch: the follower attaches to a job that is running
    // (status says so), replays what it did so far, waits with it, and ends with its result.
    let p = paused(
        &site,
        s,
        "switch",
        &["deploy", "all", "--skip-local-checks"],
    )?;
    let status = deploy(&site, s, &["status"])?.ok()?;
    ensure!(
        status.stdout.contains(&format!("{} RUNNING", p.token)),
        "status does not show the held job {} running:\n{}",
        p.token,
        status.stdout
    );
    let log = s.sidecar("follow.log");
    let mut follow = Background::start(
        site.command(&s.dir, &["deploy", "status", "--follow"]),
        &log,
    )?;
    follow.wait_for(
        &format!("following job {}", p.token),
        Duration::from_secs(60),
    )?;
    follow.wait_for("seed release", Duration::from_secs(60))?;
    ensure!(
        follow.child.try_wait()?.is_none(),
        "the follower ended while the job was held:\n{}",
        follow.output()
    );
    resume(&site)?;
    let (fstatus, fout) = follow.wait(Duration::from_secs(120))?;
    let (status, out) = p.bg.wait(Duration::from_secs(120))?;
    ensure!(status.success(), "{out}");
    ensure!(fstatus.success(), "the follower failed:\n{fout}");
    for step in ["switch current", "health checks", ": success"] {
        ensure!(fout.contains(step), "no '{step}' in:\n{fout}");
    }
    Ok(())
}

/// Ctrl-C twice after the point of no return, as a terminal sends it (to the deployer's whole
/// process group): the first says the server completes the deploy and keeps watching, the
/// second stops watching (exit 130) without stopping the job, which finishes by itself.
pub fn a_second_ctrl_c_stops_watching_and_the_job_finishes(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let css = s.read("frontend/src/app.css")?;
    s.write("frontend/src/app.css", &format!("{css}\n/* twice */\n"))?;
    s.commit("a deploy to stop watching")?;
    let mut p = paused(
        &site,
        s,
        "health",
        &["deploy", "all", "--skip-local-checks"],
    )?;
    let group = format!("-{}", p.bg.child.id());
    let interrupt = || {
        crate::support::run_ok(
            std::process::Command::new("kill").args(["-INT", "--", &group]),
            "kill",
        )
    };
    interrupt()?;
    p.bg.wait_for("Ctrl-C again to stop watching", Duration::from_secs(60))?;
    ensure!(
        p.bg.child.try_wait()?.is_none(),
        "the first Ctrl-C after the switch ended the deployer:\n{}",
        p.bg.output()
    );
    interrupt()?;
    let (status, out) = p.bg.wait(Duration::from_secs(60))?;
    ensure!(
        status.code() == Some(130)
            && out.contains("stopped watching: the job on")
            && out.contains("(twice)"),
        "want exit 130 and the job left running ({status}):\n{out}"
    );
    resume(&site)?;
    wait_quiet(&site, Duration::from_secs(120))?;
    let last = site.last_log()?;
    ensure!(
        last.contains(&format!("release={}", p.release)) && last.contains("result=success"),
        "the job did not finish by itself: {last}"
    );
    ensure!(site.current()? == p.release, "current is not {}", p.release);
    Ok(())
}

/// The boot-time check: with `current` on a release that was never marked succeeded (a power
/// loss right after a switch), or whose files no longer match its seal (truncated on disk),
/// the check puts back the newest intact succeeded release and logs it; a fine current is
/// left alone.
pub fn boot_check_restores_an_intact_release(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("a release for the boot check")?;
    deploy(&site, s, &["all", "--skip-local-checks"])?.ok()?;
    let cur = site.current()?;
    let older = site
        .releases()?
        .into_iter()
        .filter(|r| r.as_str() < cur.as_str() && site.state(r).is_ok_and(|st| st == "succeeded"))
        .max()
        .context("no older succeeded release")?;
    let check = |site: &Site| -> Result<String> {
        site.sh("systemctl restart innercontext-release-check.service && journalctl -u innercontext-release-check -n 1 -o cat --no-pager")
    };
    let fine = check(&site)?;
    ensure!(site.current()? == cur, "a fine current was changed: {fine}");
    // Never marked succeeded.
    site.sh(&format!("echo preparing > {ROOT}/releases/{cur}/.state"))?;
    let out = check(&site)?;
    ensure!(
        site.current()? == older,
        "current is {}: {out}",
        site.current()?
    );
    ensure!(
        site.last_log()?.contains("result=restored-at-boot"),
        "{}",
        site.last_log()?
    );
    // Marked succeeded but a file of its own came out empty (what a power loss does to a file
    // written just before it: a new file, not the older releases' hard-linked copy).
    site.sh(&format!(
        "echo succeeded > {ROOT}/releases/{cur}/.state && ln -sfn releases/{cur} {ROOT}/current && f={ROOT}/releases/{cur}/backend/innercontext/pricing.py && rm $f && : > $f"
    ))?;
    let out = check(&site)?;
    ensure!(
        site.current()? == older,
        "a truncated release stayed current: {out}"
    );
    site.sh(&format!("echo failed > {ROOT}/releases/{cur}/.state"))?;
    site.sh("systemctl restart innercontext innercontext-node innercontext-pricing-worker")?;
    site.assert_serving()
}
