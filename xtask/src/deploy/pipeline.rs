//! `cargo xtask deploy [all|backend|frontend]`: the deploy as the client drives it.
//!
//! 1. Read the server (one probe) and plan: nothing to deploy, or which release, what to
//!    restart and prune.
//! 2. Start the local checks (child processes) and, at the same time, the server job: it takes
//!    the lock, checks current is what we planned against, and seeds the new release from it.
//! 3. Upload what differs (once the frontend build is there), then tell the job `uploaded`: it
//!    prepares the release (env links, virtualenv, assets) while the checks go on.
//! 4. When every check passed: `checked` and `go`. The job migrates, switches, restarts, checks
//!    health, and finishes or restores, by itself; we follow its events and print them.
//!
//! Until `checked` is sent, any failure or interrupt here makes the job stop before the
//! migration (`abort`); a vanished deployer does the same by falling silent. After it, the job
//! finishes the deploy whatever happens to us. The last line says what the server ended with.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use xshell::Shell;

use crate::config::Config;
use crate::deploy::checks::Checks;
use crate::deploy::job::{Job, Refusal, Wait};
use crate::deploy::local::{self, Transfer};
use crate::deploy::plan::{self, Asker, Decision, HostRole, JobPlan};
use crate::deploy::report::{self, Printer};
use crate::deploy::snapshot::Snapshot;
use crate::flags::{CheckPart, Scope};
use crate::interrupt::{self, SIGTERM};
use crate::{proc, say, ui};

pub struct Options {
    pub dry_run: bool,
    pub skip_local_checks: bool,
    pub redeploy: bool,
    pub recheck: bool,
}

pub fn deploy(sh: &Shell, cfg: &Config, scope: Scope, opts: Options) -> Result<()> {
    let started = Instant::now();
    let local = local::origin(sh, cfg)?;
    let session = super::connect(cfg)?;
    let snap = super::probe(&session, cfg, false)?;
    let estimate = local::manifest(sh, scope)
        .map(|m| local::size_of(&m))
        .unwrap_or(0);
    let plan = match plan::deploy(
        &snap,
        &local,
        cfg,
        scope,
        opts.redeploy,
        estimate,
        HostRole::Primary,
    )? {
        Decision::Nothing(msg) => {
            say!("{msg}");
            return Ok(());
        }
        Decision::Deploy(p) => p,
    };
    let token = plan::token();
    let asker = Asker {
        token: &token,
        deployer: &local.deployer,
        host: &local.host,
        commit: &local.commit,
        dirty: local.dirty,
    };
    let call = plan.run_call(cfg, &asker);
    if opts.dry_run {
        print_plan(cfg, &snap, &plan, scope, &opts, &call.render());
        return Ok(());
    }

    let checks = Checks::start(scope, opts.skip_local_checks, opts.recheck)?;
    test_pause_before_lock();
    let job = super::start_job(session, &call, &snap.host)?;
    let job = match job {
        Ok(job) => job,
        Err(Refusal::Locked { message, lock }) => {
            drop(checks);
            let holder = lock
                .map(|l| l.describe(snap.now))
                .unwrap_or_else(|| "holder unknown".into());
            let advice = if message.contains("STALE") || holder.contains("STALE") {
                "; its job is not running: remove it with 'cargo xtask deploy unlock'"
            } else {
                "; wait for it, or follow it with 'cargo xtask deploy status --follow'"
            };
            bail!("{message}: {holder}{advice}");
        }
        Err(Refusal::Refused(message)) => {
            drop(checks);
            bail!("{message}");
        }
    };
    let mut d = Driver {
        sh,
        cfg,
        scope,
        plan: &plan,
        snap: &snap,
        job,
        checks,
        printer: Printer::new(false),
        stage: Stage::Seeding,
        rsync: None,
        aborted: false,
        signals_seen: 0,
        upload_started: None,
    };
    let outcome = d.run()?;
    let what = format!(
        "deploy of {} ({} {})",
        plan.release(),
        scope.name(),
        local.made()
    );
    let line = report::final_line(&what, &snap.host, &outcome);
    if outcome.success() {
        say!("{line} ({} in all)", ui::secs(started.elapsed()));
        return Ok(());
    }
    Err(anyhow!("{line}"))
}

/// Test hook (`INNERCONTEXT_TEST_PAUSE_BEFORE_LOCK=FILE`): wait while FILE exists, between
/// the plan and the lock, so a test can land another deploy in that window.
fn test_pause_before_lock() {
    let Some(file) = std::env::var_os("INNERCONTEXT_TEST_PAUSE_BEFORE_LOCK") else {
        return;
    };
    say!(
        "(test hook: paused before the lock while {} exists)",
        file.to_string_lossy()
    );
    while std::path::Path::new(&file).exists() && !interrupt::requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The job seeds the release; the frontend build may still run.
    Seeding,
    Uploading,
    /// Uploaded; the job prepares; the checks may still run.
    Checking,
    /// `checked` and `go` sent: the server finishes on its own.
    Activating,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Seeding => "the seed of the release",
            Stage::Uploading => "the upload",
            Stage::Checking => "the local checks",
            Stage::Activating => "the activation",
        }
    }
}

