//! The fault matrix: faults sent the way the world sends them, at each step of a deploy, and
//! what the server must look like afterwards.
//!
//! Faults: SIGKILL and SIGTERM to the deployer; SIGINT and SIGHUP to its whole process group
//! (a terminal's Ctrl-C and a closed terminal or laptop lid); the ssh master connection killed
//! (exactly it: its pid from `ssh -O check`); the network path closed under it (the test host's
//! latency proxy killed); a second deploy at the same moment.
//!
//! Steps: the lock (taken, upload not started), the upload, `uv sync` in prepare, `alembic
//! upgrade` in migrate, the activation, the bookkeeping after the switch. Each cell proves
//! where it struck (events carry server time): at prepare, the activation and the record the
//! job is held right before the step by its test pause point while the fault strikes, then let
//! go (the step had not started, the one before it had); at the lock, the upload and the
//! migration the step had started before the fault; and, where the deploy must stop, the
//! switch never started.
//!
//! After every cell, knowing the fault: the lock is free and no job runs (waited for with a
//! deadline: a lock still busy then fails the cell); deploy.log has exactly the line(s) the fault
//! calls for, with the right `result=`, and the release's `.state` matches; the deployer's last
//! line says that same result; `current` is a complete, succeeded release serving through nginx;
//! `shared/` (env files and their directories, every path with mode, owner, size and hash) is
//! unchanged; and the next deploy succeeds.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::{wait_quiet, Background, Scratch, Site, ROOT};
use crate::Ctx;

/// Where in the pipeline a fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The lock is taken (the job seeds or waits), the upload has not started.
    Lock,
    Upload,
    /// `uv sync` runs in prepare (a new virtualenv).
    Sync,
    /// `alembic upgrade` runs (a slow migration).
    Migrate,
    /// The switch has happened; restart and health checks run.
    Activate,
    /// The bookkeeping after a successful switch (state, log, prune).
    Record,
}

impl Step {
    /// The job step that must have started before the fault.
    fn job_step(self) -> &'static str {
        match self {
            Step::Lock => "seed",
            Step::Upload => "seed",
            Step::Sync => "prepare",
            Step::Migrate => "migrate",
            Step::Activate => "switch",
            Step::Record => "record",
        }
    }

    /// The job's test pause point the cell holds the job at (`INNERCONTEXT_TEST_PAUSE_AT`):
    /// the fault strikes while the job is held right before that step, and the job is let go
    /// right after, so it meets the fault inside the step, deterministically, instead of a
    /// poll racing a step that may end between two looks. `prepare` (its `uv sync`), `health`
    /// (after the switch and the restart: inside the activation) and `record`.
    fn pause_at(self) -> Option<&'static str> {
        match self {
            Step::Sync => Some("prepare"),
            Step::Activate => Some("health"),
            Step::Record => Some("record"),
            Step::Lock | Step::Upload | Step::Migrate => None,
        }
    }

    /// Whether the deploy has passed its point of no return (the migration started) when the
    /// fault strikes: then the server finishes it.
    fn finishes(self) -> bool {
        matches!(self, Step::Migrate | Step::Activate | Step::Record)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL to the deployer: no cleanup at all.
    Kill,
    /// SIGTERM to the deployer.
    Term,
    /// SIGINT to the deployer's process group, as a terminal's Ctrl-C.
    Interrupt,
    /// SIGHUP to the process group, as a closed terminal.
    Hangup,
    /// The ssh master connection killed.
    Cut,
    /// The network path closed (the latency proxy in front of sshd killed).
    Drop,
    /// A second deploy starts while the first is at this step.
    Concurrent,
}

/// What the server looks like where it matters for the invariants.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    shared: String,
    log_lines: usize,
    /// The release `current` named (empty: none).
    current: String,
}

