//! `cargo xtask deploy`: atomic, release-based deploys with automatic rollback.
//!
//! The pipeline reads like the spec: local checks, lock, new release, upload (seeded from the
//! current release), shared env links, uv sync and migrations, switch `current` with one
//! rename, restart the affected units, health checks, and either finish (prune, log, unlock)
//! or restore the previous release and record the failure. Every remote step is a call of
//! `scripts/deploy.sh` built in [`crate::steps`], sent over one ssh master connection.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use time::OffsetDateTime;
use xshell::{cmd, Shell};

use crate::config::Config;
use crate::flags::{Deploy, Scope};
use crate::lock::LockInfo;
use crate::release::{self, Release};
use crate::ssh::{Reply, Session};
use crate::steps::{self, Origin, RemoteCall};
use crate::{ci, health, interrupt, ui};

/// The server-side half of the deployer, sent with every call (no pre-installed code needed).
pub const SCRIPT: &str = include_str!("../../scripts/deploy.sh");

pub fn run(cmd: Deploy, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    match cmd {
        Deploy::Release {
            scope,
            dry_run,
            skip_local_checks,
        } => deploy(sh, &cfg, scope, dry_run, skip_local_checks),
        Deploy::List => list(&cfg),
        Deploy::Rollback {
            release,
            force,
            dry_run,
        } => rollback(&cfg, release.as_deref(), force, dry_run),
        Deploy::Unlock { yes } => unlock(&cfg, yes),
        Deploy::Status => status(&cfg),
    }
}

/// The ssh session plus the deploy root: one place that runs [`RemoteCall`]s.
struct Remote {
    session: Session,
    root: String,
}

impl Remote {
    fn connect(cfg: &Config) -> Result<Remote> {
        let session = ui::step(&format!("connect to {}", cfg.server), || {
            Session::connect(&cfg.server, cfg.ssh_config.as_deref())
        })?;
        Ok(Remote {
            session,
            root: cfg.root.clone(),
        })
    }

    /// Run a call; a non-zero exit becomes the script's one-line `error=` message.
    fn call(&self, call: &RemoteCall) -> Result<Reply> {
        let (out, reply) = self.call_raw(call)?;
        if !out.status.success() {
            bail!("{}", self.failure(call, &out.status, &reply));
        }
        Ok(reply)
    }

    fn call_raw(&self, call: &RemoteCall) -> Result<(std::process::Output, Reply)> {
        self.session.script(SCRIPT, "deploy.sh", &call.argv())
    }

    fn failure(
        &self,
        call: &RemoteCall,
        status: &std::process::ExitStatus,
        reply: &Reply,
    ) -> String {
        match reply.get("error") {
            Some(e) => e.to_string(),
            None if status.code() == Some(255) => format!(
                "lost the ssh connection to {} during '{}'",
                self.session.dest(),
                call.sub
            ),
            None => format!(
                "scripts/deploy.sh {} failed on {} ({status})",
                call.sub,
                self.session.dest()
            ),
        }
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let reply = ui::step("read server state", || self.call(&steps::probe(&self.root)))?;
        Ok(Snapshot::from_reply(&reply))
    }
}

/// What the server looks like right now.
struct Snapshot {
    now: i64,
    host: String,
    current: Option<String>,
    releases: Vec<Release>,
    junk: Vec<String>,
    lock: Option<LockInfo>,
}

impl Snapshot {
    fn from_reply(reply: &Reply) -> Snapshot {
        Snapshot {
            now: reply.get("now").and_then(|n| n.parse().ok()).unwrap_or(0),
            host: reply.get("host").unwrap_or("?").to_string(),
            current: reply
                .get("current")
                .filter(|c| release::is_name(c))
                .map(str::to_string),
            releases: reply
                .all("release")
                .into_iter()
                .filter_map(Release::parse)
                .collect(),
            junk: reply.all("junk").into_iter().map(str::to_string).collect(),
            lock: LockInfo::from_reply(reply),
        }
    }

    fn warn_junk(&self, root: &str) {
        for j in &self.junk {
            eprintln!(
                "warning: {root}/releases/{} is not a release (left alone; remove it by hand if it is yours)",
                j.escape_debug()
            );
        }
    }
}

/// Who deploys what: commit, dirty flag, user@host.
struct Local {
    commit: String,
    dirty: bool,
    deployer: String,
}