struct Driver<'a> {
    sh: &'a Shell,
    cfg: &'a Config,
    scope: Scope,
    plan: &'a JobPlan,
    snap: &'a Snapshot,
    job: Job,
    checks: Checks,
    printer: Printer,
    stage: Stage,
    rsync: Option<(Child, Instant)>,
    /// The job was told to stop before the switch.
    aborted: bool,
    signals_seen: usize,
    upload_started: Option<Instant>,
}

impl Driver<'_> {
    fn run(&mut self) -> Result<crate::deploy::job::Outcome> {
        loop {
            self.on_signals()?;
            self.on_checks()?;
            match self
                .job
                .wait(&mut self.printer, Duration::from_millis(50), &|_| false)
            {
                Wait::Finished => break,
                Wait::Lost => self.on_lost()?,
                Wait::Reached | Wait::Timeout => {}
            }
            self.on_upload()?;
            self.advance()?;
        }
        self.printer.close_line();
        self.stop_local();
        self.job
            .outcome
            .clone()
            .ok_or_else(|| anyhow!("the job on {} ended without a result", self.job.host))
    }

    /// Tell the job to stop before the migration, once; stop what runs here.
    fn abort(&mut self, result: &str, why: &str) {
        self.stop_local();
        if self.aborted || self.job.has_sent("checked") {
            return;
        }
        self.aborted = true;
        self.printer.close_line();
        say!(
            "==> {why}: telling {} to stop before the switch",
            self.job.host
        );
        let msg = format!("abort {result}: {why}");
        if self.job.send(&msg).is_err() {
            say!("    (the connection is gone: the job stops by itself once it misses us)");
        }
    }

    fn stop_local(&mut self) {
        self.checks.abort();
        if let Some((mut child, started)) = self.rsync.take() {
            proc::signal_group(child.id(), SIGTERM);
            let _ = child.wait();
            say!("stopped ({})", ui::secs(started.elapsed()));
        }
    }

    fn on_signals(&mut self) -> Result<()> {
        let n = interrupt::count();
        if n == self.signals_seen {
            return Ok(());
        }
        self.signals_seen = n;
        self.printer.close_line();
        if n >= 2 {
            say!(
                "stopped watching: the job on {} goes on by itself; 'cargo xtask deploy status --follow' shows how it ends",
                self.job.host
            );
            self.job.detach();
            bail!("interrupted by {} (twice)", interrupt::describe());
        }
        if self.job.has_sent("checked") {
            say!(
                "==> {} received: the server already runs {} and completes it (the migration may have started); Ctrl-C again to stop watching",
                interrupt::describe(),
                self.stage.name()
            );
        } else {
            let why = format!("{} during {}", interrupt::describe(), self.stage.name());
            self.abort("interrupted", &why);
        }
        Ok(())
    }

    fn on_checks(&mut self) -> Result<()> {
        for part in self.checks.poll()? {
            let r = self.checks.result(part).expect("just ended");
            let cached = if r.cached {
                " [passed for this tree before]"
            } else {
                ""
            };
            let label = match part {
                CheckPart::Backend => "local checks: backend (ruff, pytest)",
                CheckPart::Frontend => "local checks: frontend (svelte-check, tests)",
                CheckPart::Build => "build the frontend",
            };
            self.printer.close_line();
            say!(
                "==> {label:<44} {} ({:.1}s){cached}",
                if r.ok { "ok" } else { "FAILED" },
                r.secs
            );
            if !r.ok {
                for l in r.tail.lines() {
                    say!("    | {l}");
                }
                let why = format!("the local checks failed ({})", part.name());
                self.abort("failed", &why);
            }
        }
        Ok(())
    }

    /// Move the deploy on when the job and the checks allow it.
    fn advance(&mut self) -> Result<()> {
        if self.aborted {
            return Ok(());
        }
        match self.stage {
            Stage::Seeding
                if self.job.phase == "awaiting-upload"
                    && !self.checks.build_pending()
                    && self.checks.failed().is_none() =>
            {
                self.start_upload()?;
            }
            Stage::Checking if self.checks.all_done() && self.checks.failed().is_none() => {
                self.job.send("checked")?;
                self.job.send("go")?;
                self.stage = Stage::Activating;
            }
            _ => {}
        }
        Ok(())
    }

    fn start_upload(&mut self) -> Result<()> {
        let manifest = local::manifest(self.sh, self.scope)?;
        if self.scope.frontend() && !manifest.iter().any(|p| p.starts_with("frontend/build/")) {
            bail!("the frontend build is missing (frontend/build): run 'cargo xtask check build'");
        }
        let seed = self
            .job
            .notes
            .iter()
            .find(|n| n.first().map(String::as_str) == Some("seed"));
        let drift: Vec<String> = self
            .job
            .notes
            .iter()
            .filter(|n| n.first().map(String::as_str) == Some("drift"))
            .filter_map(|n| n.get(1).cloned())
            .collect();
        let seeded_from_current = seed.is_some_and(|s| {
            s.get(2).map(String::as_str) == Some("verified")
                && s.get(1).map(String::as_str) == self.snap.current.name()
        });
        // A base made from a dirty tree is not its commit: only a clean base can be diffed.
        let base = self.snap.current_made.backend_commit.clone();
        let seeded_from_current = seeded_from_current && !base.ends_with("+dirty") && base != "-";
        let changed = if seeded_from_current && self.scope.backend() {
            local::changed_backend(self.sh, &base)?
        } else {
            None
        };
        let (transfer, changed) = match changed {
            Some(c) => (Transfer::Diff { base: base.clone() }, c),
            None if seeded_from_current && !self.scope.backend() => {
                (Transfer::Diff { base: base.clone() }, Vec::new())
            }
            None => (Transfer::Full, Vec::new()),
        };
        let send = local::to_send(&manifest, &transfer, &changed, &drift);
        self.job.send_manifest(&manifest)?;
        let list = self.job.session().private_dir().join("upload.list");
        fs_err::write(&list, send.join("\0"))?;
        let how = match &transfer {
            Transfer::Diff { base } => format!("changed since {base}"),
            Transfer::Full => "compared by checksum".to_string(),
        };
        let args = rsync_args(
            &self.job.session().rsync_rsh(),
            &rsync_dest(&self.cfg.server),
            &self.cfg.root,
            self.plan.release(),
            ui::interactive(),
            &list,
        );
        self.printer.close_line();
        ui::step_start(&format!(
            "upload {} of {} files ({how})",
            send.len(),
            manifest.len()
        ));
        let mut cmd = Command::new("rsync");
        cmd.args(&args)
            .current_dir(crate::project_root())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if ui::interactive() {
            cmd.stdout(Stdio::inherit());
        } else {
            cmd.stdout(Stdio::piped());
        }
        proc::isolate(&mut cmd);
        let child = cmd.spawn().context("starting rsync (is it installed?)")?;
        self.rsync = Some((child, Instant::now()));
        self.upload_started = Some(Instant::now());
        self.stage = Stage::Uploading;
        Ok(())
    }

    fn on_upload(&mut self) -> Result<()> {
        let Some((child, started)) = self.rsync.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            return Ok(());
        }
        let took = started.elapsed();
        let (child, _) = self.rsync.take().expect("checked above");
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            say!("FAILED ({})", ui::secs(took));
            let last = stderr
                .lines()
                .chain(stdout.lines())
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("see the output above")
                .to_string();
            if self.job.session().master_pid().is_none() {
                return self.on_lost();
            }
            let why = format!("the upload failed (rsync {}: {last})", out.status);
            self.abort("failed", &why);
            return Ok(());
        }
        let stats = match (
            rsync_stat(&stdout, "Number of regular files transferred"),
            rsync_stat(&stdout, "Total bytes sent"),
        ) {
            (Some(files), Some(sent)) => format!(" [{files} files changed, {sent} bytes sent]"),
            _ => String::new(),
        };
        say!("ok ({}){stats}", ui::secs(took));
        self.job.send("uploaded")?;
        self.stage = Stage::Checking;
        Ok(())
    }

    /// The connection dropped: reconnect once and re-attach; before the point of no return,
    /// ask the job to stop (we cannot know what the network did to the upload).
    fn on_lost(&mut self) -> Result<()> {
        let stage = self.stage.name();
        self.stop_local();
        self.printer.close_line();
        say!(
            "==> the connection to {} was lost during {stage}{}: reconnecting",
            self.job.host,
            if self.job.last_error.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.job.last_error)
            }
        );
        match self
            .job
            .reattach(&self.cfg.server, self.cfg.ssh_config.as_deref())
        {
            Ok(()) => {
                say!("    reconnected; following the job again");
                if !self.job.has_sent("checked") {
                    let why = format!(
                        "the connection to {} was lost during {stage}",
                        self.job.host
                    );
                    self.abort("interrupted", &why);
                }
                Ok(())
            }
            Err(e) => {
                self.stop_local();
                let next = if self.job.has_sent("checked") {
                    "the server completes the deploy (or restores the previous release) by itself"
                } else {
                    "the server job stops before the switch by itself once it misses us (about 10s)"
                };
                bail!(
                    "lost the connection to {} during {stage} and could not reconnect ({e:#}): {next}; 'cargo xtask deploy status' shows the outcome",
                    self.job.host
                )
            }
        }
    }
}

