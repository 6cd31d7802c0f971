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
            redeploy,
        } => deploy(sh, &cfg, scope, dry_run, skip_local_checks, redeploy),
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
    /// What `current` was made from: its state and the commit of each half.
    current_made: release::Made,
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
            current_made: release::Made {
                state: release::State::parse(reply.get("current.state").unwrap_or("")),
                backend_commit: reply
                    .get("current.backend_commit")
                    .unwrap_or("-")
                    .to_string(),
                frontend_commit: reply
                    .get("current.frontend_commit")
                    .unwrap_or("-")
                    .to_string(),
            },
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
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".to_string());
    let host = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{host}")
}

/// The login name of our uid, from /etc/passwd (CI runners often set no USER).
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = fs_err::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = fs_err::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

fn utc_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
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
        started: release::iso(now),
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

/// Local checks for the scope, fail-fast; the frontend is always built (the server never
/// builds), unless the build on disk was made from exactly the committed frontend/ tree.
fn local_checks(sh: &Shell, scope: Scope, skip: bool) -> Result<()> {
    let quiet = ci::Noise::Quiet;
    if scope.backend() && !skip {
        ui::step("local checks: backend (ruff, pytest)", || {
            ci::backend(sh, quiet)
        })?;
    }
    if scope.frontend() {
        let stamp = frontend_stamp(sh)?;
        let stamp_file = crate::project_root().join("target/frontend-build.stamp");
        let built = fs_err::read_to_string(&stamp_file).ok();
        let entry = crate::project_root().join("frontend/build/index.js");
        if !skip {
            fs_err::remove_file(&stamp_file).ok();
            ui::step("local checks: frontend (check, tests, build)", || {
                ci::frontend(sh, quiet)
            })?;
        } else if stamp.is_some() && built == stamp && entry.exists() {
            eprintln!("==> build frontend: up to date with the committed frontend/ tree");
        } else {
            fs_err::remove_file(&stamp_file).ok();
            ui::step("build frontend", || ci::frontend_build(sh, quiet))?;
        }
        if !entry.exists() {
            bail!("the frontend build did not produce {entry}");
        }
        if let Some(stamp) = stamp {
            fs_err::create_dir_all(stamp_file.parent().unwrap())?;
            fs_err::write(&stamp_file, stamp)?;
        }
    }
    interrupt::check()
}

/// The git tree of frontend/ when it has no uncommitted changes (None otherwise).
fn frontend_stamp(sh: &Shell) -> Result<Option<String>> {
    let changes = cmd!(
        sh,
        "git status --porcelain --untracked-files=normal -- frontend"
    )
    .quiet()
    .read()?;
    if !changes.trim().is_empty() {
        return Ok(None);
    }
    let tree = cmd!(sh, "git rev-parse HEAD:frontend").quiet().read()?;
    Ok(Some(format!(
        "{tree} node {}\n",
        crate::tools::NODE_VERSION
    )))
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

/// A deploy or rollback that holds the lock: what it needs to record its end.
struct Held<'a> {
    remote: &'a Remote,
    cfg: &'a Config,
    token: String,
    release: String,
    started_at: OffsetDateTime,
    deployer: String,
    commit: String,
    scope: &'static str,
    started_iso: String,
    revision: String,
    /// Whether a failure marks the release failed (not for rollback targets).
    mark: bool,
}

impl Held<'_> {
    fn record(&self) -> steps::Record<'_> {
        steps::Record {
            root: &self.remote.root,
            release: &self.release,
            token: &self.token,
            started: &self.started_iso,
            started_epoch: self.started_at.unix_timestamp_nanos() as f64 / 1e9,
            deployer: &self.deployer,
            commit: &self.commit,
            scope: self.scope,
            revision: &self.revision,
        }
    }

    /// A failure before the switch: `current` is untouched. Mark the release, log, unlock.
    fn abandon(&self) -> &'static str {
        interrupt::enter_cleanup();
        let result = if interrupt::requested() {
            "interrupted"
        } else {
            "failed"
        };
        let call = steps::fail(&self.record(), result, self.mark);
        if let Err(e) = self.call_retrying(&call) {
            eprintln!(
                "error: could not record the failure and release the lock ({e:#}); once no deploy runs: cargo xtask deploy unlock"
            );
        }
        result
    }

    /// Run a call; if the connection is gone, once more on a new connection.
    fn call_retrying(&self, call: &RemoteCall) -> Result<Reply> {
        ui::step("record result and unlock", || {
            self.remote.call(call).or_else(|first| {
                eprint!("(retrying on a new connection: {first:#}) ");
                let retry = Session::connect(&self.cfg.server, self.cfg.ssh_config.as_deref())?;
                let (out, reply) = retry.script(SCRIPT, "deploy.sh", &call.argv())?;
                if !out.status.success() {
                    bail!("{}", self.remote.failure(call, &out.status, &reply));
                }
                Ok(reply)
            })
        })
    }

    /// Switch, restart, health, and finish or restore: one job on the server that completes
    /// even if we are interrupted or lose the connection. Returns the job's result word.
    fn activate_call(
        &self,
        previous: Option<&str>,
        restart: &[&str],
        prune: &[String],
    ) -> RemoteCall {
        steps::activate(
            &self.record(),
            previous,
            restart,
            self.cfg.health_timeout,
            prune,
            self.mark,
        )
    }

    fn activate(
        &self,
        previous: Option<&str>,
        restart: &[&str],
        prune: &[String],
    ) -> Result<String> {
        let call = self.activate_call(previous, restart, prune);
        // From here on the server owns the outcome: an interrupt no longer aborts the wait.
        interrupt::enter_cleanup();
        eprintln!(
            "==> activate {} (runs on the server to its end)",
            self.release
        );
        let (out, reply) = self.remote.call_raw(&call)?;
        match reply.get("result") {
            Some(result) => {
                if result != "success" {
                    bail!(
                        "{result}: {}",
                        reply.get("error").unwrap_or("activation failed")
                    );
                }
                Ok(result.to_string())
            }
            None => bail!(
                "{}; the server finishes the activation on its own (or restores the previous release): check with 'cargo xtask deploy status'",
                self.remote.failure(&call, &out.status, &reply)
            ),
        }
    }
}

