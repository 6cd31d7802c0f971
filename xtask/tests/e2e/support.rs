//! Helpers for the deploy scenarios: a scratch copy of the repository to change and deploy,
//! the built xtask binary run with a user's environment, HTTP through nginx, and checks on the
//! server over ssh.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xtask::demo::Environment;
pub use xtask::scratch::{run_ok, Scratch};
use xtask::testhost::Machine;

pub const ROOT: &str = "/opt/innercontext";

/// A scratch checkout of this run (its directory carries the run id).
pub fn scratch(name: &str) -> Result<Scratch> {
    Scratch::new(&format!("{}-{name}", crate::run_id()))
}

pub fn xtask_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xtask")
}

/// The repository this test binary was built from.
pub fn repo() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The app and db machines, provisioned, and the environment a user would deploy with.
#[derive(Clone)]
pub struct Site {
    pub app: Machine,
    pub db: Machine,
    pub env: Environment,
}

impl Site {
    /// Run the xtask binary in `dir` (a checkout) with the site's deploy environment.
    pub fn command(&self, dir: &Utf8Path, args: &[&str]) -> Command {
        let mut cmd = self.env.command(xtask_bin(), dir, args);
        cmd.env("DEPLOY_HEALTH_TIMEOUT", "40");
        cmd
    }

    /// Run and capture; stdout and stderr together for assertions.
    pub fn xtask(&self, dir: &Utf8Path, args: &[&str]) -> Result<Run> {
        Run::capture(self.command(dir, args))
    }

    /// Run as root on the app machine.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.app.ssh(&["bash", "-c", script])
    }

    /// The current release, if there is one.
    pub fn current_opt(&self) -> Result<Option<String>> {
        let link = self.sh(&format!("readlink {ROOT}/current || true"))?;
        let name = link.trim().trim_start_matches("releases/");
        Ok((!name.is_empty()).then(|| name.to_string()))
    }

    pub fn current(&self) -> Result<String> {
        let link = self.sh(&format!("readlink {ROOT}/current"))?;
        Ok(link.trim().trim_start_matches("releases/").to_string())
    }

    pub fn state(&self, release: &str) -> Result<String> {
        Ok(self
            .sh(&format!("cat {ROOT}/releases/{release}/.state"))?
            .trim()
            .to_string())
    }

    pub fn releases(&self) -> Result<Vec<String>> {
        let out = self.sh(&format!("ls -1 {ROOT}/releases"))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    pub fn locked(&self) -> Result<bool> {
        Ok(self
            .sh(&format!(
                "test -d {ROOT}/.deploy.lock && echo yes || echo no"
            ))?
            .trim()
            == "yes")
    }

    pub fn last_log(&self) -> Result<String> {
        Ok(self
            .sh(&format!("tail -n 1 {ROOT}/deploy.log"))?
            .trim()
            .to_string())
    }

    /// GET through nginx on the app machine.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.app.ip, 80, path)
    }

    /// The site answers through nginx: the page and the API's health check.
    pub fn assert_serving(&self) -> Result<()> {
        let (status, body) = self.get("/api/health-check")?;
        ensure!(status == 200, "/api/health-check answered {status}: {body}");
        let (status, body) = self.get("/")?;
        ensure!(status == 200, "/ answered {status}: {body}");
        Ok(())
    }

    /// Accepted ssh logins of the deploy user so far (sshd's journal on the app machine).
    pub fn deploy_logins(&self) -> Result<usize> {
        let out = self.sh("journalctl --sync; journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey for innercontext ' || true")?;
        Ok(out.trim().parse().unwrap_or(0))
    }
}

/// A deploy lock on `machine` held by a live process (as a running job holds it: the flock on
/// its job.lock), with `info` as its info file; [`LiveLock::release`] ends it. A lock nobody
/// holds would be taken over by the next deploy.
pub struct LiveLock {
    machine: Machine,
    pid: u32,
}

