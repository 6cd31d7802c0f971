//! `cargo xtask deploy [all|backend|frontend]`: the deploy as the client drives it, on one host
//! or a fleet.
//!
//! 1. Start the local checks (child processes: the frontend build first), then read every
//!    server (one connection and one probe per host, in parallel) and plan: nothing to deploy,
//!    or one release for all hosts, what to restart and prune on each.
//! 2. Start the server job on each host, in order, each taking its lock and checking current is
//!    what we planned against; it seeds the new release from current.
//! 3. Upload what differs to each host (once the frontend build is there), then tell its job
//!    `uploaded`: it prepares the release (env links, virtualenv, assets) while the checks go on.
//! 4. When every check passed: `checked`. The primary migrates; then the hosts switch, restart
//!    and check health, one batch at a time (one host: at once, and it finishes by itself).
//!
//! Until `checked` is sent, a failure or an interrupt here makes every job stop before the
//! migration (`abort`); a vanished deployer does the same by falling silent. After it, a single
//! host finishes whatever happens to us; a fleet keeps going only while we watch (a healthy host
//! waits for our `commit`, and goes back without one). The last line says what the servers
//! ended with.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use xshell::Shell;

use crate::config::Config;
use crate::config::HostRole;
use crate::deploy::checks::Checks;
use crate::deploy::fleet::{self, Member, Output};
use crate::deploy::job::{LockNow, Wait, RECONNECT_FOR};
use crate::deploy::local::{self, Carrier, Transfer};
use crate::deploy::plan::{self, Asker, FleetDecision, JobPlan};
use crate::deploy::report::{self, FleetPrinter, Printer};
use crate::deploy::rollout::Rollout;
use crate::deploy::snapshot::Snapshot;
use crate::deploy::{dbsnap, migration};
use crate::flags::{CheckPart, Scope};
use crate::interrupt::{self, SIGTERM};
use crate::{proc, say, ui};

pub struct Options {
    pub dry_run: bool,
    pub skip_local_checks: bool,
    pub redeploy: bool,
    pub recheck: bool,
    /// Fleets: hosts that switch at once (1: rolling; `--parallel`: all).
    pub batch: usize,
    /// The migration lint's refusals become warnings (deploy.log says so).
    pub allow_unsafe_migration: bool,
}

