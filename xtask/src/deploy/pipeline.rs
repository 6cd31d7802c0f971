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

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use xshell::Shell;

use crate::config::Config;
use crate::config::HostRole;
use crate::contract::{JobResult, Message, Note, Phase};
use crate::deploy::checks::Checks;
use crate::deploy::dbsnap;
use crate::deploy::fleet::{self, Member, Output};
use crate::deploy::hooked;
use crate::deploy::job::Wait;
use crate::deploy::local::{self, Carrier, Transfer};
use crate::deploy::migration;
use crate::deploy::plan::{self, Asker, FleetDecision};
use crate::deploy::report::{self, FleetPrinter, Printer};
use crate::deploy::rollout::Rollout;
use crate::deploy::seal;
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::deploy::upload::{self, Upload};
use crate::flags::{CheckPart, Scope};
use crate::hooks::Hooks;
use crate::interrupt;
use crate::{say, say_event, ui};

mod lost;

pub struct Options {
    pub dry_run: bool,
    pub skip_local_checks: bool,
    pub redeploy: bool,
    /// `--clean`: no seed from current (every file sent), a fresh virtualenv from a fresh uv
    /// cache, fresh assets; always a new release.
    pub clean: bool,
    pub recheck: bool,
    /// Fleets: hosts that switch at once (1: rolling; `--parallel`: all).
    pub batch: usize,
    /// The migration lint's refusals become warnings (deploy.log says so).
    pub allow_unsafe_migration: bool,
    /// Maintenance mode on for the migration, off in the job's record step.
    pub maintenance: bool,
}

pub fn deploy(sh: &Shell, cfg: &Config, scope: Scope, opts: Options) -> Result<()> {
    let started = Instant::now();
    let local = local::origin(sh, cfg)?;
    // A file name the upload will not carry is refused before anything else.
    local::listed(sh)?;
    let hooks = Hooks::find(&crate::project_root(), cfg.hook_timeout)?;
    // The checks (and the frontend build the upload needs) run while we connect.
    let checks = if opts.dry_run {
        None
    } else {
        Some(Checks::start(scope, opts.skip_local_checks, opts.recheck)?)
    };
    let sessions = server::connect_all(cfg)?;
    let snaps = server::probe_all(&sessions, cfg, Look::default())?;
    let estimate = local::manifest(sh, scope)
        .map(|m| local::size_of(&m))
        .unwrap_or(0);
    let hosts: Vec<(crate::config::Host, Snapshot)> = cfg
        .hosts
        .iter()
        .cloned()
        .zip(snaps.iter().cloned())
        .collect();
    let redeploy = opts.redeploy || opts.clean;
    let mut plans = match plan::fleet_deploy(&hosts, &local, cfg, scope, redeploy, estimate)? {
        FleetDecision::Nothing(msg) => {
            drop(checks);
            say!("{msg}");
            return Ok(());
        }
        FleetDecision::Deploy(p) => p,
    };
    for p in &mut plans {
        p.clean = opts.clean;
        p.maintenance = opts.maintenance;
    }
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
            let lines = p.dry_run(
                cfg,
                &host.dest,
                snap,
                opts.skip_local_checks,
                &call.render(),
            );
            for line in lines {
                crate::show!("{line}");
            }
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
            crate::show!(
                "{}",
                crate::deploy::plan::fleet_plan_line(&roles, opts.batch)
            );
        }
        return lint.as_ref().map_or(Ok(()), migration::dry_run_verdict);
    }
    let mut checks = checks.expect("started unless dry run");
    let release = plans[0].release().to_string();
    let said = [&*release, &local.commit, scope.name(), &local.deployer];
    let mut facts = hooked::facts("deploy", cfg, &snaps, said);
    hooked::before(&hooks, &facts).inspect_err(|_| checks.abort())?;
    test_pause_before_lock();
    // A signal so far (during connect, the probe, the plan) stops here: no job was asked yet.
    server::stop_before_the_lock(cfg)?;
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
            let hook = hooked::after(&hooks, &mut facts, &[], started.elapsed());
            return hooked::verdict(Err(e), hook);
        }
    };
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
        rollout: Rollout::new(opts.batch).with_hooks(hooks.clone(), facts.clone()),
        aborted: None,
        checked: false,
        signals_seen: 0,
        seed_hashes: None,
    };
    let ran = d.run();
    d.out.close();
    let hook = hooked::after(&hooks, &mut facts, &d.members, started.elapsed());
    let outcome = ran.and_then(|()| {
        if n == 1 {
            let (line, ok) = report::last_words(&what, &mut d.members[0])?;
            if ok {
                say!("{line} ({} in all)", ui::secs(started.elapsed()));
                return Ok(());
            }
            return Err(anyhow!("{line}"));
        }
        report::fleet_summary(
            &what,
            report::summary_rows(&mut d.members),
            started.elapsed(),
        )
    });
    hooked::verdict(outcome, hook)
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
    /// Our hashes of the release's files (made for the first host's seed, kept for the rest).
    seed_hashes: Option<camino::Utf8PathBuf>,
}

