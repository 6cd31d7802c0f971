//! `cargo xtask env` on the group's app machine: show (masked, revealed) and diff; a file that
//! fails the format, or does not exist, refused with nothing changed; a push that takes effect
//! (DOCS_ENABLED=true: /docs answers on the server itself) and its rollback; a push of a
//! DATABASE_URL that cannot connect put back by the job while the site keeps answering. Each
//! scenario leaves the machine deployed and healthy, with the env file it found.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use camino::Utf8PathBuf;

use crate::support::{http_get, paused, repo, resume, run_ok, Run, Scratch, Site, ROOT};
use crate::Ctx;

const ENV: &str = "shared/backend/.env";

/// The site, deployed (the first scenario of the group that needs it deploys).
fn deployed(ctx: &mut Ctx) -> Result<Site> {
    let site = ctx.site()?;
    if site.current_opt()?.is_none() {
        let s = scratch(ctx)?;
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()
            .context("the first deploy of the env-file scenarios")?;
    }
    Ok(site)
}

/// The group's scratch checkout, made on first use.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.scratch.is_none() {
        ctx.scratch = Some(crate::support::scratch("shell")?);
    }
    Ok(ctx.scratch.as_ref().expect("made above"))
}

/// `cargo xtask env ARGS` from the repository, with `extra` environment.
fn env(site: &Site, args: &[&str], extra: &[(&str, &str)]) -> Result<Run> {
    let mut full = vec!["env"];
    full.extend(args);
    let mut cmd = site.command(&repo(), &full);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Run::capture(cmd)
}

/// The server's backend env file, read as root.
fn server_env(site: &Site) -> Result<String> {
    site.sh(&format!("cat {ROOT}/{ENV}"))
}

/// What must not change when a command is refused: the env file's bytes, mode and owner, its
/// backups, deploy.log's last line, the lock.
fn untouched(site: &Site) -> Result<String> {
    site.sh(&format!(
        "cd {ROOT} && sha256sum {ENV} && stat -c '%a %U' {ENV} && ls -1 {ENV}.* 2>/dev/null; \
         tail -n 1 deploy.log; test -d .deploy.lock && echo locked || true"
    ))
}

