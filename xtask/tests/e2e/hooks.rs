//! Hooks in `deploy/hooks/` (docs/hooks.md): bad hooks and a bad timeout refused before any
//! change; a failing `pre-deploy` leaves the server untouched byte for byte; a hook past
//! `DEPLOY_HOOK_TIMEOUT` is ended with its process group; every hook gets its facts (and never
//! a value of the server's env files), and the shipped `post-deploy.example` posts them as JSON
//! to a listener on loopback; and on a three-host fleet behind the balancer, under load, the
//! drain hooks take each host out before it switches and put it back once it is healthy, in
//! order, with no failed request, while a hook that outlasts the job's silence limit keeps the
//! jobs waiting, not gone.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use camino::Utf8Path;
use xtask::testhost::balancer::{self, Balancer};

use crate::support::{Run, Scratch, Site, ROOT};
use crate::Ctx;

/// This group's checkout (hooks are kept out of git: `.git/info/exclude`), the site deployed.
fn scratch(ctx: &mut Ctx) -> Result<(Site, &Scratch)> {
    let site = ctx.site()?;
    if ctx.hooks_scratch.is_none() {
        let s = crate::support::scratch("hooks")?;
        fs_err::write(s.dir.join(".git/info/exclude"), "deploy/hooks/\n")?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.hooks_scratch = Some(s);
    }
    Ok((site, ctx.hooks_scratch.as_ref().unwrap()))
}

