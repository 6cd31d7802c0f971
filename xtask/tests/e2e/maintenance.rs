//! Maintenance mode (the shell group; its browser check is in web.rs): `cargo xtask maintenance
//! on|off|status` seen from outside (503, Retry-After, the page with the message escaped), from
//! the server itself and by the deployer's probes; what the app user can make nginx serve
//! through the page's path; and `deploy --maintenance` around a deploy that fails (off after it,
//! left on when it was on before).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::{Scratch, Site, ROOT};
use crate::web::fetch;
use crate::Ctx;

/// The scratch checkout of these scenarios, made on first use.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.maintenance_scratch.is_none() {
        ctx.maintenance_scratch = Some(crate::support::scratch("maint")?);
    }
    Ok(ctx.maintenance_scratch.as_ref().unwrap())
}

/// The group's site with a current release (deployed from the scratch if there is none), on a
/// quiet server with maintenance off.
fn deployed_site(ctx: &mut Ctx) -> Result<Site> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    if site.current_opt()?.is_none() {
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()
            .context("the first deploy of the maintenance scenarios")?;
    }
    crate::support::fresh(&site, s)?;
    ensure!(
        !flag_exists(&site)?,
        "maintenance is on before the scenario"
    );
    Ok(site)
}

fn flag_exists(site: &Site) -> Result<bool> {
    Ok(site
        .sh(&format!(
            "test -e {ROOT}/maintenance.on && echo yes || echo no"
        ))?
        .trim()
        == "yes")
}

/// What the server itself gets for `url` (its HTTP status), as root on the app machine.
fn local_status(site: &Site, url: &str) -> Result<String> {
    Ok(site
        .sh(&format!(
            "curl -s -o /dev/null -m 10 -w '%{{http_code}}' {url}"
        ))?
        .trim()
        .to_string())
}

/// on, the page from outside, the app from the server itself and the probes, status, what the
/// app user can make nginx serve through the page's path, a message refused, off.
pub fn on_off_and_status_from_outside_and_inside(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let s = scratch(ctx)?;
    let result = on_off_and_status(&site, s);
    if result.is_err() {
        // Nothing of this scenario's left switched on for the group's next ones.
        let _ = site.xtask(&s.dir, &["maintenance", "off"]);
    }
    result
}

fn on_off_and_status(site: &Site, s: &Scratch) -> Result<()> {
    let site = site.clone();
    let ip = site.app.ip.clone();
    let host = site.app.name.clone();
    let message = "<script>alert(\"x\")</script> back at 5 & soon";
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; back at 5 &amp; soon";

    let on = site
        .xtask(&s.dir, &["maintenance", "on", "--message", message])?
        .ok()?;
    ensure!(
        on.stdout
            .contains(&format!("maintenance at {host}: ON since"))
            && on.stdout.contains(message),
        "maintenance on did not say it is on:\n{}",
        on.all()
    );
    for path in ["/", "/api/health-check", "/favicon.svg", "/products/1"] {
        let r = fetch(&ip, path, &[])?;
        let body = r.text();
        ensure!(
            r.status == 503 && r.header("retry-after") == Some("120"),
            "GET {path} from outside during maintenance: {} (Retry-After {:?}):\n{body}",
            r.status,
            r.header("retry-after")
        );
        ensure!(
            body.contains("Down for maintenance") && body.contains(escaped),
            "GET {path} during maintenance is not the page with the message escaped:\n{body}"
        );
        ensure!(
            !body.contains("<script>"),
            "the message reached the page unescaped:\n{body}"
        );
        ensure!(
            r.header("x-frame-options") == Some("DENY"),
            "the maintenance page lacks the security headers: {:?}",
            r.headers
        );
    }
    // The page's own name is no way around it.
    let direct = fetch(&ip, "/maintenance.html", &[])?;
    ensure!(
        direct.status == 503,
        "the page's URI answered {}",
        direct.status
    );
    // The server itself and the probes (straight to the app's ports) reach the app.
    for url in [
        "http://127.0.0.1/",
        "http://127.0.0.1/api/health-check",
        "http://127.0.0.1:8000/health-check",
        "http://127.0.0.1:3000/",
    ] {
        let code = local_status(&site, url)?;
        ensure!(
            code == "200",
            "{url} from the server answered {code} during maintenance"
        );
    }
    let status = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    ensure!(
        status.stdout.contains("maintenance: ON since") && status.stdout.contains(message),
        "deploy status does not show maintenance:\n{}",
        status.all()
    );

    // The attacker holds the app user: a link from the page to a file nginx may read and the
    // app user may not answers no such file, and a hard link to it is refused.
    site.sh(&format!(
        "printf 'SECRET-%s\\n' e2e >/etc/nginx/ic-e2e-secret && chown root:www-data /etc/nginx/ic-e2e-secret && chmod 0640 /etc/nginx/ic-e2e-secret \
         && runuser -u innercontext -- ln -sfn /etc/nginx/ic-e2e-secret {ROOT}/maintenance.html"
    ))?;
    let linked = fetch(&ip, "/", &[]);
    let hard = site.sh(&format!(
        "runuser -u innercontext -- ln -f /etc/nginx/ic-e2e-secret {ROOT}/maintenance.html 2>&1 && echo linked || echo refused"
    ));
    site.sh("rm -f /etc/nginx/ic-e2e-secret")?;
    let linked = linked?;
    ensure!(
        !linked.text().contains("SECRET-e2e"),
        "nginx served a file of root's through the app user's link: {}\n{}",
        linked.status,
        linked.text()
    );
    ensure!(
        hard?.trim_end().ends_with("refused"),
        "the app user hard-linked a file of root's as the page"
    );

    // A message over 500 bytes: one line, exit 2, nothing changed on the server.
    let long = "x".repeat(501);
    let refused = site.xtask(&s.dir, &["maintenance", "on", "--message", &long])?;
    ensure!(
        refused.status.code() == Some(2) && refused.all().trim().lines().count() == 1,
        "a 501-byte message was not one usage error:\n{}",
        refused.all()
    );
    let kept = site.sh(&format!("sed -n 's/^message=//p' {ROOT}/maintenance.on"))?;
    ensure!(kept.trim() == message, "the flag changed: {kept}");

    let off = site.xtask(&s.dir, &["maintenance", "off"])?.ok()?;
    ensure!(
        off.stdout.contains(&format!("maintenance at {host}: off")),
        "maintenance off did not say it is off:\n{}",
        off.all()
    );
    site.assert_serving()?;
    let status = site.xtask(&s.dir, &["maintenance", "status"])?.ok()?;
    ensure!(
        status
            .stdout
            .contains(&format!("maintenance at {host}: off")),
        "{}",
        status.all()
    );
    Ok(())
}

