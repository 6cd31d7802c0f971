//! The fault matrix: every interruption must leave a working server.
//!
//! After every scenario the invariants hold: `current` resolves to a complete, succeeded
//! release that the units serve through nginx; `shared/` is byte-identical (permissions
//! included); the lock is released, or reported stale with holder and age and removable with
//! `deploy unlock`, after which the next deploy succeeds; `deploy.log` tells the truth.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::{Background, Scratch, Site, ROOT};
use crate::Ctx;

/// Where in the pipeline a fault strikes: the step line the deployer prints when it starts.
#[derive(Clone, Copy)]
pub enum Step {
    Lock,
    Upload,
    Prepare,
    Activate,
}

impl Step {
    fn marker(self) -> &'static str {
        match self {
            Step::Lock => "==> preflight and lock",
            Step::Upload => "==> upload",
            Step::Prepare => "==> link env, uv sync, migrate",
            Step::Activate => "==> activate",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: no cleanup at all.
    Kill,
    /// SIGINT, as Ctrl-C.
    Interrupt,
    /// The ssh master connection dies.
    Cut,
    /// A second deploy starts while the first is at this step.
    Concurrent,
}

/// What the server looks like where it matters for the invariants.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    shared: String,
    log_lines: usize,
}

fn snapshot(site: &Site) -> Result<Snapshot> {
    let out = site.sh(&format!(
        "cd {ROOT}/shared && sha256sum backend/.env frontend/.env.production && \
         stat -c '%n %a %U %G %s' . backend frontend backend/.env frontend/.env.production && \
         echo lines=$(wc -l < {ROOT}/deploy.log)"
    ))?;
    let log_lines = out
        .lines()
        .find_map(|l| l.strip_prefix("lines="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let shared = out
        .lines()
        .filter(|l| !l.starts_with("lines="))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Snapshot { shared, log_lines })
}

/// Wait for a lock to go away by itself: an activation job the client left behind on the
/// server releases it when it ends. Without such a job, a lock is stale at once.
fn wait_unlocked(site: &Site, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = site.sh(&format!(
            "if [ -d {ROOT}/.deploy.lock ]; then if pgrep -f 'deploy.sh [a]ctivate-job' >/dev/null; then echo busy; else echo stale; fi; else echo free; fi"
        ))?;
        match state.trim() {
            "free" => return Ok(true),
            "stale" => return Ok(false),
            _ if Instant::now() > deadline => return Ok(false),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The invariants, given the snapshot from before the scenario.
fn invariants(site: &Site, scratch: &Scratch, before: &Snapshot) -> Result<()> {
    // An activation job the client left behind finishes on its own within its deadline.
    if !wait_unlocked(site, Duration::from_secs(90))? {
        // A stale lock: reported with holder and age, and removable.
        let status = site.xtask(&scratch.dir, &["deploy", "status"])?.ok()?;
        ensure!(
            status.stdout.contains("lock:     held by") && status.stdout.contains(" ago)"),
            "stale lock not reported with holder and age:\n{}",
            status.stdout
        );
        site.xtask(&scratch.dir, &["deploy", "unlock", "--yes"])?
            .ok()?;
        ensure!(!site.locked()?, "deploy unlock left the lock");
    }
    let cur = site.current()?;
    ensure!(
        site.state(&cur)? == "succeeded",
        "current ({cur}) is {}",
        site.state(&cur)?
    );
    site.sh(&format!(
        "test -x {ROOT}/current/backend/.venv/bin/python && test -f {ROOT}/current/frontend/build/index.js && test -f {ROOT}/current/backend/innercontext/main.py"
    ))
    .context("current is not a complete release")?;
    site.assert_serving()?;
    let after = snapshot(site)?;
    ensure!(
        after.shared == before.shared,
        "shared/ changed:\nbefore:\n{}\nafter:\n{}",
        before.shared,
        after.shared
    );
    // Every line deploy.log gained names a result, and none claims success for a release
    // that is not succeeded.
    let new_lines = site.sh(&format!(
        "tail -n +{} {ROOT}/deploy.log",
        before.log_lines + 1
    ))?;
    for line in new_lines.lines() {
        ensure!(line.contains(" result="), "odd deploy.log line: {line}");
        if line.contains("result=success") && line.contains("scope=all") {
            let rel = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("release="))
                .unwrap_or("");
            let state = site.state(rel).unwrap_or_default();
            ensure!(
                state == "succeeded",
                "deploy.log says {rel} succeeded, its state is {state}"
            );
        }
    }
    // And the next deploy goes through.
    scratch.commit("after a fault")?;
    site.xtask(&scratch.dir, &["deploy", "all", "--skip-local-checks"])?
        .ok()
        .context("the deploy after the fault failed")?;
    Ok(())
}

/// The fault scenarios' checkout; the site has a current release before the first of them.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.fault_scratch.is_none() {
        let s = crate::support::scratch("faults")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.fault_scratch = Some(s);
    }
    Ok(ctx.fault_scratch.as_ref().unwrap())
}