pub fn deploy(sh: &Shell, cfg: &Config, scope: Scope, opts: Options) -> Result<()> {
    let started = Instant::now();
    let local = local::origin(sh, cfg)?;
    // The checks (and the frontend build the upload needs) run while we connect.
    let checks = if opts.dry_run {
        None
    } else {
        Some(Checks::start(scope, opts.skip_local_checks, opts.recheck)?)
    };
    let sessions = fleet::connect_all(cfg)?;
    let snaps = fleet::probe_all(&sessions, cfg, false, false)?;
    let estimate = local::manifest(sh, scope)
        .map(|m| local::size_of(&m))
        .unwrap_or(0);
    let hosts: Vec<(crate::config::Host, Snapshot)> = cfg
        .hosts
        .iter()
        .cloned()
        .zip(snaps.iter().cloned())
        .collect();
    let plans = match plan::fleet_deploy(&hosts, &local, cfg, scope, opts.redeploy, estimate)? {
        FleetDecision::Nothing(msg) => {
            drop(checks);
            say!("{msg}");
            return Ok(());
        }
        FleetDecision::Deploy(p) => p,
    };
    // The migration lint (and the room for the snapshot), on the primary's database.
    let snapshot = dbsnap::enabled(|k| std::env::var(k).ok())?;
    let primary = plans.iter().position(|p| p.role == HostRole::Primary);
    let lint = match primary.filter(|_| scope.backend()) {
        Some(i) => migration::before_lock(
            sh,
            &migration::Ask {
                cfg,
                session: &sessions[i],
                host: &snaps[i].host,
                allow_unsafe: opts.allow_unsafe_migration,
                dry_run: opts.dry_run,
                snapshot,
                upload_bytes: plans[i].need_mb * 1024 * 1024,
            },
        )?,
        None => None,
    };
    let token = plan::token();
    let asker = Asker {
        token: &token,
        deployer: &local.deployer,
        host: &local.host,
        commit: &local.commit,
        dirty: local.dirty,
    };
    let calls: Vec<crate::remote::Call> = plans
        .iter()
        .map(|p| {
            let mut call = p.run_call(cfg, &asker);
            dbsnap::plan_args(&mut call, opts.allow_unsafe_migration, snapshot);
            call
        })
        .collect();
    if opts.dry_run {
        for ((host, snap), (p, call)) in hosts.iter().zip(plans.iter().zip(&calls)) {
            print_plan(cfg, &host.dest, snap, p, scope, &opts, &call.render());
        }
        for line in lint.iter().flat_map(migration::dry_run_lines) {
            crate::show!("{line}");
        }
        if plans.len() > 1 {
            let roles: Vec<(&str, crate::config::HostRole)> = snaps
                .iter()
                .zip(&plans)
                .map(|(s, p)| (s.host.as_str(), p.role))
                .collect();
            crate::show!("{}", fleet_plan_line(&roles, opts.batch));
        }
        if let Some(l) = lint.filter(|l| !l.refused.is_empty()) {
            bail!(
                "the deploy would be refused before the lock: the migration lint refused {} statement(s) of the migrations from {} to {} (see above)",
                l.refused.len(),
                l.from,
                l.to
            );
        }
        return Ok(());
    }
    let mut checks = checks.expect("started unless dry run");
    test_pause_before_lock();
    // A signal so far (during connect, the probe, the plan) stops here: no job was asked yet.
    super::stop_before_the_lock(cfg)?;
    let mut out: Box<dyn Output> = if plans.len() == 1 {
        Box::new(Printer::new(false))
    } else {
        Box::new(FleetPrinter::new(
            snaps.iter().map(|s| s.host.clone()).collect(),
        ))
    };
    let starts = hosts
        .iter()
        .cloned()
        .zip(sessions)
        .zip(calls)
        .map(|(((h, s), session), call)| (h, s, session, call))
        .collect();
    let members = match fleet::start_all(starts, out.as_mut(), cfg.ssh_config.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            checks.abort();
            return Err(e);
        }
    };
    let release = plans[0].release().to_string();
    let n = members.len();
    let what = format!("deploy of {release} ({} {})", scope.name(), local.made());
    let mut d = Driver {
        sh,
        cfg,
        scope,
        what: what.clone(),
        release: release.clone(),
        uploads: (0..n).map(|_| Upload::default()).collect(),
        members,
        checks,
        out,
        rollout: Rollout::new(opts.batch),
        aborted: None,
        checked: false,
        signals_seen: 0,
    };
    d.run()?;
    d.out.close();
    if n == 1 {
        let (line, ok) = last_words(&what, &mut d.members[0])?;
        if ok {
            say!("{line} ({} in all)", ui::secs(started.elapsed()));
            return Ok(());
        }
        return Err(anyhow!("{line}"));
    }
    report::fleet_summary(
        &what,
        fleet::summary_rows(&mut d.members),
        started.elapsed(),
    )
}

