//! The deployer's own troubles, and that its words stay the server's: a clock an hour off
//! (libfaketime, monotonic clock included), a Ctrl-C while it connects, a deployer stopped
//! (SIGSTOP) long enough for the job to give up on it, and a connection that comes back only
//! after the job has ended. In each, what the deployer prints last is what the server's files
//! say, and it never hangs.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::wait_quiet;
use crate::support::{run_ok, xtask_bin, Background, Scratch, Site, ROOT};
use crate::Ctx;

/// This group's checkout; the site has a current release before the first scenario.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.client_scratch.is_none() {
        let s = crate::support::scratch("client")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.client_scratch = Some(s);
    }
    Ok(ctx.client_scratch.as_ref().unwrap())
}

/// The deploy.log line count.
fn log_lines(site: &Site) -> Result<usize> {
    Ok(site
        .sh(&format!("wc -l < {ROOT}/deploy.log"))?
        .trim()
        .parse()?)
}

/// The deployer's last non-empty line.
fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// A signal to a whole process group, the way a terminal sends it.
fn group_signal(sig: &str, pgid: u32) -> Result<()> {
    run_ok(
        Command::new("kill").args([sig, "--", &format!("-{pgid}")]),
        "kill",
    )?;
    Ok(())
}

/// Children of `pid` named `comm`: (running, ended but not reaped).
fn children(pid: u32, comm: &str) -> Result<(usize, usize)> {
    let (mut running, mut ended) = (0, 0);
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next());
        if &stat[open + 1..close] != comm || ppid != Some(pid.to_string().as_str()) {
            continue;
        }
        if state == Some("Z") {
            ended += 1;
        } else {
            running += 1;
        }
    }
    Ok((running, ended))
}

/// A backend-only change (a comment), committed.
fn touch_backend(s: &Scratch, n: &str) -> Result<()> {
    let path = "backend/innercontext/__init__.py";
    let text = s.read(path)?;
    s.write(path, &format!("{text}\n# client group: {n}\n"))?;
    s.commit(&format!("client group: {n}"))
}

/// With the deployer's clock an hour ahead, monotonic clock included (libfaketime), a deploy
/// runs to its end in the usual time. std's waits with a timeout turned a 50 ms wait into an
/// absolute futex time on the kernel's real clock, an hour (or more) away: the deployer hung
/// after `seed` and did not hear Ctrl-C.
pub fn a_clock_an_hour_ahead_never_stalls_the_deployer(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    // The premise: faketime shifts the monotonic clock of what it runs.
    let monotonic = |faked: bool| -> Result<f64> {
        let mut cmd = Command::new(if faked { "faketime" } else { "env" });
        if faked {
            cmd.args(["-f", "+1h"]);
        }
        cmd.args(["python3", "-c", "import time; print(time.monotonic())"]);
        Ok(run_ok(&mut cmd, "python3 under faketime")?.trim().parse()?)
    };
    // (By far more than the hour asked: measured, CLOCK_MONOTONIC then reads the faked wall
    // clock, about 1.8e9 s.)
    let shift = monotonic(true)? - monotonic(false)?;
    ensure!(
        shift >= 3500.0,
        "faketime -f +1h shifted the monotonic clock by {shift:.0}s, less than an hour: the cell would prove nothing"
    );
    touch_backend(s, "a clock an hour ahead")?;
    let before = log_lines(&site)?;
    let bin = xtask_bin();
    let mut cmd = site.env.command(
        "faketime",
        &s.dir,
        &["-f", "+1h", bin, "deploy", "backend", "--skip-local-checks"],
    );
    cmd.env("DEPLOY_HEALTH_TIMEOUT", "40").process_group(0);
    let bg = Background::start(cmd, &s.sidecar("faketime.log"))?;
    let pgid = bg.child.id();
    let started = Instant::now();
    let ended = bg.wait(Duration::from_secs(120));
    if ended.is_err() {
        // Whatever it left running (ssh, rsync) goes with it; the job stops once it misses us.
        let _ = group_signal("-KILL", pgid);
        wait_quiet(&site, Duration::from_secs(90))?;
    }
    let (status, out) = ended.context("the deployer under a clock an hour ahead")?;
    println!("the deployer ({status}):\n{out}");
    ensure!(
        status.success() && last_line(&out).contains(": success"),
        "the deploy under a clock an hour ahead failed ({status}):\n{out}"
    );
    let line = site.last_log()?;
    ensure!(
        log_lines(&site)? == before + 1 && line.contains("result=success"),
        "deploy.log: {line}"
    );
    let release = out
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|w| xtask::deploy::release::is_name(w))
        .context("no release named")?
        .to_string();
    ensure!(
        site.current()? == release,
        "current is not {release}:\n{out}"
    );
    println!(
        "deploy under faketime +1h: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    site.assert_serving()
}