/// Kill the deployer's ssh master connection (found by its control socket path).
fn cut_connection(pid: u32) -> Result<()> {
    let pattern = format!("ic-ssh-{pid}-");
    let out = Command::new("pkill")
        .args(["-KILL", "-f", &pattern])
        .status()?;
    ensure!(
        out.success(),
        "no ssh master connection of pid {pid} to cut"
    );
    Ok(())
}

/// One cell of the matrix.
pub fn fault_at(ctx: &mut Ctx, fault: Fault, step: Step) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = snapshot(&site)?;
    s.commit("a release to interrupt")?;
    let log = s.sidecar("fault.log");
    let mut bg = Background::start(
        site.command(&s.dir, &["deploy", "all", "--skip-local-checks"]),
        &log,
    )?;
    bg.wait_for(step.marker(), Duration::from_secs(180))?;
    let mut second = None;
    match fault {
        Fault::Kill => bg.signal("KILL")?,
        Fault::Interrupt => bg.signal("INT")?,
        Fault::Cut => cut_connection(bg.child.id())?,
        Fault::Concurrent => {
            second = Some(site.xtask(
                &s.dir,
                &["deploy", "all", "--skip-local-checks", "--redeploy"],
            )?);
        }
    }
    let (status, out) = bg.wait(Duration::from_secs(240))?;
    match fault {
        Fault::Kill => {}
        Fault::Interrupt => ensure!(
            !status.success() || matches!(step, Step::Activate),
            "deploy survived SIGINT at {}:\n{out}",
            step.marker()
        ),
        Fault::Cut => {}
        Fault::Concurrent => {
            let second = second.expect("started above");
            let both_ok = status.success() && second.status.success();
            ensure!(!both_ok, "two deploys succeeded at once");
            if status.success() {
                ensure!(
                    second.all().contains("another deploy holds"),
                    "the second deploy failed for another reason:\n{}",
                    second.all()
                );
            }
        }
    }
    invariants(&site, s, &before)
}

macro_rules! matrix {
    ($($name:ident => $fault:ident @ $step:ident;)*) => {
        $(pub fn $name(ctx: &mut Ctx) -> Result<()> {
            fault_at(ctx, Fault::$fault, Step::$step)
        })*
    };
}

matrix! {
    kill_at_lock => Kill @ Lock;
    kill_at_upload => Kill @ Upload;
    kill_at_prepare => Kill @ Prepare;
    kill_at_activate => Kill @ Activate;
    interrupt_at_lock => Interrupt @ Lock;
    interrupt_at_upload => Interrupt @ Upload;
    interrupt_at_prepare => Interrupt @ Prepare;
    interrupt_at_activate => Interrupt @ Activate;
    cut_at_lock => Cut @ Lock;
    cut_at_upload => Cut @ Upload;
    cut_at_prepare => Cut @ Prepare;
    cut_at_activate => Cut @ Activate;
    concurrent_at_lock => Concurrent @ Lock;
    concurrent_at_upload => Concurrent @ Upload;
    concurrent_at_prepare => Concurrent @ Prepare;
    concurrent_at_activate => Concurrent @ Activate;
}

