//! What the deployer prints: the job's events as step lines (one per step, with the duration
//! the server measured), and a final line that says what the server ended with.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::contract::{EventKind, JobResult, Note, Step, StepStatus};
use crate::deploy::event::{Event, Outcome, Watcher};
use crate::deploy::fleet::{Member, Output};
use crate::deploy::reading::{LockNow, Reading};
use crate::{say, say_part, ui};

/// Renders job events as step lines ([`ui::step_line`]: the label, then `ok (1.2s) [notes]`).
#[derive(Default)]
pub struct Printer {
    /// Prefix every line with the host (fleets).
    pub prefix_host: bool,
    open: bool,
    notes: Vec<String>,
    /// Journal lines are printed ([`ui::journal_shown`]); else one line stands for each block.
    pub show_journal: bool,
    journal_hidden: bool,
}

impl Printer {
    pub fn new(prefix_host: bool) -> Printer {
        Printer {
            prefix_host,
            show_journal: ui::journal_shown(),
            ..Printer::default()
        }
    }

    fn prefix(&self, host: &str) -> String {
        if self.prefix_host {
            format!("[{host}] ")
        } else {
            String::new()
        }
    }

    /// End a step line left open by a step start.
    pub fn close_line(&mut self) {
        if self.open {
            say!("");
            self.open = false;
        }
    }

    fn line(&mut self, host: &str, text: &str) {
        self.close_line();
        say!("{}{text}", self.prefix(host));
    }
}

impl Watcher for Printer {
    fn event(&mut self, host: &str, e: &Event) {
        let hidden_before = std::mem::take(&mut self.journal_hidden);
        match e.kind {
            EventKind::Journal if self.show_journal => {
                self.line(host, &format!("    | {}", e.field(0)))
            }
            EventKind::Journal => {
                if !hidden_before {
                    self.line(host, &format!("    | {}", ui::JOURNAL_HIDDEN));
                }
                self.journal_hidden = true;
            }
            EventKind::Step => match e.step().map(|(_, status)| status) {
                Some(StepStatus::Start) => {
                    self.close_line();
                    self.notes.clear();
                    let p = self.prefix(host);
                    say_part!("{p}");
                    ui::step_start(e.field(2));
                    self.open = true;
                }
                status => {
                    let secs = e.field(2);
                    let notes = if self.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", self.notes.join(", "))
                    };
                    let word = step_word(status);
                    if self.open {
                        say!("{word} ({secs}s){notes}");
                        self.open = false;
                    } else {
                        self.line(host, &format!("    {} {word} ({secs}s){notes}", e.field(0)));
                    }
                    if status != Some(StepStatus::Ok) && !e.field(3).is_empty() {
                        self.line(host, &format!("    {}", e.field(3)));
                    }
                    self.notes.clear();
                }
            },
            EventKind::Info => self.line(host, &format!("    {}", e.field(0))),
            EventKind::Warn => self.line(host, &format!("warning: {}", e.field(0))),
            EventKind::Detail => self.line(host, &format!("    | {}", e.field(0))),
            EventKind::Note => {
                if let Some(n) = note_text(e) {
                    self.notes.push(n);
                }
            }
            _ => {}
        }
    }
}

impl Output for Printer {
    fn line(&mut self, text: &str) {
        self.close_line();
        say!("{text}");
    }
    fn close(&mut self) {
        self.close_line();
    }
}

/// The steps every host of a fleet runs before it switches: one line each for the fleet.
const SHARED_STEPS: [Step; 4] = [Step::Seed, Step::Prepare, Step::MaintenanceOn, Step::Record];

/// Renders a fleet's events: one line per shared step once every host that runs it ended it
/// (with a per-host summary), one line per host for its activation, and a failing host's
/// details in full.
pub struct FleetPrinter {
    hosts: Vec<String>,
    /// (step, host) -> (ok, seconds, error)
    ended: BTreeMap<(String, String), (bool, String, String)>,
    /// (step, host) -> label, for steps that started.
    started: BTreeMap<(String, String), String>,
    notes: BTreeMap<String, Vec<String>>,
    printed: Vec<String>,
    /// As [`Printer::show_journal`]; the hosts whose current block of journal lines was
    /// announced as kept out.
    pub show_journal: bool,
    journal_hidden: Vec<String>,
}