impl LiveLock {
    pub fn hold(machine: &Machine, info: &str) -> Result<LiveLock> {
        let lock = format!("{ROOT}/.deploy.lock");
        let out = machine.ssh(&[
            "bash",
            "-c",
            &format!(
                "set -e; install -d -o innercontext -g innercontext {lock}; \
                 printf '{info}' >{lock}/info; chown innercontext: {lock}/info; \
                 p=/tmp/e2e-holder.$$; \
                 runuser -u innercontext -- bash -c \"exec 9>>{lock}/job.lock; flock -x 9; echo \\$\\$ >$p; exec sleep 900\" </dev/null >/dev/null 2>&1 & \
                 for _ in $(seq 200); do [ -s $p ] && break; sleep 0.05; done; cat $p; rm -f $p"
            ),
        ])?;
        let pid = out
            .trim()
            .parse()
            .with_context(|| format!("holding the lock on {}: {out}", machine.name))?;
        Ok(LiveLock {
            machine: machine.clone(),
            pid,
        })
    }

    /// End the holder and remove the lock.
    pub fn release(self) -> Result<()> {
        self.machine.ssh(&[
            "bash",
            "-c",
            &format!(
                "kill {pid} 2>/dev/null; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done; rm -rf {ROOT}/.deploy.lock",
                pid = self.pid
            ),
        ])?;
        Ok(())
    }
}

/// A finished xtask run.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn capture(mut cmd: Command) -> Result<Run> {
        let out: Output = cmd.output().context("running the xtask binary")?;
        Ok(Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn ok(self) -> Result<Run> {
        ensure!(
            self.status.success(),
            "xtask failed ({}):\n{}",
            self.status,
            self.all()
        );
        Ok(self)
    }

    pub fn failed(self) -> Result<Run> {
        ensure!(
            !self.status.success(),
            "xtask should have failed but succeeded:\n{}",
            self.all()
        );
        Ok(self)
    }

    /// The release name the run announced (`deploy of NAME` / `deployed NAME`).
    pub fn release(&self) -> Option<String> {
        self.all().split_whitespace().find_map(|w| {
            let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            xtask::deploy::release::is_name(w).then(|| w.to_string())
        })
    }
}

/// A minimal HTTP/1.1 GET: status and body.
pub fn http_get(host: &str, port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream =
        TcpStream::connect((host, port)).with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nX-Forwarded-Proto: http\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status from {host}:{port}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Requests through nginx in a loop on a thread, counting failures, until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    pub fn start(host: &str) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let host = host.to_string();
        let handle = std::thread::spawn(move || {
            let mut total = 0;
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                for path in ["/api/health-check", "/"] {
                    total += 1;
                    match http_get(&host, 80, path) {
                        Ok((200, _)) => {}
                        Ok((s, body)) => failures.push(format!(
                            "{path}: {s} {}",
                            body.chars().take(80).collect::<String>()
                        )),
                        Err(e) => failures.push(format!("{path}: {e:#}")),
                    }
                }
            }
            (total, failures)
        });
        Load { stop, handle }
    }

    /// Stop and return (requests, failures).
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or((0, vec!["load thread panicked".into()]))
    }
}

/// Start the xtask in the background with stderr going to a file we can watch.
pub struct Background {
    pub child: Child,
    pub log: Utf8PathBuf,
}