/// Why taking the lock failed: refused (we surely do not hold it: another deploy, a failed
/// preflight) or unknown (interrupted or disconnected: we may hold it).
enum LockFailure {
    Refused(anyhow::Error),
    Unknown(anyhow::Error),
}

fn take_lock(remote: &Remote, call: &RemoteCall) -> std::result::Result<Reply, LockFailure> {
    let outcome = ui::step("preflight and lock", || {
        interrupt::shielded(|| remote.call_raw(call))
    });
    let (out, reply) = outcome.map_err(LockFailure::Unknown)?;
    if out.status.code() == Some(3) && reply.get("conflict") == Some("yes") {
        let holder = LockInfo::from_reply(&reply)
            .map(|l| l.describe(reply.get("now").and_then(|n| n.parse().ok()).unwrap_or(0)))
            .unwrap_or_else(|| "held by an unknown deploy".to_string());
        return Err(LockFailure::Refused(anyhow::anyhow!(
            "another deploy holds {}/.deploy.lock on {}: {holder}; if it is not running any more: cargo xtask deploy unlock",
            remote.root,
            reply.get("host").unwrap_or("the server")
        )));
    }
    if !out.status.success() {
        let e = anyhow::anyhow!("{}", remote.failure(call, &out.status, &reply));
        return Err(if reply.get("error").is_some() {
            LockFailure::Refused(e)
        } else {
            LockFailure::Unknown(e)
        });
    }
    if interrupt::requested() {
        return Err(LockFailure::Unknown(anyhow::anyhow!(
            "interrupted while taking the lock"
        )));
    }
    Ok(reply)
}