/// A release broken in `path` by `edit`, deployed: it must fail, and the invariants hold.
fn broken_release(
    ctx: &mut Ctx,
    what: &str,
    path: &str,
    edit: impl Fn(&str) -> String,
    expect: &str,
) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = snapshot(&site)?;
    let text = s.read(path)?;
    s.write(path, &edit(&text))?;
    s.commit(what)?;
    let run = site
        .command(&s.dir, &["deploy", "all", "--skip-local-checks"])
        .env("DEPLOY_HEALTH_TIMEOUT", "12")
        .output()?;
    s.undo()?;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(
        !run.status.success(),
        "{what}: the deploy succeeded:\n{out}"
    );
    ensure!(
        out.contains(expect),
        "{what}: expected {expect:?} in:\n{out}"
    );
    let log = site.last_log()?;
    ensure!(
        log.contains("result=rolled-back") || log.contains("result=failed"),
        "{what}: deploy.log says {log}"
    );
    invariants(&site, s, &before)
}

pub fn health_503(ctx: &mut Ctx) -> Result<()> {
    broken_release(
        ctx,
        "health check answers 503",
        "backend/innercontext/main.py",
        |t| {
            format!(
            "{t}\n\nfrom starlette.responses import JSONResponse  # noqa: E402\n\n\n@app.middleware(\"http\")\nasync def _e2e_unhealthy(request, call_next):\n    if request.url.path == \"/health-check\":\n        return JSONResponse({{\"status\": \"unavailable\", \"reason\": \"e2e\"}}, status_code=503)\n    return await call_next(request)\n"
        )
        },
        "rolled-back",
    )
}

pub fn frontend_does_not_start(ctx: &mut Ctx) -> Result<()> {
    broken_release(
        ctx,
        "frontend cannot start",
        "frontend/src/env.ts",
        |t| {
            t.replacen(
            "schema: (value) => {",
            "schema: (value) => {\n\t\t\tif (!building) throw new Error('e2e: this frontend cannot start');",
            1,
        )
        },
        "rolled-back",
    )
}

pub fn worker_crash_loops(ctx: &mut Ctx) -> Result<()> {
    broken_release(
        ctx,
        "worker crash-loops",
        "backend/innercontext/worker.py",
        |t| {
            t.replacen(
                "def main() -> int:\n",
                "def main() -> int:\n    raise SystemExit(\"e2e: the worker crashes\")\n",
                1,
            )
        },
        "rolled-back",
    )
}

/// The upload runs out of disk: a small tmpfs over releases/ (holding copies of the existing
/// releases, so `current` stays valid), and a release too big for it.
pub fn disk_full_during_upload(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = snapshot(&site)?;
    let used_kb: u64 = site
        .sh(&format!("du -sk {ROOT}/releases | cut -f1"))?
        .trim()
        .parse()?;
    let size_mb = used_kb / 1024 + 360; // passes the 300 MB preflight, not a 400 MB upload
    site.sh(&format!(
        "set -e; d=$(mktemp -d); cp -a {ROOT}/releases/. $d/; mount -t tmpfs -o size={size_mb}m,mode=755 tmpfs {ROOT}/releases; cp -a $d/. {ROOT}/releases/; rm -rf $d; chown innercontext: {ROOT}/releases"
    ))?;
    let result = (|| -> Result<()> {
        let big = vec![7u8; 400 * 1024 * 1024];
        fs_err::write(s.dir.join("backend/too-big.bin"), big)?;
        s.commit("too big")?;
        let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
        s.undo()?;
        let run = run.failed()?;
        ensure!(
            run.all().contains("rsync"),
            "expected an upload failure:\n{}",
            run.all()
        );
        ensure!(!site.locked()?, "lock left behind on a full disk");
        ensure!(site.last_log()?.contains("result=failed"));
        site.assert_serving()
    })();
    site.sh(&format!("umount {ROOT}/releases"))?;
    result?;
    invariants(&site, s, &before)
}

