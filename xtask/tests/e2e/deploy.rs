//! Deploy scenarios against the provisioned test host: the happy paths, incremental uploads,
//! list and rollback under load, a concurrent deploy, a failing migration, a release that
//! fails its health check after the switch, Ctrl-C mid-upload, and one ssh handshake.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::{Background, Load, Scratch, Site, ROOT};
use crate::Ctx;

/// The scratch checkout shared by the deploy scenarios, made on first use.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.scratch.is_none() {
        ctx.scratch = Some(crate::support::scratch("deploy")?);
    }
    Ok(ctx.scratch.as_ref().unwrap())
}

fn deploy(site: &Site, scratch: &Scratch, args: &[&str]) -> Result<crate::support::Run> {
    let mut full = vec!["deploy"];
    full.extend(args);
    site.xtask(&scratch.dir, &full)
}

/// The first deploy with every local check, then the site answers through nginx.
pub fn first_deploy_all(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = crate::support::scratch("first")?;
    let run = deploy(&site, &s, &["all"])?.ok()?;
    let all = run.all();
    for step in [
        "local checks: backend",
        "local checks: frontend",
        "and start the server job",
        "upload",
        "migrate the database",
        "switch current",
        "health checks",
    ] {
        ensure!(all.contains(step), "no '{step}' step in:\n{all}");
    }
    let name = run.release().context("no release name in the output")?;
    ensure!(site.current()? == name, "current is not {name}");
    ensure!(site.state(&name)? == "succeeded");
    ensure!(!site.locked()?, "lock left behind");
    site.assert_serving()?;
    // The revision is shown to loopback clients only (the deployer's probe runs on the server).
    let health = site.sh("curl -fsS http://127.0.0.1:8000/health-check")?;
    ensure!(
        health.contains("0002_price_history"),
        "health-check: {health}"
    );
    let log = site.last_log()?;
    ensure!(
        log.contains(&format!("release={name}"))
            && log.contains("result=success")
            && log.contains("scope=all"),
        "deploy.log: {log}"
    );
    // The env links are relative, into shared/.
    let links = site.sh(&format!(
        "readlink {ROOT}/current/backend/.env {ROOT}/current/frontend/.env.production"
    ))?;
    ensure!(
        links.trim() == "../../../shared/backend/.env\n../../../shared/frontend/.env.production",
        "env links: {links}"
    );
    Ok(())
}

/// Change one backend file: of the backend only that file travels (with the small files outside
/// it, which always do), everything else of the backend is hard-linked, the
/// frontend is carried over, and the deploy used exactly one ssh connection. As a user's
/// checkout does, this one deploys from its own history (current's commit is one it knows), so
/// the one changed file goes as one tar stream into the release the server seeded with hard
/// links of current: the new release has the new text, current's file keeps the old one (tar
/// replaces the link, never writes through it), and the rest stays linked.
pub fn backend_one_file_one_handshake(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    // current from this checkout's own commit.
    deploy(&site, s, &["backend", "--skip-local-checks", "--redeploy"])?.ok()?;
    let before = site.current()?;
    let logins_before = site.deploy_logins()?;
    let path = "backend/innercontext/pricing.py";
    let text = s.read(path)?;
    // Two blank lines before the comment, as ruff format wants: the scratch tree must still
    // pass the backend checks (a later scenario deploys it with them).
    let changed = format!("{text}\n\n# deployed by the e2e suite\n");
    s.write(path, &changed)?;
    s.commit("touch pricing")?;
    let run = deploy(&site, s, &["backend", "--skip-local-checks"])?.ok()?;
    let out = run.all();
    let logins = site.deploy_logins()? - logins_before;
    ensure!(logins == 1, "a deploy made {logins} ssh logins, expected 1");
    ensure!(
        out.lines().any(|l| l.starts_with("==> upload ")
            && l.contains("(changed since ")
            && l.ends_with("[sent as one tar stream]")),
        "expected the changed files (of the backend, only {path}) sent as one tar stream:\n{out}"
    );
    let after = site.current()?;
    ensure!(after != before);
    let inode = |rel: &str, file: &str| -> Result<String> {
        Ok(site
            .sh(&format!("stat -c %i {ROOT}/releases/{rel}/{file}"))?
            .trim()
            .to_string())
    };
    for same in [
        "backend/innercontext/api.py",
        "frontend/build/index.js",
        "backend/uv.lock",
    ] {
        ensure!(
            inode(&before, same)? == inode(&after, same)?,
            "{same} was not hard-linked"
        );
    }
    ensure!(
        inode(&before, path)? != inode(&after, path)?,
        "{path} did not change"
    );
    let on_server = |rel: &str| site.sh(&format!("cat {ROOT}/releases/{rel}/{path}"));
    ensure!(
        on_server(&after)? == changed,
        "the new release's {path} is not the file sent"
    );
    ensure!(
        on_server(&before)? == text,
        "the previous release's {path} changed: the upload wrote through its hard link"
    );
    site.assert_serving()?;
    Ok(())
}

