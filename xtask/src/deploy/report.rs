//! What the deployer prints: the job's events as step lines (one per step, with the duration
//! the server measured), and a final line that says what the server ended with.

use std::collections::BTreeMap;

use crate::deploy::fleet::Output;
use crate::deploy::job::{Event, LockNow, Outcome, Reading, Watcher};
use crate::{say, say_part, ui};

/// Renders job events as step lines: `==> LABEL ... ok (1.2s) [notes]`.
#[derive(Default)]
pub struct Printer {
    /// Prefix every line with the host (fleets).
    pub prefix_host: bool,
    open: bool,
    notes: Vec<String>,
}

impl Printer {
    pub fn new(prefix_host: bool) -> Printer {
        Printer {
            prefix_host,
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
        match e.kind.as_str() {
            "step" => match e.field(1) {
                "start" => {
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
                    if status != "ok" && !e.field(3).is_empty() {
                        self.line(host, &format!("    {}", e.field(3)));
                    }
                    self.notes.clear();
                }
            },
            "info" => self.line(host, &format!("    {}", e.field(0))),
            "warn" => self.line(host, &format!("warning: {}", e.field(0))),
            "detail" => self.line(host, &format!("    | {}", e.field(0))),
            "note" => {
                if let Some(n) = note_text(&e.fields) {
                    self.notes.push(n);
                }
                if e.field(0) == "drift" {
                    self.line(
                        host,
                        &format!(
                            "warning: {} on the server differs from the release it came from (edited by hand?): sent again",
                            e.field(1)
                        ),
                    );
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
const SHARED_STEPS: [&str; 3] = ["seed", "prepare", "record"];

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
}

impl FleetPrinter {
    pub fn new(hosts: Vec<String>) -> FleetPrinter {
        FleetPrinter {
            hosts,
            ended: BTreeMap::new(),
            started: BTreeMap::new(),
            notes: BTreeMap::new(),
            printed: Vec::new(),
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
            "==> {:<44} {} ({max:.1}s) [{}]",
            format!("{label} on {} hosts", self.hosts.len()),
            if any_failed { "FAILED" } else { "ok" },
            per_host.join(", ")
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
        match e.kind.as_str() {
            "step" if e.field(1) == "start" => {
                self.started.insert(key(e.field(0)), e.field(2).to_string());
            }
            "step" => {
                let step = e.field(0).to_string();
                let ok = e.field(1) == "ok";
                let word = step_word(e.field(1));
                self.ended.insert(
                    key(&step),
                    (ok, e.field(2).to_string(), e.field(3).to_string()),
                );
                if SHARED_STEPS.contains(&step.as_str()) {
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
                        "==> {:<44} {word} ({}s){notes}",
                        format!("[{host}] {label}"),
                        e.field(2)
                    );
                    if !ok && !e.field(3).is_empty() {
                        say!("    [{host}] {}", e.field(3));
                    }
                }
            }
            "warn" => say!("warning: [{host}] {}", e.field(0)),
            "info" => say!("    [{host}] {}", e.field(0)),
            "detail" => say!("    [{host}] | {}", e.field(0)),
            "note" => {
                if let Some(n) = note_text(&e.fields) {
                    self.notes.entry(host.to_string()).or_default().push(n);
                }
                if e.field(0) == "drift" {
                    say!(
                        "warning: [{host}] {} on the server differs from the release it came from (edited by hand?): sent again",
                        e.field(1)
                    );
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

/// A short note for the step line, from a `note` event.
/// A step's end as its line says it: `ok`, `stopped` (the deployer stopped it: the snapshot),
/// else `FAILED`.
fn step_word(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "stopped" => "stopped",
        _ => "FAILED",
    }
}

fn note_text(f: &[String]) -> Option<String> {
    let g = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    match g(0) {
        "snapshot" if g(1) == "taken" => {
            let size = g(2).parse().map(crate::deploy::dbsnap::bytes);
            Some(format!(
                "{}, {}",
                size.unwrap_or_else(|_| g(2).to_string()),
                g(3)
            ))
        }
        "snapshot" if g(1) == "none" => Some(format!("no snapshot: {}", g(2))),
        "snapshot" if g(1) == "off" => Some(format!(
            "no snapshot before it: {}=off",
            crate::contract::DB_SNAPSHOT_ENV
        )),
        "pruned-snapshots" => Some(format!("{} snapshot(s) of the database with them", g(1))),
        "seed" if g(1) == "none" => Some(format!("nothing to seed from: current is {}", g(2))),
        "seed" if g(2) == "verified" && g(3) != "0" => {
            Some(format!("from {}, {} drifted file(s) left out", g(1), g(3)))
        }
        "seed" => Some(format!("from {}", g(1))),
        "venv" => Some(format!("virtualenv {} {}", g(1), g(2))),
        "migrate" if g(1) == "none" => Some(format!("nothing to migrate, at {}", g(2))),
        "migrate" => Some(format!("{} to {}", g(1), g(2))),
        "removed" => Some(format!("{} file(s) removed", g(1))),
        "pruned" if g(1) == "1" => Some(format!("pruned {}", g(2))),
        "pruned" => Some(format!("pruned {} releases, {} to {}", g(1), g(2), g(3))),
        _ => None,
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
    match o.result.as_str() {
        "success" => format!(
            "{what} on {host}: success in {}s (alembic {}); current is {current}",
            o.duration, o.revision
        ),
        "rolled-back" => format!(
            "{what} on {host}: rolled-back (it failed after the switch; the previous release was restored and is healthy){reason}; current is {current} again"
        ),
        "rollback-failed" => format!(
            "{what} on {host}: rollback-failed (it failed, and so did restoring the previous release){reason}; current is {current}: check 'cargo xtask deploy status'"
        ),
        other => format!("{what} on {host}: {other}{reason}; current is {current}"),
    }
}

/// A release as a line names it: the last part of `releases/NAME`, or `none`.
fn named(link: &str) -> &str {
    link.rsplit('/')
        .next()
        .filter(|c| !c.is_empty())
        .unwrap_or("none")
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
        .rposition(|e| e.get("result") == "restored-at-boot" && e.get("release") == now);
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
            e.get("result"),
            e.get("release"),
            e.when
        ));
    }
    (line, ok)
}

/// The last line when the server could not be reached again: only what is known.
pub fn unreachable_line(what: &str, host: &str, why: &str) -> String {
    format!(
        "{what}: could not reach {host} again ({why}): the job's outcome is unknown here; 'cargo xtask deploy status' reads it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::log::Entry;

    fn reading(o: Option<Outcome>, current: &str, lock: LockNow, after: &[&str]) -> Reading {
        Reading {
            outcome: o,
            current: current.into(),
            before: "releases/20261128T101530Z".into(),
            lock,
            after: after.iter().map(|l| Entry::parse(l)).collect(),
        }
    }

    #[test]
    fn a_fleet_row_is_what_the_job_said_or_what_the_server_says_now() {
        let o = outcome("success", "");
        let (line, ok, cur) = fleet_row("app1", Seen::Reported(Some(&o)));
        assert_eq!(
            (line.as_str(), ok, cur.as_str()),
            (
                "    app1             success          current 20261128T101530Z",
                true,
                "20261128T101530Z"
            )
        );
        // Lost sight of: the reading's result, and current as it is now.
        let r = reading(
            Some(outcome("rolled-back", "the fleet went back")),
            "releases/20261128T101530Z",
            LockNow::Free,
            &[],
        );
        let (line, ok, cur) = fleet_row("app2", Seen::Read(&r));
        assert!(!ok);
        assert_eq!(cur, "20261128T101530Z");
        assert!(
            line.contains("rolled-back")
                && line.contains("(the fleet went back; read from the server after the deployer lost sight of it)"),
            "{line}"
        );
        let r = reading(
            None,
            "releases/20261128T101600Z",
            LockNow::Ours {
                alive: true,
                phase: "awaiting-verdict".into(),
                rebooted: false,
            },
            &[],
        );
        let (line, ok, _) = fleet_row("app3", Seen::Read(&r));
        assert!(!ok && line.contains("not over") && line.contains("its job still runs"));
        let (line, ok, cur) = fleet_row("app3", Seen::Unreadable("connection refused"));
        assert!(!ok && cur == "?" && line.contains("could not read it again: connection refused"));
        let (line, ok, _) = fleet_row("app3", Seen::Reported(None));
        assert!(!ok && line.contains("unknown (lost)"));
    }

    #[test]
    fn the_last_line_after_a_reconnect_is_the_reading() {
        // The job rolled back while we were away: its words, and current as it is now.
        let (line, ok) = reading_line(
            "deploy of X",
            "app",
            &reading(
                Some(outcome("rolled-back", "not healthy after 25s")),
                "releases/20261128T101530Z",
                LockNow::Free,
                &[],
            ),
        );
        assert!(!ok);
        assert_eq!(
            line,
            final_line(
                "deploy of X",
                "app",
                &outcome("rolled-back", "not healthy after 25s")
            )
        );
        assert!(!line.contains("by itself"), "{line}");
        // A success whose release the boot check later replaced is not a success.
        let mut won = outcome("success", "");
        won.current = "releases/20261128T101600Z".into();
        let (line, ok) = reading_line(
            "deploy of 20261128T101600Z",
            "app",
            &reading(
                Some(won),
                "releases/20261128T101530Z",
                LockNow::Free,
                &["2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current_was_20261128T101600Z,_not_a_succeeded_intact_release,_at_boot"],
            ),
        );
        assert!(!ok, "current moved: {line}");
        assert!(
            line.contains("success in 3.1s")
                && line.contains("current is 20261128T101600Z; current is now 20261128T101530Z again, restored at boot at 2026-11-28T10:20:00Z (current was 20261128T101600Z, not a succeeded intact release, at boot)")
                && !line.contains("then deploy.log says"),
            "{line}"
        );
        // Stopped by the server because we fell silent: its reason says so.
        let (line, ok) = reading_line(
            "deploy of X",
            "app",
            &reading(
                Some(outcome(
                    "interrupted",
                    "the deployer fell silent for 10s (killed, or its connection lost); stopped while waiting for the upload; current was not touched",
                )),
                "releases/20261128T101530Z",
                LockNow::Free,
                &[],
            ),
        );
        assert!(!ok);
        assert!(
            line.starts_with("deploy of X on app: interrupted: the deployer fell silent")
                && line.ends_with("current is 20261128T101530Z"),
            "{line}"
        );
    }

    #[test]
    fn without_a_result_the_reading_says_what_is_there() {
        let r = |lock| reading(None, "releases/20261128T101530Z", lock, &[]);
        let (line, ok) = reading_line(
            "rollback to A",
            "app",
            &r(LockNow::Ours {
                alive: true,
                phase: "health".into(),
                rebooted: false,
            }),
        );
        assert!(
            !ok && line.contains("still running on the server (health)"),
            "{line}"
        );
        let (line, _) = reading_line(
            "rollback to A",
            "app",
            &r(LockNow::Ours {
                alive: false,
                phase: String::new(),
                rebooted: false,
            }),
        );
        assert_eq!(
            line,
            "rollback to A on app: its job died at its start without recording a result (no process holds its lock); current is 20261128T101530Z: the next deploy or rollback takes its lock over and records it as interrupted"
        );
        // A power cut in prepare: the server booted since; current never moved.
        let (line, ok) = reading_line(
            "deploy of X",
            "app",
            &r(LockNow::Ours {
                alive: false,
                phase: "prepare".into(),
                rebooted: true,
            }),
        );
        assert!(
            !ok && line.starts_with("deploy of X on app: its job died at prepare without recording a result (the server rebooted since it started: no process holds its lock); current is 20261128T101530Z: the next deploy"),
            "{line}"
        );
        // A power cut after the switch: the boot check put the release before back.
        let (line, ok) = reading_line(
            "deploy of 20261128T101600Z",
            "app",
            &reading(
                None,
                "releases/20261128T101530Z",
                LockNow::Ours {
                    alive: false,
                    phase: "health".into(),
                    rebooted: true,
                },
                &["2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current was 20261128T101600Z, not a succeeded intact release, at boot"],
            ),
        );
        assert!(
            !ok && line.contains("its job died at health without recording a result (the server rebooted since it started: no process holds its lock); current is 20261128T101530Z again, restored at boot at 2026-11-28T10:20:00Z (current was 20261128T101600Z, not a succeeded intact release, at boot): the next deploy")
                && !line.contains("then deploy.log says"),
            "{line}"
        );
        let (line, _) = reading_line("rollback to A", "app", &r(LockNow::Free));
        assert_eq!(
            line,
            "rollback to A on app: its job recorded no result; current is 20261128T101530Z"
        );
        // The result from deploy.log's line (no result file): current as read now.
        let mut logged = outcome("failed", "the upload is incomplete");
        logged.current = String::new();
        let (line, ok) = reading_line(
            "deploy of X",
            "app",
            &reading(Some(logged), "", LockNow::Free, &[]),
        );
        assert!(!ok && line.ends_with("current is none"), "{line}");
        let u = unreachable_line("deploy of X", "app", "connection refused");
        assert!(
            u.contains("unknown here") && !u.contains("by itself"),
            "{u}"
        );
    }

    fn outcome(result: &str, reason: &str) -> Outcome {
        Outcome {
            result: result.into(),
            reason: reason.into(),
            duration: "3.1".into(),
            revision: "0002_price_history".into(),
            current: "releases/20261128T101530Z".into(),
        }
    }

    #[test]
    fn the_last_line_says_what_the_server_ended_with() {
        assert_eq!(
            final_line("deploy of 20261128T101600Z", "app", &outcome("success", "")),
            "deploy of 20261128T101600Z on app: success in 3.1s (alembic 0002_price_history); current is 20261128T101530Z"
        );
        let rb = final_line(
            "deploy of X",
            "app",
            &outcome(
                "rolled-back",
                "not healthy after 60s: unit innercontext is failed",
            ),
        );
        assert!(
            rb.contains("rolled-back (")
                && rb.contains("is healthy): not healthy")
                && rb.ends_with("current is 20261128T101530Z again"),
            "{rb}"
        );
        let mut none = outcome("failed", "the upload failed");
        none.current = String::new();
        assert!(final_line("deploy of X", "app", &none).ends_with("current is none"));
    }

    #[test]
    fn notes_read_well() {
        let n = |f: &[&str]| note_text(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            n(&["venv", "abc", "reused"]).unwrap(),
            "virtualenv abc reused"
        );
        assert_eq!(
            n(&["migrate", "none", "0002"]).unwrap(),
            "nothing to migrate, at 0002"
        );
        assert_eq!(
            n(&["seed", "20261128T101530Z", "verified", "2"]).unwrap(),
            "from 20261128T101530Z, 2 drifted file(s) left out"
        );
        assert_eq!(n(&["drift", "backend/x.py"]), None);
        assert_eq!(n(&["pruned", "1", "A", "A"]).unwrap(), "pruned A");
        assert_eq!(
            n(&["pruned", "50", "A", "B"]).unwrap(),
            "pruned 50 releases, A to B"
        );
        assert_eq!(
            n(&["snapshot", "taken", "8123456", "A-0002.dump"]).unwrap(),
            "7.7 MB, A-0002.dump"
        );
        assert_eq!(
            n(&["snapshot", "off"]).unwrap(),
            "no snapshot before it: DEPLOY_DB_SNAPSHOT=off"
        );
        assert_eq!(step_word("stopped"), "stopped");
        assert_eq!(step_word("failed"), "FAILED");
    }
}
