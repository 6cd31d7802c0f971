//! Security scenarios on the test host: attacks by the app user (`innercontext`, i.e. anyone
//! holding the deploy key or running code in the app) against root's work, and the properties
//! an attacker looks for (hardened units, hidden API docs, narrow log access, TLS).
//!
//! Each attack runs as innercontext with `runuser`, exactly what the app user can do, then lets
//! root's side (setup-server, systemd) do its work and checks that nothing outside the app
//! user's own files changed. The shared site is left as it was found.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use camino::Utf8PathBuf;
use xtask::quote;

use crate::support::{repo, Run, Site, ROOT};
use crate::Ctx;

/// Run a bash script as the app user on the app machine (from a root ssh session).
fn as_app(site: &Site, script: &str) -> Result<String> {
    site.sh(&format!(
        "cd / && runuser -u innercontext -- bash -c {}",
        quote::sh(script)
    ))
}

/// The shared site, provisioned and serving a release.
fn deployed(ctx: &mut Ctx) -> Result<Site> {
    let site = ctx.site()?;
    if site.current_opt()?.is_none() {
        let s = crate::support::scratch("security")?;
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()
            .context("the first deploy of the security scenarios")?;
    }
    Ok(site)
}

/// `setup-server` with the site's key and env files, plus `extra`.
fn setup(site: &Site, extra: &[&str]) -> Result<Run> {
    let mut args = site.env.setup_server_args();
    args.extend(extra);
    site.xtask(&repo(), &args)
}

/// What root's side must never change about a path: type, mode, owner, size, inode, change
/// times, and either the content or (`atime`: for files given an old atime first) whether
/// anything read it at all (relatime moves an atime older than the mtime on any read).
fn victim(site: &Site, path: &str, atime: bool) -> Result<String> {
    let p = quote::sh(path);
    let script = if atime {
        format!("stat -c '%F %a %U:%G %s %i %Y %Z %X' {p}")
    } else {
        format!(
            "stat -c '%F %a %U:%G %s %i %Y %Z' {p}; if [ -f {p} ]; then sha256sum <{p} | cut -c1-16; fi"
        )
    };
    Ok(site.sh(&script)?.trim().to_string())
}

/// Every step of a run that was refused before any change.
fn refused(run: &Run, needles: &[&str]) -> Result<()> {
    let out = run.all();
    ensure!(!run.status.success(), "setup-server succeeded:\n{out}");
    for n in needles {
        ensure!(out.contains(n), "expected '{n}' in:\n{out}");
    }
    ensure!(
        !out.contains("[changed]"),
        "a step changed something:\n{out}"
    );
    Ok(())
}