impl Driver<'_> {
    fn fleet(&self) -> bool {
        self.members.len() > 1
    }

    /// One host past `checked` whose job takes the snapshot of the database: the last step
    /// before the migration, so an interrupt still stops it there (a fleet goes back anyway).
    fn in_snapshot(&self) -> bool {
        self.checked
            && !self.fleet()
            && self.members[0].job.step == Some(crate::contract::Step::Snapshot)
    }

    fn run(&mut self) -> Result<()> {
        if self.fleet() {
            for i in 0..self.members.len() {
                self.tell(i, Message::Begin);
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
                match w {
                    Wait::Lost => self.on_lost(i)?,
                    Wait::Ended => self.on_ended(i)?,
                    _ => {}
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
    fn tell(&mut self, i: usize, msg: Message) -> bool {
        self.tell_line(i, msg.name())
    }

    /// The same for a whole message line (an `abort` with its result and why).
    fn tell_line(&mut self, i: usize, line: &str) -> bool {
        let job = &mut self.members[i].job;
        !job.over() && job.send_line(line).is_ok()
    }

    /// This process was stopped (SIGSTOP, a suspended machine): say so once. What the jobs did
    /// meanwhile comes next, as they wrote it, and the last line is read from the server.
    fn on_stops(&mut self) {
        for i in 0..self.members.len() {
            if let Some(gap) = self.members[i].job.new_stop() {
                self.out.close();
                ui::break_line();
                say_event!(
                    "this deployer was stopped for {} (SIGSTOP, or a suspended machine): reading what the job on {} did meanwhile",
                    ui::secs(gap),
                    self.members[i].name()
                );
            }
        }
    }

    /// Tell every job to stop before the migration (or, in a fleet after it, to go back). Called
    /// again after a re-attach: a job that did not get the message gets it then.
    fn abort(&mut self, result: JobResult, why: &str) {
        self.stop_local();
        if self.aborted.is_none() {
            self.aborted = Some(Message::abort_line(result, why));
            self.out.close();
            if self.checked && self.fleet() {
                self.rollout.back(&mut self.members, why, self.out.as_mut());
                return;
            }
            if self.checked && !self.in_snapshot() {
                return;
            }
            say_event!(
                "{why}: telling {} to stop before the {}",
                self.members
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if self.checked {
                    "migration"
                } else {
                    crate::contract::Step::Switch.name()
                }
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
            if !self.tell_line(i, &msg) {
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
            say_event!(
                "{} received: the server already runs {} and completes it (the migration may have started); Ctrl-C again to stop watching",
                interrupt::describe(),
                self.stage_name()
            );
        } else {
            self.abort(JobResult::Interrupted, &why);
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
            let line = ui::step_line(
                label,
                &format!(
                    "{} ({:.1}s){cached}",
                    if r.ok { "ok" } else { "FAILED" },
                    r.secs
                ),
            );
            let tail = if r.ok { String::new() } else { r.tail.clone() };
            self.out.line(&line);
            for l in tail.lines() {
                say!("    | {l}");
            }
            if !tail.is_empty() || !r.ok {
                let why = format!("the local checks failed ({})", part.name());
                self.abort(JobResult::Failed, &why);
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
                && self.members[i].job.phase == Some(Phase::AwaitingUpload)
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
                    self.tell(i, Message::Checked);
                }
                self.checked = true;
            } else if self.tell(0, Message::Checked) {
                // Not sent: the job never heard the checks passed; on_lost stops it.
                self.checked = true;
                self.members[0].activated = self.tell(0, Message::Go);
            }
        }
        if self.checked && !self.fleet() && !self.members[0].activated {
            // `go` did not go through with `checked` (a re-attach since): send it now.
            self.members[0].activated = self.tell(0, Message::Go);
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
        self.out.line(&ui::step_line(
            &format!("upload to {} hosts", self.members.len()),
            &format!("ok [{}]", summary.join("; ")),
        ));
    }

    fn start_upload(&mut self, i: usize) -> Result<()> {
        let single = self.members.len() == 1;
        let manifest = local::manifest(self.sh, self.scope)?;
        if self.scope.frontend() && !manifest.iter().any(|p| p.starts_with("frontend/build/")) {
            bail!("the frontend build is missing (frontend/build): run 'cargo xtask check build'");
        }
        let m = &mut self.members[i];
        let seed = m.job.notes_of(Note::Seed).next().map(<[String]>::to_vec);
        // A base made from a dirty tree is not its commit: only a clean base can be diffed.
        let base = m.snap.current_made.backend_commit.clone();
        // `--clean`: the job seeded nothing (its note says `none clean`), nothing is compared.
        let from = seed.as_ref().and_then(|s| s.get(1)).map(String::as_str);
        let clean = from == Some("none")
            && seed
                .as_ref()
                .and_then(|s| s.get(2))
                .is_some_and(|w| w == "clean");
        let seeded_from_current = from.is_some()
            && from == m.snap.current.name()
            && !base.ends_with("+dirty")
            && base != "-";
        let changed = if seeded_from_current {
            local::changed_since(self.sh, &base)?
        } else {
            None
        };
        // What the seed holds is compared with our hashes; what differs is sent again.
        let mut drift = Vec::new();
        if from.is_some_and(|f| f != "none") {
            if self.seed_hashes.is_none() {
                let path = m.job.session().private_dir().join("seed.hashes");
                fs_err::write(&path, seal::hashes(&crate::project_root(), &manifest)?)?;
                self.seed_hashes = Some(path);
            }
            let call = seal::compare_call(&self.cfg.root, &m.job.token, &self.release);
            let hashes = self.seed_hashes.as_deref().expect("set above");
            match seal::compare(m.job.session(), &call, hashes) {
                Ok(d) => drift = d,
                Err(e) => {
                    let why = format!("{} on {}", e, m.name());
                    self.abort(JobResult::Failed, &why);
                    return Ok(());
                }
            }
        }
        let named = seal::unexpected(&drift, changed.as_deref());
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
        if let Some(line) = seal::resent_line(&named) {
            self.out.close();
            if single {
                say!("warning: {line}");
            } else {
                say!("warning: [{}] {line}", m.name());
            }
        }
        let list = m.job.session().private_dir().join("upload.list");
        fs_err::write(&list, send.join("\0"))?;
        let how = match &transfer {
            Transfer::Diff { base } => format!("(changed since {base})"),
            Transfer::Full if clean => "[clean: not seeded]".to_string(),
            Transfer::Full => "(compared by checksum)".to_string(),
        };
        let progress = single && ui::interactive() && carrier == Carrier::Rsync;
        if single {
            self.out.close();
            let name = format!("upload {} of {} files {how}", send.len(), manifest.len());
            self.uploads[i].line = Some((ui::step_start(&name), name));
        }
        let carrying = upload::start(
            carrier,
            m.job.session(),
            &m.host.dest,
            &self.cfg.root,
            (&m.job.token, &self.release),
            progress,
            &list,
        )?;
        self.uploads[i].carrying = Some(carrying);
        self.uploads[i].started = true;
        self.uploads[i].summary = format!("{} of {} files {how}", send.len(), manifest.len());
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
            let last = upload::upload_error(&stderr, &stdout);
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
            self.abort(JobResult::Failed, &why);
            return Ok(());
        }
        let stats = upload::stats(carrier, &stdout);
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
        self.uploads[i].done = self.tell(i, Message::Uploaded);
        Ok(())
    }
}