/// A file of current edited on the server by hand (as the app user): before the upload the
/// seeded file differs from this checkout's hash, so it is sent again, with a warning that
/// names it; the new release has the repository's text.
pub fn a_file_edited_on_the_server_is_sent_again(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let cur = site.current()?;
    let path = "backend/innercontext/schemas.py";
    site.sh(&format!(
        "runuser -u innercontext -- sh -c 'printf \"\\n# edited on the server\\n\" >> {ROOT}/releases/{cur}/{path}'"
    ))?;
    ensure!(
        site.sh(&format!("tail -n 1 {ROOT}/releases/{cur}/{path}"))?
            .trim()
            == "# edited on the server",
        "the edit did not land"
    );
    let run = deploy(&site, s, &["backend", "--skip-local-checks", "--redeploy"])?.ok()?;
    let out = run.all();
    ensure!(
        out.contains(&format!(
            "warning: re-sent 1 file that differed on the server: {path}"
        )),
        "no warning naming {path}:\n{out}"
    );
    let after = site.current()?;
    ensure!(after != cur, "no new release");
    ensure!(
        site.sh(&format!("cat {ROOT}/releases/{after}/{path}"))? == s.read(path)?,
        "the new release's {path} is not the repository's"
    );
    site.assert_serving()
}

/// An env file owned by someone else than the app user: the deploy is refused before the lock,
/// naming the file, its owner and the command that repairs it; nothing changes.
pub fn an_env_file_owned_by_someone_else_is_refused(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let cur = site.current()?;
    let env = format!("{ROOT}/shared/backend/.env");
    site.sh(&format!("chown root:root {env}"))?;
    let run = deploy(&site, s, &["backend", "--skip-local-checks", "--redeploy"]);
    site.sh(&format!("chown innercontext:innercontext {env}"))?;
    let run = run?.failed()?;
    let out = run.all();
    ensure!(
        out.contains(&format!(
            "env file {env} is owned by root, expected innercontext"
        )) && out.contains("setup-server"),
        "the refusal does not name the file, its owner and setup-server:\n{out}"
    );
    ensure!(
        site.current()? == cur && !site.locked()?,
        "the refused deploy changed the server"
    );
    site.assert_serving()
}

/// A frontend-only deploy carries the backend over and still has its own virtualenv.
pub fn frontend_only(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let css = "frontend/src/app.css";
    let text = s.read(css)?;
    s.write(css, &format!("{text}\n/* e2e */\n"))?;
    s.commit("touch css")?;
    let run = deploy(&site, s, &["frontend", "--skip-local-checks"])?.ok()?;
    ensure!(
        run.all().contains("restart innercontext-node"),
        "{}",
        run.all()
    );
    ensure!(
        !run.all().contains("restart innercontext,"),
        "backend restarted:\n{}",
        run.all()
    );
    let cur = site.current()?;
    site.sh(&format!("test -x {ROOT}/releases/{cur}/backend/.venv/bin/python && test -f {ROOT}/releases/{cur}/backend/innercontext/main.py"))?;
    site.assert_serving()
}