/// `deploy --maintenance` whose migration fails: with maintenance on before, the deploy leaves it
/// on; without, the job turns it on for the migration and off again in its record step, and
/// deploy.log says maintenance=yes; a job killed outright leaves it to `deploy unlock`.
pub fn a_failing_deploy_with_maintenance_leaves_it_as_it_was(ctx: &mut Ctx) -> Result<()> {
    let site = deployed_site(ctx)?;
    let s = scratch(ctx)?;
    let before = site.current()?;
    s.write(
        "backend/alembic/versions/0099_broken.py",
        "\"\"\"A migration that fails.\"\"\"\n\nfrom alembic import op\n\nrevision = \"0099_broken\"\ndown_revision = \"0002_price_history\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.execute(\"SELECT * FROM table_that_does_not_exist\")\n\n\ndef downgrade() -> None:\n    pass\n",
    )?;
    s.commit("broken migration")?;
    let deploy = ["deploy", "backend", "--skip-local-checks", "--maintenance"];
    let result = (|| -> Result<()> {
        // On before: the deploy leaves it on, as the person left it.
        site.xtask(&s.dir, &["maintenance", "on", "--message", "planned work"])?
            .ok()?;
        let run = site.xtask(&s.dir, &deploy)?.failed()?;
        ensure!(
            run.all().contains("maintenance was already on"),
            "the deploy did not say maintenance was on:\n{}",
            run.all()
        );
        let kept = site.sh(&format!("sed -n 's/^message=//p' {ROOT}/maintenance.on"))?;
        ensure!(
            kept.trim() == "planned work",
            "maintenance that was on before the deploy is not as it was: message {kept:?}"
        );
        site.xtask(&s.dir, &["maintenance", "off"])?.ok()?;

        // Off before: on for the migration, off again after the failure.
        let run = site.xtask(&s.dir, &deploy)?.failed()?;
        let out = run.all();
        ensure!(
            out.contains("maintenance on (nginx answers 503)")
                && out.contains("database migration"),
            "the deploy did not turn maintenance on before its migration:\n{out}"
        );
        ensure!(
            !flag_exists(&site)?,
            "maintenance is still on after the failed deploy:\n{out}"
        );
        let last = site.last_log()?;
        ensure!(
            last.contains("result=failed") && last.contains("maintenance=yes"),
            "deploy.log does not say maintenance=yes: {last}"
        );
        ensure!(site.current()? == before, "current moved");
        site.assert_serving()?;

        // A job killed outright with maintenance on (held before its migration): its flag
        // stays until its lock is settled, here by `deploy unlock`, which turns it off.
        let held = crate::support::paused(&site, s, "migrate", &deploy)?;
        ensure!(
            flag_exists(&site)?,
            "maintenance is not on while the deploy is held before its migration"
        );
        crate::support::kill_job(&site, &held)?;
        let (status, out) = held.bg.wait(Duration::from_secs(120))?;
        ensure!(!status.success(), "the deployer succeeded:\n{out}");
        site.xtask(&s.dir, &["deploy", "unlock", "--yes"])?.ok()?;
        ensure!(
            !flag_exists(&site)?,
            "maintenance is still on after the killed job's lock was settled"
        );
        ensure!(site.current()? == before, "current moved");
        site.assert_serving()
    })();
    s.undo()?;
    if result.is_err() {
        let _ = site.xtask(&s.dir, &["maintenance", "off"]);
    }
    result
}