/// A Ctrl-C (to the process group) while `deploy rollback` connects, before any lock: it stops
/// there with 130, and nothing ran on the server (no deploy.log line, current unchanged, no
/// lock). It used to finish connecting and run the whole rollback.
pub fn ctrl_c_while_connecting_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    // A rollback needs an earlier succeeded release to go to.
    let succeeded = site
        .releases()?
        .into_iter()
        .filter(|r| site.state(r).is_ok_and(|st| st == "succeeded"))
        .count();
    if succeeded < 2 {
        touch_backend(s, "a release to roll back from")?;
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()?;
    }
    let current = site.current()?;
    let before = log_lines(&site)?;
    let app = site.app.name.clone();
    // Every chunk of the handshake waits 1.5 s each way: connecting takes several seconds.
    xtask::testhost::delay(&xshell::Shell::new()?, &app, 1500)?;
    let result = (|| -> Result<(std::process::ExitStatus, String, String, Duration)> {
        let mut cmd = site.command(&s.dir, &["deploy", "rollback"]);
        cmd.process_group(0);
        let mut bg = Background::start(cmd, &s.sidecar("connect.log"))?;
        let pgid = bg.child.id();
        bg.wait_for("==> connect to", Duration::from_secs(30))?;
        let at_signal = bg.output();
        let signalled = Instant::now();
        group_signal("-INT", pgid)?;
        let (status, out) = bg.wait(Duration::from_secs(300))?;
        Ok((status, out, at_signal, signalled.elapsed()))
    })();
    xtask::testhost::delay(&xshell::Shell::new()?, &app, 0)?;
    let (status, out, at_signal, took) = result?;
    println!("the deployer ({status}):\n{out}");
    ensure!(
        !at_signal.contains("read the server's state"),
        "the signal came after connect:\n{at_signal}"
    );
    wait_quiet(&site, Duration::from_secs(90))?;
    ensure!(
        log_lines(&site)? == before,
        "deploy.log changed after a Ctrl-C during connect: {}\n{out}",
        site.last_log()?
    );
    ensure!(
        site.current()? == current,
        "current moved from {current} to {}:\n{out}",
        site.current()?
    );
    ensure!(
        !site.locked()?,
        "a lock is left after a Ctrl-C during connect"
    );
    ensure!(
        status.code() == Some(130),
        "exit status {status} after a Ctrl-C during connect, expected 130:\n{out}"
    );
    ensure!(
        last_line(&out).contains("interrupted by Ctrl-C"),
        "the last line does not say it was interrupted:\n{out}"
    );
    ensure!(
        took < Duration::from_secs(20),
        "it took {took:?} to stop after the Ctrl-C:\n{out}"
    );
    Ok(())
}