/// innercontext plants symlinks where root's setup-server works (`~/.ssh/authorized_keys ->
/// /etc/hostname`, `~/.ssh -> a root directory`, `shared/backend -> a root directory holding a
/// .env`): setup-server refuses before any change, names what it found and what to do, and the
/// targets are untouched (not even read). The home links are planted in a home as setup-server
/// left it before it made the home root's (the app user's: given back to it by hand here).
pub fn setup_server_never_follows_app_links(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let home = "/home/innercontext";
    site.sh("set -e
         install -d -m 0755 -o root -g root /var/lib/e2e-victim /var/lib/e2e-victim-backend
         printf 'root-owned\\n' >/var/lib/e2e-victim/authorized_keys
         umask 077; printf 'E2E_ROOT_SECRET=never-read\\n' >/var/lib/e2e-victim-backend/.env
         touch -a -d 2000-01-01 /var/lib/e2e-victim-backend/.env")?;
    let hostname = site.sh("cat /etc/hostname")?;
    let legacy = format!("{home} {home}/.ssh {home}/.ssh/authorized_keys");
    site.sh(&format!("chown innercontext:innercontext {legacy}"))?;
    let result = (|| -> Result<()> {
        // 1. authorized_keys -> /etc/hostname
        let before = victim(&site, "/etc/hostname", false)?;
        as_app(
            &site,
            "cd ~/.ssh && mv authorized_keys authorized_keys.real && ln -s /etc/hostname authorized_keys",
        )?;
        let run = setup(&site, &[])?;
        let after = victim(&site, "/etc/hostname", false)?;
        as_app(
            &site,
            "cd ~/.ssh && rm authorized_keys && mv authorized_keys.real authorized_keys",
        )?;
        ensure!(
            after == before,
            "setup-server changed /etc/hostname through innercontext's authorized_keys link: {before} -> {after}\n{}",
            run.all()
        );
        refused(
            &run,
            &[
                &format!("{home}/.ssh/authorized_keys is a symlink to /etc/hostname"),
                "nothing was changed",
            ],
        )?;

        // 2. ~/.ssh -> a root directory
        let before = (
            victim(&site, "/var/lib/e2e-victim", false)?,
            victim(&site, "/var/lib/e2e-victim/authorized_keys", false)?,
        );
        as_app(
            &site,
            "cd ~ && mv .ssh .ssh.real && ln -s /var/lib/e2e-victim .ssh",
        )?;
        let run = setup(&site, &[])?;
        let after = (
            victim(&site, "/var/lib/e2e-victim", false)?,
            victim(&site, "/var/lib/e2e-victim/authorized_keys", false)?,
        );
        as_app(&site, "cd ~ && rm .ssh && mv .ssh.real .ssh")?;
        ensure!(
            after == before,
            "setup-server changed /var/lib/e2e-victim through innercontext's .ssh link: {before:?} -> {after:?}\n{}",
            run.all()
        );
        refused(
            &run,
            &[
                &format!("{home}/.ssh is a symlink to /var/lib/e2e-victim"),
                "nothing was changed",
            ],
        )?;

        // 3. shared/backend -> a root directory with a .env in it
        let before = victim(&site, "/var/lib/e2e-victim-backend/.env", true)?;
        as_app(
            &site,
            &format!("cd {ROOT}/shared && mv backend backend.real && ln -s /var/lib/e2e-victim-backend backend"),
        )?;
        let run = setup(&site, &[])?;
        let after = victim(&site, "/var/lib/e2e-victim-backend/.env", true)?;
        as_app(
            &site,
            &format!("cd {ROOT}/shared && rm backend && mv backend.real backend"),
        )?;
        ensure!(
            after == before,
            "setup-server touched or read /var/lib/e2e-victim-backend/.env through innercontext's shared/backend link: {before} -> {after}\n{}",
            run.all()
        );
        refused(
            &run,
            &[
                &format!("{ROOT}/shared/backend is a symlink to /var/lib/e2e-victim-backend"),
                "nothing was changed",
            ],
        )?;
        Ok(())
    })();
    // Put the host back whatever happened (including a hostname an old setup-server changed).
    site.sh(&format!(
        "printf '%s' {} >/etc/hostname; chown root:root /etc/hostname; chmod 644 /etc/hostname
         rm -rf /var/lib/e2e-victim /var/lib/e2e-victim-backend
         chown -h root:root {legacy}",
        quote::sh(&hostname)
    ))?;
    result?;
    // With the links gone, setup-server is satisfied again and has nothing to change.
    let run = setup(&site, &[])?.ok()?;
    ensure!(!run.all().contains("[changed]"), "{}", run.all());
    Ok(())
}

/// The pids of a unit's control group (empty when it is not running).
fn unit_pids(site: &Site, unit: &str) -> Result<Vec<String>> {
    let out = site.sh(&format!(
        "cg=$(systemctl show -p ControlGroup --value {unit}); cat /sys/fs/cgroup$cg/cgroup.procs 2>/dev/null || true"
    ))?;
    Ok(out.split_whitespace().map(str::to_string).collect())
}

/// Poll until `probe` (a root script) succeeds, or fail after `timeout`.
fn wait_until(site: &Site, what: &str, probe: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = site.sh(&format!("if {probe}; then echo yes; else echo no; fi"))?;
        if ok.trim() == "yes" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?} ({probe})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// innercontext points its release's frontend env link at a root-only KEY=VALUE file and
/// restarts the web unit through sudo: the values never reach the unit's processes (systemd
/// no longer reads the file as root; node reads it as innercontext and cannot). After the link
/// is restored the site serves again.
pub fn env_file_is_never_read_by_root(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    // systemd itself reads no env file for any unit: what it loaded is what it says.
    for u in xtask::contract::UNITS {
        let files = site.sh(&format!(
            "systemctl show -p EnvironmentFiles --value {}.service",
            u.name
        ))?;
        ensure!(
            files.trim().is_empty(),
            "systemd (root) reads an environment file for {}: {}",
            u.name,
            files.trim()
        );
    }
    let secret = format!("e2e-stolen-{}", std::process::id());
    let link = format!("{ROOT}/current/frontend/.env.production");
    let original = site.sh(&format!("readlink {link}"))?.trim().to_string();
    ensure!(!original.is_empty(), "{link} is not a link");
    site.sh(&format!(
        "umask 077; printf 'PUBLIC_API_BASE=http://127.0.0.1:8000\\nE2E_STOLEN=%s\\n' {secret} >/root/e2e-secret.env"
    ))?;
    let cursor = site
        .sh("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")?
        .trim()
        .to_string();
    let result = (|| -> Result<()> {
        as_app(
            &site,
            &format!("ln -sfn /root/e2e-secret.env {link} && sudo -n /usr/bin/systemctl restart innercontext-node"),
        )?;
        // Type=exec: restart returns once node was executed, so its environment is in place.
        let mut seen = Vec::new();
        for pid in unit_pids(&site, "innercontext-node.service")? {
            let env = site.sh(&format!(
                "tr '\\0' '\\n' </proc/{pid}/environ 2>/dev/null || true"
            ))?;
            if env.contains(&secret) {
                seen.push(pid);
            }
        }
        ensure!(
            seen.is_empty(),
            "the root-only file's values are in the environment of innercontext-node (pids {seen:?}): systemd read it as root"
        );
        // And the affirmative half: node itself, as innercontext, was refused the file (it says
        // `.env.production: not found`), so no process is empty for another reason.
        let journal = || {
            site.sh(&format!(
                "journalctl --after-cursor={} -u innercontext-node -o cat --no-pager",
                quote::sh(&cursor)
            ))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut text = journal()?;
        while !text.contains(".env.production: not found") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            text = journal()?;
        }
        ensure!(
            text.contains(".env.production: not found"),
            "node never said it could not read the root-only file; the unit's journal:\n{text}"
        );
        ensure!(
            !text.contains(&secret),
            "the secret reached the unit's journal:\n{text}"
        );
        Ok(())
    })();
    as_app(&site, &format!("ln -sfn {} {link}", quote::sh(&original)))?;
    // Stopped first: node may be waiting for its next automatic restart (RestartSec), which
    // would come after reset-failed cleared the count and leave NRestarts at 1 for the next
    // scenario (units_are_hardened failed so in a full run: `innercontext-node active 1`).
    site.sh(
        "rm -f /root/e2e-secret.env; systemctl stop innercontext-node.service; \
         systemctl reset-failed innercontext-node.service",
    )?;
    as_app(
        &site,
        "sudo -n /usr/bin/systemctl restart innercontext-node",
    )?;
    wait_until(
        &site,
        "the web unit after restoring its env link",
        "curl -fsS -o /dev/null -m 2 http://127.0.0.1:3000/",
        Duration::from_secs(30),
    )?;
    result?;
    site.assert_serving()?;
    Ok(())
}

/// What a job writes is private: `jobs/` and each job's directory 0700 (tool output, journal
/// tails, events), deploy.log 0640, all the app user's (docs/security.md promises it).
pub fn job_files_are_private(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let out = site.sh(&format!(
        "stat -c '%a %U %n' {ROOT}/jobs {ROOT}/jobs/* {ROOT}/deploy.log"
    ))?;
    let mut jobs = 0;
    for line in out.lines() {
        let mut w = line.splitn(3, ' ');
        let (mode, owner, path) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
        );
        let want = if path.ends_with("/deploy.log") {
            "640"
        } else {
            jobs += 1;
            "700"
        };
        ensure!(
            mode == want && owner == "innercontext",
            "{path} is {mode} {owner}, want {want} innercontext:\n{out}"
        );
    }
    ensure!(jobs >= 2, "no job directory under {ROOT}/jobs:\n{out}");
    Ok(())
}

/// `systemd-analyze security` rates every service "OK" (at most 3.0) on the test host, and the
/// hardened units still serve: pages, API reads and writes, the worker's loop.
pub fn units_are_hardened(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let mut scores = BTreeMap::new();
    for unit in xtask::setup_server::services() {
        let out = site.sh(&format!(
            "systemd-analyze security --no-pager --threshold=30 {unit} 2>&1; echo rc=$?"
        ))?;
        let score = out
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok())
            .with_context(|| format!("no exposure level for {unit}:\n{out}"))?;
        ensure!(
            score <= 3.0 && out.trim_end().ends_with("rc=0"),
            "{unit} is rated {score} (above 3.0, not OK):\n{out}"
        );
        scores.insert(unit, score);
    }
    // Everything still works under the restrictions (the API writes, the SSR page reads).
    site.assert_serving()?;
    let created = site.sh(
        "curl -fsS -X POST -H 'content-type: application/json' -d '{\"name\":\"hardened kettle\"}' http://127.0.0.1/api/products",
    )?;
    ensure!(created.contains("hardened kettle"), "{created}");
    let (status, page) = site.get("/")?;
    ensure!(
        status == 200 && page.contains("hardened kettle"),
        "the page does not list the new product ({status})"
    );
    let state = site.sh(
        "for u in innercontext innercontext-node innercontext-pricing-worker; do
             echo \"$u $(systemctl is-active $u) $(systemctl show -p NRestarts --value $u)\"
         done",
    )?;
    ensure!(
        state.lines().all(|l| l.ends_with(" active 0")),
        "units: {state}"
    );
    println!("      exposure: {scores:?}");
    Ok(())
}

/// Through nginx the API shows no docs and a health check without detail; on the server's
/// loopback the health check still names the schema revision (the deployer reads it there).
pub fn api_docs_and_health_detail_are_private(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    for path in ["/api/docs", "/api/redoc", "/api/openapi.json"] {
        let (status, _) = site.get(path)?;
        ensure!(status == 404, "{path} answered {status} through nginx");
    }
    let (status, body) = site.get("/api/health-check")?;
    ensure!(
        status == 200 && body.trim() == r#"{"status":"ok"}"#,
        "health check through nginx: {status} {body}"
    );
    let local = site.sh("curl -fsS http://127.0.0.1:8000/health-check")?;
    ensure!(
        local.contains("\"revision\":\"0002_price_history\"")
            && local.contains("\"database\":\"ok\""),
        "health check on loopback: {local}"
    );
    Ok(())
}