/// rsync wants IPv6 literals in brackets (`user@[fd00::2]:path`); ssh wants them bare.
pub fn rsync_dest(server: &str) -> String {
    let (user, host) = match server.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, server),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match user {
        Some(u) => format!("{u}@{host}"),
        None => host,
    }
}

/// The rsync command (argv without the program name). The server seeded the release from
/// current (hard links), so only listed files are compared (by checksum) and only changed bytes
/// travel; rsync writes a changed file beside and renames it, so the seed's links to earlier
/// releases are never written through. Permissions are kept minus group/other write; times are
/// not (a rebuilt but identical file must still match).
pub fn rsync_args(
    rsh: &str,
    dest: &str,
    root: &str,
    release: &str,
    progress: bool,
    file_list: &camino::Utf8Path,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--from0",
        "--checksum",
        "--links",
        "--perms",
        "--chmod=go-w",
        "--omit-dir-times",
        "--stats",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--files-from={file_list}"));
    if progress {
        args.push("--info=progress2".to_string());
    }
    args.push("-e".to_string());
    args.push(rsh.to_string());
    args.push("./".to_string());
    args.push(format!("{dest}:{root}/releases/{release}/"));
    args
}

/// `Total bytes sent: 1,234` and friends from rsync --stats.
pub fn rsync_stat(output: &str, label: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?.strip_prefix(':')?;
        let digits: String = rest
            .split_whitespace()
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

fn print_plan(
    cfg: &Config,
    snap: &Snapshot,
    plan: &JobPlan,
    scope: Scope,
    opts: &Options,
    run: &str,
) {
    crate::show!(
        "Plan for '{}' to {} ({}), nothing will be changed:",
        plan.command(),
        cfg.server,
        snap.host
    );
    let checks = match (opts.skip_local_checks, scope) {
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
                ", frontend build + svelte-check + tests"
            } else {
                ""
            }
        ),
    };
    crate::show!("  local, beside the upload: {checks}");
    crate::show!(
        "  server job (takes the lock, checks current is still {}):",
        plan.expect_current
    );
    crate::show!("      {run}");
    crate::show!(
        "  upload: rsync into {}/releases/{} (seeded from current; only what changed travels)",
        cfg.root,
        plan.release()
    );
    crate::show!(
        "  then on the server: prepare, {}switch, restart {}, health checks ({}s); on failure restore {}",
        if scope.backend() { "migrate, " } else { "" },
        plan.restart.join(", "),
        cfg.health_timeout,
        snap.current.name().unwrap_or("nothing (current is removed)")
    );
    if !plan.prune.is_empty() {
        crate::show!("  after success: prune {}", plan.prune.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_writes_into_the_seeded_release() {
        let a = rsync_args(
            "ssh -o ControlPath=/tmp/c",
            "innercontext@app",
            "/opt/ic",
            "20261128T101530Z",
            false,
            camino::Utf8Path::new("/tmp/list"),
        );
        assert!(a.contains(&"--checksum".to_string()));
        assert!(
            !a.iter().any(|x| x == "--inplace"),
            "never write through a hard link"
        );
        assert!(!a.iter().any(|x| x.starts_with("--info=progress")));
        assert_eq!(
            a.last().unwrap(),
            "innercontext@app:/opt/ic/releases/20261128T101530Z/"
        );
    }

    #[test]
    fn rsync_stats_parse() {
        let out = "Number of files: 120 (reg: 100, dir: 20)\nTotal file size: 1,234,567 bytes\nTotal bytes sent: 4,321\nTotal bytes received: 99\n";
        assert_eq!(rsync_stat(out, "Total bytes sent"), Some(4321));
        assert_eq!(rsync_stat(out, "Total file size"), Some(1_234_567));
        assert_eq!(rsync_stat(out, "Missing"), None);
    }

    #[test]
    fn ipv6_literals_get_brackets_for_rsync() {
        assert_eq!(rsync_dest("innercontext@fd00::2"), "innercontext@[fd00::2]");
        assert_eq!(
            rsync_dest("innercontext@[fd00::2]"),
            "innercontext@[fd00::2]"
        );
        assert_eq!(rsync_dest("app"), "app");
        assert_eq!(rsync_dest("u@10.0.0.2"), "u@10.0.0.2");
    }
}