/// A watcher on the server reads `current` in a tight loop while deploys and rollbacks run:
/// it must never see it missing or dangling.
pub fn current_never_dangles(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let watcher = format!(
        "n=0; bad=0; end=$((SECONDS + 170)); while [ -e /tmp/e2e-watch ] && [ $SECONDS -lt $end ]; do n=$((n+1)); readlink -e {ROOT}/current/backend >/dev/null || bad=$((bad+1)); done; echo reads=$n bad=$bad"
    );
    site.sh("touch /tmp/e2e-watch")?;
    let mut cmd = Command::new("ssh");
    cmd.args(
        site.app
            .ssh_args(None, &["bash".into(), "-c".into(), watcher]),
    );
    let log = s.sidecar("watch.log");
    let bg = Background::start(cmd, &log)?;
    let result = (|| -> Result<()> {
        for i in 0..3 {
            s.commit(&format!("watch {i}"))?;
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
            site.xtask(&s.dir, &["deploy", "rollback"])?.ok()?;
            let newest = site.releases()?.into_iter().max().unwrap();
            site.xtask(&s.dir, &["deploy", "rollback", &newest])?.ok()?;
        }
        Ok(())
    })();
    site.sh("rm -f /tmp/e2e-watch")?;
    let (_, out) = bg.wait(Duration::from_secs(200))?;
    result?;
    let reads: u64 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("reads="))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("watcher said: {out}"))?;
    ensure!(reads > 1000, "the watcher read current only {reads} times");
    ensure!(
        out.contains("bad=0"),
        "current was missing or dangling: {out}"
    );
    Ok(())
}

/// Bad input: a clear one-line error, non-zero exit, and no change on the server.
pub fn bad_input_is_refused(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let state = |site: &Site| -> Result<String> {
        site.sh(&format!(
            "cd {ROOT} && ls -1 releases && readlink current && (test -d .deploy.lock && echo locked || echo free) && wc -l < deploy.log && sha256sum shared/backend/.env shared/frontend/.env.production"
        ))
    };
    let before = state(&site)?;
    let pwned = "/tmp/pwned-e2e";
    let _ = std::fs::remove_file(pwned);
    let failed = site
        .releases()?
        .into_iter()
        .find(|r| site.state(r).map(|st| st == "failed").unwrap_or(false));
    // (name, arguments, environment, what the one error line must say)
    type Case = (
        String,
        Vec<String>,
        Vec<(&'static str, String)>,
        &'static str,
    );
    let mut cases: Vec<Case> = vec![
        (
            "unknown command".into(),
            vec!["deplyo".into()],
            vec![],
            "unknown command",
        ),
        (
            "unknown deploy command".into(),
            vec!["deploy".into(), "everything".into()],
            vec![],
            "unknown deploy command",
        ),
        (
            "unknown flag".into(),
            vec!["deploy".into(), "--frobnicate".into()],
            vec![],
            "unknown flag",
        ),
        (
            "flag for another command".into(),
            vec!["deploy".into(), "list".into(), "--force".into()],
            vec![],
            "does not apply",
        ),
        (
            "rollback ../x".into(),
            vec!["deploy".into(), "rollback".into(), "../x".into()],
            vec![],
            "not a release name",
        ),
        (
            "rollback /etc".into(),
            vec!["deploy".into(), "rollback".into(), "/etc".into()],
            vec![],
            "not a release name",
        ),
        (
            "rollback junk".into(),
            vec![
                "deploy".into(),
                "rollback".into(),
                "latest; rm -rf /".into(),
            ],
            vec![],
            "not a release name",
        ),
        (
            "rollback missing".into(),
            vec![
                "deploy".into(),
                "rollback".into(),
                "20200101T000000Z".into(),
            ],
            vec![],
            "does not exist",
        ),
        (
            "relative root".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ROOT", "opt/innercontext".into())],
            "DEPLOY_ROOT",
        ),
        (
            "root with spaces".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ROOT", "/opt/inner context".into())],
            "DEPLOY_ROOT",
        ),
        (
            "root with quotes".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ROOT", "/opt/'x'\"y\"".into())],
            "DEPLOY_ROOT",
        ),
        (
            "root with $(…)".into(),
            vec!["deploy".into(), "list".into()],
            vec![("DEPLOY_ROOT", format!("/opt/$(touch {pwned})"))],
            "DEPLOY_ROOT",
        ),
        (
            "root with ;".into(),
            vec!["deploy".into(), "status".into()],
            vec![("DEPLOY_ROOT", format!("/opt/x;touch {pwned}"))],
            "DEPLOY_ROOT",
        ),
        (
            "root with newline".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ROOT", "/opt/x\ntouch /tmp/pwned-e2e".into())],
            "DEPLOY_ROOT",
        ),
        (
            "root with ..".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ROOT", "/opt/../etc".into())],
            "DEPLOY_ROOT",
        ),
        (
            "server injection".into(),
            vec!["deploy".into(), "list".into()],
            vec![("DEPLOY_SERVER", format!("-oProxyCommand=touch {pwned}"))],
            "DEPLOY_SERVER",
        ),
        (
            "unreachable server".into(),
            vec!["deploy".into(), "list".into()],
            vec![("DEPLOY_SERVER", "innercontext@127.0.0.1".into())],
            "cannot connect",
        ),
        (
            "bad keep".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_KEEP", "0".into())],
            "DEPLOY_KEEP",
        ),
        (
            "bad dirty flag".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_ALLOW_DIRTY", "yes".into())],
            "DEPLOY_ALLOW_DIRTY",
        ),
        (
            "missing ssh config".into(),
            vec!["deploy".into()],
            vec![("DEPLOY_SSH_CONFIG", "/nonexistent/ssh_config".into())],
            "DEPLOY_SSH_CONFIG",
        ),
        (
            "unlock without --yes".into(),
            vec!["deploy".into(), "unlock".into()],
            vec![],
            "",
        ),
    ];
    if let Some(f) = failed {
        cases.push((
            "rollback to a failed release".into(),
            vec!["deploy".into(), "rollback".into(), f],
            vec![],
            "not succeeded",
        ));
    }
    let mut problems = Vec::new();
    for (name, args, env, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = site.command(&s.dir, &args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        if *name == "unlock without --yes" {
            // No lock: it says so and succeeds; that is not a change either.
            continue;
        }
        if out.status.success() {
            problems.push(format!("{name}: exit 0"));
        } else if error_lines.len() != 1 || !error_lines[0].contains(expect) {
            problems.push(format!(
                "{name}: expected one 'error:' line with {expect:?}, got:\n{stderr}"
            ));
        }
    }
    // A dirty tree without DEPLOY_ALLOW_DIRTY.
    s.write("backend/DIRTY", "uncommitted\n")?;
    let dirty = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    fs_err::remove_file(s.dir.join("backend/DIRTY"))?;
    if dirty.status.success() || !dirty.stderr.contains("uncommitted change") {
        problems.push(format!("dirty tree: {}", dirty.all()));
    }
    ensure!(
        !std::path::Path::new(pwned).exists(),
        "a hostile value ran a command locally"
    );
    ensure!(
        site.sh(&format!("test -e {pwned} && echo yes || echo no"))?
            .trim()
            == "no",
        "a hostile value ran a command on the server"
    );
    let after = state(&site)?;
    ensure!(
        before == after,
        "the server changed:\nbefore:\n{before}\nafter:\n{after}"
    );
    if !problems.is_empty() {
        bail!(
            "{} of {} bad inputs were not refused cleanly:\n{}",
            problems.len(),
            cases.len() + 1,
            problems.join("\n")
        );
    }
    ensure!(cases.len() + 1 >= 20, "only {} cases", cases.len() + 1);
    Ok(())
}