/// A local file `name` in a fresh directory, holding `text`.
fn local_file(name: &str, text: &str) -> Result<Utf8PathBuf> {
    // Private: the files hold the test site's database password.
    let dir = Utf8PathBuf::from(format!("/tmp/{}-envfiles", crate::run_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let sub = dir.join(format!("{}-{n}", std::process::id()));
    std::fs::create_dir_all(&sub)?;
    let p = sub.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

/// `text` with KEY's line set to `KEY=value` (added at the end when it has none).
fn with(text: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.split_once('=').is_some_and(|(k, _)| k == key) {
                found = true;
                format!("{key}={value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

/// The HTTP status of /docs asked on the app machine itself (the API's own port).
fn docs_status(site: &Site) -> Result<String> {
    Ok(site
        .sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/docs")?
        .trim()
        .to_string())
}

/// setup-server checks the env files it is given against the format before it changes anything:
/// a CRLF --backend-env, even with --force-env, is refused in one line and the server's file
/// stays as it was.
pub fn setup_server_refuses_an_env_file_out_of_format(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let text = server_env(&site)?;
    let crlf = local_file(".env", &text.replace('\n', "\r\n"))?;
    let before = untouched(&site)?;
    let mut args = site.env.setup_server_args();
    let i = args.iter().position(|a| *a == "--backend-env").unwrap() + 1;
    args[i] = crlf.as_str();
    args.push("--force-env");
    let r = site.xtask(&repo(), &args)?.failed()?;
    ensure!(
        r.all().contains(&format!(
            "--backend-env {crlf} is not in the env-file format: line 1: the line ends in CR"
        )) && r.all().trim().lines().count() == 1,
        "setup-server with a CRLF --backend-env:\n{}",
        r.all()
    );
    ensure!(
        untouched(&site)? == before,
        "the server changed:\nbefore: {before}\nafter: {}",
        untouched(&site)?
    );
    Ok(())
}

/// show masks every value unless --reveal; diff names the keys a file adds, removes and changes,
/// never a value; a CRLF file, a key set twice and a missing file are refused in one line, with
/// nothing changed on the server.
pub fn show_diff_and_bad_files_change_nothing(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let text = server_env(&site)?;
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .context("no DATABASE_URL in the server's env file")?
        .to_string();
    let shown = env(&site, &["show", "backend"], &[])?.ok()?.all();
    ensure!(
        shown.contains("DATABASE_URL=********") && !shown.contains(&url),
        "env show backend:\n{shown}"
    );
    let revealed = env(&site, &["show", "backend", "--reveal"], &[])?
        .ok()?
        .all();
    ensure!(
        revealed.contains(&format!("DATABASE_URL={url}")),
        "env show backend --reveal:\n{revealed}"
    );
    // The site's file holds DATABASE_URL and PRICING_INTERVAL_SECONDS: drop the one, change
    // the other, add a key.
    let changed: String = with(
        &with(&text, "PRICING_INTERVAL_SECONDS", "31"),
        "E2E_NEW_KEY",
        "x1",
    )
    .lines()
    .filter(|l| !l.starts_with("DATABASE_URL="))
    .map(|l| format!("{l}\n"))
    .collect();
    let f = local_file(".env", &changed)?;
    let before = untouched(&site)?;
    let d = env(&site, &["diff", f.as_str()], &[])?.ok()?.all();
    ensure!(
        d.contains("~ PRICING_INTERVAL_SECONDS (changed)")
            && d.contains("+ E2E_NEW_KEY (added)")
            && d.contains("- DATABASE_URL (removed)")
            && !d.contains("=x1")
            && !d.contains("=31")
            && !d.contains(&url),
        "env diff:\n{d}"
    );
    let crlf = local_file(".env", &text.replace('\n', "\r\n"))?;
    let r = env(&site, &["push", crlf.as_str()], &[])?.failed()?;
    ensure!(
        r.all()
            .contains("is not in the env-file format: line 1: the line ends in CR")
            && r.all().trim().lines().count() == 1,
        "push of a CRLF file:\n{}",
        r.all()
    );
    let twice = local_file("prod.env", &format!("{text}DATABASE_URL={url}\n"))?;
    let r = env(&site, &["push", "backend", twice.as_str()], &[])?.failed()?;
    ensure!(
        r.all().contains("DATABASE_URL is set twice") && !r.all().contains(&url),
        "push of a key set twice:\n{}",
        r.all()
    );
    let r = env(&site, &["push", "/nonexistent/.env"], &[])?.failed()?;
    ensure!(
        r.all()
            .contains("/nonexistent/.env does not exist: nothing was changed"),
        "push of a missing file:\n{}",
        r.all()
    );
    ensure!(
        untouched(&site)? == before,
        "the server changed:\nbefore: {before}\nafter: {}",
        untouched(&site)?
    );
    // A host without the env file: show and push say so in one line, and push changes nothing.
    let listed = site.sh(&format!(
        "ls -1A {ROOT}/shared/backend/ && mv {ROOT}/{ENV} {ROOT}/{ENV}.e2e-away"
    ))?;
    let shown = env(&site, &["show", "backend"], &[])?.failed()?.all();
    let pushed = env(&site, &["push", f.as_str()], &[])?.failed()?.all();
    let now = site.sh(&format!(
        "ls -1A {ROOT}/shared/backend/ | sed 's/^.env.e2e-away$/.env/' | LC_ALL=C sort; \
         mv {ROOT}/{ENV}.e2e-away {ROOT}/{ENV}"
    ))?;
    for (what, out) in [("show", &shown), ("push", &pushed)] {
        ensure!(
            out.contains(&format!("env file {ROOT}/{ENV} is missing: install it with cargo xtask setup-server --backend-env FILE")),
            "env {what} without the env file:\n{out}"
        );
    }
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    ensure!(
        now.lines().collect::<Vec<_>>() == listed,
        "env push without the env file changed shared/backend: {listed:?} -> {now}"
    );
    Ok(())
}

/// The main pid of each unit (which the env change restarts).
fn pids(site: &Site) -> Result<Vec<String>> {
    let out = site.sh(
        "systemctl show -p MainPID --value innercontext innercontext-pricing-worker innercontext-node",
    )?;
    Ok(out.split_whitespace().map(str::to_string).collect())
}

/// A push of DOCS_ENABLED=true: the API restarts with it (/docs answers on the server), the old
/// file is kept as a 0600 backup, deploy.log says env-pushed without a value; rollback puts the
/// backup back (/docs is gone again) and the file is byte for byte what it was.
pub fn push_takes_effect_and_rollback_puts_it_back(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let text = server_env(&site)?;
    ensure!(
        docs_status(&site)? == "404",
        "/docs answers before the push"
    );
    let f = local_file(".env", &with(&text, "DOCS_ENABLED", "true"))?;
    let run = env(&site, &["push", f.as_str()], &[])?.ok()?;
    let all = run.all();
    ensure!(
        all.contains("lock") && all.contains("health checks") && all.contains("env-pushed"),
        "env push:\n{all}"
    );
    ensure!(docs_status(&site)? == "200", "/docs after the push");
    let log = site.last_log()?;
    ensure!(
        log.contains("result=env-pushed")
            && log.contains("scope=env-backend")
            && log.contains("env=push backup=.env.backup-")
            && !log.contains("DOCS_ENABLED")
            && !log.contains("postgresql"),
        "deploy.log: {log}"
    );
    let backup = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("backup="))
        .context("no backup in deploy.log")?
        .to_string();
    let b = site.sh(&format!(
        "stat -c '%a %U' {ROOT}/shared/backend/{backup}; cat {ROOT}/shared/backend/{backup}"
    ))?;
    ensure!(
        b.starts_with("600 innercontext\n") && b.ends_with(&text),
        "the backup {backup}: {b}"
    );
    let jobs = site.sh(&format!("grep -rl DOCS_ENABLED {ROOT}/jobs || true"))?;
    ensure!(
        jobs.trim().is_empty(),
        "a job file holds the env file's text: {jobs}"
    );
    site.assert_serving()?;
    let run = env(&site, &["rollback", "backend"], &[])?.ok()?;
    ensure!(
        run.all().contains("env-pushed"),
        "env rollback:\n{}",
        run.all()
    );
    ensure!(docs_status(&site)? == "404", "/docs after the rollback");
    ensure!(
        server_env(&site)? == text,
        "the env file after the rollback"
    );
    let log = site.last_log()?;
    ensure!(
        log.contains("result=env-pushed") && log.contains("env=rollback"),
        "deploy.log after the rollback: {log}"
    );
    let table = site
        .xtask(&repo(), &["deploy", "log", "-n", "3"])?
        .ok()?
        .all();
    ensure!(
        table.contains("env-pushed") && !table.contains("DOCS_ENABLED"),
        "deploy log:\n{table}"
    );
    // The frontend's file: only the web server restarts; its rollback puts the file back.
    let front = site.sh(&format!("cat {ROOT}/shared/frontend/.env.production"))?;
    let g = local_file(".env.production", &format!("{front}# pushed by the e2e\n"))?;
    let p2 = pids(&site)?;
    env(&site, &["push", g.as_str()], &[])?.ok()?;
    let p3 = pids(&site)?;
    ensure!(
        p3[0] == p2[0] && p3[1] == p2[1] && p3[2] != p2[2],
        "a frontend push restarts the web server only: {p2:?} -> {p3:?}"
    );
    ensure!(
        site.last_log()?
            .contains("scope=env-frontend result=env-pushed")
            || site.last_log()?.contains("scope=env-frontend"),
        "deploy.log after the frontend push: {}",
        site.last_log()?
    );
    env(&site, &["rollback", "frontend"], &[])?.ok()?;
    ensure!(
        site.sh(&format!("cat {ROOT}/shared/frontend/.env.production"))? == front,
        "the frontend env file after its rollback"
    );
    site.assert_serving()?;
    Ok(())
}

/// A push of a DATABASE_URL that cannot connect: the API comes up but its health check fails,
/// so the job puts the backup back, restarts, checks again: env-restored, the file what it was,
/// and while it ran nginx answered every request (no connection refused, no 502).
pub fn a_broken_value_is_put_back_and_the_site_keeps_serving(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let text = server_env(&site)?;
    let broken = with(
        &text,
        "DATABASE_URL",
        "postgresql+psycopg://innercontext:x@127.0.0.1:1/innercontext",
    );
    let f = local_file(".env", &broken)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, ip) = (stop.clone(), site.app.ip.clone());
    let load = std::thread::spawn(move || {
        let (mut n, mut bad) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(180);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            n += 1;
            match http_get(&ip, 80, "/") {
                Ok((s, _)) if s != 502 && s != 504 => {}
                Ok((s, body)) => bad.push(format!(
                    "/: {s} {}",
                    body.chars().take(80).collect::<String>()
                )),
                Err(e) => bad.push(format!("/: {e:#}")),
            }
        }
        (n, bad)
    });
    let run = env(
        &site,
        &["push", f.as_str()],
        &[("DEPLOY_HEALTH_TIMEOUT", "8")],
    );
    stop.store(true, Ordering::SeqCst);
    let (n, bad) = load.join().expect("the load thread");
    let run = run?.failed()?;
    let all = run.all();
    ensure!(
        all.contains("env-restored") && all.contains("not healthy"),
        "env push of a broken DATABASE_URL:\n{all}"
    );
    ensure!(
        !all.contains("127.0.0.1:1/"),
        "the value was printed:\n{all}"
    );
    let log = site.last_log()?;
    ensure!(
        log.contains("result=env-restored") && !log.contains("127.0.0.1:1/"),
        "deploy.log: {log}"
    );
    ensure!(server_env(&site)? == text, "the env file was not put back");
    ensure!(
        n > 0 && bad.is_empty(),
        "{} of {n} requests failed during the push: {bad:?}",
        bad.len()
    );
    site.assert_serving()?;
    Ok(())
}

/// Ctrl-C (SIGINT to the deployer's process group) while the job waits before it writes the file:
/// it stops, nothing changed (the file, its backups, no staged copy left), deploy.log says
/// interrupted. Ctrl-C once the file is written: the job runs to its end (env-pushed) and the
/// deployer reports it; the file is then rolled back.
pub fn ctrl_c_before_the_write_changes_nothing_and_after_it_the_job_finishes(
    ctx: &mut Ctx,
) -> Result<()> {
    let site = deployed(ctx)?;
    let s = scratch(ctx)?;
    let text = server_env(&site)?;
    let f = local_file(".env", &with(&text, "DOCS_ENABLED", "true"))?;
    let args = ["env", "push", f.as_str()];
    let listing = format!("sha256sum {ROOT}/{ENV}; ls -1A {ROOT}/shared/backend/");
    let before = site.sh(&listing)?;
    let p = paused(&site, s, "env-write", &args)?;
    let pgid = p.bg.child.id().to_string();
    run_ok(
        std::process::Command::new("kill").args(["-s", "INT", "--", &format!("-{pgid}")]),
        "kill",
    )?;
    let (status, out) = p.bg.wait(Duration::from_secs(60))?;
    ensure!(
        !status.success() && out.contains("interrupted"),
        "Ctrl-C before the write ({status}):\n{out}"
    );
    ensure!(
        site.sh(&listing)? == before,
        "Ctrl-C before the write changed shared/backend"
    );
    let log = site.last_log()?;
    ensure!(
        log.contains("scope=env-backend") && log.contains("result=interrupted"),
        "deploy.log: {log}"
    );
    let p = paused(&site, s, "restart", &args)?;
    let pgid = p.bg.child.id().to_string();
    run_ok(
        std::process::Command::new("kill").args(["-s", "INT", "--", &format!("-{pgid}")]),
        "kill",
    )?;
    let mut bg = p.bg;
    bg.wait_for("runs to its end", Duration::from_secs(30))?;
    resume(&site)?;
    let (status, out) = bg.wait(Duration::from_secs(120))?;
    ensure!(
        status.success() && out.contains("env-pushed"),
        "Ctrl-C after the write ({status}):\n{out}"
    );
    ensure!(docs_status(&site)? == "200", "/docs after the push");
    env(&site, &["rollback", "backend"], &[])?.ok()?;
    ensure!(
        server_env(&site)? == text,
        "the env file after the rollback"
    );
    site.assert_serving()?;
    Ok(())
}

/// A shutdown's SIGTERM to the job once the new file is written (held before its health checks):
/// the job puts the file before it back (the units are not restarted: they start with it at
/// boot) and records `interrupted`; the deployer reports it. A push of that same file then
/// restarts the units on it, so the site is left as it was found.
pub fn sigterm_after_the_write_puts_the_file_back(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = scratch(ctx)?;
    let text = server_env(&site)?;
    let f = local_file(".env", &with(&text, "DOCS_ENABLED", "true"))?;
    let p = paused(&site, s, "health", &["env", "push", f.as_str()])?;
    ensure!(
        server_env(&site)? != text,
        "the job is held before its health checks but the new file is not in place"
    );
    site.sh(&format!("kill -TERM {}", p.pid))?;
    let (status, out) = p.bg.wait(Duration::from_secs(60))?;
    ensure!(
        !status.success() && out.contains("interrupted") && out.contains("was put back"),
        "SIGTERM after the write ({status}):\n{out}"
    );
    ensure!(server_env(&site)? == text, "the env file was not put back");
    let log = site.last_log()?;
    ensure!(
        log.contains("scope=env-backend") && log.contains("result=interrupted"),
        "deploy.log: {log}"
    );
    // The API still runs with the pushed file: pushing the file it has restarts it on it.
    let back = local_file(".env", &text)?;
    env(&site, &["push", back.as_str()], &[])?.ok()?;
    ensure!(
        docs_status(&site)? == "404",
        "/docs after the push of the old file"
    );
    site.assert_serving()?;
    Ok(())
}