/// Write hook `name` (executable) in the checkout `dir`.
fn hook(dir: &Utf8Path, name: &str, body: &str) -> Result<()> {
    let p = dir.join("deploy/hooks").join(name);
    fs_err::create_dir_all(p.parent().unwrap())?;
    fs_err::write(&p, format!("#!/bin/sh\nset -eu\n{body}\n"))?;
    fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Remove every hook of the checkout but the shipped example.
fn no_hooks(dir: &Utf8Path) -> Result<()> {
    let d = dir.join("deploy/hooks");
    if d.is_dir() {
        for e in fs_err::read_dir(&d)? {
            let e = e?;
            if e.file_name() != "post-deploy.example" {
                fs_err::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

/// What the server's deploy state is, byte for byte: the releases (names, modes, times), where
/// current points, the lock, deploy.log's bytes.
fn server_state(site: &Site) -> Result<String> {
    site.sh(&format!(
        "cd {ROOT} && ls -la --time-style=full-iso releases; readlink current; \
         ls -ld --time-style=full-iso .deploy.lock 2>&1 || true; sha256sum deploy.log; wc -c deploy.log"
    ))
}

/// The deployer's last non-empty line.
fn last_line(run: &Run) -> String {
    run.all()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// A hook that is not executable, a file that is no hook, a bad DEPLOY_HOOK_TIMEOUT: each one
/// line, before any connection (the server's state unchanged).
pub fn bad_hooks_and_a_bad_timeout_are_refused_before_any_change(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    let before = server_state(&site)?;
    let logins = site.deploy_logins()?;
    let cases: [(&str, &str, Option<&str>, &str); 4] = [
        (
            "pre-deploy",
            "not executable",
            None,
            "deploy/hooks/pre-deploy is not executable: 'chmod +x deploy/hooks/pre-deploy'",
        ),
        (
            "pre-deploy.sh",
            "no hook",
            None,
            "deploy/hooks/pre-deploy.sh is no hook: the hooks are pre-deploy, post-deploy, pre-rollback, post-rollback, pre-host-switch, post-host-healthy",
        ),
        (
            "post-deploy",
            "a bad timeout",
            Some("1m"),
            "DEPLOY_HOOK_TIMEOUT must be a whole number from 1 to 3600, not '1m'",
        ),
        (
            "pre-rollback",
            "not executable (rollback)",
            None,
            "deploy/hooks/pre-rollback is not executable",
        ),
    ];
    for (name, what, timeout, want) in cases {
        no_hooks(&s.dir)?;
        hook(&s.dir, name, "exit 0")?;
        if what.starts_with("not executable") {
            fs_err::set_permissions(
                s.dir.join("deploy/hooks").join(name),
                std::fs::Permissions::from_mode(0o644),
            )?;
        }
        let args: &[&str] = if name == "pre-rollback" {
            &["deploy", "rollback"]
        } else {
            &["deploy", "all", "--skip-local-checks", "--redeploy"]
        };
        let mut cmd = site.command(&s.dir, args);
        if let Some(t) = timeout {
            cmd.env("DEPLOY_HOOK_TIMEOUT", t);
        }
        let run = Run::capture(cmd)?.failed()?;
        let line = last_line(&run);
        ensure!(
            line.contains(want),
            "{what}: the last line is not '{want}…':\n{}",
            run.all()
        );
        ensure!(
            run.all().lines().filter(|l| !l.trim().is_empty()).count() <= 2,
            "{what}: more than the error was said:\n{}",
            run.all()
        );
    }
    no_hooks(&s.dir)?;
    ensure!(
        server_state(&site)? == before,
        "the server changed:\nbefore:\n{before}\nafter:\n{}",
        server_state(&site)?
    );
    ensure!(
        site.deploy_logins()? == logins,
        "the deployer logged in to the server although its input was bad"
    );
    Ok(())
}

/// A `pre-deploy` that exits 1: the deploy stops with its output and says nothing changed;
/// releases, current, the lock and deploy.log are byte for byte what they were.
pub fn a_failing_pre_deploy_leaves_the_server_untouched(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    no_hooks(&s.dir)?;
    hook(
        &s.dir,
        "pre-deploy",
        "echo \"no deploys of $INNERCONTEXT_RELEASE today\" >&2; exit 1",
    )?;
    let before = server_state(&site)?;
    let run = site
        .xtask(
            &s.dir,
            &["deploy", "all", "--skip-local-checks", "--redeploy"],
        )?
        .failed()?;
    no_hooks(&s.dir)?;
    let out = run.all();
    ensure!(
        out.contains("==> hook pre-deploy") && out.contains("FAILED"),
        "no step line for the hook:\n{out}"
    );
    ensure!(
        out.lines()
            .any(|l| l.starts_with("    | no deploys of ") && l.ends_with(" today")),
        "the hook's output was not passed through:\n{out}"
    );
    ensure!(
        last_line(&run).contains("deploy stopped by its pre-deploy hook: nothing was changed on the server (no lock was taken)")
            && last_line(&run).contains("exited with 1"),
        "the last line does not say so:\n{out}"
    );
    let after = server_state(&site)?;
    ensure!(
        after == before,
        "the server changed:\nbefore:\n{before}\nafter:\n{after}"
    );
    site.assert_serving()
}

/// A `pre-deploy` that outlasts DEPLOY_HOOK_TIMEOUT (with a child of its own): ended with its
/// whole process group at the timeout, the deploy stops saying so, nothing changed.
pub fn a_hook_past_the_timeout_is_ended_with_its_group(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    let pid_file = s.sidecar("hook-child.pid");
    let _ = fs_err::remove_file(&pid_file);
    no_hooks(&s.dir)?;
    hook(
        &s.dir,
        "pre-deploy",
        &format!("sleep 300 & echo $! > {pid_file}\necho waiting\nwait"),
    )?;
    let before = server_state(&site)?;
    let started = Instant::now();
    let mut cmd = site.command(
        &s.dir,
        &["deploy", "all", "--skip-local-checks", "--redeploy"],
    );
    cmd.env("DEPLOY_HOOK_TIMEOUT", "3");
    let run = Run::capture(cmd)?.failed()?;
    let took = started.elapsed();
    no_hooks(&s.dir)?;
    let out = run.all();
    ensure!(
        last_line(&run)
            .contains("ran past DEPLOY_HOOK_TIMEOUT (3s): it was ended with its process group"),
        "the last line does not say the hook ran past its time:\n{out}"
    );
    ensure!(
        out.contains("    | waiting") && out.contains("TIMED OUT"),
        "{out}"
    );
    ensure!(took < Duration::from_secs(60), "it took {took:?}:\n{out}");
    let pid = fs_err::read_to_string(&pid_file)?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok();
    ensure!(
        stat.as_ref()
            .is_none_or(|s| s.split_whitespace().nth(2) == Some("Z")),
        "the hook's child {} outlived it: {stat:?}",
        pid.trim()
    );
    ensure!(
        server_state(&site)? == before,
        "the server changed:\nbefore:\n{before}"
    );
    Ok(())
}

/// One HTTP request on a loopback listener: its body (the listener answers 200). It waits until
/// `done` is set (the command that posts it ended: its hook ran before) and no request is
/// pending.
fn receive_one(listener: TcpListener, done: Arc<AtomicBool>) -> Result<String> {
    listener.set_nonblocking(true)?;
    let (mut conn, _) = loop {
        let ended = done.load(Ordering::SeqCst);
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(!ended, "no request came to the webhook's listener");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_at = loop {
        let n = conn.read(&mut chunk)?;
        ensure!(n > 0, "the request ended before its headers");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_at]).to_string();
    ensure!(head.starts_with("POST "), "not a POST: {head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    while buf.len() < body_at + len {
        let n = conn.read(&mut chunk)?;
        ensure!(n > 0, "the body ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    Ok(String::from_utf8_lossy(&buf[body_at..body_at + len]).to_string())
}

/// The variables `env` printed, as (key, value) (values on one line only).
fn env_of(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn var<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("<unset>")
}

/// Every hook of a deploy and a rollback writes its environment to a file: each gets the
/// deployer's environment and the facts (command, hosts, release, previous release, commit,
/// scope, deployer, and after the run the result, duration and deploy.log line), no inherited
/// INNERCONTEXT_* and no value of the server's env files. `post-deploy` then runs the shipped
/// example, which posts the facts as JSON to a listener on loopback: it arrives and parses.
pub fn every_hook_gets_its_facts_and_the_example_posts_them(ctx: &mut Ctx) -> Result<()> {
    let (site, s) = scratch(ctx)?;
    let out_dir = s.sidecar("hook-env");
    let _ = fs_err::remove_dir_all(&out_dir);
    fs_err::create_dir_all(&out_dir)?;
    no_hooks(&s.dir)?;
    for name in ["pre-deploy", "post-deploy", "pre-rollback", "post-rollback"] {
        let then = if name == "post-deploy" {
            "\nexec sh deploy/hooks/post-deploy.example"
        } else {
            ""
        };
        hook(&s.dir, name, &format!("env > {out_dir}/{name}.env{then}"))?;
    }
    // A value only the server's backend env file holds (its database password).
    let secret = site.sh(&format!(
        "sed -n 's/^DATABASE_URL=.*:\\/\\/[^:]*:\\([^@]*\\)@.*/\\1/p' {ROOT}/{}",
        xtask::contract::layout::ENV_BACKEND
    ))?;
    let secret = secret.trim().to_string();
    ensure!(
        secret.len() >= 8,
        "no password found in the server's backend.env"
    );
    let previous = site.current()?;
    let commit = s
        .git(&["rev-parse", "--short=12", "HEAD"])?
        .trim()
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let done = Arc::new(AtomicBool::new(false));
    let got = {
        let done = done.clone();
        std::thread::spawn(move || receive_one(listener, done))
    };
    let mut cmd = site.command(
        &s.dir,
        &["deploy", "all", "--skip-local-checks", "--redeploy"],
    );
    cmd.env("DEPLOY_WEBHOOK_URL", &url)
        .env("HOOKS_E2E_FROM_THE_DEPLOYER", "kept")
        .env("INNERCONTEXT_HOOKS_E2E_INHERITED", "dropped");
    let run = Run::capture(cmd);
    done.store(true, Ordering::SeqCst);
    let run = run?.ok()?;
    let release = site.current()?;
    let log_line = site.last_log()?;
    let body = got.join().map_err(|_| anyhow::anyhow!("listener panicked"));
    let host = site.env.server.rsplit('@').next().unwrap_or("").to_string();
    for (name, after) in [("pre-deploy", false), ("post-deploy", true)] {
        let text = fs_err::read_to_string(out_dir.join(format!("{name}.env")))
            .with_context(|| format!("{name} did not run:\n{}", run.all()))?;
        ensure!(
            !text.contains(&secret),
            "{name} saw the server's database password"
        );
        let env = env_of(&text);
        let want = [
            ("INNERCONTEXT_HOOK", name),
            ("INNERCONTEXT_COMMAND", "deploy"),
            ("INNERCONTEXT_DESTINATION", ""),
            ("INNERCONTEXT_HOSTS", &host),
            ("INNERCONTEXT_RELEASE", &release),
            ("INNERCONTEXT_PREVIOUS_RELEASE", &previous),
            ("INNERCONTEXT_COMMIT", &commit),
            ("INNERCONTEXT_SCOPE", "all"),
            ("INNERCONTEXT_RESULT", if after { "success" } else { "" }),
            ("INNERCONTEXT_LOG_LINE", if after { &log_line } else { "" }),
            ("HOOKS_E2E_FROM_THE_DEPLOYER", "kept"),
            ("INNERCONTEXT_HOOKS_E2E_INHERITED", "<unset>"),
        ];
        for (k, v) in want {
            ensure!(
                var(&env, k) == v,
                "{name}: {k}={} (want '{v}')",
                var(&env, k)
            );
        }
        ensure!(
            var(&env, "INNERCONTEXT_DEPLOYER").contains('@'),
            "{name}: no deployer"
        );
        let duration = var(&env, "INNERCONTEXT_DURATION");
        ensure!(
            if after {
                duration.parse::<f64>().is_ok_and(|d| d > 0.0)
            } else {
                duration.is_empty()
            },
            "{name}: INNERCONTEXT_DURATION={duration}"
        );
    }
    // The example's JSON, parsed by Python's json module.
    let body = body??;
    let parsed = {
        let mut py = Command::new("python3")
            .args([
                "-c",
                "import json,sys; d=json.load(sys.stdin); print(d['release']); print(d['result']); print(d['log_line']); print(d['command'])",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        py.stdin.take().unwrap().write_all(body.as_bytes())?;
        let out = py.wait_with_output()?;
        ensure!(
            out.status.success(),
            "the webhook's body is no JSON ({}): {body}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let want = format!("{release}\nsuccess\n{log_line}\ndeploy\n");
    ensure!(
        parsed == want,
        "the webhook said {parsed:?}, want {want:?}; body: {body}"
    );
    // A rollback: pre-/post-rollback with its facts.
    let run = site.xtask(&s.dir, &["deploy", "rollback"])?.ok()?;
    no_hooks(&s.dir)?;
    let back_log = site.last_log()?;
    for (name, after) in [("pre-rollback", false), ("post-rollback", true)] {
        let text = fs_err::read_to_string(out_dir.join(format!("{name}.env")))
            .with_context(|| format!("{name} did not run:\n{}", run.all()))?;
        let env = env_of(&text);
        let want = [
            ("INNERCONTEXT_HOOK", name),
            ("INNERCONTEXT_COMMAND", "rollback"),
            ("INNERCONTEXT_RELEASE", &previous),
            ("INNERCONTEXT_PREVIOUS_RELEASE", &release),
            ("INNERCONTEXT_RESULT", if after { "success" } else { "" }),
            ("INNERCONTEXT_LOG_LINE", if after { &back_log } else { "" }),
        ];
        for (k, v) in want {
            ensure!(
                var(&env, k) == v,
                "{name}: {k}={} (want '{v}')",
                var(&env, k)
            );
        }
    }
    ensure!(site.current()? == previous, "the rollback did not go back");
    site.assert_serving()
}

/// The fleet behind the balancer, under load: `pre-host-switch` takes the host out of the
/// balancer (and waits until no worker of the old configuration is left), `post-host-healthy`
/// puts it back; the first host's `post-host-healthy` then outlasts the job's silence limit
/// (the other hosts' jobs wait for `go` meanwhile). The hooks run in order around each host;
/// no request fails; none reached a host while it was out; every host succeeded.
pub fn the_drain_hooks_wrap_each_host_of_a_fleet_behind_the_balancer(ctx: &mut Ctx) -> Result<()> {
    crate::fleet::serving(ctx)?;
    let lb_dir = ctx.fleet.as_ref().unwrap().scratch.sidecar("lb");
    let apps = ctx.fleet.as_ref().unwrap().apps.clone();
    if ctx.fleet.as_ref().unwrap().lb.is_none() {
        ctx.fleet.as_mut().unwrap().lb = Some(Balancer::start(&apps, &lb_dir)?);
    }
    let f = ctx.fleet.as_ref().unwrap();
    let dir = &f.scratch.dir;
    let exclude = dir.join(".git/info/exclude");
    if !fs_err::read_to_string(&exclude)?.contains("deploy/hooks/") {
        fs_err::write(&exclude, "deploy/hooks/\n")?;
    }
    let order = f.scratch.sidecar("hooks.order");
    let _ = fs_err::remove_file(&order);
    let grace = xtask::contract::CLIENT_GRACE_SECS + 2;
    let cases: String = apps
        .iter()
        .map(|m| format!("    {}) ip={} ;;\n", m.name, m.ip))
        .collect();
    let head = format!(
        "conf={lb_dir}/nginx.conf\ncase \"$INNERCONTEXT_HOST\" in\n{cases}    *) echo \"unknown host $INNERCONTEXT_HOST\" >&2; exit 1 ;;\nesac\n"
    );
    no_hooks(dir)?;
    hook(
        dir,
        "pre-host-switch",
        &format!(
            "{head}olds=$(pgrep -P \"$(cat {lb_dir}/nginx.pid)\" | tr '\\n' ' ')\n\
             sed -i \"s/server $ip:80 max_fails=0;/server $ip:80 down;/\" \"$conf\"\n\
             nginx -c \"$conf\" -s reload\n\
             n=0\n\
             for p in $olds; do\n\
             \x20   while kill -0 \"$p\" 2>/dev/null; do\n\
             \x20       n=$((n + 1)); [ \"$n\" -lt 3000 ] || {{ echo \"old workers of the balancer still there\" >&2; exit 1; }}\n\
             \x20       sleep 0.01\n\
             \x20   done\n\
             done\n\
             echo \"$(date +%s.%N) out $INNERCONTEXT_HOST $ip $INNERCONTEXT_DIRECTION\" >> {order}"
        ),
    )?;
    hook(
        dir,
        "post-host-healthy",
        &format!(
            "{head}echo \"$(date +%s.%N) in $INNERCONTEXT_HOST $ip $INNERCONTEXT_DIRECTION\" >> {order}\n\
             sed -i \"s/server $ip:80 down;/server $ip:80 max_fails=0;/\" \"$conf\"\n\
             nginx -c \"$conf\" -s reload\n\
             if [ \"$INNERCONTEXT_HOST\" = {first} ]; then echo \"outlasting the job's silence limit\"; sleep {grace}; fi",
            first = apps[0].name
        ),
    )?;
    let lb = f.lb.as_ref().unwrap();
    let port = lb.port;
    lb.window(0)?;
    // A new connection per request: a reload of the balancer closes its idle keep-alive
    // connections, and a request wrk sends on one as it closes is a read error (nginx's reload,
    // not the deploy: seen, 15 of 13007 with keep-alive, none reaching a drained host).
    let wrk = crate::support::Wrk::start_with(
        &format!("http://127.0.0.1:{port}/api/health-check"),
        &["-H", "Connection: close"],
    )?;
    let run = Run::capture({
        let mut c = f.command(&["deploy", "all", "--skip-local-checks", "--redeploy"]);
        c.env("DEPLOY_HOOK_TIMEOUT", "40");
        c
    });
    let stopped_ms = balancer::now_ms();
    let w = wrk.stop()?;
    let access = fs_err::read_to_string(lb_dir.join("access.log"))?;
    let seen = lb.window(stopped_ms)?;
    no_hooks(dir)?;
    let run = run?;
    let out = run.all();
    let order_text = fs_err::read_to_string(&order).unwrap_or_default();
    let events: Vec<(f64, String, String, String)> = order_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
                f.get(3)?.to_string(),
            ))
        })
        .collect();
    let said: Vec<String> = events
        .iter()
        .map(|(_, what, host, _)| format!("{what} {host}"))
        .collect();
    let want: Vec<String> = apps
        .iter()
        .flat_map(|m| [format!("out {}", m.name), format!("in {}", m.name)])
        .collect();
    ensure!(
        said == want,
        "the drain hooks ran {said:?}, want {want:?}:\n{out}"
    );
    ensure!(
        run.status.success(),
        "the deploy failed ({}):\n{out}",
        run.status
    );
    ensure!(
        out.contains(&format!("==> hook post-host-healthy ({})", apps[0].name)),
        "no step line for the hook:\n{out}"
    );
    let cur = f.currents()?;
    ensure!(
        cur.iter().all(|c| *c == cur[0]),
        "hosts differ: {cur:?}\n{out}"
    );
    ensure!(w.requests > 100, "only {} requests", w.requests);
    ensure!(
        w.errors == 0 && w.non2xx == 0 && seen.failed.is_empty(),
        "{} of {} requests failed: {}{:?}",
        w.errors + w.non2xx + seen.failed.len() as u64,
        w.requests,
        w.detail,
        seen.failed.iter().take(10).collect::<Vec<_>>()
    );
    // While a host was out, the balancer sent it nothing.
    for pair in events.chunks(2) {
        let [(out_at, _, host, _), (in_at, _, _, _)] = pair else {
            continue;
        };
        let ip = apps
            .iter()
            .find(|m| m.name == *host)
            .map(|m| m.ip.clone())
            .unwrap_or_default();
        let sent: Vec<&str> = access
            .lines()
            .filter(|l| {
                let mut f = l.split_whitespace();
                let at: f64 = f.next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
                at > *out_at && at < *in_at && l.contains(&format!("{ip}:80"))
            })
            .collect();
        ensure!(
            sent.is_empty(),
            "the balancer sent {} requests to {host} while it was out ({out_at}..{in_at}): {:?}",
            sent.len(),
            sent.iter().take(5).collect::<Vec<_>>()
        );
        let during = access
            .lines()
            .filter(|l| {
                let at: f64 = l
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0);
                at > *out_at && at < *in_at
            })
            .count();
        ensure!(
            during > 0,
            "no request at all while {host} was out: the check would prove nothing"
        );
    }
    // The others' jobs waited through the long hook: every host's line says success.
    for m in &apps {
        let log = m.ssh(&["tail", "-n", "1", &format!("{ROOT}/deploy.log")])?;
        ensure!(log.contains("result=success"), "{}: {log}\n{out}", m.name);
    }
    f.assert_serving()
}

/// A `pre-host-switch` that fails for the third host of the fleet: that host never switches,
/// the rollout fails like for an unhealthy host, and the fleet's go-back runs the hooks too:
/// `pre-host-switch` (back) before each switched host goes back, `post-host-healthy` (back)
/// once it is healthy on the previous release. Every host ends on the release it had.
pub fn a_failing_pre_host_switch_sends_the_fleet_back_through_the_hooks(
    ctx: &mut Ctx,
) -> Result<()> {
    let f = crate::fleet::serving(ctx)?;
    let dir = &f.scratch.dir;
    let exclude = dir.join(".git/info/exclude");
    if !fs_err::read_to_string(&exclude)?.contains("deploy/hooks/") {
        fs_err::write(&exclude, "deploy/hooks/\n")?;
    }
    let order = f.scratch.sidecar("hooks.back");
    let _ = fs_err::remove_file(&order);
    let third = f.apps[2].name.clone();
    no_hooks(dir)?;
    hook(
        dir,
        "pre-host-switch",
        &format!(
            "echo \"pre $INNERCONTEXT_HOST $INNERCONTEXT_DIRECTION\" >> {order}\n\
             if [ \"$INNERCONTEXT_HOST\" = {third} ] && [ \"$INNERCONTEXT_DIRECTION\" = forward ]; then\n\
             \x20   echo \"{third} cannot leave the balancer\" >&2; exit 4\n\
             fi"
        ),
    )?;
    hook(
        dir,
        "post-host-healthy",
        &format!("echo \"post $INNERCONTEXT_HOST $INNERCONTEXT_DIRECTION\" >> {order}"),
    )?;
    let before = f.currents()?;
    let run = Run::capture(f.command(&["deploy", "all", "--skip-local-checks", "--redeploy"]));
    no_hooks(dir)?;
    let run = run?;
    let out = run.all();
    let said: Vec<String> = fs_err::read_to_string(&order)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let [a, b, c] = [&f.apps[0].name, &f.apps[1].name, &third];
    let forward: Vec<String> = [
        format!("pre {a} forward"),
        format!("post {a} forward"),
        format!("pre {b} forward"),
        format!("post {b} forward"),
        format!("pre {c} forward"),
    ]
    .to_vec();
    ensure!(
        said.len() >= forward.len() && said[..forward.len()] == forward[..],
        "the hooks ran {said:?}, want first {forward:?}:\n{out}"
    );
    let mut back: Vec<String> = said[forward.len()..].to_vec();
    back.sort();
    let mut want_back = vec![
        format!("post {a} back"),
        format!("post {b} back"),
        format!("pre {a} back"),
        format!("pre {b} back"),
    ];
    want_back.sort();
    ensure!(
        back == want_back,
        "the go-back ran {:?}, want {want_back:?} (in any order):\n{out}",
        &said[forward.len()..]
    );
    let pre_back_last = said
        .iter()
        .rposition(|l| l.starts_with("pre "))
        .unwrap_or(0);
    let post_back_first = said
        .iter()
        .position(|l| l.starts_with("post ") && l.ends_with(" back"))
        .unwrap_or(0);
    ensure!(
        pre_back_last < post_back_first,
        "a host was healthy on the previous release before its pre-host-switch: {said:?}"
    );
    ensure!(!run.status.success(), "the deploy succeeded:\n{out}");
    ensure!(
        out.contains(&format!(
            "pre-host-switch hook (deploy/hooks/pre-host-switch): exited with 4 for {c}"
        )),
        "the failing hook is not named:\n{out}"
    );
    ensure!(
        out.contains(&format!("    | {c} cannot leave the balancer")),
        "the hook's output is not shown:\n{out}"
    );
    let after = f.currents()?;
    ensure!(
        after == before,
        "the fleet is on {after:?}, was on {before:?}:\n{out}"
    );
    f.assert_serving()
}