fn local_origin(sh: &Shell, cfg: &Config) -> Result<Local> {
    let commit = cmd!(sh, "git rev-parse --short=12 HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("reading the commit: is this a git checkout with at least one commit?")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()?;
    let dirty = !status.trim().is_empty();
    if dirty && !cfg.allow_dirty {
        let n = status.lines().count();
        bail!(
            "the working tree has {n} uncommitted change(s): commit or stash them, or set DEPLOY_ALLOW_DIRTY=1 to deploy them anyway"
        );
    }
    Ok(Local {
        commit,
        dirty,
        deployer: deployer(),
    })
}

fn deployer() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    let host = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{host}")
}

fn utc_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rfc3339(t: OffsetDateTime) -> String {
    release::iso(t)
}

fn new_lock(local: &Local, command: &str) -> LockInfo {
    let now = utc_now();
    let (user, host) = local
        .deployer
        .split_once('@')
        .unwrap_or((&local.deployer, "?"));
    LockInfo {
        user: user.to_string(),
        host: host.to_string(),
        pid: std::process::id(),
        started: rfc3339(now),
        started_epoch: now.unix_timestamp(),
        command: command.to_string(),
        commit: format!(
            "{}{}",
            local.commit,
            if local.dirty { "+dirty" } else { "" }
        ),
        token: format!("{}-{}", std::process::id(), now.unix_timestamp_nanos()),
    }
}

/// Local checks for the scope, fail-fast; the frontend is always built (the server never builds).
fn local_checks(sh: &Shell, scope: Scope, skip: bool) -> Result<()> {
    if scope.backend() && !skip {
        ui::step("local checks: backend (ruff, pytest)", || ci::backend(sh))?;
    }
    if scope.frontend() {
        if skip {
            ui::step("build frontend", || ci::frontend_build(sh))?;
        } else {
            ui::step("local checks: frontend (check, build)", || ci::frontend(sh))?;
        }
        let entry = crate::project_root().join("frontend/build/index.js");
        if !entry.exists() {
            bail!("the frontend build did not produce {entry}");
        }
    }
    interrupt::check()
}

/// The files this release uploads, relative to the repository root.
fn upload_files(sh: &Shell, scope: Scope) -> Result<Vec<String>> {
    let listed = cmd!(
        sh,
        "git ls-files -z --cached --others --exclude-standard -- backend scripts systemd nginx frontend/package.json"
    )
    .quiet()
    .read()?;
    let mut paths: Vec<String> = listed
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter(|p| crate::project_root().join(p).is_file())
        .map(str::to_string)
        .collect();
    if scope.frontend() {
        walk(&crate::project_root(), "frontend/build", &mut paths)?;
    }
    paths.sort();
    paths.dedup();
    Ok(steps::upload_selection(&paths, scope))
}

fn walk(root: &camino::Utf8Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in fs_err::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("non-UTF-8 file name {n:?} under {rel}"))?;
        let path = format!("{rel}/{name}");
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// A deploy (or rollback) that holds the lock: everything needed to finish or undo it.
struct Run<'a> {
    remote: &'a Remote,
    cfg: &'a Config,
    local: &'a Local,
    token: String,
    /// The release being activated (new, or the rollback target).
    release: String,
    /// `current` before we started.
    previous: Option<String>,
    switched: bool,
    revision: String,
    started: Instant,
    started_at: OffsetDateTime,
    scope: &'static str,
}