/// One host's last line and whether it is a success: the job's result as it reported it; or,
/// when the deployer lost sight of the job on the way (a connection lost, a message that could
/// not be sent, this process stopped), what the server's files say now.
pub fn last_words(what: &str, m: &mut Member) -> Result<(String, bool)> {
    if m.job.new_stop().is_some() || m.job.lost_sight || m.job.gone {
        match m.job.read_now() {
            Ok(r) => return Ok(report::reading_line(what, m.name(), &r)),
            // The job's own words, if they came (the same as its result file).
            Err(e) if m.job.outcome.is_none() => {
                return Ok((
                    report::unreachable_line(what, m.name(), &format!("{e:#}")),
                    false,
                ))
            }
            Err(_) => {}
        }
    }
    let outcome = m
        .job
        .outcome
        .clone()
        .ok_or_else(|| anyhow!("the job on {} ended without a result", m.name()))?;
    Ok((
        report::final_line(what, m.name(), &outcome),
        outcome.success(),
    ))
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

/// One host's upload.
#[derive(Default)]
struct Upload {
    /// The processes carrying it (rsync; or tar and ssh) and when they started.
    carrying: Option<Carrying>,
    /// The upload ended and the job was told `uploaded`.
    done: bool,
    started: bool,
    summary: String,
    /// Its step line (one host): the id and name to end it with, on its own line if other
    /// lines came meanwhile (a job that ended while we were stopped).
    line: Option<(u64, String)>,
}

impl Upload {
    /// End its step line with `outcome` (one host; a fleet prints one line for all uploads).
    fn end_line(&mut self, outcome: &str) {
        if let Some((id, name)) = self.line.take() {
            ui::step_end(id, &name, outcome);
        }
    }
}

/// The local processes of one upload: `rsync`, or `tar | ssh … receive` (the last one's
/// output is what the upload said). Each runs in its own process group.
struct Carrying {
    procs: Vec<Child>,
    /// rsync's stdout (its --stats), read by a thread that also turns its progress into the
    /// step line's detail on a terminal.
    reader: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    carrier: Carrier,
}

impl Carrying {
    /// Whether every process has exited.
    fn finished(&mut self) -> Result<bool> {
        for p in &mut self.procs {
            if p.try_wait()?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Collect the processes: whether all succeeded, the last one's stdout, everyone's stderr.
    fn collect(self) -> Result<(bool, String, String)> {
        let (mut ok, mut stdout, mut stderr) = (true, String::new(), String::new());
        for p in self.procs {
            let out = p.wait_with_output()?;
            ok &= out.status.success();
            stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        if let Some(r) = self.reader {
            stdout = r.join().unwrap_or_default();
        }
        Ok((ok, stdout, stderr))
    }

    /// Stop every process (its whole group) and reap it.
    fn stop(self) -> Instant {
        for mut p in self.procs {
            proc::signal_group(p.id(), SIGTERM);
            let _ = p.wait();
        }
        self.started
    }
}

struct Driver<'a> {
    sh: &'a Shell,
    cfg: &'a Config,
    scope: Scope,
    /// `deploy of RELEASE (SCOPE, commit)`: how the last line names it.
    what: String,
    release: String,
    members: Vec<Member>,
    uploads: Vec<Upload>,
    checks: Checks,
    out: Box<dyn Output>,
    rollout: Rollout,
    /// The message that tells the jobs to stop before the switch, once they must.
    aborted: Option<String>,
    /// `checked` was sent.
    checked: bool,
    signals_seen: usize,
}

impl Driver<'_> {
    fn fleet(&self) -> bool {
        self.members.len() > 1
    }

    /// One host past `checked` whose job takes the snapshot of the database: the last step
    /// before the migration, so an interrupt still stops it there (a fleet goes back anyway).
    fn in_snapshot(&self) -> bool {
        self.checked && !self.fleet() && self.members[0].job.step == "snapshot"
    }

    fn run(&mut self) -> Result<()> {
        if self.fleet() {
            for i in 0..self.members.len() {
                self.tell(i, "begin");
            }
        }
        loop {
            self.on_signals()?;
            self.on_stops();
            self.on_checks()?;
            let tick = Duration::from_millis(if self.fleet() { 15 } else { 50 });
            for i in 0..self.members.len() {
                if self.members[i].job.over() {
                    continue;
                }
                let w = self.members[i]
                    .job
                    .wait(self.out.as_mut(), tick, &|_| false);
                if w == Wait::Lost {
                    self.on_lost(i)?;
                }
            }
            self.on_stops();
            for i in 0..self.members.len() {
                self.on_upload(i)?;
            }
            self.advance()?;
            if self.members.iter().all(|m| m.job.over()) {
                break;
            }
        }
        self.stop_local();
        Ok(())
    }

    /// Send `msg` to job `i` unless it is over; whether it went. A message that cannot be sent
    /// is a lost connection: the follower hangs up, and the next wait says so (or brings the
    /// job's result, if the job ended meanwhile).
    fn tell(&mut self, i: usize, msg: &str) -> bool {
        let job = &mut self.members[i].job;
        !job.over() && job.send(msg).is_ok()
    }

    /// This process was stopped (SIGSTOP, a suspended machine): say so once. What the jobs did
    /// meanwhile comes next, as they wrote it, and the last line is read from the server.
    fn on_stops(&mut self) {
        for i in 0..self.members.len() {
            if let Some(gap) = self.members[i].job.new_stop() {
                self.out.close();
                ui::break_line();
                say!(
                    "==> this deployer was stopped for {} (SIGSTOP, or a suspended machine): reading what the job on {} did meanwhile",
                    ui::secs(gap),
                    self.members[i].name()
                );
            }
        }
    }

    /// Tell every job to stop before the migration (or, in a fleet after it, to go back). Called
    /// again after a re-attach: a job that did not get the message gets it then.
    fn abort(&mut self, result: &str, why: &str) {
        self.stop_local();
        if self.aborted.is_none() {
            self.aborted = Some(format!("abort {result}: {why}"));
            self.out.close();
            if self.checked && self.fleet() {
                self.rollout.back(&mut self.members, why, self.out.as_mut());
                return;
            }
            if self.checked && !self.in_snapshot() {
                return;
            }
            say!(
                "==> {why}: telling {} to stop before the {}",
                self.members
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if self.checked { "migration" } else { "switch" }
            );
        }
        if self.checked && !self.in_snapshot() {
            if self.fleet() {
                self.rollout.back(&mut self.members, why, self.out.as_mut());
            }
            return;
        }
        let msg = self.aborted.clone().expect("set above");
        for i in 0..self.members.len() {
            if self.members[i].job.over() || self.members[i].job.has_said(&msg) {
                continue;
            }
            if !self.tell(i, &msg) {
                say!(
                    "    ({}: the message did not go through: {})",
                    self.members[i].name(),
                    self.members[i].job.last_error
                );
            }
        }
    }

    fn stop_local(&mut self) {
        self.checks.abort();
        for u in &mut self.uploads {
            if let Some(c) = u.carrying.take() {
                let started = c.stop();
                u.end_line(&format!("stopped ({})", ui::secs(started.elapsed())));
            }
        }
    }

    fn stage_name(&self) -> &'static str {
        if self.in_snapshot() {
            "the snapshot of the database"
        } else if self.checked {
            "the activation"
        } else if self.uploads.iter().all(|u| u.done) {
            "the local checks"
        } else if self.uploads.iter().any(|u| u.started) {
            "the upload"
        } else {
            "the seed of the release"
        }
    }

    fn on_signals(&mut self) -> Result<()> {
        let n = interrupt::count();
        if n == self.signals_seen {
            return Ok(());
        }
        self.signals_seen = n;
        self.out.close();
        let hosts = self
            .members
            .iter()
            .map(|m| m.name().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if n >= 2 {
            say!(
                "stopped watching: the job on {hosts} goes on by itself{}; 'cargo xtask deploy status --follow' shows how it ends",
                if self.fleet() {
                    " (a fleet without its deployer goes back to its previous release)"
                } else {
                    ""
                }
            );
            for m in &mut self.members {
                m.job.detach();
            }
            bail!("interrupted by {} (twice)", interrupt::describe());
        }
        let why = format!("{} during {}", interrupt::describe(), self.stage_name());
        if self.checked && !self.fleet() && !self.in_snapshot() {
            say!(
                "==> {} received: the server already runs {} and completes it (the migration may have started); Ctrl-C again to stop watching",
                interrupt::describe(),
                self.stage_name()
            );
        } else {
            self.abort("interrupted", &why);
        }
        Ok(())
    }

    fn on_checks(&mut self) -> Result<()> {
        for part in self.checks.poll()? {
            let r = self.checks.result(part).expect("just ended");
            let cached = match (&r.rebuilt, r.cached) {
                (Some(why), _) => format!(" [rebuilt: {why}]"),
                (None, true) => " [passed for this tree before]".to_string(),
                (None, false) => String::new(),
            };
            let label = match part {
                CheckPart::Backend => "local checks: backend (ruff, pytest)",
                CheckPart::Frontend => "local checks: frontend (svelte-check, tests)",
                CheckPart::Build => "build the frontend",
            };
            let line = format!(
                "==> {label:<44} {} ({:.1}s){cached}",
                if r.ok { "ok" } else { "FAILED" },
                r.secs
            );
            let tail = if r.ok { String::new() } else { r.tail.clone() };
            self.out.line(&line);
            for l in tail.lines() {
                say!("    | {l}");
            }
            if !tail.is_empty() || !r.ok {
                let why = format!("the local checks failed ({})", part.name());
                self.abort("failed", &why);
            }
        }
        Ok(())
    }

    /// Move the deploy on when the jobs and the checks allow it.
    fn advance(&mut self) -> Result<()> {
        let aborted = self.aborted.is_some();
        if aborted && !self.checked {
            return Ok(());
        }
        let build_ready = !self.checks.build_pending() && self.checks.failed().is_none();
        for i in 0..self.members.len() {
            if !self.uploads[i].started
                && self.members[i].job.phase == "awaiting-upload"
                && self.members[i].job.can_send()
                && build_ready
                && !aborted
            {
                self.start_upload(i)?;
            }
        }
        if !self.checked
            && !aborted
            && self.uploads.iter().all(|u| u.done)
            && self.checks.all_done()
            && self.checks.failed().is_none()
        {
            if self.fleet() {
                self.print_uploads();
                for i in 0..self.members.len() {
                    // One that does not get it is lost: the fleet goes back (on_lost).
                    self.tell(i, "checked");
                }
                self.checked = true;
            } else if self.tell(0, "checked") {
                // Not sent: the job never heard the checks passed; on_lost stops it.
                self.checked = true;
                self.members[0].activated = self.tell(0, "go");
            }
        }
        if self.checked && !self.fleet() && !self.members[0].activated {
            // `go` did not go through with `checked` (a re-attach since): send it now.
            self.members[0].activated = self.tell(0, "go");
        }
        if self.checked && self.fleet() {
            // A message that does not go through is a lost connection: the fleet goes back
            // (before the verdict), and the next wait re-attaches (on_lost).
            self.rollout.advance(&mut self.members, self.out.as_mut());
        }
        Ok(())
    }

    fn print_uploads(&mut self) {
        let summary: Vec<String> = self
            .members
            .iter()
            .zip(&self.uploads)
            .map(|(m, u)| format!("{} {}", m.name(), u.summary))
            .collect();
        self.out.line(&format!(
            "==> {:<44} ok [{}]",
            format!("upload to {} hosts", self.members.len()),
            summary.join("; ")
        ));
    }

    fn start_upload(&mut self, i: usize) -> Result<()> {
        let single = self.members.len() == 1;
        let manifest = local::manifest(self.sh, self.scope)?;
        if self.scope.frontend() && !manifest.iter().any(|p| p.starts_with("frontend/build/")) {
            bail!("the frontend build is missing (frontend/build): run 'cargo xtask check build'");
        }
        let m = &mut self.members[i];
        let seed = m
            .job
            .notes
            .iter()
            .find(|n| n.first().map(String::as_str) == Some("seed"))
            .cloned();
        let drift: Vec<String> = m
            .job
            .notes
            .iter()
            .filter(|n| n.first().map(String::as_str) == Some("drift"))
            .filter_map(|n| n.get(1).cloned())
            .collect();
        // A base made from a dirty tree is not its commit: only a clean base can be diffed.
        let base = m.snap.current_made.backend_commit.clone();
        let seeded_from_current = seed.as_ref().is_some_and(|s| {
            s.get(2).map(String::as_str) == Some("verified")
                && s.get(1).map(String::as_str) == m.snap.current.name()
        }) && !base.ends_with("+dirty")
            && base != "-";
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
        let carrier = local::carrier(&transfer, &send, local::size_of(&send));
        if m.job.send_manifest(&manifest).is_err() {
            // A lost connection: the next wait says so (on_lost).
            return Ok(());
        }
        let list = m.job.session().private_dir().join("upload.list");
        fs_err::write(&list, send.join("\0"))?;
        let how = match &transfer {
            Transfer::Diff { base } => format!("changed since {base}"),
            Transfer::Full => "compared by checksum".to_string(),
        };
        let progress = single && ui::interactive() && carrier == Carrier::Rsync;
        if single {
            self.out.close();
            let name = format!("upload {} of {} files ({how})", send.len(), manifest.len());
            self.uploads[i].line = Some((ui::step_start(&name), name));
        }
        let mut reader = None;
        let procs = match carrier {
            Carrier::Rsync => {
                let args = rsync_args(
                    &m.job.session().rsync_rsh(),
                    &rsync_dest(&m.host.dest),
                    &self.cfg.root,
                    &self.release,
                    progress,
                    &list,
                );
                let mut cmd = Command::new("rsync");
                cmd.args(&args)
                    .current_dir(crate::project_root())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                proc::isolate(&mut cmd);
                let mut child = cmd.spawn().context("starting rsync (is it installed?)")?;
                let stdout = child.stdout.take().expect("piped");
                reader = Some(std::thread::spawn(move || read_rsync(stdout, progress)));
                vec![child]
            }
            Carrier::Tar => {
                let mut tar = Command::new("tar");
                tar.args(tar_args(&list))
                    .current_dir(crate::project_root())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                proc::isolate(&mut tar);
                let mut tar = tar.spawn().context("starting tar")?;
                let stream = tar.stdout.take().expect("piped above");
                let call = crate::remote::Call::deploy(
                    "receive",
                    &[
                        ("root", self.cfg.root.clone()),
                        ("token", m.job.token.clone()),
                        ("release", self.release.clone()),
                    ],
                );
                let ssh = m.job.session().start(&call, Stdio::from(stream));
                match ssh {
                    Ok(ssh) => vec![tar, ssh],
                    Err(e) => {
                        proc::signal_group(tar.id(), SIGTERM);
                        let _ = tar.wait();
                        return Err(e);
                    }
                }
            }
        };
        self.uploads[i].carrying = Some(Carrying {
            procs,
            reader,
            started: Instant::now(),
            carrier,
        });
        self.uploads[i].started = true;
        self.uploads[i].summary = format!("{} of {} files ({how})", send.len(), manifest.len());
        Ok(())
    }

    fn on_upload(&mut self, i: usize) -> Result<()> {
        let Some(c) = self.uploads[i].carrying.as_mut() else {
            return Ok(());
        };
        if !c.finished()? {
            return Ok(());
        }
        let c = self.uploads[i].carrying.take().expect("checked above");
        let (took, carrier) = (c.started.elapsed(), c.carrier);
        let (ok, stdout, stderr) = c.collect()?;
        let single = self.members.len() == 1;
        if !ok {
            if single {
                self.uploads[i].end_line(&format!("FAILED ({})", ui::secs(took)));
            }
            let last = upload_error(&stderr, &stdout);
            if self.members[i].job.over() {
                // The job ended meanwhile (its result follows): nothing to ask of it.
                return Ok(());
            }
            if self.members[i].job.session().master_pid().is_none() {
                return self.on_lost(i);
            }
            let why = format!(
                "the upload to {} failed ({}: {last})",
                self.members[i].name(),
                carrier.name()
            );
            self.abort("failed", &why);
            return Ok(());
        }
        let stats = match carrier {
            Carrier::Rsync => match (
                rsync_stat(&stdout, "Number of regular files transferred"),
                rsync_stat(&stdout, "Total bytes sent"),
            ) {
                (Some(files), Some(sent)) => format!("{files} files changed, {sent} bytes sent"),
                _ => String::new(),
            },
            Carrier::Tar => "sent as one tar stream".to_string(),
        };
        if single {
            if stats.is_empty() {
                self.uploads[i].end_line(&format!("ok ({})", ui::secs(took)));
            } else {
                self.uploads[i].end_line(&format!("ok ({}) [{stats}]", ui::secs(took)));
            }
        } else {
            self.uploads[i].summary = format!("{:.1}s, {stats}", took.as_secs_f64());
        }
        // Not sent (the job ended meanwhile, or the connection is gone): the next wait brings
        // its result, or on_lost.
        self.uploads[i].done = self.tell(i, "uploaded");
        Ok(())
    }

    /// A connection dropped (or a message could not be sent): reconnect and re-attach. A job
    /// that has recorded its result meanwhile is only followed to its end; one that is gone
    /// without a result is left (the last line reads the server); otherwise, before `checked`,
    /// every job is asked to stop (we cannot know what the network did to the upload), and in a
    /// fleet after it, the fleet goes back. What the deployer says is read, never foreseen.
    fn on_lost(&mut self, i: usize) -> Result<()> {
        let stage = self.stage_name();
        if let Some(c) = self.uploads[i].carrying.take() {
            c.stop();
            self.uploads[i].started = true;
        }
        if self.members.len() == 1 {
            self.stop_local();
        }
        self.out.close();
        let name = self.members[i].name().to_string();
        let cause = self.members[i].job.last_error.clone();
        say!(
            "==> the connection to {name} was lost during {stage}{}: reconnecting (for up to {}s; Ctrl-C stops trying)",
            if cause.is_empty() {
                String::new()
            } else {
                format!(" ({cause})")
            },
            RECONNECT_FOR.as_secs()
        );
        let dest = self.members[i].host.dest.clone();
        if let Err(e) = self.members[i]
            .job
            .reattach(&dest, self.cfg.ssh_config.as_deref())
        {
            self.stop_local();
            bail!(
                "{}",
                report::unreachable_line(&self.what, &name, &format!("{e:#}"))
            );
        }
        say!("    reconnected to {name}; following its job again");
        match self.members[i].job.read_now() {
            // Its remaining events (and its result) come through the new connection.
            Ok(r) if r.outcome.is_some() => return Ok(()),
            Ok(r) if !matches!(r.lock, LockNow::Ours { alive: true, .. }) => {
                self.members[i].job.gone = true;
                if self.fleet() {
                    let why = format!("the job on {name} is gone without a result");
                    self.rollout
                        .back(&mut self.members, &why, self.out.as_mut());
                }
                return Ok(());
            }
            _ => {}
        }
        if !self.checked || self.fleet() {
            let why = format!("the connection to {name} was lost during {stage}");
            self.abort("interrupted", &why);
        }
        Ok(())
    }
}

/// Read rsync's stdout to its end (the text, for --stats); on a terminal, each progress update
/// (`--info=progress2`, ended by a carriage return) becomes the step line's detail.
fn read_rsync(mut stdout: impl std::io::Read, show: bool) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if !show {
            continue;
        }
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let Some(d) = progress_detail(&String::from_utf8_lossy(&line)) {
                    ui::step_detail(&d);
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// `  45,102,345  37%   12.34MB/s    0:00:03 (xfr#12, to-chk=30/120)` as `45.1 MB, 37%,
/// 12.34MB/s`; None for anything else.
pub fn progress_detail(line: &str) -> Option<String> {
    let mut w = line.split_whitespace();
    let bytes: u64 = w.next()?.replace(',', "").parse().ok()?;
    let pct = w.next().filter(|p| p.ends_with('%'))?;
    let rate = w.next().filter(|r| r.ends_with("/s"))?;
    Some(format!(
        "{:.1} MB, {pct}, {rate}",
        bytes as f64 / (1024.0 * 1024.0)
    ))
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

/// The line that says why an upload failed: the server's own cause when rsync or tar reported
/// one (a full disk shows on our side only as a broken pipe), else the last line.
pub fn upload_error(stderr: &str, stdout: &str) -> String {
    const CAUSES: [&str; 4] = [
        "No space left on device",
        "Disk quota exceeded",
        "Permission denied",
        "Read-only file system",
    ];
    let lines = || stderr.lines().chain(stdout.lines()).map(str::trim);
    lines()
        .find(|l| CAUSES.iter().any(|c| l.contains(c)))
        .or_else(|| lines().rfind(|l| !l.is_empty()))
        .unwrap_or("see the output above")
        .to_string()
}

/// The tar command (argv) for a small upload: the listed files (NUL-separated), without
/// group/other write, owned by nobody in particular.
pub fn tar_args(file_list: &camino::Utf8Path) -> Vec<String> {
    [
        "--create",
        "--file=-",
        "--null",
        "--no-recursion",
        "--mode=go-w",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--files-from={file_list}")])
    .collect()
}

/// `Total bytes sent: 1,234` and friends from rsync --stats.
pub fn rsync_stat(output: &str, label: &str) -> Option<u64> {
    output.split(['\n', '\r']).find_map(|l| {
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

/// The dry run's line about the fleet: the primary is the host whose plan is the primary's (the
/// role recorded on it, which DEPLOY_SERVER must agree with), named as the host names itself.
pub fn fleet_plan_line(roles: &[(&str, crate::config::HostRole)], batch: usize) -> String {
    let primary = roles
        .iter()
        .find(|(_, r)| *r == crate::config::HostRole::Primary)
        .map_or("none".to_string(), |(h, _)| {
            format!("{h}, recorded in {}", crate::contract::ROLE_FILE)
        });
    format!(
        "  fleet: the primary ({primary}) migrates; hosts switch {} at a time, each health-gated; if one fails, every switched host goes back",
        batch.min(roles.len())
    )
}

fn print_plan(
    cfg: &Config,
    dest: &str,
    snap: &Snapshot,
    plan: &JobPlan,
    scope: Scope,
    opts: &Options,
    run: &str,
) {
    crate::show!(
        "Plan for '{}' to {} ({}), nothing will be changed:",
        plan.command(),
        dest,
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
        if scope.backend() {
            "snapshot the database and migrate (when there is something to migrate), "
        } else {
            ""
        },
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
    fn the_fleet_dry_run_names_the_recorded_primary() {
        use crate::config::HostRole::{Primary, Secondary};
        let line = fleet_plan_line(
            &[("app1", Secondary), ("app2", Primary), ("app3", Secondary)],
            usize::MAX,
        );
        assert_eq!(
            line,
            "  fleet: the primary (app2, recorded in /etc/innercontext/role) migrates; hosts switch 3 at a time, each health-gated; if one fails, every switched host goes back"
        );
        assert!(
            fleet_plan_line(&[("a", Primary), ("b", Secondary)], 1).contains(
                "(a, recorded in /etc/innercontext/role) migrates; hosts switch 1 at a time"
            )
        );
    }

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
    fn an_upload_error_names_the_cause() {
        let stderr = "rsync: [receiver] write failed on \"backend/big.bin\": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(381)\nrsync: [sender] write error: Broken pipe (32)\n";
        assert!(upload_error(stderr, "").contains("No space left on device"));
        assert_eq!(upload_error("a\nlast one\n\n", ""), "last one");
        assert_eq!(upload_error("", ""), "see the output above");
    }

    #[test]
    fn rsync_stats_parse() {
        let out = "Number of files: 120 (reg: 100, dir: 20)\nTotal file size: 1,234,567 bytes\nTotal bytes sent: 4,321\nTotal bytes received: 99\n";
        assert_eq!(rsync_stat(out, "Total bytes sent"), Some(4321));
        assert_eq!(rsync_stat(out, "Total file size"), Some(1_234_567));
        assert_eq!(rsync_stat(out, "Missing"), None);
    }

    #[test]
    fn rsync_progress_becomes_bytes_and_rate() {
        assert_eq!(
            progress_detail("     47,292,345  37%   12.34MB/s    0:00:03 (xfr#12, to-chk=30/120)")
                .as_deref(),
            Some("45.1 MB, 37%, 12.34MB/s")
        );
        assert_eq!(progress_detail("Number of files: 120"), None);
        assert_eq!(progress_detail(""), None);
        let text = read_rsync(
            &b"  1,024 100% 1.00kB/s 0:00:00 (xfr#1, to-chk=0/1)\rTotal bytes sent: 99\n"[..],
            true,
        );
        assert_eq!(rsync_stat(&text, "Total bytes sent"), Some(99));
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