/// Every path under shared/ that a deploy must never change (env files and their directories;
/// not the uv cache, the virtualenvs, the assets or the database snapshots, which deploys fill),
/// with mode, owner, group, size and content hash.
fn snapshot(site: &Site) -> Result<Snapshot> {
    let out = site.sh(&format!(
        "cd {ROOT}/shared && find . \\( -path ./uv-cache -o -path ./venvs -o -path ./assets -o -path ./db \\) -prune -o -printf '%p %m %u %g %s %y\\n' | sort && \
         find . \\( -path ./uv-cache -o -path ./venvs -o -path ./assets -o -path ./db \\) -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum && \
         echo lines=$(wc -l < {ROOT}/deploy.log) && echo current=$(readlink {ROOT}/current || true)"
    ))?;
    let log_lines = out
        .lines()
        .find_map(|l| l.strip_prefix("lines="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let current = out
        .lines()
        .find_map(|l| l.strip_prefix("current="))
        .map(|c| c.trim().trim_start_matches("releases/").to_string())
        .unwrap_or_default();
    let shared = out
        .lines()
        .filter(|l| !l.starts_with("lines=") && !l.starts_with("current="))
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        shared.contains("./backend/.env 600 innercontext"),
        "{shared}"
    );
    Ok(Snapshot {
        shared,
        log_lines,
        current,
    })
}

/// deploy.log lines after the first `from` lines: (release, result) each.
fn new_log_lines(site: &Site, from: usize) -> Result<Vec<(String, String, String)>> {
    let text = site.sh(&format!("tail -n +{} {ROOT}/deploy.log", from + 1))?;
    Ok(text
        .lines()
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("")
                    .to_string()
            };
            (field("release="), field("result="), l.to_string())
        })
        .collect())
}

/// What a cell expects of the faulted deploy.
struct Expect {
    /// `result=` of its deploy.log line.
    result: &'static str,
    /// Whether a refused line for a second deploy comes too (Concurrent).
    refused_too: bool,
}