impl Run<'_> {
    fn log_line(&self, result: &str) -> String {
        steps::LogEntry {
            time: &rfc3339(self.started_at),
            deployer: &self.local.deployer,
            commit: &self.local.commit,
            dirty: self.local.dirty,
            scope: self.scope,
            release: &self.release,
            result,
            duration_secs: self.started.elapsed().as_secs_f64(),
            revision: &self.revision,
        }
        .line()
    }

    fn activate(&mut self, units: &[&str]) -> Result<()> {
        self.switched = true;
        ui::step(&format!("switch current -> {}", self.release), || {
            self.remote
                .call(&steps::switch(&self.remote.root, Some(&self.release)))
        })?;
        interrupt::check()?;
        ui::step(&format!("restart {}", units.join(", ")), || {
            self.remote.call(&steps::restart(units))
        })?;
        interrupt::check()?;
        ui::step("health checks", || {
            self.remote.call(&steps::health(self.cfg.health_timeout))
        })?;
        Ok(())
    }

    /// After a failure: put the previous release back (if we switched), record the failure in
    /// the release and deploy.log, and release the lock. Returns the result word for messages.
    fn recover(&mut self, mark_release: Option<&str>, units: &[&str]) -> &'static str {
        interrupt::enter_cleanup();
        let mut result = "failed";
        if self.switched {
            let previous = self.previous.clone();
            let label = previous.as_deref().unwrap_or("no release (first deploy)");
            eprintln!("==> rolling back to {label}");
            let restored = ui::step(&format!("switch current -> {label}"), || {
                self.remote
                    .call(&steps::switch(&self.remote.root, previous.as_deref()))
            })
            .and_then(|_| {
                if previous.is_none() {
                    return Ok(());
                }
                ui::step(&format!("restart {}", units.join(", ")), || {
                    self.remote.call(&steps::restart(units))
                })?;
                ui::step(&format!("health checks of {label}"), || {
                    self.remote.call(&steps::health(self.cfg.health_timeout))
                })
                .map(|_| ())
            });
            result = match restored {
                Ok(()) => "rolled-back",
                Err(ref e) => {
                    eprintln!("error: restoring {label} failed too: {e:#}");
                    "rollback-failed"
                }
            };
        }
        if interrupt::requested() && result == "failed" {
            result = "interrupted";
        }
        let line = self.log_line(result);
        let call = steps::fail(&self.remote.root, mark_release, &self.token, &line);
        if let Err(e) = self.release_with(&call) {
            eprintln!(
                "error: could not record the failure and release the lock ({e:#}); once no deploy runs: cargo xtask deploy unlock"
            );
        }
        result
    }

    /// Run a lock-releasing call, retrying once on a fresh connection if the master is gone.
    fn release_with(&self, call: &RemoteCall) -> Result<Reply> {
        ui::step("record result and unlock", || {
            self.remote.call(call).or_else(|first| {
                eprintln!("warning: {first:#}; retrying on a new connection");
                let retry = Session::connect(&self.cfg.server, self.cfg.ssh_config.as_deref())?;
                let (out, reply) = retry.script(SCRIPT, "deploy.sh", &call.argv())?;
                if !out.status.success() {
                    bail!("{}", self.remote.failure(call, &out.status, &reply));
                }
                Ok(reply)
            })
        })
    }
}

fn take_lock(remote: &Remote, call: &RemoteCall) -> Result<Reply> {
    ui::step("preflight and lock", || {
        let (out, reply) = remote.call_raw(call)?;
        if out.status.code() == Some(3) && reply.get("conflict") == Some("yes") {
            let holder = LockInfo::from_reply(&reply)
                .map(|l| l.describe(reply.get("now").and_then(|n| n.parse().ok()).unwrap_or(0)))
                .unwrap_or_else(|| "held by an unknown deploy".to_string());
            bail!(
                "another deploy holds {}/.deploy.lock on {}: {holder}; if it is not running any more: cargo xtask deploy unlock",
                remote.root,
                reply.get("host").unwrap_or("the server")
            );
        }
        if !out.status.success() {
            bail!("{}", remote.failure(call, &out.status, &reply));
        }
        Ok(reply)
    })
}

