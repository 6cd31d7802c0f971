//! Security scenarios on the test host: attacks by the app user (`innercontext`, i.e. anyone
//! holding the deploy key or running code in the app) against root's work, and the properties
//! an attacker looks for (hardened units, hidden API docs, narrow log access, TLS).
//!
//! Each attack runs as innercontext with `runuser`, exactly what the app user can do, then lets
//! root's side (setup-server, systemd) do its work and checks that nothing outside the app
//! user's own files changed. The shared site is left as it was found.

use std::collections::BTreeMap;
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
/// targets are untouched (not even read).
pub fn setup_server_never_follows_app_links(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let home = "/home/innercontext";
    site.sh("set -e
         install -d -m 0755 -o root -g root /var/lib/e2e-victim /var/lib/e2e-victim-backend
         printf 'root-owned\\n' >/var/lib/e2e-victim/authorized_keys
         umask 077; printf 'E2E_ROOT_SECRET=never-read\\n' >/var/lib/e2e-victim-backend/.env
         touch -a -d 2000-01-01 /var/lib/e2e-victim-backend/.env")?;
    let hostname = site.sh("cat /etc/hostname")?;
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
         rm -rf /var/lib/e2e-victim /var/lib/e2e-victim-backend",
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
    site.sh("rm -f /root/e2e-secret.env; systemctl reset-failed innercontext-node.service")?;
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