/// Remote state that the deployer must refuse with a clear message and leave alone.
pub fn bad_remote_state_is_refused(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    // A world-readable env file: refused before any change, then put back.
    s.commit("refused: world-readable env file")?;
    site.sh(&format!("chmod 644 {ROOT}/shared/backend/.env"))?;
    let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    site.sh(&format!("chmod 600 {ROOT}/shared/backend/.env"))?;
    let run = run?.failed()?;
    ensure!(
        run.stderr.contains("has mode 644, expected 600"),
        "{}",
        run.all()
    );
    ensure!(!site.locked()?);
    // Sudo that wants a password (the spec's failure): refused in preflight.
    s.commit("refused: sudo wants a password")?;
    site.sh("mv /etc/sudoers.d/innercontext-deploy /root/innercontext-deploy.saved")?;
    let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    site.sh("mv /root/innercontext-deploy.saved /etc/sudoers.d/innercontext-deploy")?;
    let run = run?.failed()?;
    ensure!(
        run.stderr.contains("without a password") && run.stderr.contains("setup-server"),
        "{}",
        run.all()
    );
    ensure!(!site.locked()?);
    // Foreign junk in releases/: warned about, never touched, the deploy still works.
    site.sh(&format!(
        "mkdir -p '{ROOT}/releases/not a release' && touch {ROOT}/releases/README"
    ))?;
    s.commit("with junk around")?;
    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    ensure!(
        run.stderr.contains("is not a release (left alone"),
        "{}",
        run.all()
    );
    site.sh(&format!("test -d '{ROOT}/releases/not a release' && test -f {ROOT}/releases/README && rm -rf '{ROOT}/releases/not a release' {ROOT}/releases/README"))?;
    // An unknown host key: refused, host-key checking stays on.
    let bad_known = s.sidecar("bad-known-hosts");
    let cfg = fs_err::read_to_string(&site.app.ssh_config)?;
    let known = site.app.known_hosts.to_string();
    fs_err::write(&bad_known, "")?;
    let bad_cfg = s.sidecar("bad-ssh-config");
    fs_err::write(&bad_cfg, cfg.replace(&known, bad_known.as_str()))?;
    let run = site
        .command(&s.dir, &["deploy", "list"])
        .env("DEPLOY_SSH_CONFIG", &bad_cfg)
        .output()?;
    let err = String::from_utf8_lossy(&run.stderr);
    ensure!(!run.status.success() && err.contains("host key"), "{err}");
    Ok(())
}