fn deploy(sh: &Shell, cfg: &Config, scope: Scope, dry_run: bool, skip_checks: bool) -> Result<()> {
    let started = Instant::now();
    let started_at = utc_now();
    let local = local_origin(sh, cfg)?;
    if !dry_run {
        local_checks(sh, scope, skip_checks)?;
    }
    let files = if dry_run && scope.frontend() {
        Vec::new()
    } else {
        upload_files(sh, scope)?
    };

    let remote = Remote::connect(cfg)?;
    let snap = remote.snapshot()?;
    snap.warn_junk(&cfg.root);
    if (scope != Scope::All) && snap.current.is_none() {
        bail!(
            "there is no current release on {}: the first deploy must be 'deploy all'",
            snap.host
        );
    }
    let name = release::next_name(started_at, &snap.releases);
    let lock = new_lock(&local, &format!("deploy {}", scope.name()));
    let origin = Origin {
        commit: &local.commit,
        dirty: local.dirty,
        deployer: &local.deployer,
    };
    let units = health::units_to_restart(scope);
    let current = snap.current.as_deref();
    let file_list = Utf8PathBuf::from(format!(
        "/tmp/innercontext-upload-{}.list",
        std::process::id()
    ));
    let rsync = steps::rsync_args(
        &remote.session.rsync_rsh(),
        &cfg.server,
        &cfg.root,
        &name,
        current,
        ui::interactive(),
        &file_list,
    );

    if dry_run {
        let plan = [
            (
                "lock and create the release",
                steps::begin(&cfg.root, &name, scope.name(), &lock).render(),
            ),
            (
                "upload (rsync)",
                format!("rsync {}", crate::quote::join(&rsync)),
            ),
            (
                "link env, uv sync, migrate",
                steps::prepare(&cfg.root, &name, scope, current, &origin).render(),
            ),
            (
                "switch current",
                steps::switch(&cfg.root, Some(&name)).render(),
            ),
            ("restart", steps::restart(&units).render()),
            ("health", steps::health(cfg.health_timeout).render()),
            (
                "finish: prune, log, unlock",
                steps::finish(&cfg.root, Some(&name), &lock.token, "<log line>", &[]).render(),
            ),
            (
                "on failure after the switch",
                steps::switch(&cfg.root, current).render(),
            ),
        ];
        println!(
            "Plan for 'deploy {}' to {} ({}), nothing will be changed:",
            scope.name(),
            cfg.server,
            snap.host
        );
        if skip_checks {
            println!(
                "  local: {}",
                if scope.frontend() {
                    "build frontend (checks skipped)"
                } else {
                    "(checks skipped)"
                }
            );
        } else {
            println!(
                "  local: clean tree{}{}",
                if scope.backend() {
                    ", backend ruff + pytest"
                } else {
                    ""
                },
                if scope.frontend() {
                    ", frontend check + build"
                } else {
                    ""
                }
            );
        }
        for (what, line) in plan {
            println!("  {what}:\n      {line}");
        }
        return Ok(());
    }

    fs_err::write(&file_list, files.join("\0"))?;
    let _cleanup = RemoveOnDrop(file_list.clone());

    take_lock(
        &remote,
        &steps::begin(&cfg.root, &name, scope.name(), &lock),
    )?;
    let mut run = Run {
        remote: &remote,
        cfg,
        local: &local,
        token: lock.token.clone(),
        release: name.clone(),
        previous: snap.current.clone(),
        switched: false,
        revision: "-".to_string(),
        started,
        started_at,
        scope: scope.name(),
    };

    let shipped = ship(
        sh,
        &mut run,
        scope,
        &rsync,
        current,
        &origin,
        &units,
        files.len(),
    );
    match shipped {
        Ok(()) => {
            let prune = release::prune(
                &snap.releases,
                Some(&name),
                Some(&name),
                cfg.keep,
                started_at,
            );
            let line = run.log_line("success");
            let reply = run.release_with(&steps::finish(
                &cfg.root,
                Some(&name),
                &run.token,
                &line,
                &prune,
            ))?;
            let pruned = reply.all("pruned");
            eprintln!(
                "deployed {name} ({} {}, alembic {}) to {} in {}{}",
                scope.name(),
                local.commit,
                run.revision,
                snap.host,
                ui::secs(started.elapsed()),
                if pruned.is_empty() {
                    String::new()
                } else {
                    format!("; pruned {}", pruned.join(", "))
                }
            );
            Ok(())
        }
        Err(e) => {
            let result = run.recover(Some(&name), &health::ALL_UNITS);
            let now = snap.current.as_deref().unwrap_or("no release");
            let where_now = match result {
                "rolled-back" => format!("current is back at {now} and healthy"),
                "rollback-failed" => {
                    format!("current is {now} but NOT healthy: see the journal output above")
                }
                _ if run.switched => format!("current is {now}"),
                _ => format!("current was not touched ({now})"),
            };
            Err(e.context(format!(
                "deploy of {name} failed ({result}); {where_now}; release {name} marked failed"
            )))
        }
    }
}