/// A deploy of the commit `current` already runs changes nothing, unless asked to. Each half
/// counts on its own: after the frontend-only deploy, the backend still comes from an older
/// commit.
pub fn nothing_to_deploy(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let nothing = |args: &[&str]| -> Result<bool> {
        let before = site.releases()?;
        let run = deploy(&site, s, args)?.ok()?;
        let skipped = run.stderr.contains("nothing to deploy");
        ensure!(
            skipped == (site.releases()? == before),
            "skipped={skipped} but the releases say otherwise:\n{}",
            run.all()
        );
        Ok(skipped)
    };
    ensure!(
        nothing(&["frontend", "--skip-local-checks"])?,
        "the frontend was redeployed"
    );
    ensure!(
        !nothing(&["all", "--skip-local-checks"])?,
        "the older backend was not replaced"
    );
    ensure!(
        nothing(&["all", "--skip-local-checks"])?,
        "an unchanged release was redeployed"
    );
    ensure!(
        !nothing(&["all", "--skip-local-checks", "--redeploy"])?,
        "--redeploy made no release"
    );
    site.assert_serving()
}

/// A build damaged after it passed (`frontend/build/client` deleted, `build/index.js` kept): a
/// deploy with its checks builds again instead of trusting the cache, and the static files
/// answer through nginx. (Issue 22: the cache said `[passed for this tree before]` and the
/// release shipped without `favicon.svg`, `robots.txt` and `_app/version.json`.)
pub fn a_damaged_build_is_rebuilt(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let client = s.dir.join("frontend/build/client");
    ensure!(
        client.is_dir() && s.dir.join("frontend/build/index.js").is_file(),
        "no earlier build in {}: the scenarios before this one build the frontend",
        s.dir
    );
    fs_err::remove_dir_all(&client)?;
    let run = deploy(&site, s, &["all", "--redeploy"])?.ok()?;
    let all = run.all();
    let build = all
        .lines()
        .rfind(|l| l.starts_with("==> build the frontend"))
        .with_context(|| format!("no build step line in:\n{all}"))?
        .to_string();
    let mut answers = Vec::new();
    for path in ["/favicon.svg", "/robots.txt", "/_app/version.json"] {
        let (status, _) = site.get(path)?;
        answers.push(format!("{path} {status}"));
    }
    ensure!(
        answers.iter().all(|a| a.ends_with(" 200")),
        "after a deploy of a build without client/: {} (build step: {build})",
        answers.join(", ")
    );
    ensure!(
        !build.contains("passed for this tree before")
            && build.contains("[rebuilt: frontend/build/client/"),
        "the build step does not say it rebuilt, and why: {build}"
    );
    site.assert_serving()
}

/// `deploy list`: newest first, states, the current mark.
pub fn list_releases(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let run = deploy(&site, s, &["list"])?.ok()?;
    let cur = site.current()?;
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("succeeded") || l.contains("failed"))
        .collect();
    ensure!(rows.len() >= 3, "expected 3+ releases:\n{}", run.stdout);
    ensure!(
        rows[0].starts_with('*') && rows[0].contains(&cur),
        "newest first and current:\n{}",
        run.stdout
    );
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().find(|w| w.len() == 16))
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    ensure!(names == sorted, "not newest first: {names:?}");
    Ok(())
}

/// Roll back (default, then by name) while requests flow through nginx: none fails.
pub fn rollback_while_serving(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let releases = site.releases()?;
    let cur = site.current()?;
    let previous = releases
        .iter()
        .filter(|r| r.as_str() < cur.as_str())
        .max()
        .cloned()
        .context("no older release")?;
    let load = Load::start(&site.app.ip);
    let run = deploy(&site, s, &["rollback"]);
    let (requests, failures) = load.finish();
    run?.ok()?;
    ensure!(
        site.current()? == previous,
        "rollback did not go to {previous}"
    );
    ensure!(
        failures.is_empty(),
        "{} of {requests} requests failed during rollback: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    ensure!(requests > 10, "only {requests} requests made");
    ensure!(site.last_log()?.contains("scope=rollback"));
    // And forward again, by name.
    deploy(&site, s, &["rollback", &cur])?.ok()?;
    ensure!(site.current()? == cur);
    site.assert_serving()
}

/// Pages under load while the API restarts (backend redeploys): none fails. The web server
/// keeps connections to the API open; the API closes its idle ones when it stops, and a page's
/// API call sent on one at that moment must be sent again, not turned into an error page.
pub fn pages_load_while_the_api_restarts(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let wrk = crate::support::Wrk::start(&format!("http://{}/", site.app.ip))?;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(deploy(
            &site,
            s,
            &["backend", "--redeploy", "--skip-local-checks"],
        ));
    }
    let w = wrk.stop()?;
    for run in runs {
        run?.ok()?;
    }
    let node_log = site.sh(
        "journalctl -u innercontext-node --since -5min -o cat --no-pager | grep -F '[api]' | tail -n 5 || true",
    )?;
    ensure!(
        w.non2xx == 0 && w.errors == 0,
        "{} of {} page requests failed during 4 backend redeploys:\n{}the web server's journal:\n{node_log}",
        w.non2xx + w.errors,
        w.requests,
        w.detail
    );
    Ok(())
}