impl FleetPrinter {
    pub fn new(hosts: Vec<String>) -> FleetPrinter {
        FleetPrinter {
            hosts,
            ended: BTreeMap::new(),
            started: BTreeMap::new(),
            notes: BTreeMap::new(),
            printed: Vec::new(),
            show_journal: ui::journal_shown(),
            journal_hidden: Vec::new(),
        }
    }

    fn shared_line(&mut self, step: &str) {
        if self.printed.iter().any(|p| p == step) {
            return;
        }
        let done: Vec<(&String, &(bool, String, String))> = self
            .hosts
            .iter()
            .filter_map(|h| {
                self.ended
                    .get(&(step.to_string(), h.clone()))
                    .map(|e| (h, e))
            })
            .collect();
        let all = done.len() == self.hosts.len();
        let any_failed = done.iter().any(|(_, e)| !e.0);
        if !all && !any_failed {
            return;
        }
        let label = self
            .hosts
            .iter()
            .find_map(|h| self.started.get(&(step.to_string(), h.clone())))
            .cloned()
            .unwrap_or_else(|| step.to_string());
        let max = done
            .iter()
            .filter_map(|(_, e)| e.1.parse::<f64>().ok())
            .fold(0.0, f64::max);
        let per_host: Vec<String> = done
            .iter()
            .map(|(h, e)| format!("{h} {}{}", if e.0 { "" } else { "FAILED " }, e.1))
            .collect();
        say!(
            "{}",
            ui::step_line(
                &format!("{label} on {} hosts", self.hosts.len()),
                &format!(
                    "{} ({max:.1}s) [{}]",
                    if any_failed { "FAILED" } else { "ok" },
                    per_host.join(", ")
                )
            )
        );
        for (h, e) in &done {
            if !e.0 && !e.2.is_empty() {
                say!("    [{h}] {}", e.2);
            }
        }
        self.printed.push(step.to_string());
    }
}

impl Watcher for FleetPrinter {
    fn event(&mut self, host: &str, e: &Event) {
        let key = |step: &str| (step.to_string(), host.to_string());
        match e.step() {
            Some((_, StepStatus::Start)) => {
                self.started.insert(key(e.field(0)), e.field(2).to_string());
            }
            Some((known, status)) => {
                let step = e.field(0).to_string();
                let ok = status == StepStatus::Ok;
                let word = step_word(Some(status));
                self.ended.insert(
                    key(&step),
                    (ok, e.field(2).to_string(), e.field(3).to_string()),
                );
                if known.is_some_and(|k| SHARED_STEPS.contains(&k)) {
                    self.shared_line(&step);
                } else {
                    let label = self
                        .started
                        .get(&key(&step))
                        .cloned()
                        .unwrap_or(step.clone());
                    let notes = self
                        .notes
                        .remove(host)
                        .filter(|n| !n.is_empty())
                        .map(|n| format!(" [{}]", n.join(", ")))
                        .unwrap_or_default();
                    say!(
                        "{}",
                        ui::step_line(
                            &format!("[{host}] {label}"),
                            &format!("{word} ({}s){notes}", e.field(2))
                        )
                    );
                    if !ok && !e.field(3).is_empty() {
                        say!("    [{host}] {}", e.field(3));
                    }
                }
            }
            None => self.other(host, e),
        }
    }
}

impl FleetPrinter {
    /// An event other than a step's.
    fn other(&mut self, host: &str, e: &Event) {
        let hidden_before = self.journal_hidden.iter().any(|h| h == host);
        self.journal_hidden.retain(|h| h != host);
        match e.kind {
            EventKind::Journal if self.show_journal => say!("    [{host}] | {}", e.field(0)),
            EventKind::Journal => {
                if !hidden_before {
                    say!("    [{host}] | {}", ui::JOURNAL_HIDDEN);
                }
                self.journal_hidden.push(host.to_string());
            }
            EventKind::Warn => say!("warning: [{host}] {}", e.field(0)),
            EventKind::Info => say!("    [{host}] {}", e.field(0)),
            EventKind::Detail => say!("    [{host}] | {}", e.field(0)),
            EventKind::Note => {
                if let Some(n) = note_text(e) {
                    self.notes.entry(host.to_string()).or_default().push(n);
                }
            }
            _ => {}
        }
    }
}