/// The deploy user reads its units' logs only through the root-owned wrapper, which refuses
/// anything but its documented arguments; the system journal is closed to it.
pub fn journal_access_is_narrow(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let groups = site.sh("id -nG innercontext")?;
    ensure!(
        !groups.split_whitespace().any(|g| g == "systemd-journal"),
        "innercontext is in systemd-journal: {groups}"
    );
    let system = as_app(&site, "journalctl -u ssh -n 20 --no-pager -q 2>&1 || true")?;
    ensure!(
        !system.contains("sshd["),
        "innercontext reads the system journal:\n{system}"
    );
    let wrapper = site.sh("stat -c '%a %U:%G' /usr/local/sbin/innercontext-journal")?;
    ensure!(wrapper.trim() == "755 root:root", "wrapper: {wrapper}");
    let own = as_app(
        &site,
        "sudo -n /usr/local/sbin/innercontext-journal -n 50 -o short-iso innercontext.service innercontext-node",
    )?;
    ensure!(
        own.contains("Uvicorn running") || own.contains("Started innercontext"),
        "no unit lines from the wrapper:\n{own}"
    );
    ensure!(
        !own.contains("sshd["),
        "the wrapper showed other units:\n{own}"
    );
    for bad in [
        "ssh",
        "-n 5x innercontext",
        "-n 1000000 innercontext",
        "--since '$(id)' innercontext",
        "innercontext --grep x",
        "-o verbose innercontext",
        "-u ssh innercontext",
        "",
    ] {
        let out = as_app(
            &site,
            &format!("sudo -n /usr/local/sbin/innercontext-journal {bad} 2>&1; echo rc=$?"),
        )?;
        ensure!(
            out.trim_end().ends_with("rc=2") && out.contains("innercontext-journal:"),
            "the wrapper accepted '{bad}':\n{out}"
        );
    }
    // -f follows: a restart of the worker shows up while it is being followed (from a --since
    // taken before the restart, so a late start of journalctl cannot miss it).
    let followed = as_app(
        &site,
        "since=$(date '+%Y-%m-%d %H:%M:%S')
         log=$(mktemp)
         timeout 30 sudo -n /usr/local/sbin/innercontext-journal -f --since \"$since\" innercontext-pricing-worker >\"$log\" 2>&1 &
         pid=$!
         sudo -n /usr/bin/systemctl restart innercontext-pricing-worker
         for _ in $(seq 200); do grep -q 'pricing worker started' \"$log\" && break; sleep 0.1; done
         if kill -0 \"$pid\" 2>/dev/null; then echo STILL-FOLLOWING; fi
         kill \"$pid\" 2>/dev/null || true
         wait \"$pid\" 2>/dev/null || true
         cat \"$log\"; rm -f \"$log\"",
    )?;
    ensure!(
        followed.contains("pricing worker started") && followed.contains("STILL-FOLLOWING"),
        "following the worker's journal showed no restart:\n{followed}"
    );
    Ok(())
}