struct RemoveOnDrop(Utf8PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn ship(
    sh: &Shell,
    run: &mut Run,
    scope: Scope,
    rsync: &[String],
    current: Option<&str>,
    origin: &Origin,
    units: &[&str],
    file_count: usize,
) -> Result<()> {
    let root = run.remote.root.clone();
    ui::step(&format!("upload {file_count} files"), || upload(sh, rsync))?;
    interrupt::check()?;
    let reply = ui::step("link env, uv sync, migrate", || {
        run.remote
            .call(&steps::prepare(&root, &run.release, scope, current, origin))
    })?;
    run.revision = reply.get("revision").unwrap_or("-").to_string();
    for w in reply.all("warn") {
        eprintln!("warning: {w}");
    }
    interrupt::check()?;
    run.activate(units)
}

fn upload(sh: &Shell, args: &[String]) -> Result<()> {
    let _dir = sh.push_dir(crate::project_root());
    let interactive = ui::interactive();
    let expr = duct::cmd("rsync", args)
        .dir(crate::project_root())
        .stdin_null();
    let expr = if interactive {
        expr
    } else {
        expr.stdout_capture()
    };
    let handle = expr
        .unchecked()
        .start()
        .context("starting rsync (is it installed?)")?;
    let out = interrupt::wait(&handle, "upload")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "rsync to the server failed ({}): {}",
            out.status,
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("see the output above")
        );
    }
    if let (Some(sent), Some(total)) = (
        steps::rsync_stat(&text, "Total bytes sent"),
        steps::rsync_stat(&text, "Total file size"),
    ) {
        eprintln!("    sent {sent} bytes for {total} bytes of files (unchanged files hard-linked on the server)");
    }
    Ok(())
}

fn list(cfg: &Config) -> Result<()> {
    let remote = Remote::connect(cfg)?;
    let snap = remote.snapshot()?;
    snap.warn_junk(&cfg.root);
    let names: Vec<String> = snap.releases.iter().map(|r| r.name.clone()).collect();
    let sizes = if names.is_empty() {
        Reply::default()
    } else {
        remote.call(&steps::sizes(&cfg.root, &names))?
    };
    let size_of = |name: &str| {
        sizes
            .all("size")
            .into_iter()
            .find_map(|s| s.strip_prefix(name).map(|k| k.trim().to_string()))
            .and_then(|k| k.parse::<u64>().ok())
            .map(|kb| format!("{:.1} MB", kb as f64 / 1024.0))
            .unwrap_or_else(|| "?".to_string())
    };
    let mut releases = snap.releases.clone();
    releases.sort_by(|a, b| b.name.cmp(&a.name));
    println!(
        "{:<2}{:<18}{:<11}{:<14}{:<8}{:>10}  ALEMBIC",
        "", "RELEASE", "STATE", "COMMIT", "AGE", "SIZE"
    );
    for r in &releases {
        let age = release::parse_name(&r.name)
            .map(|t| release::age(snap.now - t.unix_timestamp()))
            .unwrap_or_default();
        let mark = if Some(&r.name) == snap.current.as_ref() {
            "*"
        } else {
            ""
        };
        println!(
            "{:<2}{:<18}{:<11}{:<14}{:<8}{:>10}  {}",
            mark,
            r.name,
            r.state.name(),
            r.commit,
            age,
            size_of(&r.name),
            r.revision
        );
    }
    if releases.is_empty() {
        println!("(no releases in {}/releases on {})", cfg.root, snap.host);
    }
    match &snap.current {
        Some(c) => println!("* = current ({c})"),
        None => println!("no current release"),
    }
    if let Some(lock) = &snap.lock {
        println!("locked: {}", lock.describe(snap.now));
    }
    Ok(())
}

fn status(cfg: &Config) -> Result<()> {
    let remote = Remote::connect(cfg)?;
    let reply = remote.call(&steps::status(&cfg.root))?;
    let snap = Snapshot::from_reply(&reply);
    println!("server:   {} ({})", snap.host, cfg.server);
    match snap
        .current
        .as_ref()
        .and_then(|c| snap.releases.iter().find(|r| &r.name == c))
    {
        Some(r) => println!(
            "current:  {} ({}, commit {}, deployed {} ago)",
            r.name,
            r.state.name(),
            r.commit,
            release::parse_name(&r.name)
                .map(|t| release::age(snap.now - t.unix_timestamp()))
                .unwrap_or_default()
        ),
        None => println!("current:  none"),
    }
    for u in reply.all("unit") {
        let mut parts = u.split(' ');
        let (name, state, restarts) = (
            parts.next().unwrap_or("?"),
            parts.next().unwrap_or("?"),
            parts.next().unwrap_or("?"),
        );
        println!("unit:     {name:<30} {state:<10} restarts: {restarts}");
    }
    match &snap.lock {
        Some(l) => println!("lock:     {}", l.describe(snap.now)),
        None => println!("lock:     free"),
    }
    println!("disk:     {}", reply.get("disk").unwrap_or("?"));
    println!(
        "database: alembic revision {}",
        reply.get("db_revision").unwrap_or("?")
    );
    snap.warn_junk(&cfg.root);
    Ok(())
}