impl Output for FleetPrinter {
    fn line(&mut self, text: &str) {
        say!("{text}");
    }
    fn close(&mut self) {}
}

/// What the fleet's summary knows of one host: the result its job reported while we watched,
/// or, when the deployer lost sight of it (a lost connection, a failed send, this process
/// stopped), what a reading of the server's files said afterwards (or why none could be made).
pub enum Seen<'a> {
    Reported(Option<&'a Outcome>),
    Read(&'a Reading),
    Unreadable(&'a str),
}

/// One host's row of the fleet's summary, whether it ended in success, and the release it runs
/// (`?` when unknown).
pub fn fleet_row(name: &str, seen: Seen<'_>) -> (String, bool, String) {
    let row = |result: &str, current: &str, why: &str| {
        format!(
            "    {name:<16} {result:<16} current {current}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        )
    };
    match seen {
        Seen::Reported(Some(o)) => {
            let cur = named(&o.current).to_string();
            let why = if o.success() { "" } else { o.reason.as_str() };
            (row(&o.result, &cur, why), o.success(), cur)
        }
        Seen::Reported(None) => (format!("    {name:<16} unknown (lost)"), false, "?".into()),
        Seen::Read(r) => {
            let (_, ok) = reading_line("", name, r);
            let cur = named(&r.current).to_string();
            let read = "read from the server after the deployer lost sight of it";
            let (result, why) = match (&r.outcome, &r.lock) {
                (Some(o), _) if o.success() => (o.result.clone(), read.to_string()),
                (Some(o), _) => (o.result.clone(), format!("{}; {read}", o.reason)),
                (None, LockNow::Ours { alive: true, .. }) => {
                    ("not over".into(), format!("its job still runs; {read}"))
                }
                (None, _) => ("no result".into(), format!("its job recorded none; {read}")),
            };
            (row(&result, &cur, &why), ok, cur)
        }
        Seen::Unreadable(why) => (
            format!("    {name:<16} unknown (could not read it again: {why})"),
            false,
            "?".into(),
        ),
    }
}

/// The fleet's last lines: a row per host ([`fleet_row`]), then one line that says whether
/// every host succeeded and what they run.
pub fn fleet_summary(
    what: &str,
    rows: Vec<(String, bool, String)>,
    took: std::time::Duration,
) -> anyhow::Result<()> {
    let n = rows.len();
    let mut all_ok = true;
    let mut currents = Vec::new();
    for (line, ok, cur) in rows {
        say!("{line}");
        all_ok &= ok;
        currents.push(cur);
    }
    currents.dedup();
    let on = if currents.len() == 1 {
        format!("every host runs {}", currents[0])
    } else {
        format!("MIXED: the hosts run {}", currents.join(", "))
    };
    if all_ok {
        say!(
            "{what} on {n} hosts: success; {on} ({} in all)",
            ui::secs(took)
        );
        Ok(())
    } else {
        anyhow::bail!("{what} on {n} hosts: failed; {on}")
    }
}

/// A step's end as its line says it: `ok`, `stopped` (the deployer stopped it: the snapshot),
/// else `FAILED`.
fn step_word(status: Option<StepStatus>) -> &'static str {
    match status {
        Some(StepStatus::Ok) => "ok",
        Some(StepStatus::Stopped) => "stopped",
        _ => "FAILED",
    }
}

/// A short note for the step line, from a `note` event.
fn note_text(e: &Event) -> Option<String> {
    let g = |i: usize| e.field(i);
    match e.note()? {
        Note::Snapshot if g(1) == "taken" => {
            let size = g(2).parse().map(crate::deploy::dbsnap::bytes);
            Some(format!(
                "{}, {}",
                size.unwrap_or_else(|_| g(2).to_string()),
                g(3)
            ))
        }
        Note::Snapshot if g(1) == "none" => Some(format!("no snapshot: {}", g(2))),
        Note::Snapshot if g(1) == "off" => Some(format!(
            "no snapshot before it: {}=off",
            crate::contract::DB_SNAPSHOT_ENV
        )),
        Note::Snapshot => None,
        Note::PrunedSnapshots => Some(format!("{} snapshot(s) of the database with them", g(1))),
        Note::Seed if g(1) == "none" && g(2) == "clean" && g(4).is_empty() => {
            Some(format!("clean: nothing taken over from {}", g(3)))
        }
        Note::Seed if g(1) == "none" && g(2) == "clean" => Some(format!(
            "clean: only the {} taken over from {} (not shipped)",
            g(4),
            g(3)
        )),
        Note::Seed if g(1) == "none" => Some(format!("nothing to seed from: current is {}", g(2))),
        Note::Seed => Some(format!("from {}", g(1))),
        Note::Venv if g(2) == "rebuilt" => Some(format!(
            "virtualenv {} rebuilt: {} file(s) of the last one changed on the server",
            g(1),
            g(3)
        )),
        Note::Venv if g(2) == "clean" => Some(format!(
            "virtualenv {} built from a fresh uv cache, which replaced {}",
            g(1),
            crate::contract::layout::UV_CACHE
        )),
        Note::Venv => Some(format!("virtualenv {} {}", g(1), g(2))),
        Note::Migrate if g(1) == Step::Trial.name() => Some(format!(
            "down to {} with {}'s migrations: tried, rolled back",
            g(2),
            g(3)
        )),
        Note::Migrate if g(1) == "none" => Some(format!("nothing to migrate, at {}", g(2))),
        Note::Migrate => Some(format!("{} to {}", g(1), g(2))),
        Note::Removed => Some(format!("{} file(s) removed", g(1))),
        Note::Pruned if g(1) == "1" => Some(format!("pruned {}", g(2))),
        Note::Pruned => Some(format!("pruned {} releases, {} to {}", g(1), g(2), g(3))),
    }
}

/// The one line that ends a deploy or rollback: what the server ended with (the job's result
/// word, as deploy.log has it, then what it means and what current is now).
pub fn final_line(what: &str, host: &str, o: &Outcome) -> String {
    let current = o
        .current
        .rsplit('/')
        .next()
        .filter(|c| !c.is_empty())
        .unwrap_or("none");
    let reason = if o.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", o.reason)
    };
    match o.kind() {
        Some(JobResult::Success) => format!(
            "{what} on {host}: success in {}s (alembic {}); current is {current}",
            o.duration, o.revision
        ),
        Some(JobResult::RolledBack) => format!(
            "{what} on {host}: rolled-back (it failed after the switch; the previous release was restored and is healthy){reason}; current is {current} again"
        ),
        Some(JobResult::EnvPushed) => format!(
            "{what} on {host}: env-pushed in {}s: the units that read it restarted and are healthy",
            o.duration
        ),
        Some(JobResult::EnvRestored) => format!(
            "{what} on {host}: env-restored (the units were not healthy with it; the file before it is back){reason}"
        ),
        Some(JobResult::RollbackFailed) => format!(
            "{what} on {host}: rollback-failed (it failed, and so did restoring the previous release){reason}; current is {current}: check 'cargo xtask deploy status'"
        ),
        _ => format!(
            "{what} on {host}: {}{reason}; current is {current}",
            o.result
        ),
    }
}

/// A release as a line names it: the last part of `releases/NAME`, or `none`.
fn named(link: &str) -> &str {
    link.rsplit('/')
        .next()
        .filter(|c| !c.is_empty())
        .unwrap_or("none")
}

/// The fleet's summary rows: each host's result as its job reported it, or, for a host the
/// deployer lost sight of (a lost connection, a failed send, this process stopped), what the
/// server's files say now (see [`fleet_row`]).
pub fn summary_rows(members: &mut [Member]) -> Vec<(String, bool, String)> {
    members
        .iter_mut()
        .map(|m| {
            let lost = m.job.new_stop().is_some() || m.job.lost_sight || m.job.gone;
            if !lost {
                return fleet_row(m.name(), Seen::Reported(m.job.outcome.as_ref()));
            }
            match m.job.read_now() {
                Ok(r) => fleet_row(m.name(), Seen::Read(&r)),
                Err(e) => fleet_row(m.name(), Seen::Unreadable(&format!("{e:#}"))),
            }
        })
        .collect()
}

/// The last line once the deployer lost sight of the job (a lost connection, a failed send,
/// this process stopped): what a [`Reading`] of the server's files says, never what the job
/// was expected to do; and whether that is a success (the job succeeded and `current` is still
/// what it left).
pub fn reading_line(what: &str, host: &str, r: &Reading) -> (String, bool) {
    let now = named(&r.current);
    // The boot check's line, when it put current where it is: said with current.
    let restored = r
        .after
        .iter()
        .rposition(|e| e.result() == Some(JobResult::RestoredAtBoot) && e.get("release") == now);
    // `again`: the boot check moved it back to what it was when the job was planned.
    let again = if r.current == r.before { " again" } else { "" };
    let current = || match restored.map(|i| &r.after[i]) {
        Some(e) => format!(
            "{now}{again}, restored at boot at {}{}",
            e.when,
            match e.get("reason") {
                "-" => String::new(),
                why => format!(" ({})", why.replace('_', " ")),
            }
        ),
        None => now.to_string(),
    };
    let (mut line, ok) = match (&r.outcome, &r.lock) {
        (Some(o), _) => {
            let mut o = o.clone();
            if o.current.is_empty() {
                // Read from deploy.log, which does not say where current was left.
                o.current = r.current.clone();
            }
            let moved = o.current != r.current;
            let mut line = final_line(what, host, &o);
            if moved {
                line.push_str(&format!("; current is now {}", current()));
            }
            (line, o.success() && !moved)
        }
        (None, LockNow::Ours { alive: true, phase, .. }) => (
            format!(
                "{what} on {host}: not over: its job is still running on the server ({}); current is {}: 'cargo xtask deploy status --follow' follows it to its end",
                if phase.is_empty() { "?" } else { phase },
                current()
            ),
            false,
        ),
        (
            None,
            LockNow::Ours {
                alive: false,
                phase,
                rebooted,
            },
        ) => (
            format!(
                "{what} on {host}: its job died at {} without recording a result ({}no process holds its lock); current is {}: the next deploy or rollback takes its lock over and records it as interrupted",
                if phase.is_empty() { "its start" } else { phase },
                if *rebooted {
                    "the server rebooted since it started: "
                } else {
                    ""
                },
                current()
            ),
            false,
        ),
        (None, _) => (
            format!(
                "{what} on {host}: its job recorded no result; current is {}",
                current()
            ),
            false,
        ),
    };
    for (i, e) in r.after.iter().enumerate() {
        if Some(i) == restored {
            continue;
        }
        let reason = match e.get("reason") {
            "-" => String::new(),
            r => format!(": {}", r.replace('_', " ")),
        };
        line.push_str(&format!(
            "; then deploy.log says {} {} at {}{reason}",
            e.result_word(),
            e.get("release"),
            e.when
        ));
    }
    (line, ok)
}

/// One host's last line and whether it is a success: the job's result as it reported it; or,
/// when the deployer lost sight of the job on the way (a connection lost, a message that could
/// not be sent, this process stopped), what the server's files say now.
pub fn last_words(what: &str, m: &mut Member) -> Result<(String, bool)> {
    if m.job.new_stop().is_some() || m.job.lost_sight || m.job.gone {
        match m.job.read_now() {
            Ok(r) => return Ok(reading_line(what, m.name(), &r)),
            // The job's own words, if they came (the same as its result file).
            Err(e) if m.job.outcome.is_none() => {
                return Ok((unreachable_line(what, m.name(), &format!("{e:#}")), false))
            }
            Err(_) => {}
        }
    }
    let outcome = m
        .job
        .outcome
        .clone()
        .ok_or_else(|| anyhow!("the job on {} ended without a result", m.name()))?;
    Ok((final_line(what, m.name(), &outcome), outcome.success()))
}

/// The last line when the server could not be reached again: only what is known.
pub fn unreachable_line(what: &str, host: &str, why: &str) -> String {
    format!(
        "{what}: could not reach {host} again ({why}): the job's outcome is unknown here; 'cargo xtask deploy status' reads it"
    )
}

#[cfg(test)]
mod tests;