/// A deployer stopped (SIGSTOP, as a suspended laptop) during the upload, until the job has
/// given up on it (`interrupted`, lock released) and the upload has ended: resumed (SIGCONT),
/// it prints what came meanwhile and ends with the job's result and current as the server has
/// them. It used to tell the job `uploaded` over a connection long gone and end with
/// `error: Broken pipe (os error 32)`.
pub fn a_deployer_stopped_mid_upload_reads_what_the_job_did(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    // Incompressible bytes, so the upload is still going when the deployer stops.
    let mut big = vec![0u8; 160 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(s.dir.join("backend/big.bin"), &big)?;
    drop(big);
    s.commit("client group: a big upload")?;
    let previous = site.current()?;
    let before = log_lines(&site)?;
    let mut cmd = site.command(&s.dir, &["deploy", "all", "--skip-local-checks"]);
    cmd.process_group(0);
    let mut bg = Background::start(cmd, &s.sidecar("stopped.log"))?;
    let pid = bg.child.id().to_string();
    let result = (|| -> Result<(std::process::ExitStatus, String)> {
        bg.wait_for("==> upload", Duration::from_secs(300))?;
        // The upload under way: its rsync runs.
        let deadline = Instant::now() + Duration::from_secs(30);
        while children(bg.child.id(), "rsync")? != (1, 0) {
            ensure!(
                Instant::now() < deadline,
                "no rsync of the deployer's:\n{}",
                bg.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        run_ok(Command::new("kill").args(["-STOP", &pid]), "kill -STOP")?;
        // Stopped as long as a laptop's lid is closed: until the job has given up on the silent
        // deployer (its line in deploy.log), it and the server's end of the connection are gone
        // (no deploy.sh runs, the lock is free), and the upload, which went on, has ended (its
        // rsync a zombie: a stopped parent cannot reap it).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (running, ended) = children(bg.child.id(), "rsync")?;
            let server = site.sh(&format!(
                "test -d {ROOT}/.deploy.lock && echo locked; pgrep -u innercontext -f '[d]eploy[.]sh' >/dev/null && echo busy; true"
            ))?;
            if log_lines(&site)? > before && server.trim().is_empty() && running == 0 && ended == 1
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "after 180s of the deployer's stop: rsync {running} running, {ended} ended; the server ({}):\n{}",
                    server.trim(),
                    site.sh(&format!("cat {ROOT}/.deploy.lock/info {ROOT}/.deploy.lock/phase 2>&1; tail -n 3 {ROOT}/deploy.log"))?
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        run_ok(Command::new("kill").args(["-CONT", &pid]), "kill -CONT")?;
        bg.wait(Duration::from_secs(120))
    })();
    // Never leave it stopped.
    let _ = Command::new("kill")
        .args(["-CONT", &pid])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = fs_err::remove_file(s.dir.join("backend/big.bin"));
    s.commit("client group: without the big upload")?;
    let (status, out) = result?;
    println!("the deployer ({status}):\n{out}");
    wait_quiet(&site, Duration::from_secs(90))?;
    let line = site.last_log()?;
    ensure!(
        log_lines(&site)? == before + 1 && line.contains("result=interrupted"),
        "deploy.log does not say interrupted: {line}"
    );
    ensure!(
        site.current()? == previous,
        "current is not {previous}:\n{out}"
    );
    ensure!(
        !out.contains("Broken pipe"),
        "a bare Broken pipe in the output:\n{out}"
    );
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    ensure!(
        out.contains("==> this deployer was stopped for"),
        "the deployer did not say it was stopped:\n{out}"
    );
    let last = last_line(&out);
    ensure!(
        last.contains(": interrupted")
            && last.contains("fell silent")
            && last.contains(&format!("current is {previous}")),
        "the last line is not the job's result and current ({previous}): {last}\n{out}"
    );
    site.assert_serving()
}

/// The connection closed under the deployer right after the switch, the path kept closed
/// until the job has recorded its result by itself (a release whose health check fails:
/// `rolled-back`), then open again: the deployer reconnects and its last line is the job's
/// result and current as the server has them. It used to give up after 20 s with a forecast
/// ("the server completes the deploy (or restores the previous release) by itself").
pub fn a_reconnect_reads_the_jobs_result(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let path = "backend/innercontext/main.py";
    let text = s.read(path)?;
    s.write(
        path,
        &format!(
            "{text}\n\nfrom starlette.responses import JSONResponse  # noqa: E402\n\n\n@app.middleware(\"http\")\nasync def _e2e_unhealthy(request, call_next):\n    if request.url.path == \"/health-check\":\n        return JSONResponse({{\"status\": \"unavailable\", \"reason\": \"e2e\"}}, status_code=503)\n    return await call_next(request)\n"
        ),
    )?;
    s.commit("client group: health answers 503")?;
    let previous = site.current()?;
    let before = log_lines(&site)?;
    let app = site.app.name.clone();
    let sh = xshell::Shell::new()?;
    // The deploy's connection goes through the latency proxy, so it can be closed under it.
    xtask::testhost::delay(&sh, &app, 1)?;
    let result = (|| -> Result<(std::process::ExitStatus, String)> {
        let mut cmd = site.command(&s.dir, &["deploy", "all", "--skip-local-checks"]);
        cmd.env("DEPLOY_HEALTH_TIMEOUT", "25").process_group(0);
        let mut bg = Background::start(cmd, &s.sidecar("reconnect.log"))?;
        bg.wait_for("==> switch current", Duration::from_secs(600))?;
        // The path closes (the proxy killed; ssh_config still points at it): connections
        // already made drop, new ones are refused.
        let proxy = fs_err::read_to_string(format!(
            "{}/machines/{app}/proxy.pid",
            xtask::testhost::STATE_DIR
        ))?;
        run_ok(Command::new("kill").args(["-KILL", proxy.trim()]), "kill")?;
        let dropped = Instant::now();
        // Read on the machine without ssh until the job has recorded its result.
        let argv: Vec<String> = [
            "bash",
            "-c",
            &format!("wc -l < {ROOT}/deploy.log; test -d {ROOT}/.deploy.lock && echo locked || echo free"),
        ]
        .map(String::from)
        .to_vec();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let state = xtask::testhost::exec(&sh, &app, &argv)?;
            let mut words = state.split_whitespace();
            let lines: usize = words.next().unwrap_or("0").parse().unwrap_or(0);
            if lines > before && words.next() == Some("free") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the job did not record its result within 240s:\n{state}\n{}",
                bg.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "the path was closed for {:.1}s",
            dropped.elapsed().as_secs_f64()
        );
        // The path opens again (straight to sshd).
        xtask::testhost::delay(&sh, &app, 0)?;
        bg.wait(Duration::from_secs(180))
    })();
    let _ = xtask::testhost::delay(&sh, &app, 0);
    s.undo()?;
    let (status, out) = result?;
    println!("the deployer ({status}):\n{out}");
    wait_quiet(&site, Duration::from_secs(90))?;
    let line = site.last_log()?;
    ensure!(
        log_lines(&site)? == before + 1 && line.contains("result=rolled-back"),
        "deploy.log does not say rolled-back: {line}"
    );
    ensure!(site.current()? == previous, "current is not {previous}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    ensure!(
        !out.contains("by itself"),
        "the deployer foretold instead of reading:\n{out}"
    );
    let last = last_line(&out);
    ensure!(
        last.contains(": rolled-back") && last.contains(&format!("current is {previous}")),
        "the last line is not the job's result and current ({previous}): {last}\n{out}"
    );
    site.assert_serving()
}