/// The invariants, given the snapshot from before the cell.
fn invariants(
    site: &Site,
    scratch: &Scratch,
    before: &Snapshot,
    expect: &Expect,
) -> Result<String> {
    wait_quiet(site, Duration::from_secs(90))?;
    let lines = new_log_lines(site, before.log_lines)?;
    let ours: Vec<&(String, String, String)> =
        lines.iter().filter(|(_, r, _)| r != "refused").collect();
    ensure!(
        ours.len() == 1,
        "expected exactly one deploy.log line for the faulted deploy, got:\n{lines:#?}"
    );
    let (release, result, line) = ours[0];
    ensure!(
        result == expect.result,
        "deploy.log says result={result}, expected {}: {line}",
        expect.result
    );
    let refused = lines.iter().filter(|(_, r, _)| r == "refused").count();
    ensure!(
        refused == usize::from(expect.refused_too),
        "refused lines: {refused}, expected {}:\n{lines:#?}",
        usize::from(expect.refused_too)
    );
    let state = site.state(release)?;
    let want_state = if result == "success" {
        "succeeded"
    } else {
        "failed"
    };
    ensure!(
        state == want_state,
        "release {release} is {state}, deploy.log says {result}"
    );
    let cur = site.current()?;
    ensure!(
        site.state(&cur)? == "succeeded",
        "current ({cur}) is {}",
        site.state(&cur)?
    );
    if result == "success" {
        ensure!(
            cur == *release,
            "the deploy succeeded but current is {cur}, not {release}"
        );
    } else {
        ensure!(
            cur == before.current,
            "the deploy ended {result} but current is {cur}, not {} from before the fault",
            before.current
        );
    }
    // Nothing the dead or stopped job left half-done: no release still preparing, and none of
    // the job's own children (uv, the deploy tool's migrations) left outside the app's units.
    let preparing = site.sh(&format!(
        "grep -lx preparing {ROOT}/releases/*/.state 2>/dev/null || true"
    ))?;
    ensure!(
        preparing.trim().is_empty(),
        "releases left preparing: {preparing}"
    );
    let stray = site.sh(
        "ps -u innercontext -o pid=,cgroup=,args= 2>/dev/null | grep -v 'system.slice/innercontext' | grep -E '[/ ]uv |deploytool|alembic' | cut -c1-200 || true",
    )?;
    ensure!(
        stray.trim().is_empty(),
        "the job's children outlived it:\n{stray}"
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
    // And the next deploy goes through.
    scratch.commit("after a fault")?;
    site.xtask(&scratch.dir, &["deploy", "all", "--skip-local-checks"])?
        .ok()
        .context("the deploy after the fault failed")?;
    Ok(release.clone())
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

/// The pid of the deployer's ssh master connection, from `ssh -O check` on its control socket.
fn master_pid(deployer: u32) -> Result<u32> {
    let prefix = format!("ic-ssh-{deployer}-");
    let dir = std::fs::read_dir("/tmp")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| format!("no control directory /tmp/{prefix}*"))?;
    let socket = dir.join("master");
    let out = Command::new("ssh")
        .args(["-O", "check", "-o"])
        .arg(format!("ControlPath={}", socket.display()))
        .arg("unused")
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    xtask::ssh::master_pid(&text).with_context(|| format!("ssh -O check said: {text}"))
}

/// Change the scratch checkout so the deploy spends time at `step`, and commit.
fn prepare_change(s: &Scratch, step: Step, n: usize) -> Result<()> {
    // Something new to ship. At the lock, a frontend change: the deployer builds it after the
    // seed, which is the window the cell strikes in (with nothing to build, the upload follows
    // the seed at once). Elsewhere, a line in the backend outside the linted code (the sync
    // cells run the local checks): a build there costs about 6 CPU seconds a cell for nothing.
    let (file, line) = if step == Step::Lock {
        ("frontend/src/app.css", format!("/* fault {n} */"))
    } else {
        ("backend/README.md", format!("<!-- fault {n} -->"))
    };
    let text = s.read(file)?;
    s.write(file, &format!("{text}\n{line}\n"))?;
    let _ = fs_err::remove_file(s.dir.join("backend/big.bin"));
    match step {
        Step::Upload => {
            // Incompressible bytes, so the upload is still running when the fault strikes.
            let mut big = vec![0u8; 160 * 1024 * 1024];
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
            for chunk in big.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            fs_err::write(s.dir.join("backend/big.bin"), &big)?;
        }
        Step::Sync => {
            // A new virtualenv key: uv sync runs in prepare.
            let py = s.read("backend/pyproject.toml")?;
            s.write("backend/pyproject.toml", &format!("{py}\n# fault {n}\n"))?;
        }
        Step::Migrate => {
            // A migration that takes a while, chained to the current head.
            let versions = s.dir.join("backend/alembic/versions");
            let mut head = "0002_price_history".to_string();
            for e in fs_err::read_dir(&versions)? {
                let name = e?.file_name().to_string_lossy().to_string();
                if let Some(rev) = name
                    .strip_suffix(".py")
                    .filter(|r| r.ends_with("_slow_fault"))
                {
                    if rev > head.as_str() {
                        head = rev.to_string();
                    }
                }
            }
            let rev = format!("09{n:06}_slow_fault");
            s.write(
                &format!("backend/alembic/versions/{rev}.py"),
                &format!("\"\"\"A slow migration (fault matrix).\"\"\"\n\nfrom alembic import op\n\nrevision = \"{rev}\"\ndown_revision = \"{head}\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.execute(\"SELECT pg_sleep(4)\")\n\n\ndef downgrade() -> None:\n    pass\n"),
            )?;
        }
        Step::Lock | Step::Activate | Step::Record => {}
    }
    s.commit(&format!("fault cell {n} at {step:?}"))
}

/// Wait until the deploy is at `step`, as seen from its output or the server (a held job: its
/// pause marker).
fn wait_for_step(site: &Site, bg: &mut Background, step: Step) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let server = |probe: &str| -> Result<bool> {
        Ok(site.sh(&format!("{probe} && echo yes || echo no"))?.trim() == "yes")
    };
    loop {
        let out = bg.output();
        let reached = match step.pause_at() {
            Some(p) => server(&format!(
                "test \"$(cat {ROOT}/.deploy.lock/paused 2>/dev/null)\" = {p}"
            ))?,
            None => false,
        } || match step {
            // The lock is held and its job has started the seed: the lock's directory alone
            // is there a moment before (a full run struck 5 ms before the seed started).
            Step::Lock => {
                !out.contains("==> upload")
                    && server(&format!(
                        "t=$(sed -n 's/^token=//p' {ROOT}/.deploy.lock/info 2>/dev/null) && [ -n \"$t\" ] && \
                         awk -F'\t' '$2 == \"step\" && $3 == \"seed\" && $4 == \"start\" {{ f = 1 }} END {{ exit !f }}' {ROOT}/jobs/\"$t\"/events"
                    ))?
            }
            Step::Upload => out.contains("==> upload"),
            // Held by the pause point (above).
            Step::Sync | Step::Activate | Step::Record => false,
            Step::Migrate => server(
                "pgrep -u innercontext -f '^[^ ]*python[0-9.]* -m innercontext[.]deploytool migrate' >/dev/null",
            )?,
        };
        if reached {
            return Ok(());
        }
        if let Some(status) = bg.child.try_wait()? {
            bail!(
                "the deploy ended ({status}) before reaching {step:?}:\n{}",
                bg.output()
            );
        }
        if Instant::now() > deadline {
            bail!("the deploy did not reach {step:?}:\n{}", bg.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One cell of the matrix.
pub fn fault_at(ctx: &mut Ctx, fault: Fault, step: Step) -> Result<()> {
    let site = ctx.site()?;
    let app = site.app.name.clone();
    let s = scratch(ctx)?;
    let before = snapshot(&site)?;
    let n = before.log_lines;
    prepare_change(s, step, n)?;
    if fault == Fault::Drop {
        // The deploy's connection goes through the latency proxy, so it can be closed under it.
        xtask::testhost::delay(&xshell::Shell::new()?, &app, 1)?;
    }
    let log = s.sidecar("fault.log");
    // At `uv sync` the local checks still run (so the deployer has not said `checked` yet): the
    // server must stop before the migration when the deployer disappears there. A concurrent
    // deploy leaves the deployer alone (the job is held at the step by its pause point all the
    // same), and the checks would run to their end for nothing: minutes on a loaded machine.
    let args: &[&str] = if step == Step::Sync && fault != Fault::Concurrent {
        &["deploy", "all", "--recheck"]
    } else {
        &["deploy", "all", "--skip-local-checks"]
    };
    let mut cmd = site.command(&s.dir, args);
    if let Some(p) = step.pause_at() {
        cmd.env("INNERCONTEXT_TEST_PAUSE_AT", p);
    }
    // Its own process group, like a shell job in a terminal: the group signals reach it.
    cmd.process_group(0);
    let mut bg = Background::start(cmd, &log)?;
    let pid = bg.child.id();
    let result = (|| -> Result<(std::process::ExitStatus, String, u64, Option<crate::support::Run>)> {
        wait_for_step(&site, &mut bg, step)?;
        let struck_ms: u64 = site.sh("date +%s%3N")?.trim().parse()?;
        let mut second = None;
        let kill = |args: &[&str]| -> Result<()> {
            crate::support::run_ok(Command::new("kill").args(args), "kill")?;
            Ok(())
        };
        match fault {
            Fault::Kill => kill(&["-KILL", &pid.to_string()])?,
            Fault::Term => kill(&["-TERM", &pid.to_string()])?,
            Fault::Interrupt => kill(&["-INT", "--", &format!("-{pid}")])?,
            Fault::Hangup => kill(&["-HUP", "--", &format!("-{pid}")])?,
            Fault::Cut => kill(&["-KILL", &master_pid(pid)?.to_string()])?,
            Fault::Drop => {
                let proxy = fs_err::read_to_string(format!(
                    "{}/machines/{app}/proxy.pid",
                    xtask::testhost::STATE_DIR
                ))?;
                kill(&["-KILL", proxy.trim()])?;
                xtask::testhost::delay(&xshell::Shell::new()?, &app, 0)?;
            }
            Fault::Concurrent => {
                second = Some(site.xtask(
                    &s.dir,
                    &["deploy", "all", "--skip-local-checks", "--redeploy"],
                )?);
            }
        }
        if step.pause_at().is_some() {
            // Let the held job go (as the app user; a job that stopped meanwhile has no marker).
            site.sh(&format!(
                "cd {ROOT}/.deploy.lock 2>/dev/null && test -e paused && runuser -u innercontext -- mv -T paused resumed || true"
            ))?;
        }
        let (status, out) = bg.wait(Duration::from_secs(240))?;
        Ok((status, out, struck_ms, second))
    })();
    if fault == Fault::Drop {
        let _ = xtask::testhost::delay(&xshell::Shell::new()?, &app, 0);
    }
    let (status, out, struck_ms, second) = result?;
    // Nothing the deployer started outlives it here, even after a SIGKILL that ran no cleanup
    // (its children get SIGTERM from the kernel when it dies).
    let left = crate::support::local_leftovers(&s.dir, Duration::from_secs(10))?;
    ensure!(
        left.is_empty(),
        "the deployer's processes outlived it on this machine:\n{}\ndeployer output:\n{out}",
        left.join("\n")
    );
    let _ = fs_err::remove_file(s.dir.join("backend/big.bin"));
    if step == Step::Migrate {
        // Once it is over, the slow migration goes again (the database back at the repository's
        // head), so other checkouts deploying to this database stay compatible.
        wait_quiet(&site, Duration::from_secs(90))?;
        forget_slow_migrations(&site, s)?;
    }

    let expected = if step.finishes() || fault == Fault::Concurrent {
        "success"
    } else {
        "interrupted"
    };
    if let Some(second) = &second {
        ensure!(
            !second.status.success() && second.all().contains("another deploy holds"),
            "the concurrent deploy did not fail with the lock-held message:\n{}",
            second.all()
        );
    }
    let release = invariants(
        &site,
        s,
        &before,
        &Expect {
            result: expected,
            refused_too: fault == Fault::Concurrent,
        },
    )
    .with_context(|| format!("deployer output:\n{out}"))?;

    // The fault struck where it says: its step had started on the server, and a deploy that
    // had to stop never switched.
    let token = site
        .sh(&format!(
            "grep -l 'started\tdeploy\t{release}' {ROOT}/jobs/*/events | head -n 1"
        ))?
        .trim()
        .rsplit('/')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let events = site.sh(&format!("cat {ROOT}/jobs/{token}/events"))?;
    let started_at = |name: &str| -> Option<u64> {
        events.lines().find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.get(1) == Some(&"step") && f.get(2) == Some(&name) && f.get(3) == Some(&"start"))
                .then(|| f[0].parse().ok())
                .flatten()
        })
    };
    if let Some(held) = step.pause_at() {
        // Held right before `held`: it had not started when the fault struck, and what comes
        // before it had (after the switch, for the activation).
        ensure!(
            started_at(held).is_none_or(|t| t > struck_ms),
            "step {held} started before the fault, though the job was held before it:\n{events}"
        );
        let before_it = if step == Step::Sync { "seed" } else { "switch" };
        let at = started_at(before_it)
            .with_context(|| format!("step {before_it} never started:\n{events}"))?;
        ensure!(
            at <= struck_ms,
            "the fault struck at {struck_ms}, before step {before_it} started ({at})"
        );
    } else {
        let at = started_at(step.job_step())
            .with_context(|| format!("step {} never started:\n{events}", step.job_step()))?;
        ensure!(
            at <= struck_ms,
            "the fault struck at {struck_ms}, before step {} started ({at})",
            step.job_step()
        );
    }
    if !step.finishes() && fault != Fault::Concurrent {
        ensure!(
            started_at("switch").is_none() && started_at("migrate").is_none(),
            "the deploy went on past the fault:\n{events}"
        );
        if step == Step::Lock || step == Step::Upload {
            ensure!(
                started_at("prepare").is_none(),
                "prepare started although the fault struck at {step:?}:\n{events}"
            );
        }
    }
    // The deployer's last word agrees with the server (a killed deployer says nothing).
    if fault != Fault::Kill {
        let last = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        ensure!(
            last.contains(&format!(": {expected}")),
            "the deployer's last line does not say {expected}: {last}\n{out}"
        );
        let code = status.code();
        let want_ok = expected == "success";
        ensure!(
            status.success() == want_ok,
            "exit status {status:?} for a {expected} deploy"
        );
        if !want_ok && matches!(fault, Fault::Interrupt | Fault::Hangup | Fault::Term) {
            let sig = match fault {
                Fault::Interrupt => 2,
                Fault::Hangup => 1,
                _ => 15,
            };
            ensure!(
                code == Some(128 + sig),
                "exit status {code:?}, expected {}",
                128 + sig
            );
        }
    }
    Ok(())
}

/// Remove the fault matrix's slow migrations from the checkout and the database's record (they
/// change no schema).
fn forget_slow_migrations(site: &Site, s: &Scratch) -> Result<()> {
    let versions = s.dir.join("backend/alembic/versions");
    for e in fs_err::read_dir(&versions)? {
        let p = e?.path();
        if p.to_string_lossy().ends_with("_slow_fault.py") {
            fs_err::remove_file(p)?;
        }
    }
    site.db.ssh(&[
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-q",
        "innercontext",
        "-c",
        "UPDATE alembic_version SET version_num = '0002_price_history' WHERE version_num LIKE '%_slow_fault'",
    ])?;
    Ok(())
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
    kill_at_sync => Kill @ Sync;
    kill_at_migrate => Kill @ Migrate;
    kill_at_activate => Kill @ Activate;
    term_at_lock => Term @ Lock;
    term_at_sync => Term @ Sync;
    term_at_activate => Term @ Activate;
    interrupt_at_lock => Interrupt @ Lock;
    interrupt_at_upload => Interrupt @ Upload;
    interrupt_at_sync => Interrupt @ Sync;
    interrupt_at_migrate => Interrupt @ Migrate;
    interrupt_at_activate => Interrupt @ Activate;
    interrupt_at_record => Interrupt @ Record;
    hangup_at_lock => Hangup @ Lock;
    hangup_at_upload => Hangup @ Upload;
    hangup_at_sync => Hangup @ Sync;
    hangup_at_migrate => Hangup @ Migrate;
    hangup_at_activate => Hangup @ Activate;
    cut_at_lock => Cut @ Lock;
    cut_at_upload => Cut @ Upload;
    cut_at_sync => Cut @ Sync;
    cut_at_activate => Cut @ Activate;
    drop_at_upload => Drop @ Upload;
    drop_at_activate => Drop @ Activate;
    concurrent_at_lock => Concurrent @ Lock;
    concurrent_at_upload => Concurrent @ Upload;
    concurrent_at_sync => Concurrent @ Sync;
    concurrent_at_activate => Concurrent @ Activate;
}

/// A release broken in `path` by `edit`, deployed: it must fail after the switch, be rolled
/// back, and the invariants hold.
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
    invariants(
        &site,
        s,
        &before,
        &Expect {
            result: "rolled-back",
            refused_too: false,
        },
    )
    .map(drop)
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

/// The disk: an upload too big for the free space is refused before anything changes; a disk
/// that fills up during the upload fails the deploy cleanly. A small tmpfs over releases/
/// (holding copies of the existing releases, so `current` stays valid).
pub fn disk_full_during_upload(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = snapshot(&site)?;
    let used_kb: u64 = site
        .sh(&format!("du -sk {ROOT}/releases | cut -f1"))?
        .trim()
        .parse()?;
    // Room for the preflight's estimate of a 200 MB upload (+150 MB), and some to fill later.
    let size_mb = used_kb / 1024 + 400;
    site.sh(&format!(
        "set -e; d=$(mktemp -d); cp -a {ROOT}/releases/. $d/; mount -t tmpfs -o size={size_mb}m,mode=755 tmpfs {ROOT}/releases; cp -a $d/. {ROOT}/releases/; rm -rf $d; chown innercontext: {ROOT}/releases"
    ))?;
    let result = (|| -> Result<()> {
        // Too big for what is free: refused up front, nothing changed.
        let huge = vec![5u8; 600 * 1024 * 1024];
        fs_err::write(s.dir.join("backend/too-big.bin"), huge)?;
        s.commit("too big")?;
        let releases = site.releases()?;
        let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
        s.undo()?;
        let run = run.failed()?;
        ensure!(
            run.all().contains("MB free under") && run.all().contains("needs about"),
            "expected a free-space refusal:\n{}",
            run.all()
        );
        ensure!(
            site.releases()? == releases,
            "a refused deploy made a release"
        );
        ensure!(!site.locked()?);
        ensure!(
            site.last_log()?.contains("result=refused"),
            "{}",
            site.last_log()?
        );
        // Fits when it starts, but the disk fills up during the upload.
        let big = vec![7u8; 200 * 1024 * 1024];
        fs_err::write(s.dir.join("backend/big.bin"), big)?;
        s.commit("big")?;
        let log = s.sidecar("diskfull.log");
        let mut bg = Background::start(
            site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]),
            &log,
        )?;
        bg.wait_for("==> upload", Duration::from_secs(120))?;
        let current = site.current()?;
        // dd ends when the disk is full, and says so; anything else is not this scenario.
        let dd = site.sh(&format!(
            "dd if=/dev/zero of={ROOT}/releases/.filler bs=1M 2>&1 || true"
        ))?;
        ensure!(
            dd.contains("No space left on device"),
            "the filler did not fill the disk: {dd}"
        );
        let (status, out) = bg.wait(Duration::from_secs(240))?;
        s.undo()?;
        site.sh(&format!("rm -f {ROOT}/releases/.filler"))?;
        ensure!(
            !status.success(),
            "the deploy succeeded on a full disk:\n{out}"
        );
        ensure!(
            out.contains("No space left on device"),
            "expected an upload failure:\n{out}"
        );
        wait_quiet(&site, Duration::from_secs(60))?;
        ensure!(
            site.last_log()?.contains("result=failed"),
            "{}",
            site.last_log()?
        );
        // Inspected before the disk goes away: current untouched, and the release the deploy
        // made is recorded failed (or gone), never left preparing or marked succeeded.
        ensure!(
            site.current()? == current,
            "current moved on a failed upload"
        );
        for r in site.releases()?.iter().filter(|r| !releases.contains(r)) {
            let st = site.state(r).unwrap_or_default();
            ensure!(
                st == "failed",
                "the new release {r} is '{st}' after a failed upload"
            );
        }
        site.assert_serving()
    })();
    site.sh(&format!(
        "rm -f {ROOT}/releases/.filler; umount {ROOT}/releases"
    ))?;
    result?;
    // Two lines (refused, failed), and what always holds.
    let lines = new_log_lines(&site, before.log_lines)?;
    ensure!(
        lines.iter().map(|l| l.1.as_str()).collect::<Vec<_>>() == ["refused", "failed"],
        "{lines:#?}"
    );
    site.assert_serving()?;
    ensure!(snapshot(&site)?.shared == before.shared, "shared/ changed");
    Ok(())
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
    // A failed release to try rolling back to: the group's earlier scenarios leave one; run
    // alone, the scenario makes one by hand (a copy of current, marked failed).
    let has_failed = |site: &Site| -> Result<bool> {
        Ok(site
            .releases()?
            .iter()
            .any(|r| site.state(r).is_ok_and(|st| st == "failed")))
    };
    if !has_failed(&site)? {
        let cur = site.current()?;
        site.sh(&format!(
            "cp -a {ROOT}/releases/{cur} {ROOT}/releases/20000101T000000Z && echo failed > {ROOT}/releases/20000101T000000Z/.state"
        ))?;
    }
    let before = state(&site)?;
    let pwned = format!("/tmp/pwned-e2e-{}", std::process::id());
    let pwned = pwned.as_str();
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
            vec![("DEPLOY_ROOT", format!("/opt/x\ntouch {pwned}"))],
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
    ];
    let failed = failed.context("no failed release on the site, although one was made")?;
    cases.push((
        "rollback to a failed release".into(),
        vec!["deploy".into(), "rollback".into(), failed],
        vec![],
        "not succeeded",
    ));
    cases.push((
        "rollback -- -rf".into(),
        vec![
            "deploy".into(),
            "rollback".into(),
            "--".into(),
            "-rf".into(),
        ],
        vec![],
        "not a release name",
    ));
    cases.push((
        "unlock flag typo".into(),
        vec!["deploy".into(), "unlock".into(), "--forse".into()],
        vec![],
        "unknown flag '--forse' for 'deploy unlock'",
    ));
    let mut problems = Vec::new();
    let mut asserted = 0;
    // Without a lock, `unlock` says so and succeeds: that is not a change either.
    let unlock = site.xtask(&s.dir, &["deploy", "unlock"])?;
    asserted += 1;
    if !unlock.status.success() || !unlock.stdout.contains("no deploy lock") {
        problems.push(format!("unlock without a lock: {}", unlock.all()));
    }
    for (name, args, env, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = site.command(&s.dir, &args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        asserted += 1;
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
    asserted += 1;
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
            "{} of {asserted} bad inputs were not refused cleanly:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    ensure!(asserted >= 20, "only {asserted} cases were asserted");
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
                || cmd.starts_with("/usr/bin/systemctl reset-failed innercontext")
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
        "cat {ROOT}/deploy.log {ROOT}/jobs/*/* 2>/dev/null; journalctl --after-cursor='{cursor}' -o cat --no-pager"
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