impl Background {
    pub fn start(mut cmd: Command, log: &Utf8Path) -> Result<Background> {
        let file = fs_err::File::create(log)?;
        let out = file.try_clone()?;
        let child = cmd
            .stdout(Stdio::from(out.into_parts().0))
            .stderr(Stdio::from(file.into_parts().0))
            .spawn()
            .context("starting the xtask binary")?;
        Ok(Background {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn output(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the output contains `needle` (or the process ends), with a deadline.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "process ended ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.child.id().to_string();
        run_ok(Command::new("kill").args(["-s", sig, &pid]), "kill")?;
        Ok(())
    }

    pub fn wait(mut self, timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, self.output()));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("process did not end within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// wrk running until stopped: started before a command, stopped (SIGINT: it prints its report)
/// after it, so the load covers the command's whole window.
pub struct Wrk {
    child: Child,
    log: Utf8PathBuf,
}

impl Wrk {
    pub fn start(url: &str) -> Result<Wrk> {
        Wrk::start_with(url, &[])
    }

    /// The same with more of wrk's arguments (`-H`, `Connection: close`).
    pub fn start_with(url: &str, more: &[&str]) -> Result<Wrk> {
        let log = Utf8PathBuf::from(format!(
            "/tmp/innercontext-wrk-{}-{}.log",
            crate::run_id(),
            std::process::id()
        ));
        let file = fs_err::File::create(&log)?;
        let err = file.try_clone()?;
        // Line-buffered, so its "Running" line shows as soon as it starts.
        let child = Command::new("stdbuf")
            .args(["-oL", "wrk", "-t1", "-c8", "-d", "600s", "--timeout", "10s"])
            .args(more)
            .arg(url)
            .stdout(Stdio::from(file.into_parts().0))
            .stderr(Stdio::from(err.into_parts().0))
            .spawn()
            .context("starting wrk (apt-get install wrk)")?;
        // wrk is up when it says so; a request then answers through the same path.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs_err::read_to_string(&log)?.contains("Running") {
            ensure!(Instant::now() < deadline, "wrk did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Wrk { child, log })
    }

    /// Stop it and read its report. A request wrk gives up on after `--timeout` (10 s) is a
    /// socket error like a refused or reset connection; none of them may happen.
    pub fn stop(mut self) -> Result<WrkReport> {
        run_ok(
            Command::new("kill").args(["-INT", &self.child.id().to_string()]),
            "kill -INT wrk",
        )?;
        let status = self.child.wait()?;
        let out = fs_err::read_to_string(&self.log)?;
        let _ = fs_err::remove_file(&self.log);
        ensure!(
            status.success() || status.code().is_none(),
            "wrk failed ({status}):\n{out}"
        );
        let mut requests = None;
        let mut r = WrkReport::default();
        for line in out.lines().map(str::trim) {
            if line.starts_with("Latency ") {
                // Average, deviation, max: a request the balancer answered fast but wrk waited
                // long for was stuck before the balancer read it.
                r.detail += &format!("wrk's {line}\n");
            } else if line.contains(" requests in ") {
                requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                r.detail += &format!("{line}\n");
                r.non2xx += n.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(errs) = line.strip_prefix("Socket errors:") {
                r.detail += &format!("{line}\n");
                r.errors += errs
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        r.requests = requests.with_context(|| format!("no report from wrk:\n{out}"))?;
        ensure!(r.requests > 0, "wrk made no request:\n{out}");
        Ok(r)
    }
}

/// wrk's figures for its whole run.
#[derive(Debug, Default)]
pub struct WrkReport {
    pub requests: u64,
    /// Non-2xx/3xx answers.
    pub non2xx: u64,
    /// Socket errors: connect, read, write, timeout.
    pub errors: u64,
    /// wrk's own lines about them.
    pub detail: String,
}

// --- a deploy held at a step, and what the server says afterwards ------------------------------

/// Wait until the lock is free and no deploy job runs; a lock or job still there at the
/// deadline is an error that says which.
/// Processes on this machine that a deployer run from `dir` left behind: any whose working
/// directory or command line is in the checkout (ssh and its control master, rsync, tar, the
/// checks). Polled until none are left or `timeout` passes (the kernel's SIGTERM for a dead
/// parent takes a moment to end them); what is left then, as `PID ARGS` lines.
pub fn local_leftovers(dir: &Utf8Path, timeout: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for entry in fs_err::read_dir("/proc")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if pid == std::process::id().to_string() {
                continue;
            }
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let args = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if cwd.starts_with(dir.as_std_path()) || args.contains(dir.as_str()) {
                left.push(format!("{pid} {}", args.trim()));
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_quiet(site: &Site, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = site.sh(&format!(
            "l=free; test -d {ROOT}/.deploy.lock && l=held; j=none; pgrep -u innercontext -f '[d]eploy.sh job root=' >/dev/null && j=running; echo $l $j"
        ))?;
        if state.trim() == "free none" {
            return Ok(());
        }
        if Instant::now() > deadline {
            let info = site.sh(&format!(
                "cat {ROOT}/.deploy.lock/info 2>/dev/null; pgrep -a -u innercontext -f '[d]eploy.sh job' | cut -c1-200"
            ))?;
            bail!(
                "after {timeout:?}: lock {} and job {}:\n{info}",
                state.trim().split(' ').next().unwrap_or("?"),
                state.trim().split(' ').nth(1).unwrap_or("?")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A new commit that changes the backend (a backend deploy has something to ship).
pub fn change(s: &Scratch, what: &str) -> Result<()> {
    let path = "backend/innercontext/pricing.py";
    let text = s.read(path)?;
    s.write(path, &format!("{text}\n# {what}\n"))?;
    s.commit(what)
}

/// A deploy held by the job's test pause point before `step`.
pub struct Paused {
    pub bg: Background,
    pub token: String,
    pub release: String,
    /// The job's pid (jobs/TOKEN/pid).
    pub pid: u32,
}

/// The token of the lock on the server ('' when there is none).
pub fn lock_token(site: &Site) -> Result<String> {
    Ok(site
        .sh(&format!(
            "sed -n 's/^token=//p' {ROOT}/.deploy.lock/info 2>/dev/null || true"
        ))?
        .trim()
        .to_string())
}

/// A scenario starts on a quiet server: no job runs, and a lock an earlier scenario's failure
/// left behind is removed (with `deploy unlock`, saying so).
pub fn fresh(site: &Site, s: &Scratch) -> Result<()> {
    if wait_quiet(site, Duration::from_secs(60)).is_err() && site.locked()? {
        let run = site.xtask(&s.dir, &["deploy", "unlock", "--yes"])?;
        println!(
            "(a lock left by an earlier scenario was removed:\n{})",
            run.all()
        );
    }
    wait_quiet(site, Duration::from_secs(60))
}

/// Start `deploy ARGS` with the job told to pause before `step`, and wait until it does.
pub fn paused(site: &Site, s: &Scratch, step: &str, args: &[&str]) -> Result<Paused> {
    paused_with(site, s, step, args, &[])
}

/// [`paused`], the deployer's environment changed by `env` (a shorter health timeout, another
/// ssh_config).
pub fn paused_with(
    site: &Site,
    s: &Scratch,
    step: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Paused> {
    fresh(site, s)?;
    let earlier = lock_token(site)?;
    let log = s.sidecar(&format!("paused-{step}.log"));
    let mut cmd = site.command(&s.dir, args);
    cmd.envs(env.iter().copied());
    cmd.env("INNERCONTEXT_TEST_PAUSE_AT", step);
    // Its own process group, like a shell job in a terminal: a group signal reaches it alone.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut bg = Background::start(cmd, &log)?;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let at = site.sh(&format!(
            "cat {ROOT}/.deploy.lock/paused 2>/dev/null || true"
        ))?;
        if at.trim() == step && lock_token(site)? != earlier {
            break;
        }
        if let Some(status) = bg.child.try_wait()? {
            bail!(
                "the deploy ended ({status}) before the job paused at {step}:\n{}",
                bg.output()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the job never paused at {step}:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    held(site, bg)
}

/// The deploy `bg` whose job holds the lock: its token, release and the job's pid, read from
/// the lock.
fn held(site: &Site, bg: Background) -> Result<Paused> {
    let info = |key: &str| -> Result<String> {
        Ok(site
            .sh(&format!("sed -n 's/^{key}=//p' {ROOT}/.deploy.lock/info"))?
            .trim()
            .to_string())
    };
    let token = info("token")?;
    let release = info("release")?;
    let pid = site
        .sh(&format!("cat {ROOT}/jobs/{token}/pid"))?
        .trim()
        .parse()
        .context("the job's pid")?;
    Ok(Paused {
        bg,
        token,
        release,
        pid,
    })
}

/// A deploy held right after its switch: the job paused before its health checks (its units
/// restarted into the new release), with current already naming that release.
pub fn held_after_switch(site: &Site, s: &Scratch, args: &[&str]) -> Result<Paused> {
    let p = paused(site, s, "health", args)?;
    let current = site.current()?;
    ensure!(
        current == p.release,
        "the job is held at health but current is {current}, not {}",
        p.release
    );
    Ok(p)
}

/// A deploy held in its upload: the whole release uploaded, the deployer waiting (its test hook
/// `INNERCONTEXT_TEST_PAUSE_BEFORE_SEND`) before it tells the job so, the job waiting for that
/// word. [`let_send`] lets the deployer go on.
pub fn held_in_upload(site: &Site, s: &Scratch, args: &[&str]) -> Result<Paused> {
    fresh(site, s)?;
    let earlier = lock_token(site)?;
    let gate = s.sidecar("gate-uploaded");
    fs_err::write(&gate, format!("uploaded {}", site.app.name))?;
    let mut cmd = site.command(&s.dir, args);
    cmd.env("INNERCONTEXT_TEST_PAUSE_BEFORE_SEND", &gate);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut bg = Background::start(cmd, &s.sidecar("held-upload.log"))?;
    bg.wait_for("paused before sending 'uploaded'", Duration::from_secs(240))?;
    let phase = site.sh(&format!(
        "cat {ROOT}/.deploy.lock/phase 2>/dev/null || true"
    ))?;
    ensure!(
        phase.trim() == "awaiting-upload" && lock_token(site)? != earlier,
        "the deployer holds back 'uploaded' but the job's phase is '{}'",
        phase.trim()
    );
    held(site, bg)
}

/// Let a deployer held by [`held_in_upload`] send its word.
pub fn let_send(s: &Scratch) -> Result<()> {
    fs_err::remove_file(s.sidecar("gate-uploaded"))?;
    Ok(())
}

/// The fault: the job SIGKILLed as root on the server (the job only, not the deployer: nothing
/// runs its cleanup). Returns once it and every process that held its lock's flock are gone (a
/// command it was running, a `$(…)`, may outlive it by moments).
pub fn kill_job(site: &Site, p: &Paused) -> Result<()> {
    site.sh(&format!("kill -KILL {}", p.pid))?;
    wait_gone(site, p.pid)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while site
        .sh(&format!(
            "runuser -u innercontext -- flock -n -s {ROOT}/.deploy.lock/job.lock true && echo free || echo held"
        ))?
        .trim()
        != "free"
    {
        ensure!(
            Instant::now() < deadline,
            "a process still holds the killed job's lock after 10 s: {}",
            site.sh("ps -u innercontext -o pid=,args= | cut -c1-160")?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Let a paused job go on (as the app user: root never writes into the app's directories).
/// The marker is renamed away, not removed: removing it would free the space it takes, and a
/// full disk must stay full.
pub fn resume(site: &Site) -> Result<()> {
    site.sh(&format!(
        "runuser -u innercontext -- mv -T {ROOT}/.deploy.lock/paused {ROOT}/.deploy.lock/resumed"
    ))?;
    Ok(())
}

/// Wait until process `pid` on the app machine is gone.
pub fn wait_gone(site: &Site, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while site
        .sh(&format!(
            "kill -0 {pid} 2>/dev/null && echo alive || echo gone"
        ))?
        .trim()
        == "alive"
    {
        ensure!(Instant::now() < deadline, "process {pid} did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// deploy.log's lines after the first `from`: each as (release, result, reason), read the way
/// `deploy log` reads them (the reason is the rest of the line).
pub fn log_since(site: &Site, from: usize) -> Result<Vec<(String, String, String)>> {
    let text = site.sh(&format!("tail -n +{} {ROOT}/deploy.log", from + 1))?;
    Ok(text
        .lines()
        .map(xtask::deploy::entry::Entry::parse)
        .map(|e| {
            let reason = match e.get("reason") {
                "-" => String::new(),
                r => r.to_string(),
            };
            (
                e.get("release").to_string(),
                e.get("result").to_string(),
                reason,
            )
        })
        .collect())
}

pub fn log_len(site: &Site) -> Result<usize> {
    Ok(site
        .sh(&format!("wc -l < {ROOT}/deploy.log"))?
        .trim()
        .parse()?)
}

/// The one line of `out` that says a dead job's lock was taken over.
pub fn took_over_line(out: &str) -> Result<String> {
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("took over")).collect();
    ensure!(
        lines.len() == 1,
        "expected one line saying the lock was taken over, got {}:\n{out}",
        lines.len()
    );
    Ok(lines[0].to_string())
}