/// Security properties of a deploy.
pub fn security_properties(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let password = xtask::testhost::db_info(&site.db).password;
    // A journal cursor taken now: everything after it happened during this scenario.
    let cursor = site
        .sh("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")?
        .trim()
        .to_string();
    ensure!(!cursor.is_empty(), "no journal cursor");
    s.commit("security")?;
    let run = site
        .xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
        .ok()?;
    // Nothing logged in as root during the deploy, and sudo ran only the allowed commands. The
    // one root session that ends after the cursor is the one that read the cursor; this query's
    // own session has not ended yet.
    let auth = site.sh(&format!(
        "journalctl --after-cursor='{cursor}' -o cat --no-pager -u ssh; journalctl --after-cursor='{cursor}' -o cat --no-pager -t sudo"
    ))?;
    let root_sessions = auth.matches("Disconnected from user root ").count();
    ensure!(
        root_sessions == 1,
        "root logged in during the deploy:\n{auth}"
    );
    ensure!(
        auth.contains("Accepted publickey for innercontext"),
        "no deploy login seen:\n{auth}"
    );
    let sudo: Vec<&str> = auth
        .lines()
        .filter_map(|l| l.split("COMMAND=").nth(1))
        .collect();
    ensure!(!sudo.is_empty(), "no sudo use seen:\n{auth}");
    for cmd in sudo {
        ensure!(
            cmd.starts_with("/usr/bin/systemctl restart innercontext")
                || cmd.starts_with("/usr/bin/systemctl is-active innercontext"),
            "sudo ran {cmd}"
        );
    }
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    // Env files: 0600, app-owned, never in output or logs.
    let modes = site.sh(&format!(
        "stat -c '%a %U' {ROOT}/shared/backend/.env {ROOT}/shared/frontend/.env.production"
    ))?;
    ensure!(
        modes.lines().all(|l| l == "600 innercontext"),
        "env files: {modes}"
    );
    ensure!(
        !run.all().contains(&password) && !status.all().contains(&password),
        "the database password appeared in the output"
    );
    let logs = site.sh(&format!(
        "cat {ROOT}/deploy.log {ROOT}/current/.prepare.log {ROOT}/current/.activate.log 2>/dev/null; journalctl --after-cursor='{cursor}' -o cat --no-pager"
    ))?;
    ensure!(
        !logs.contains(&password),
        "the database password appeared in the server's logs"
    );
    // Releases are not writable by other users.
    let writable = site.sh(&format!(
        "find {ROOT}/releases {ROOT}/current/ -perm /022 ! -type l | head -5"
    ))?;
    ensure!(
        writable.trim().is_empty(),
        "group- or world-writable release files: {writable}"
    );
    // The deployer never turns host-key checking off.
    let src = std::fs::read_to_string(crate::support::repo().join("xtask/src/ssh.rs"))?;
    ensure!(
        !src.contains("StrictHostKeyChecking=no") && !src.contains("UserKnownHostsFile=/dev/null")
    );
    Ok(())
}