fn unlock(cfg: &Config, yes: bool) -> Result<()> {
    let remote = Remote::connect(cfg)?;
    let snap = remote.snapshot()?;
    let Some(lock) = &snap.lock else {
        println!(
            "no deploy lock on {} ({}/.deploy.lock)",
            snap.host, cfg.root
        );
        return Ok(());
    };
    println!(
        "{}/.deploy.lock on {}: {}",
        cfg.root,
        snap.host,
        lock.describe(snap.now)
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not removing the lock without confirmation: rerun with --yes once you are sure no deploy is running");
        }
        eprint!("Remove it? Only if no deploy is running. [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("lock left in place");
        }
    }
    remote.call(&steps::unlock(&cfg.root, "--force"))?;
    println!("lock removed");
    Ok(())
}

fn rollback(cfg: &Config, requested: Option<&str>, force: bool, dry_run: bool) -> Result<()> {
    if let Some(name) = requested {
        release::validate_user_name(name)?;
    }
    let started = Instant::now();
    let started_at = utc_now();
    let remote = Remote::connect(cfg)?;
    let snap = remote.snapshot()?;
    snap.warn_junk(&cfg.root);
    let target = release::rollback_target(&snap.releases, snap.current.as_deref(), requested)?;
    let current = snap
        .current
        .clone()
        .expect("rollback_target checked there is a current release");
    let db = ui::step("compare database revision", || {
        remote.call(&steps::dbcheck(&cfg.root, &target))
    })?;
    let db_rev = db.get("db_revision").unwrap_or("-").to_string();
    if db.get("target_knows") == Some("no") {
        let msg = format!(
            "the database is at alembic revision {db_rev}, which release {target} does not know: it was migrated by a newer release, and rolling back the code alone runs {target} against that newer schema"
        );
        if !force {
            bail!("{msg}; if that schema is backward compatible, rerun with --force");
        }
        eprintln!("WARNING: {msg}; continuing because of --force");
    }
    let target_release = snap.releases.iter().find(|r| r.name == target).cloned();
    let local = Local {
        commit: target_release
            .as_ref()
            .map(|r| r.commit.clone())
            .unwrap_or_else(|| "-".into()),
        dirty: false,
        deployer: deployer(),
    };
    let lock = new_lock(&local, &format!("rollback {target}"));
    let units = health::ALL_UNITS;
    if dry_run {
        println!(
            "Plan for 'rollback' to {target} on {} (current {current}), nothing will be changed:",
            snap.host
        );
        for (what, line) in [
            (
                "lock",
                steps::begin(&cfg.root, &target, "rollback", &lock).render(),
            ),
            (
                "switch current",
                steps::switch(&cfg.root, Some(&target)).render(),
            ),
            ("restart", steps::restart(&units).render()),
            ("health", steps::health(cfg.health_timeout).render()),
            (
                "finish: log, unlock",
                steps::finish(&cfg.root, None, &lock.token, "<log line>", &[]).render(),
            ),
            (
                "on failure",
                steps::switch(&cfg.root, Some(&current)).render(),
            ),
        ] {
            println!("  {what}:\n      {line}");
        }
        return Ok(());
    }
    take_lock(
        &remote,
        &steps::begin(&cfg.root, &target, "rollback", &lock),
    )?;
    let mut run = Run {
        remote: &remote,
        cfg,
        local: &local,
        token: lock.token.clone(),
        release: target.clone(),
        previous: Some(current.clone()),
        switched: false,
        revision: db_rev,
        started,
        started_at,
        scope: "rollback",
    };
    match run.activate(&units) {
        Ok(()) => {
            let line = run.log_line("success");
            run.release_with(&steps::finish(&cfg.root, None, &run.token, &line, &[]))?;
            eprintln!(
                "rolled back {} -> {target} on {} in {}",
                current,
                snap.host,
                ui::secs(started.elapsed())
            );
            Ok(())
        }
        Err(e) => {
            let result = run.recover(None, &units);
            Err(e.context(format!(
                "rollback to {target} failed ({result}); current is {}",
                if result == "rolled-back" {
                    format!("back at {current} and healthy")
                } else {
                    current.clone()
                }
            )))
        }
    }
}