fn deploy(
    sh: &Shell,
    cfg: &Config,
    scope: Scope,
    dry_run: bool,
    skip_checks: bool,
    redeploy: bool,
) -> Result<()> {
    let started = Instant::now();
    let started_at = utc_now();
    let local = local_origin(sh, cfg)?;

    // A read-only look first: there may be nothing to deploy.
    let remote = Remote::connect(cfg)?;
    let snap = remote.snapshot()?;
    snap.warn_junk(&cfg.root);
    if scope != Scope::All && snap.current.is_none() {
        bail!(
            "there is no current release on {}: the first deploy must be 'deploy all'",
            snap.host
        );
    }
    if !redeploy && snap.current_made.runs(scope, &local.commit, local.dirty) {
        eprintln!(
            "nothing to deploy: the current release {} on {} already runs commit {} ({}); use --redeploy to make a new release anyway",
            snap.current.as_deref().unwrap_or("?"),
            snap.host,
            local.commit,
            scope.name()
        );
        return Ok(());
    }

    if !dry_run {
        local_checks(sh, scope, skip_checks)?;
    }
    let files = if dry_run && scope.frontend() {
        Vec::new()
    } else {
        upload_files(sh, scope)?
    };
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
    let prune = release::prune(
        &snap.releases,
        current,
        Some(&name),
        cfg.keep.saturating_sub(1),
        started_at,
    );
    let mut held = Held {
        remote: &remote,
        cfg,
        token: lock.token.clone(),
        release: name.clone(),
        started_at,
        started_iso: lock.started.clone(),
        deployer: local.deployer.clone(),
        commit: lock.commit.clone(),
        scope: scope.name(),
        revision: "-".to_string(),
        mark: true,
    };

    if dry_run {
        println!(
            "Plan for 'deploy {}' to {} ({}), nothing will be changed:",
            scope.name(),
            cfg.server,
            snap.host
        );
        let checks = match (skip_checks, scope) {
            (true, s) if s.frontend() => "build the frontend (checks skipped)".to_string(),
            (true, _) => "none (checks skipped)".to_string(),
            (false, s) => format!(
                "clean tree{}{}",
                if s.backend() {
                    ", backend ruff + pytest"
                } else {
                    ""
                },
                if s.frontend() {
                    ", frontend check + tests + build"
                } else {
                    ""
                }
            ),
        };
        println!("  local: {checks}");
        for (what, line) in [
            (
                "preflight, lock, create the release",
                steps::begin(&cfg.root, &name, scope.name(), &lock).render(),
            ),
            ("upload", format!("rsync {}", crate::quote::join(&rsync))),
            (
                "link env, uv sync, migrate",
                steps::prepare(&cfg.root, &name, scope, current, &origin).render(),
            ),
            (
                "switch, restart, health; then finish or restore (server-side job)",
                held.activate_call(current, &units, &prune).render(),
            ),
            (
                "on a failure before the switch",
                steps::fail(&held.record(), "failed", true).render(),
            ),
        ] {
            println!("  {what}:\n      {line}");
        }
        return Ok(());
    }

    fs_err::write(&file_list, files.join("\0"))?;
    let _cleanup = RemoveOnDrop(file_list.clone());

    match take_lock(
        &remote,
        &steps::begin(&cfg.root, &name, scope.name(), &lock),
    ) {
        Ok(_) => {}
        Err(LockFailure::Refused(e)) => return Err(e),
        Err(LockFailure::Unknown(e)) => {
            // We may hold the lock: release it if it is ours and record the failure.
            let result = held.abandon();
            return Err(e.context(format!(
                "deploy of {name} {result}; current was not touched"
            )));
        }
    }
    let prepared = (|| -> Result<()> {
        ui::step(&format!("upload {} files", files.len()), || {
            upload(sh, &rsync)
        })?;
        interrupt::check()?;
        let reply = ui::step("link env, uv sync, migrate", || {
            interrupt::shielded(|| {
                remote.call(&steps::prepare(&cfg.root, &name, scope, current, &origin))
            })
        })?;
        held.revision = reply.get("revision").unwrap_or("-").to_string();
        for w in reply.all("warn") {
            eprintln!("warning: {w}");
        }
        interrupt::check()
    })();
    if let Err(e) = prepared {
        let result = held.abandon();
        return Err(e.context(format!(
            "deploy of {name} {result}; current was not touched ({}); release {name} marked failed",
            current.unwrap_or("no release")
        )));
    }
    match held.activate(current, &units, &prune) {
        Ok(_) => {
            eprintln!(
                "deployed {name} ({} {}, alembic {}) to {} in {}",
                scope.name(),
                held.commit,
                held.revision,
                snap.host,
                ui::secs(started.elapsed())
            );
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "deploy of {name} failed after the switch; see above whether {} was restored (rolled-back) or not; release {name} marked failed",
            current.unwrap_or("no release")
        ))),
    }
}

struct RemoveOnDrop(Utf8PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.0);
    }
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
    if let (Some(sent), Some(files)) = (
        steps::rsync_stat(&text, "Total bytes sent"),
        steps::rsync_stat(&text, "Number of regular files transferred"),
    ) {
        eprint!("[{files} files changed, {sent} bytes sent] ");
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
    let commit = snap
        .releases
        .iter()
        .find(|r| r.name == target)
        .map(|r| r.commit.clone())
        .unwrap_or_else(|| "-".into());
    let local = Local {
        commit,
        dirty: false,
        deployer: deployer(),
    };
    let lock = new_lock(&local, &format!("rollback {target}"));
    let held = Held {
        remote: &remote,
        cfg,
        token: lock.token.clone(),
        release: target.clone(),
        started_at,
        started_iso: lock.started.clone(),
        deployer: local.deployer.clone(),
        commit: local.commit.clone(),
        scope: "rollback",
        revision: db_rev,
        mark: false,
    };
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
                "switch, restart, health; then finish or restore (server-side job)",
                held.activate_call(Some(&current), &units, &[]).render(),
            ),
        ] {
            println!("  {what}:\n      {line}");
        }
        return Ok(());
    }
    match take_lock(
        &remote,
        &steps::begin(&cfg.root, &target, "rollback", &lock),
    ) {
        Ok(_) => {}
        Err(LockFailure::Refused(e)) => return Err(e),
        Err(LockFailure::Unknown(e)) => {
            held.abandon();
            return Err(e.context("rollback did not start; current was not touched"));
        }
    }
    held.activate(Some(&current), &units, &[])
        .map_err(|e| e.context(format!("rollback to {target} failed")))?;
    eprintln!(
        "rolled back {current} -> {target} on {} in {}",
        snap.host,
        ui::secs(started.elapsed())
    );
    Ok(())
}