/// A second deploy while the first holds the lock fails at once and names the holder.
pub fn lock_conflict(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    s.commit("another release")?;
    // The first deploy is held before prepare (the test hook), so it still holds the lock
    // however long the second one takes to reach it (the migration lint alone takes seconds:
    // racing a 7 s deploy, the second once found the lock free and succeeded).
    let first = crate::support::paused(
        &site,
        s,
        "prepare",
        &["deploy", "backend", "--skip-local-checks"],
    )?;
    ensure!(site.locked()?, "the first deploy holds no lock");
    let second = deploy(&site, s, &["backend", "--skip-local-checks", "--redeploy"])?.failed()?;
    let msg = second.all();
    ensure!(
        msg.contains("another deploy holds")
            && msg.contains("deploy backend")
            && msg.contains("ago"),
        "{msg}"
    );
    crate::support::resume(&site)?;
    let (status, out) = first.bg.wait(Duration::from_secs(300))?;
    ensure!(status.success(), "the first deploy failed:\n{out}");
    ensure!(!site.locked()?);
    Ok(())
}

/// A migration that fails: `current` untouched, release marked failed, lock released.
pub fn failing_migration(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = site.current()?;
    s.write(
        "backend/alembic/versions/0099_broken.py",
        "\"\"\"A migration that fails.\"\"\"\n\nfrom alembic import op\n\nrevision = \"0099_broken\"\ndown_revision = \"0002_price_history\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.execute(\"SELECT * FROM table_that_does_not_exist\")\n\n\ndef downgrade() -> None:\n    pass\n",
    )?;
    s.commit("broken migration")?;
    let run = deploy(&site, s, &["backend", "--skip-local-checks"])?.failed()?;
    s.undo()?;
    let msg = run.all();
    ensure!(
        msg.contains("database migration") && msg.contains("current was not touched"),
        "{msg}"
    );
    let name = run.release().context("no release name")?;
    ensure!(site.current()? == before, "current moved");
    ensure!(site.state(&name)? == "failed", "release not marked failed");
    ensure!(!site.locked()?, "lock left behind");
    ensure!(site.last_log()?.contains("result=failed"));
    // `deploy log` shows the reason whole and as the job wrote it: the revision's underscores
    // stay, and its end is there (the migration's reason is longer than deploy.log kept).
    let log = deploy(&site, s, &["log", "-n", "1"])?.ok()?;
    let row = log
        .stdout
        .lines()
        .last()
        .context("deploy log printed nothing")?
        .trim_end();
    ensure!(
        row.contains("left at 0002_price_history") && row.ends_with("current was not touched"),
        "deploy log does not show the reason whole, underscores kept: {row}"
    );
    site.assert_serving()
}