/// `setup-server --tls-cert --tls-key` with a self-signed certificate made now: the key lands
/// 0600 root, nginx answers https with it (checked with the certificate as the only CA), a
/// second run changes nothing, `--tls-redirect` sends plain http to https, and the key's
/// contents never appear in the output.
pub fn tls_with_a_self_signed_certificate(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let dir = Utf8PathBuf::from(format!(
        "/tmp/innercontext-e2e-tls-{}-{}",
        crate::run_id(),
        std::process::id()
    ));
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ip = site.app.ip.clone();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=innercontext-e2e"])
        .args(["-addext", &format!("subjectAltName=IP:{ip}")])
        .args(["-keyout", key.as_str(), "-out", cert.as_str()])
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_text = fs_err::read_to_string(&key)?;
    let key_line = key_text.lines().nth(1).context("empty key")?.to_string();
    let https = |path: &str| -> Result<(String, String)> {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/stderr", "-w", "%{http_code}", "-m", "10"])
            .args(["--cacert", cert.as_str()])
            .arg(format!("https://{ip}{path}"))
            .output()?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let result = (|| -> Result<()> {
        let run = setup(
            &site,
            &["--tls-cert", cert.as_str(), "--tls-key", key.as_str()],
        )?
        .ok()?;
        ensure!(
            run.all()
                .lines()
                .any(|l| l.contains("[changed]") && l.contains(" tls ")),
            "{}",
            run.all()
        );
        ensure!(
            !run.all().contains(&key_line),
            "the key appeared in the output"
        );
        let modes = site.sh(
            "stat -c '%n %a %U:%G' /etc/ssl/innercontext /etc/ssl/innercontext/cert.pem /etc/ssl/innercontext/key.pem /etc/nginx/innercontext.d/tls.conf",
        )?;
        let want = "/etc/ssl/innercontext 755 root:root\n/etc/ssl/innercontext/cert.pem 644 root:root\n/etc/ssl/innercontext/key.pem 600 root:root\n/etc/nginx/innercontext.d/tls.conf 644 root:root";
        ensure!(modes.trim() == want, "TLS files:\n{modes}");
        wait_until(
            &site,
            "nginx listening on :443",
            "ss -Htln 'sport = :443' | grep -q .",
            Duration::from_secs(10),
        )?;
        let (code, body) = https("/api/health-check")?;
        ensure!(code == "200", "https answered {code}: {body}");
        let (code, body) = https("/")?;
        ensure!(code == "200", "https / answered {code}: {body}");
        site.assert_serving()?; // plain http still serves without --tls-redirect

        let run = setup(
            &site,
            &["--tls-cert", cert.as_str(), "--tls-key", key.as_str()],
        )?
        .ok()?;
        ensure!(!run.all().contains("[changed]"), "{}", run.all());

        setup(
            &site,
            &[
                "--tls-cert",
                cert.as_str(),
                "--tls-key",
                key.as_str(),
                "--tls-redirect",
            ],
        )?
        .ok()?;
        wait_until(
            &site,
            "plain http redirected to https",
            &format!(
                "curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{ip}/x | grep -qx '301 https://{ip}/x'"
            ),
            Duration::from_secs(10),
        )?;
        let (code, _) = https("/api/health-check")?;
        ensure!(code == "200", "https after the redirect answered {code}");
        Ok(())
    })();
    // Back to plain http, as the other scenarios expect.
    site.sh(
        "rm -rf /etc/nginx/innercontext.d/tls.conf /etc/ssl/innercontext && systemctl reload nginx",
    )?;
    wait_until(
        &site,
        "plain http after removing TLS",
        &format!("curl -fsS -o /dev/null http://{ip}/api/health-check"),
        Duration::from_secs(10),
    )?;
    let _ = fs_err::remove_dir_all(&dir);
    result
}

/// Env files never travel: `.env.local`, `.env.production` and a bare `.env` committed in both
/// halves (forced past .gitignore, the way a hurried commit does it) are not on the server
/// after a deploy; the backend's `.env.example` is.
pub fn env_files_never_travel(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-env")?;
    let planted = [
        "backend/.env.local",
        "backend/innercontext/.env.production",
        "frontend/.env.local",
        "frontend/src/.env",
    ];
    for p in planted {
        s.write(p, "E2E_SECRET_FROM_A_LAPTOP=1\n")?;
    }
    let mut add = vec!["add", "-f"];
    add.extend(planted);
    s.git(&add)?;
    s.commit("env files committed by mistake")?;
    let tracked = s.git(&["ls-files", "--", "*.env*", "*/.env*"])?;
    for p in planted {
        ensure!(tracked.contains(p), "{p} is not committed:\n{tracked}");
    }
    site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
        .ok()?;
    let cur = site.current()?;
    let found = site.sh(&format!(
        "cd {ROOT}/releases/{cur} && find . -name '.env*' ! -type l | LC_ALL=C sort"
    ))?;
    // Only the examples (the frontend ships its build, not its sources).
    ensure!(
        found.split_whitespace().collect::<Vec<_>>() == ["./backend/.env.example"],
        "env files in release {cur}:\n{found}"
    );
    let leaked = site.sh(&format!(
        "grep -rl E2E_SECRET_FROM_A_LAPTOP {ROOT}/releases {ROOT}/.trash 2>/dev/null || true"
    ))?;
    ensure!(
        leaked.trim().is_empty(),
        "the secret reached the server:\n{leaked}"
    );
    Ok(())
}

/// The deployer checks host keys strictly whatever the user's ssh config says: with
/// `StrictHostKeyChecking accept-new` and an empty known_hosts file, a deploy refuses to talk to
/// the (unknown) server, says so in one line, and the known_hosts file stays empty.
pub fn host_keys_are_checked_strictly(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-hostkey")?;
    let known = s.sidecar("known_hosts");
    fs_err::write(&known, "")?;
    // ssh takes the first value it reads for an option: these, before the machine's config.
    let lenient = format!(
        "StrictHostKeyChecking accept-new\nUserKnownHostsFile {known}\n{}",
        fs_err::read_to_string(&site.env.ssh_config)?
    );
    let config_path = s.sidecar("ssh_config");
    fs_err::write(&config_path, lenient)?;
    let mut cmd = site.command(&s.dir, &["deploy", "list"]);
    cmd.env("DEPLOY_SSH_CONFIG", &config_path);
    let run = Run::capture(cmd)?;
    let out = run.all();
    ensure!(
        !run.status.success(),
        "the deploy talked to an unknown host:\n{out}"
    );
    ensure!(
        out.to_ascii_lowercase().contains("host key"),
        "the error does not say it is about the host key:\n{out}"
    );
    let after = fs_err::read_to_string(&known)?;
    ensure!(after.is_empty(), "known_hosts was written:\n{after}");
    Ok(())
}

/// An ssh login of the deploy user with the site's key, running `true` (no terminal), as a
/// deploy logs in.
fn deploy_login(site: &Site) -> Result<()> {
    let out = Command::new("ssh")
        .args(
            site.app
                .ssh_args(Some("innercontext"), &["true".to_string()]),
        )
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "the deploy user's ssh login failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The recipe of issue 26: innercontext puts a line at the top of its `~/.bashrc`, writes a
/// `~/.ssh/rc` and makes a new `~/.profile`, each writing a marker; the deployer's next ssh
/// login (the same login a deploy makes) would run them as the deploy user, before anything the
/// deployer sends. Every write is refused (the home, `.ssh` and the start-up files are root's)
/// and a login leaves no marker; the deploy user's commands still work from that home (deploy
/// status, deploy log, logs). About 8 s on the group's deployed site.
pub fn deploy_login_cannot_be_hooked(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let home = "/home/innercontext";
    let mark = format!("{ROOT}/e2e-hooked");
    // Root's copy of the start-up files as they are, put back if the attack got through.
    site.sh(&format!(
        "rm -rf {mark}-* /root/e2e-home && mkdir /root/e2e-home
         cd {home} && cp -a .bashrc .profile .ssh /root/e2e-home/ 2>/dev/null || true"
    ))?;
    let attack = format!(
        r#"cd ~
        hook() {{ printf '%s\n' "touch {mark}-$1"; }}
        new=$(hook bashrc; cat .bashrc 2>/dev/null || true)
        if printf '%s\n' "$new" >.bashrc 2>/dev/null; then echo "wrote ~/.bashrc"
        elif printf '%s\n' "$new" >.bashrc.e2e 2>/dev/null && mv -f .bashrc.e2e .bashrc; then echo "replaced ~/.bashrc"; fi
        if hook rc >.ssh/rc 2>/dev/null; then echo "wrote ~/.ssh/rc"; fi
        rm -f .profile 2>/dev/null || true
        if hook profile >.profile 2>/dev/null; then echo "created ~/.profile"; fi
        true"#
    );
    let written = as_app(&site, &attack)?;
    // The next login of the deploy user, as a deploy makes it (a command, no terminal).
    let login = deploy_login(&site);
    let ran = site.sh(&format!(
        "cd {ROOT} && ls -1 e2e-hooked-* 2>/dev/null || true"
    ))?;
    let written: Vec<&str> = written.lines().collect();
    let ran: Vec<&str> = ran.lines().collect();
    if !written.is_empty() {
        site.sh(&format!(
            "cd {home} && rm -f .ssh/rc .bashrc.e2e && cp -a /root/e2e-home/. . ; rm -rf {mark}-* /root/e2e-home"
        ))?;
    }
    login?;
    ensure!(
        written.is_empty() && ran.is_empty(),
        "innercontext hooked the deploy user's ssh login: {}; the next login ran: {}",
        written.join(", "),
        if ran.is_empty() {
            "nothing".to_string()
        } else {
            ran.join(", ")
        }
    );
    let owners = site.sh(&format!(
        "cd {home} && stat -c '%n %a %U:%G' . .ssh .ssh/authorized_keys .bashrc .profile .bash_logout"
    ))?;
    for line in owners.lines() {
        ensure!(
            line.ends_with(" root:root"),
            "not root's in innercontext's home: {line}"
        );
    }
    site.sh("rm -rf /root/e2e-home")?;
    // The deploy user keeps no state in its home: its commands work as before.
    for args in [
        &["deploy", "status"][..],
        &["deploy", "log", "-n", "2"],
        &["logs", "api", "-n", "1"],
    ] {
        site.xtask(&repo(), args)?.ok().with_context(|| {
            format!(
                "cargo xtask {} with a home the deploy user cannot write",
                args.join(" ")
            )
        })?;
    }
    Ok(())
}

/// The recipe of issue 26: innercontext adds a key to its `authorized_keys` (a key of its own, to
/// come back after the deploy key is rotated); setup-server, with `--deploy-key` and with no key
/// flag, leaves it. Now the app user cannot write the file (the key is added by hand as root, as
/// on a host set up before), setup-server writes the file in full from the recorded set and names
/// the key it removed; the deployer still logs in; `--add-deploy-key` (a `from=` line) keeps both,
/// and the site's key alone is authorized at the end. About 25 s (four setup-server runs).
pub fn foreign_deploy_keys_are_removed(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let ak = "/home/innercontext/.ssh/authorized_keys";
    let dir = Utf8PathBuf::from(format!("/tmp/innercontext-e2e-keys-{}", std::process::id()));
    fs_err::create_dir_all(&dir)?;
    let key = dir.join("intruder");
    let _ = fs_err::remove_file(&key);
    let _ = fs_err::remove_file(format!("{key}.pub"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e-intruder", "-f"])
        .arg(key.as_str())
        .status()?;
    ensure!(status.success(), "ssh-keygen failed");
    let public = fs_err::read_to_string(format!("{key}.pub"))?
        .trim()
        .to_string();
    let blob = public.split_whitespace().nth(1).unwrap_or("").to_string();
    let fingerprint = Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(format!("{key}.pub"))
        .output()?;
    let fingerprint = String::from_utf8(fingerprint.stdout)?;
    let fingerprint = fingerprint
        .split_whitespace()
        .nth(1)
        .context("ssh-keygen -l printed no fingerprint")?
        .to_string();
    // The key added to authorized_keys: by innercontext if it can, else by hand as root.
    let plant = |site: &Site| -> Result<&'static str> {
        let line = quote::sh(&public);
        let by_app = as_app(
            site,
            &format!(
                "if printf '%s\\n' {line} >>{ak} 2>/dev/null; then echo yes; else echo no; fi"
            ),
        )?;
        if by_app.trim() == "yes" {
            return Ok("innercontext");
        }
        site.sh(&format!("printf '%s\\n' {line} >>{ak}"))?;
        Ok("root")
    };
    let holds = |site: &Site, what: &str| -> Result<bool> {
        Ok(site
            .sh(&format!("grep -cF -- {} {ak} || true", quote::sh(what)))?
            .trim()
            != "0")
    };
    let removed = |run: &Run| -> Result<()> {
        let out = run.all();
        ensure!(
            out.contains(&format!("removed ED25519 {fingerprint} e2e-intruder")),
            "setup-server did not name the key it removed (ED25519 {fingerprint} e2e-intruder):\n{out}"
        );
        Ok(())
    };
    let result = (|| -> Result<()> {
        // 1. setup-server --deploy-key (the site's key).
        let who = plant(&site)?;
        let run = setup(&site, &[])?.ok()?;
        ensure!(
            !holds(&site, &blob)?,
            "setup-server --deploy-key left the key {who} added to {ak} (e2e-intruder):\n{}",
            site.sh(&format!("cat {ak}"))?
        );
        removed(&run)?;
        ensure!(
            who == "root",
            "innercontext could append a key to {ak} (setup-server removed it, but it was in force until then)"
        );
        // 2. setup-server with no key flag keeps the recorded set.
        plant(&site)?;
        let run = site.xtask(&repo(), &["setup-server"])?.ok()?;
        ensure!(
            !holds(&site, &blob)?,
            "setup-server (no key flag) left the key added to {ak}"
        );
        removed(&run)?;
        // The deployer still logs in with the recorded key.
        deploy_login(&site).context("after setup-server with no key flag")?;
        // 3. --add-deploy-key appends to the recorded set, a from= line kept as given.
        let restricted = dir.join("restricted.pub");
        let line = format!("from=\"127.0.0.1\" {public}");
        fs_err::write(&restricted, format!("{line}\n"))?;
        let run = site
            .xtask(
                &repo(),
                &["setup-server", "--add-deploy-key", restricted.as_str()],
            )?
            .ok()?;
        ensure!(
            holds(&site, &line)?,
            "--add-deploy-key did not authorize '{line}':\n{}\n{}",
            site.sh(&format!("cat {ak}"))?,
            run.all()
        );
        let site_key = fs_err::read_to_string(site.app.public_key())?;
        let site_blob = site_key.split_whitespace().nth(1).unwrap_or("").to_string();
        ensure!(
            holds(&site, &site_blob)?,
            "--add-deploy-key dropped the recorded key"
        );
        deploy_login(&site).context("after setup-server --add-deploy-key")?;
        Ok(())
    })();
    // Back to the site's key alone, whatever happened (a key left behind is removed and named).
    let back = setup(&site, &[])?.ok()?;
    let keys = site.sh(&format!("grep -c '^[^#]' {ak} || true"))?;
    let _ = fs_err::remove_dir_all(&dir);
    result?;
    removed(&back)?;
    ensure!(
        keys.trim() == "1",
        "{ak} holds {} keys after setup-server --deploy-key",
        keys.trim()
    );
    Ok(())
}

/// A stat line per path (owner, mode, inode, change time) and the names in the directory: what
/// a refused setup-server must leave exactly as it was.
fn unchanged_view(site: &Site, dir: &str) -> Result<String> {
    let d = quote::sh(dir);
    // The children's change times too, for a directory nothing else writes to.
    let children = if dir == "/" {
        String::new()
    } else {
        format!("{d}/*")
    };
    site.sh(&format!(
        "stat -c '%n %a %U:%G %i %Z' {d} {children}; ls -A {d} | head -n 50; \
         stat -c '%n %Y' /usr/local/lib/systemd/system/innercontext.service /etc/nginx/sites-available/innercontext"
    ))
}

/// A mistaken `DEPLOY_ROOT` never hands a system directory to the app user: `/usr/local` (not
/// empty, root's: setup-server used to chown it to innercontext, who could then replace the log
/// reader sudo runs as root) and `/` are refused before any change, naming the owner and a few
/// entries; /usr/local, the units and the nginx site are as they were.
pub fn a_system_directory_is_never_adopted_as_the_deploy_root(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    for root in ["/usr/local", "/"] {
        let before = unchanged_view(&site, root)?;
        let mut cmd = site.command(&repo(), &site.env.setup_server_args());
        cmd.env("DEPLOY_ROOT", root);
        let run = Run::capture(cmd)?;
        let after = unchanged_view(&site, root)?;
        ensure!(
            after == before,
            "setup-server with DEPLOY_ROOT={root} changed the server:\n--- before\n{before}\n--- after\n{after}\n--- its output\n{}",
            run.all()
        );
        let out = run.all();
        ensure!(
            !run.status.success(),
            "setup-server accepted DEPLOY_ROOT={root}:\n{out}"
        );
        ensure!(
            !out.contains("[changed]"),
            "a step changed something:\n{out}"
        );
        if root == "/usr/local" {
            ensure!(
                out.contains("/usr/local is root's") && out.contains("(bin, etc, "),
                "the refusal does not name the owner and the entries:\n{out}"
            );
        } else {
            ensure!(
                out.contains("DEPLOY_ROOT '/'"),
                "the refusal does not name DEPLOY_ROOT '/':\n{out}"
            );
        }
    }
    Ok(())
}

/// The log reader sudo runs as root never takes its interpreter from the caller's PATH: as
/// innercontext, with a PATH whose first directory holds a fake `bash` and `journalctl` that
/// record who ran them, the deployer's sudo line runs the real ones. Measured on a host whose
/// /etc/sudoers has no `secure_path` (Debian's has one: the scenario takes it out for its
/// length, so only the drop-in's own line and the script's `#!/bin/bash` protect it).
pub fn the_log_reader_ignores_the_callers_path(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let attack = "d=$(mktemp -d)
         for t in bash journalctl; do
             printf '#!/bin/sh\\nid -u >>%s/marker\\nexec /bin/bash \"$@\"\\n' \"$d\" >\"$d/$t\"
             chmod 755 \"$d/$t\"
         done
         PATH=\"$d:$PATH\" sudo -n /usr/local/sbin/innercontext-journal -n 1 innercontext >/dev/null 2>&1; echo rc=$?
         cat \"$d/marker\" 2>/dev/null || echo no-marker
         rm -rf \"$d\"";
    // Debian's default first (what most hosts have): recorded in the scenario's line.
    let with_default = as_app(&site, attack)?;
    site.sh("set -e
         cp -p /etc/sudoers /root/e2e-sudoers.orig
         sed 's/^Defaults[[:space:]]*secure_path=/#&/' /etc/sudoers >/root/e2e-sudoers.new
         visudo -c -q -f /root/e2e-sudoers.new
         chmod 0440 /root/e2e-sudoers.new
         mv /root/e2e-sudoers.new /etc/sudoers")?;
    let without = as_app(&site, attack);
    site.sh("mv /root/e2e-sudoers.orig /etc/sudoers && visudo -c -q")?;
    let without = without?;
    println!(
        "      with Debian's secure_path: {}; without it: {}",
        with_default
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        without.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    for (what, out) in [("with", &with_default), ("without", &without)] {
        ensure!(
            out.contains("rc=0") && out.contains("no-marker"),
            "{what} /etc/sudoers' secure_path, the log reader ran the caller's fake bash or journalctl (the marker holds the uid it ran as):\n{out}"
        );
    }
    Ok(())
}

/// nginx never follows a link the app user plants to a file it cannot read itself: a link under
/// current's build and one under shared/assets/_app/immutable to a root:www-data 0640 file
/// answer no content (403/404), while the site, a build file and an immutable asset, all
/// served through the `current` link, still answer 200.
pub fn nginx_never_follows_app_links(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let secret = format!("e2e-nginx-secret-{}", std::process::id());
    site.sh(&format!(
        "set -e
         install -d -m 0755 -o root -g root /var/lib/e2e-nginx
         printf '%s\\n' {secret} >/var/lib/e2e-nginx/secret
         chown root:www-data /var/lib/e2e-nginx/secret; chmod 0640 /var/lib/e2e-nginx/secret"
    ))?;
    let client = format!("{ROOT}/current/frontend/build/client");
    let assets = format!("{ROOT}/shared/assets/_app/immutable");
    let result = (|| -> Result<()> {
        let cannot = as_app(&site, "cat /var/lib/e2e-nginx/secret 2>&1 || echo refused")?;
        ensure!(
            cannot.contains("refused"),
            "the app user reads the file itself: {cannot}"
        );
        as_app(
            &site,
            &format!(
                "ln -s /var/lib/e2e-nginx/secret {client}/e2e-leak.txt
                 mkdir -p {assets} && ln -s /var/lib/e2e-nginx/secret {assets}/e2e-leak.js
                 ln -s /var/lib/e2e-nginx/secret {client}/_app/immutable/e2e-leak2.js"
            ),
        )?;
        for path in [
            "/e2e-leak.txt",
            "/_app/immutable/e2e-leak.js",
            "/_app/immutable/e2e-leak2.js",
        ] {
            let (status, body) = site.get(path)?;
            ensure!(
                !body.contains(&secret) && (status == 403 || status == 404),
                "GET {path} through nginx answered {status} with the file behind the app user's link: {}",
                body.trim()
            );
        }
        site.assert_serving()?;
        let asset = site.sh(&format!(
            "cd {client} && find _app/immutable -type f -name '*.js' | head -n 1"
        ))?;
        let file = site.sh(&format!(
            "cd {client} && find . -maxdepth 1 -type f ! -name '*.gz' ! -name '*.br' ! -name '*.html' | head -n 1"
        ))?;
        for path in [asset.trim(), file.trim().trim_start_matches('.')] {
            ensure!(!path.is_empty(), "no file to GET in {client}");
            let path = format!("/{}", path.trim_start_matches('/'));
            let (status, _) = site.get(&path)?;
            ensure!(
                status == 200,
                "GET {path} (a real file through current) answered {status}"
            );
        }
        Ok(())
    })();
    as_app(
        &site,
        &format!(
            "rm -f {client}/e2e-leak.txt {assets}/e2e-leak.js {client}/_app/immutable/e2e-leak2.js"
        ),
    )?;
    site.sh("rm -rf /var/lib/e2e-nginx")?;
    result
}

/// A file name with a newline (or an escape) is refused by the deployer before the lock, with
/// the name shown escaped; the server is as it was (releases, current, deploy.log, no lock).
pub fn file_names_with_control_characters_are_refused(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-names")?;
    s.write("backend/evil\nchecked\tname.py", "x = 1\n")?;
    s.commit("a file name with a newline")?;
    let view = || {
        site.sh(&format!(
            "readlink {ROOT}/current; ls -A {ROOT}/releases; wc -l <{ROOT}/deploy.log; ls -A {ROOT}/jobs | wc -l; test -e {ROOT}/.deploy.lock && echo locked || echo unlocked"
        ))
    };
    let before = view()?;
    let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    let after = view()?;
    let out = run.all();
    ensure!(
        after == before,
        "the deploy changed the server:\n--- before\n{before}\n--- after\n{after}\n--- its output\n{out}"
    );
    ensure!(!run.status.success(), "the deploy went ahead:\n{out}");
    ensure!(
        out.contains("backend/evil\\nchecked\\tname.py"),
        "the refusal does not show the name escaped:\n{out}"
    );
    Ok(())
}

/// What the app user writes into the server's files reaches the deployer's terminal without a
/// control character: a deploy.log line, an event of the last job and current's commit, each
/// holding a title change (`ESC ] 0;pwned BEL`) and a screen clear (`ESC [ 2J`), print through
/// `deploy log`, `deploy status` and `deploy list` as their plain text only.
pub fn server_text_is_printed_without_control_characters(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let bad = "\\033]0;pwned\\007\\033[2J";
    as_app(
        &site,
        &format!(
            "set -e; cd {ROOT}
             cp deploy.log /tmp/e2e-deploy.log
             printf '%s reason=pwned-log{bad}\\n' \"$(tail -n 1 deploy.log | sed 's/ reason=.*//')\" >>deploy.log
             job=$(find jobs -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\\n' | sort -rn | sed -n '1s/^[^ ]* //p')
             cp -p \"$job/events\" /tmp/e2e-events; echo \"$job\" >/tmp/e2e-job
             printf '%s\\twarn\\tpwned-event{bad}\\n' \"$(date +%s%3N)\" >>\"$job/events\"
             meta=$(readlink -f current)/.release
             cp -p \"$meta\" /tmp/e2e-release; chmod u+w \"$meta\"
             b=$(printf '{bad}'); sed -i \"s/^commit=.*/&-pwned-commit$b/\" \"$meta\"
             grep -c \"$(printf '\\033')\" \"$meta\" deploy.log \"$job/events\""
        ),
    )?;
    let result = (|| -> Result<()> {
        let mut seen = Vec::new();
        for (args, needle) in [
            (&["deploy", "log"][..], "pwned-log"),
            (&["deploy", "status"][..], "pwned-event"),
            (&["deploy", "list"][..], "pwned-commit"),
        ] {
            let run = site.xtask(&repo(), args)?;
            let out = run.all();
            ensure!(
                run.status.success() && out.contains(needle),
                "{args:?} did not print the planted text '{needle}':\n{out}"
            );
            let controls: Vec<char> = out
                .chars()
                .filter(|c| c.is_control() && !['\n', '\t'].contains(c))
                .collect();
            if !controls.is_empty() {
                seen.push(format!(
                    "{args:?} printed {controls:?}:\n{}",
                    out.escape_debug()
                ));
            }
        }
        ensure!(seen.is_empty(), "{}", seen.join("\n"));
        Ok(())
    })();
    as_app(
        &site,
        &format!(
            "set -e; cd {ROOT}
             cat /tmp/e2e-deploy.log >deploy.log
             job=$(cat /tmp/e2e-job); cp -p /tmp/e2e-events \"$job/events\"
             cp -p /tmp/e2e-release \"$(readlink -f current)/.release\"
             rm -f /tmp/e2e-deploy.log /tmp/e2e-events /tmp/e2e-job /tmp/e2e-release"
        ),
    )?;
    result
}

/// A compromise of current does not survive a redeploy (issue 26): as innercontext, a `.pth` in
/// current's virtualenv (Python runs it at every start) and a backend module of current changed
/// in place with its size and mtime kept (`touch -r`, what a seal of sizes and times cannot
/// see); `deploy backend --redeploy` then names the module it re-sent and the virtualenv it
/// rebuilt, and the new release has neither. Two backend deploys (about 30 s under load).
pub fn a_compromise_does_not_survive_a_redeploy(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-seal")?;
    let module = "backend/innercontext/e2e_seal.py";
    s.write(module, "VALUE = \"clean\"\n")?;
    s.commit("a module the attack changes")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()
        .context("the deploy the attack starts from")?;
    let before = site.current()?;
    let pth = "zz-e2e-pwned.pth";
    let planted = as_app(
        &site,
        &format!(
            "set -e
             sp=$(echo {ROOT}/current/backend/.venv/lib/python3*/site-packages)
             printf '%s\\n' \"import os; os.environ.setdefault('E2E_PWNED', '1')\" >\"$sp/{pth}\"
             f={ROOT}/current/{module}
             touch -r \"$f\" /tmp/e2e-seal-ref
             printf 'VALUE = \"pwned\"\\n' >\"$f\"
             touch -r /tmp/e2e-seal-ref \"$f\"
             rm -f /tmp/e2e-seal-ref
             readlink -f \"$sp\""
        ),
    )?;
    let old_sp = planted.trim().to_string();
    let result = (|| -> Result<()> {
        let run = site.xtask(
            &s.dir,
            &["deploy", "backend", "--redeploy", "--skip-local-checks"],
        )?;
        let out = run.all();
        let run = run.ok()?;
        let after = site.current()?;
        ensure!(after != before, "no new release:\n{}", run.all());
        let state = site.sh(&format!(
            "sp=$(readlink -f {ROOT}/releases/{after}/backend/.venv/lib/python3*/site-packages)
             echo \"venv=$sp\"
             if [ -e \"$sp/{pth}\" ]; then echo pth=present; else echo pth=absent; fi
             echo \"module=$(cat {ROOT}/releases/{after}/{module})\""
        ))?;
        let venv_said = out
            .lines()
            .find(|l| l.contains("virtualenv"))
            .unwrap_or("(no line names the virtualenv)");
        let mut wrong = Vec::new();
        if state.contains("pth=present") {
            wrong.push(format!(
                "the planted {pth} is in the new release's virtualenv"
            ));
        }
        if !state.contains("module=VALUE = \"clean\"") {
            wrong.push(format!("the new release's {module} is the tampered one"));
        }
        ensure!(
            wrong.is_empty(),
            "after the redeploy: {}; the deploy said: {}\n{state}\n{out}",
            wrong.join("; "),
            venv_said.trim()
        );
        ensure!(
            out.contains(&format!(
                "re-sent 1 file that differed on the server: {module}"
            )),
            "the deploy does not name the file it re-sent:\n{out}"
        );
        ensure!(
            out.contains("was changed after uv installed it")
                && out.contains(pth)
                && out.contains("rebuilt"),
            "the deploy does not report the virtualenv tampered ({pth}) and rebuilt:\n{out}"
        );
        ensure!(
            !state.contains(&format!("venv={old_sp}\n")),
            "the new release links the tampered virtualenv {old_sp}:\n{state}"
        );
        site.assert_serving()
    })();
    // The tampered virtualenv may still be linked by older releases: take the .pth out.
    site.sh(&format!(
        "rm -f {ROOT}/shared/venvs/*/lib/python3*/site-packages/{pth}"
    ))?;
    result
}

/// `cargo xtask verify` (issue 26): as innercontext, change a module of current, plant a `.pth`
/// in current's virtualenv and one in an unpacked wheel of the uv cache; verify, run as root
/// through the admin login from the checkout current was deployed from, exits 1 and names the
/// three files and nothing else; on the untouched site it exits 0. What was changed is put back
/// (the module's bytes and times, so its bytecode is valid again). Cost: one `deploy all` from a
/// scratch checkout (its commit is the one verify compares with) and two verifies.
pub fn verify_names_what_the_app_user_changed(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-verify")?;
    site.xtask(
        &s.dir,
        &["deploy", "all", "--redeploy", "--skip-local-checks"],
    )?
    .ok()
    .context("the deploy verify compares with")?;
    let clean = site.xtask(&s.dir, &["verify"])?;
    eprintln!("verify on the untouched site:\n{}", clean.all());
    ensure!(
        clean.status.code() == Some(0),
        "verify on the untouched site exited {:?}:\n{}",
        clean.status.code(),
        clean.all()
    );
    // Ctrl-C while the checker works: its temp directory and its uv go with it.
    let mut cmd = site.command(&s.dir, &["verify"]);
    cmd.process_group(0);
    let mut bg = crate::support::Background::start(cmd, &s.sidecar("verify.log"))?;
    let pgid = bg.child.id();
    bg.wait_for(": current's release", Duration::from_secs(120))?;
    crate::support::run_ok(
        Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]),
        "kill",
    )?;
    let (status, out) = bg.wait(Duration::from_secs(60))?;
    eprintln!("verify, interrupted:\n{out}");
    ensure!(
        status.code() == Some(130) && out.contains("nothing was changed on the server"),
        "verify interrupted by Ctrl-C ended {status}:\n{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = site.sh(
            "ls -d /var/tmp/innercontext-verify-* 2>/dev/null; pgrep -fa '[u]v sync --locked' || true",
        )?;
        if left.trim().is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "30 s after Ctrl-C the server still has what verify made:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pth = "zz-e2e-verify.pth";
    let module = "backend/innercontext/main.py";
    let planted = as_app(
        &site,
        &format!(
            "set -e
             f={ROOT}/current/{module}
             cp -p \"$f\" /tmp/e2e-verify-module
             printf '\\n# changed by the app user\\n' >>\"$f\"
             sp=$(echo {ROOT}/current/backend/.venv/lib/python3*/site-packages)
             printf 'import os\\n' >\"$sp/{pth}\"
             info=$(ls -d {ROOT}/shared/uv-cache/archive-v0/*/fastapi-*.dist-info | head -n 1)
             printf 'import os\\n' >\"${{info%/*}}/{pth}\"
             readlink -f \"$f\"; readlink -f \"$sp\"; echo \"${{info%/*}}\""
        ),
    )?;
    let paths: Vec<String> = planted.lines().map(|l| l.trim().to_string()).collect();
    let result = (|| -> Result<()> {
        ensure!(paths.len() == 3, "planting printed:\n{planted}");
        let run = site.xtask(&s.dir, &["verify"])?;
        let out = run.all();
        eprintln!("verify after the attack:\n{out}");
        ensure!(
            run.status.code() == Some(1),
            "verify after the attack exited {:?}, not 1:\n{out}",
            run.status.code()
        );
        let found: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(&format!("{ROOT}/")))
            .collect();
        let want = [
            format!("{}: differs from this checkout", paths[0]),
            format!("{}/{pth}: installed by no package", paths[1]),
            format!("{}/{pth}: in no wheel of fastapi", paths[2]),
        ];
        for w in &want {
            ensure!(
                found.iter().filter(|l| l.contains(w.as_str())).count() == 1,
                "verify does not name '{w}' (once):\n{out}"
            );
        }
        ensure!(
            found.len() == want.len(),
            "verify names more than the three planted files:\n{out}"
        );
        Ok(())
    })();
    as_app(
        &site,
        &format!(
            "set -e
             f={ROOT}/current/{module}
             if [ -f /tmp/e2e-verify-module ]; then
                 cat /tmp/e2e-verify-module >\"$f\"; touch -r /tmp/e2e-verify-module \"$f\"
                 rm -f /tmp/e2e-verify-module
             fi
             rm -f {ROOT}/shared/venvs/*/lib/python3*/site-packages/{pth} {ROOT}/shared/uv-cache/archive-v0/*/{pth}"
        ),
    )?;
    result
}

/// `deploy all --clean` is the way back to a known state (issue 26): as innercontext, a backend
/// module of current changed in place, a `.pth` planted in current's virtualenv and one in an
/// entry of the shared uv cache (uv hard-links those entries into every virtualenv it builds),
/// and a shared frontend asset replaced. `deploy all --clean` then makes a release that is not
/// seeded from current (its files are not current's hard links), whose module is the
/// checkout's, whose virtualenv (built from an empty cache) has neither `.pth`, while the uv
/// cache that replaced the old one holds no planted `.pth` and the shared asset is the
/// release's again; the output says it was clean, and the site serves. One deploy after the
/// group's first, and its dry run (the deploy took 37 s under load, 10 s of it the virtualenv
/// from an empty cache).
pub fn a_clean_deploy_leaves_nothing_of_a_compromise(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let s = crate::support::scratch("security-clean")?;
    let module = "backend/innercontext/errors.py";
    let (pth, cache_pth) = ("zz-e2e-clean.pth", "zz-e2e-cache.pth");
    let before = site.current()?;
    let planted = as_app(
        &site,
        &format!(
            "set -e
             sp=$(echo {ROOT}/current/backend/.venv/lib/python3*/site-packages)
             printf '%s\\n' \"import os; os.environ.setdefault('E2E_PWNED', 'venv')\" >\"$sp/{pth}\"
             entry=$(dirname \"$(ls -d {ROOT}/shared/uv-cache/archive-v0/*/fastapi | head -n 1)\")
             printf '%s\\n' \"import os; os.environ.setdefault('E2E_PWNED', 'cache')\" >\"$entry/{cache_pth}\"
             printf '\\nE2E_PWNED = True\\n' >>{ROOT}/current/{module}
             asset=$(cd {ROOT}/current/frontend/build/client/_app/immutable && find . -type f -name '*.js' | head -n 1)
             a={ROOT}/shared/assets/_app/immutable/$asset
             rm -f \"$a\"; printf 'alert(\"pwned\")\\n' >\"$a\"
             echo \"entry=$entry\"
             echo \"asset=${{asset#./}}\""
        ),
    )?;
    let field = |k: &str| {
        planted
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .with_context(|| format!("no {k} in what the attack printed: {planted}"))
    };
    let (entry, asset) = (field("entry")?, field("asset")?);
    let result = (|| -> Result<()> {
        let dry = site.xtask(&s.dir, &["deploy", "all", "--clean", "--dry-run"])?;
        let dry = dry.ok()?.all();
        ensure!(
            dry.contains("(--clean: nothing seeded from current; every file travels)")
                && dry.contains("from an empty uv cache, which replaces shared/uv-cache"),
            "deploy all --clean --dry-run does not say what --clean does:\n{dry}"
        );
        let started = Instant::now();
        let run = site.xtask(&s.dir, &["deploy", "all", "--clean", "--skip-local-checks"])?;
        let took = started.elapsed();
        let out = run.all();
        let said = out.lines().last().unwrap_or("").trim().to_string();
        ensure!(
            run.status.success(),
            "deploy all --clean failed: {said}\n{out}"
        );
        let after = site.current()?;
        ensure!(after != before, "no new release:\n{out}");
        let new = format!("{ROOT}/releases/{after}");
        let old = format!("{ROOT}/releases/{before}");
        let state = site.sh(&format!(
            "sp=$(readlink -f {new}/backend/.venv/lib/python3*/site-packages)
             for f in {pth} {cache_pth}; do if [ -e \"$sp/$f\" ]; then echo \"venv-has=$f\"; fi; done
             find {ROOT}/shared/uv-cache -name {cache_pth} -printf 'cache-has=%p\\n'
             ls -d {ROOT}/shared/uv-cache?* 2>/dev/null | sed 's/^/leftover=/'
             [ \"$(stat -c %i {new}/backend/innercontext/api.py)\" != \"$(stat -c %i {old}/backend/innercontext/api.py)\" ] || echo seeded=yes
             [ \"$(stat -c %i {new}/frontend/build/client/_app/immutable/{asset})\" = \"$(stat -c %i {ROOT}/shared/assets/_app/immutable/{asset})\" ] || echo asset=kept",
        ))?;
        let shipped = site.sh(&format!("cat {new}/{module}"))?;
        let state = if shipped == std::fs::read_to_string(s.dir.join(module))? {
            state
        } else {
            format!("{state}module=not the checkout's\n")
        };
        ensure!(
            state.trim().is_empty(),
            "after deploy all --clean ({:.0}s) something of the compromise is left: {}\n{out}",
            took.as_secs_f64(),
            state.trim().replace('\n', "; ")
        );
        ensure!(
            out.contains("[clean: not seeded]") && out.contains("fresh uv cache"),
            "the deploy's output does not say it was clean (not seeded, a fresh uv cache):\n{out}"
        );
        let logged = site.last_log()?;
        ensure!(
            logged.split(' ').any(|w| w == "clean=yes"),
            "the deploy.log line does not say clean=yes: {logged}"
        );
        println!("{out}deploy all --clean took {:.1}s", took.as_secs_f64());
        site.assert_serving()
    })();
    // Whatever happened: nothing planted stays for the next scenarios (the old release keeps
    // its changed module only as long as it is kept; its module is put back).
    as_app(
        &site,
        &format!(
        "rm -f {ROOT}/shared/venvs/*/lib/python3*/site-packages/{pth} {ROOT}/shared/venvs/*/lib/python3*/site-packages/{cache_pth}
         find {ROOT}/shared/uv-cache -name {cache_pth} -delete 2>/dev/null || true
         rm -f {entry}/{cache_pth}
         sed -i '/^E2E_PWNED = True$/d' {ROOT}/releases/{before}/{module}
         ln -f {ROOT}/current/frontend/build/client/_app/immutable/{asset} {ROOT}/shared/assets/_app/immutable/{asset}"
        ),
    )?;
    result
}