/// A backend that crashes on start: health fails after the switch, the deploy switches back,
/// the old release serves, the new one is marked failed.
pub fn failed_health_rolls_back(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = site.current()?;
    let main = "backend/innercontext/main.py";
    let text = s.read(main)?;
    s.write(
        main,
        &format!("{text}\nraise RuntimeError(\"e2e: this release cannot start\")\n"),
    )?;
    s.commit("crash on start")?;
    let run = site
        .command(&s.dir, &["deploy", "backend", "--skip-local-checks"])
        .env("DEPLOY_HEALTH_TIMEOUT", "10")
        .output()?;
    s.undo()?;
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(!run.status.success(), "deploy succeeded:\n{msg}");
    ensure!(
        msg.contains("rolled-back") && msg.contains("journalctl -u innercontext"),
        "{msg}"
    );
    // In CI (the deployer's environment here) the unit's journal lines stay out of the output
    // unless asked for (DEPLOY_JOURNAL=1, see restarts::crash_loop_is_named_at_once); one line
    // says so. They are in the job's private directory on the server.
    ensure!(
        msg.contains(xtask::ui::JOURNAL_HIDDEN) && !msg.contains("e2e: this release cannot start"),
        "the unit's journal lines reached a CI log without DEPLOY_JOURNAL=1:\n{msg}"
    );
    let kept = site.sh(&format!(
        "cat \"$(ls -td {ROOT}/jobs/*/ | head -n 1)journal.innercontext\""
    ))?;
    ensure!(
        kept.contains("e2e: this release cannot start"),
        "the journal tail is not in the job's directory:\n{kept}"
    );
    ensure!(site.current()? == before, "current is not back at {before}");
    let failed = site.releases()?.into_iter().max().unwrap();
    ensure!(site.state(&failed)? == "failed");
    ensure!(!site.locked()?);
    ensure!(site.last_log()?.contains("result=rolled-back"));
    site.assert_serving()
}

/// A worker that starts, then dies a fifth of a second later (no probe can see it): it never
/// says it is ready, so its restart fails, the deploy switches back, and the worker of the old
/// release runs again. (Before the worker told systemd it was ready, only the health check's
/// stability window could catch this; with `DEPLOY_HEALTH_STABLE_MS=0` that deploy succeeded.)
pub fn worker_dying_after_start_rolls_back(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = site.current()?;
    let worker = "backend/innercontext/worker.py";
    let text = s.read(worker)?;
    s.write(
        worker,
        &format!(
            "import time as _t\n_t.sleep(0.2)\nraise SystemExit(\"e2e: the worker dies after start\")\n{text}"
        ),
    )?;
    s.commit("worker dies after start")?;
    let run = site
        .command(&s.dir, &["deploy", "backend", "--skip-local-checks"])
        .env("DEPLOY_HEALTH_TIMEOUT", "10")
        .output()?;
    s.undo()?;
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(!run.status.success(), "deploy succeeded:\n{msg}");
    ensure!(
        msg.contains("rolled-back") && msg.contains("innercontext-pricing-worker"),
        "{msg}"
    );
    ensure!(site.current()? == before, "current is not back at {before}");
    let state = site.sh("systemctl show -p ActiveState --value innercontext-pricing-worker")?;
    ensure!(state.trim() == "active", "the old worker is {state}");
    site.assert_serving()
}

/// Ctrl-C during the upload: lock released, `current` untouched, release marked failed.
pub fn interrupt_mid_upload(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let before = site.current()?;
    // Enough incompressible bytes that the upload is still running when the signal arrives.
    let mut big = vec![0u8; 192 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(s.dir.join("backend/big.bin"), &big)?;
    s.commit("big file")?;
    let log = s.sidecar("interrupt.log");
    let mut bg = Background::start(
        site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]),
        &log,
    )?;
    bg.wait_for("==> upload", Duration::from_secs(120))?;
    bg.signal("INT")?;
    let (status, out) = bg.wait(Duration::from_secs(120))?;
    s.undo()?;
    ensure!(!status.success(), "deploy survived SIGINT:\n{out}");
    ensure!(out.contains("interrupted"), "{out}");
    ensure!(
        !out.contains("==> prepare"),
        "the upload finished before the interrupt:\n{out}"
    );
    ensure!(site.current()? == before, "current moved");
    ensure!(!site.locked()?, "lock left behind");
    let log = site.last_log()?;
    ensure!(log.contains("result=interrupted"), "{log}");
    // The interrupted release is marked failed (the one deploy.log names).
    let release = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("release="))
        .with_context(|| format!("no release in: {log}"))?
        .to_string();
    ensure!(release != before, "deploy.log names current: {log}");
    ensure!(
        site.state(&release)? == "failed",
        "release {release} is {}",
        site.state(&release)?
    );
    site.assert_serving()
}
