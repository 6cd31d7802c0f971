//! The runner: selection, parallel groups, and the report.
//!
//! The parent process selects the scenarios, refuses to start if machines of this run's names
//! are in use, builds the image once, and starts one child process per group (this same
//! binary with `--child GROUP`), a few at a time. A child runs its group's scenarios in order
//! on its own machines (`<run id><group tag><role>`), then takes down every machine of its
//! names. It reports on stdout in `##e2e` lines; the parent prints one line per scenario as it
//! finishes, prefixed by the group, keeps everything else in `target/e2e/<run id>/<group>.log`,
//! and ends with the table, the fault matrix and `N passed, N failed`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use xshell::Shell;
use xtask::e2e_verdict::{verdict, GroupEnd, ScenarioEnd};
use xtask::testhost as th;

use crate::{Ctx, Group, Scenario, GROUPS};

/// The run id as given (`INNERCONTEXT_E2E_ID`: 1-3 lowercase letters or digits, starting
/// with a letter; default `e2e`), without a group's tag.
pub fn base_id() -> String {
    let id = std::env::var(ID_ENV).unwrap_or_default();
    let ok = !id.is_empty()
        && id.len() <= 3
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        id
    } else {
        "e2e".to_string()
    }
}

const ID_ENV: &str = "INNERCONTEXT_E2E_ID";

/// Every scenario's group is in [`GROUPS`] (else it would never run), and the tags are
/// distinct lowercase letters other than `e`.
pub fn check_groups(all: &[Scenario]) -> Result<()> {
    for (i, g) in GROUPS.iter().enumerate() {
        if !g.tag.is_ascii_lowercase() || g.tag == 'e' {
            bail!(
                "group {}: its tag '{}' must be a lowercase letter other than 'e'",
                g.name,
                g.tag
            );
        }
        if let Some(other) = GROUPS[..i]
            .iter()
            .find(|o| o.tag == g.tag || o.name == g.name)
        {
            bail!(
                "groups {} and {} share a name or the tag '{}'",
                other.name,
                g.name,
                g.tag
            );
        }
    }
    if let Some(s) = all
        .iter()
        .find(|s| !GROUPS.iter().any(|g| g.name == s.group.name))
    {
        bail!(
            "{} is in group {}, which is not listed in GROUPS (tests/e2e/main.rs): it would never run",
            s.name,
            s.group.name
        );
    }
    Ok(())
}

/// `INNERCONTEXT_E2E_ID`, if set, must be a valid id: 1-3 lowercase letters or digits,
/// starting with a letter, and not ending with a group's tag (else run `h1`'s `deploy` group,
/// `h1d…`, and run `h1d` would share machine names).
pub fn check_run_id() -> Result<()> {
    let Ok(id) = std::env::var(ID_ENV) else {
        return Ok(());
    };
    let well_formed = !id.is_empty()
        && id.len() <= 3
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !well_formed {
        bail!("{ID_ENV}='{id}' is not a run id: use 1-3 lowercase letters or digits, starting with a letter");
    }
    if let Some(g) = GROUPS.iter().find(|g| id.ends_with(g.tag)) {
        bail!(
            "{ID_ENV}='{id}' ends with '{}', the tag of the {} group: its machines would share names with run '{}': end it with another character",
            g.tag,
            g.name,
            &id[..id.len() - 1]
        );
    }
    Ok(())
}
/// Set by the parent for a child: the group it runs (its tag joins the run id).
const GROUP_ENV: &str = "INNERCONTEXT_E2E_GROUP";
/// How many groups run at once (also `--jobs N`).
const JOBS_ENV: &str = "INNERCONTEXT_E2E_JOBS";
const DEFAULT_JOBS: usize = 4;

/// The group this process runs, in a child.
pub fn current_group() -> Option<&'static Group> {
    let name = std::env::var(GROUP_ENV).ok()?;
    GROUPS.iter().copied().find(|g| g.name == name)
}

/// This process's run id: the base id, plus the group's tag in a group's process. A prefix of
/// every machine and scratch directory the process makes.
pub fn run_id() -> String {
    match current_group() {
        Some(g) => format!("{}{}", base_id(), g.tag),
        None => base_id(),
    }
}

/// The prefix of every machine of `group` in this run.
pub fn group_prefix(group: &Group) -> String {
    format!("{}{}", base_id(), group.tag)
}

/// What to run, from the command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    include: Vec<String>,
    skip: Vec<String>,
    groups: Vec<String>,
    exact: bool,
    list: bool,
    list_groups: bool,
    nocapture: bool,
    jobs: Option<usize>,
    child: Option<String>,
}

impl Selection {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Selection> {
        // libtest flags that take a value; their value must not become a filter.
        const WITH_VALUE: &[&str] = &[
            "--test-threads",
            "--color",
            "--format",
            "--logfile",
            "--shuffle-seed",
            "-Z",
        ];
        let mut sel = Selection::default();
        let mut args = args.into_iter();
        let value = |args: &mut dyn Iterator<Item = String>, flag: &str| {
            args.next().with_context(|| format!("{flag} needs a value"))
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--skip" => sel.skip.push(value(&mut args, "--skip")?),
                "--group" => {
                    let v = value(&mut args, "--group")?;
                    sel.groups.extend(v.split(',').map(str::to_string));
                }
                "--jobs" => {
                    let v = value(&mut args, "--jobs")?;
                    sel.jobs = Some(parse_jobs(&v)?);
                }
                "--child" => sel.child = Some(value(&mut args, "--child")?),
                "--exact" => sel.exact = true,
                "--list" => sel.list = true,
                "--groups" => sel.list_groups = true,
                "--nocapture" => sel.nocapture = true,
                f if WITH_VALUE.contains(&f) => {
                    args.next();
                }
                // libtest's own switches (cargo or an IDE may pass them): no meaning here.
                "-q" | "--quiet" | "--show-output" | "--ignored" | "--include-ignored" | "--test"
                | "--bench" => {}
                f if WITH_VALUE.iter().any(|w| f.starts_with(&format!("{w}="))) => {}
                f if f.starts_with('-') => bail!(
                    "unknown option '{f}': the e2e harness takes --group G[,G], --jobs N, --skip F, --exact, --list, --groups, --nocapture and name filters"
                ),
                filter => sel.include.push(filter.to_string()),
            }
        }
        let known: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
        for g in sel.groups.iter().chain(sel.child.iter()) {
            if !known.contains(&g.as_str()) {
                bail!("unknown group '{g}' (groups: {})", known.join(", "));
            }
        }
        Ok(sel)
    }

    fn hit(&self, name: &str, f: &str) -> bool {
        if self.exact {
            name == f
        } else {
            name.contains(f)
        }
    }

    pub fn wants(&self, s: &Scenario) -> bool {
        (self.include.is_empty() || self.include.iter().any(|f| self.hit(s.name, f)))
            && !self.skip.iter().any(|f| self.hit(s.name, f))
            && (self.groups.is_empty() || self.groups.iter().any(|g| g == s.group.name))
    }

    /// The selected scenarios; an error if filters were given and nothing matches.
    pub fn select(&self, all: &'static [Scenario]) -> Result<Vec<&'static Scenario>> {
        let chosen: Vec<&Scenario> = all.iter().filter(|s| self.wants(s)).collect();
        if chosen.is_empty() {
            let mut what = Vec::new();
            if !self.include.is_empty() {
                what.push(format!(
                    "filter {}",
                    self.include
                        .iter()
                        .map(|f| format!("'{f}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !self.groups.is_empty() {
                what.push(format!("group {}", self.groups.join(", ")));
            }
            if !self.skip.is_empty() {
                what.push(format!("--skip {}", self.skip.join(", ")));
            }
            bail!(
                "no scenario matches {}{}: nothing would run (see the names with --list)",
                what.join(" and "),
                if self.exact { " (--exact)" } else { "" }
            );
        }
        Ok(chosen)
    }
}

fn parse_jobs(v: &str) -> Result<usize> {
    v.parse()
        .ok()
        .filter(|n| (1..=16).contains(n))
        .with_context(|| format!("invalid number of parallel groups '{v}': use 1-16"))
}

pub fn main(all: &'static [Scenario]) -> ExitCode {
    let sel = match Selection::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    if let Some(group) = &sel.child {
        return child(group, &sel, all);
    }
    if let Err(e) = check_groups(all).and_then(|()| check_run_id()) {
        return usage_error(&e);
    }
    let chosen = match sel.select(all) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if sel.list {
        for s in &chosen {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    if sel.list_groups {
        for g in GROUPS {
            let names: Vec<&str> = chosen
                .iter()
                .filter(|s| s.group.name == g.name)
                .map(|s| s.name)
                .collect();
            if !names.is_empty() {
                println!(
                    "{} (machines {}*): {}",
                    g.name,
                    group_prefix(g),
                    names.join(" ")
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    match parent(&sel, &chosen) {
        Ok(code) => code,
        Err(e) => {
            println!("error: {e:#}");
            println!("0 passed, {} failed", chosen.len());
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    println!("error: {e:#}");
    println!("0 passed, 1 failed");
    ExitCode::FAILURE
}

/// The scenarios boot machines: they need root on Linux, and refuse (fail) without it.
fn preflight() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        == Some("0");
    anyhow::ensure!(
        root,
        "the e2e scenarios boot local machines (systemd-nspawn, veth, nftables) and need root on Linux: run 'sudo -E cargo test -p xtask --test e2e'"
    );
    Ok(())
}

/// Refuse to start if a machine with one of this run's prefixes runs or is being booted: it
/// belongs to another run with the same id (or a run that was killed).
pub fn refuse_names_in_use(groups: &[&Group]) -> Result<()> {
    let mut busy = Vec::new();
    for g in groups {
        for (name, u) in th::machines_named(&group_prefix(g)) {
            match u {
                th::Use::Running => busy.push(format!("{name} (running)")),
                th::Use::Booting => busy.push(format!("{name} (booting)")),
                th::Use::Stopped | th::Use::Stale => {}
            }
        }
    }
    if !busy.is_empty() {
        let names: Vec<&str> = busy
            .iter()
            .map(|b| b.split_whitespace().next().unwrap_or(""))
            .collect();
        let downs: Vec<String> = names
            .iter()
            .map(|n| format!("cargo xtask testhost down {n}"))
            .collect();
        bail!(
            "machines of run id '{}' are in use: {}; another e2e run with {ID_ENV}={} may be using them: pick another id ({ID_ENV}=...), or if no such run is going on, free them with: {}",
            base_id(),
            busy.join(", "),
            base_id(),
            downs.join(" && ")
        );
    }
    Ok(())
}

/// A scenario's result as the parent learns it.
struct Outcome {
    scenario: &'static Scenario,
    took: Duration,
    error: Option<String>,
}

/// What a child reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Pass(String, Duration),
    Fail(String, Duration),
    Error(String),
    Note(String),
    /// Any other line: the scenarios' own output.
    Output(String),
}

const MARK: &str = "##e2e ";

pub fn parse_event(line: &str) -> Event {
    let Some(rest) = line.strip_prefix(MARK) else {
        return Event::Output(line.to_string());
    };
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let timed = |rest: &str| {
        let (name, secs) = rest.rsplit_once(' ')?;
        let secs: f64 = secs.parse().ok()?;
        Some((name.to_string(), Duration::from_secs_f64(secs.max(0.0))))
    };
    match kind {
        "pass" => timed(rest).map(|(n, d)| Event::Pass(n, d)),
        "fail" => timed(rest).map(|(n, d)| Event::Fail(n, d)),
        "error" => Some(Event::Error(rest.to_string())),
        "note" => Some(Event::Note(rest.to_string())),
        _ => None,
    }
    .unwrap_or_else(|| Event::Output(line.to_string()))
}

/// One running group.
struct Running {
    group: &'static Group,
    child: Child,
    log: Utf8PathBuf,
    started: Instant,
}

fn log_dir() -> Utf8PathBuf {
    crate::support::repo().join("target/e2e").join(base_id())
}

fn parent(sel: &Selection, chosen: &[&'static Scenario]) -> Result<ExitCode> {
    preflight()?;
    let groups: Vec<&'static Group> = GROUPS
        .iter()
        .copied()
        .filter(|g| chosen.iter().any(|s| s.group.name == g.name))
        .collect();
    refuse_names_in_use(&groups)?;
    let jobs = match sel.jobs {
        Some(j) => j,
        None => match std::env::var(JOBS_ENV) {
            Ok(v) => parse_jobs(&v)?,
            Err(_) => DEFAULT_JOBS,
        },
    }
    .min(groups.len());
    xtask::interrupt::install();
    th::build(&Shell::new()?, false).context("building the test host image")?;
    let logs = log_dir();
    fs_err::create_dir_all(&logs)?;
    let width = groups.iter().map(|g| g.name.len()).max().unwrap_or(0);
    println!(
        "running {} e2e scenarios in {} group(s), {jobs} at a time (run id {}; full output in {logs}/GROUP.log)",
        chosen.len(),
        groups.len(),
        base_id()
    );
    let wall = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, Option<Event>)>();
    let mut queue: Vec<usize> = (0..groups.len()).rev().collect();
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let mut reported: Vec<Outcome> = Vec::new();
    let mut pending_fail: BTreeMap<usize, usize> = BTreeMap::new();
    let mut group_times: Vec<(&'static Group, Duration, Option<String>)> = Vec::new();
    let mut notes = Vec::new();
    loop {
        while running.len() < jobs && !xtask::interrupt::requested() {
            let Some(i) = queue.pop() else { break };
            let g = groups[i];
            let r = start_child(g, sel, &logs, i, tx.clone())?;
            running.insert(i, r);
        }
        if running.is_empty() {
            break;
        }
        let Ok((i, event)) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let g = groups[i];
        let prefix = format!("[{:<width$}]", g.name);
        match event {
            None => {
                // The child's stdout closed: it ended.
                let mut r = running.remove(&i).expect("a running group");
                let status = r.child.wait()?;
                let trouble = (!status.success()).then(|| format!("{status}"));
                if trouble.is_some() {
                    println!(
                        "{prefix} the group's process ended with {status}: see {}",
                        r.log
                    );
                }
                group_times.push((r.group, r.started.elapsed(), trouble));
            }
            Some(Event::Pass(name, took)) => {
                println!("{prefix} PASS  {name} ({})", secs(took));
                if let Some(s) = find(chosen, &name) {
                    reported.push(Outcome {
                        scenario: s,
                        took,
                        error: None,
                    });
                }
            }
            Some(Event::Fail(name, took)) => {
                println!("{prefix} FAIL  {name} ({})", secs(took));
                if let Some(s) = find(chosen, &name) {
                    pending_fail.insert(i, reported.len());
                    reported.push(Outcome {
                        scenario: s,
                        took,
                        error: Some(String::new()),
                    });
                }
            }
            Some(Event::Error(line)) => {
                println!("{prefix}       {line}");
                if let Some(&k) = pending_fail.get(&i) {
                    let e = reported[k].error.get_or_insert_with(String::new);
                    e.push_str(&line);
                    e.push('\n');
                }
            }
            Some(Event::Note(line)) => {
                println!("{prefix} {line}");
                notes.push(format!("{}: {line}", g.name));
            }
            Some(Event::Output(line)) => {
                if sel.nocapture {
                    println!("{prefix} {line}");
                }
            }
        }
    }
    // Scenarios a group never reported: its process ended (crashed, interrupted) before them.
    for s in chosen {
        if !reported.iter().any(|o| o.scenario.name == s.name) {
            let why = group_times
                .iter()
                .find(|(g, ..)| g.name == s.group.name)
                .map_or("it never started (interrupted)".to_string(), |(_, _, t)| {
                    format!(
                        "the {} group's process ended ({}) before it",
                        s.group.name,
                        t.as_deref().unwrap_or("exit status 0")
                    )
                });
            reported.push(Outcome {
                scenario: s,
                took: Duration::ZERO,
                error: Some(format!("not run: {why}: see {}/{}.log", logs, s.group.name)),
            });
        }
    }
    reported.sort_by_key(|o| chosen.iter().position(|s| s.name == o.scenario.name));
    // Whatever this run's machines left behind, whatever else runs on the host.
    let prefixes: Vec<String> = groups.iter().map(|g| group_prefix(g)).collect();
    let left = th::leftovers_matching(|m| prefixes.iter().any(|p| m.starts_with(p.as_str())))?;
    let label = |o: &Outcome| format!("[{:<width$}] {}", o.scenario.group.name, o.scenario.name);
    let col = reported
        .iter()
        .map(|o| label(o).len())
        .max()
        .unwrap_or(0)
        .max(8);
    println!();
    println!("{:<col$} {:>8}  result", "scenario", "time");
    for o in &reported {
        println!(
            "{:<col$} {:>8}  {}",
            label(o),
            secs(o.took),
            if o.error.is_none() { "pass" } else { "FAIL" }
        );
    }
    let times: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            group_times
                .iter()
                .find(|(x, ..)| x.name == g.name)
                .map(|(_, d, _)| format!("{} {}", g.name, secs(*d)))
        })
        .collect();
    println!(
        "groups: {}; wall time {}",
        times.join(", "),
        secs(wall.elapsed())
    );
    print_fault_matrix(&reported);
    for n in &notes {
        println!("note: {n}");
    }
    // Each failure again at the very end, with its first lines (a CI log is often read from
    // its tail, and the table alone does not say what broke), then the verdict.
    let labels: Vec<String> = reported.iter().map(label).collect();
    let ends: Vec<ScenarioEnd> = reported
        .iter()
        .zip(&labels)
        .map(|(o, l)| ScenarioEnd {
            label: l,
            error: o.error.as_deref(),
        })
        .collect();
    let group_logs: Vec<String> = group_times
        .iter()
        .map(|(g, ..)| format!("{logs}/{}.log", g.name))
        .collect();
    let group_ends: Vec<GroupEnd> = group_times
        .iter()
        .zip(&group_logs)
        .map(|((g, _, exit), log)| GroupEnd {
            name: g.name,
            exit: exit.as_deref(),
            failed_scenarios: reported
                .iter()
                .filter(|o| o.scenario.group.name == g.name && o.error.is_some())
                .count(),
            log,
        })
        .collect();
    let (lines, pass) = verdict(&ends, &group_ends, &left);
    for line in lines {
        println!("{line}");
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn find(chosen: &[&'static Scenario], name: &str) -> Option<&'static Scenario> {
    chosen.iter().copied().find(|s| s.name == name)
}

/// Start the child process of `group`: this binary, the same selection, `--child GROUP`.
fn start_child(
    group: &'static Group,
    sel: &Selection,
    logs: &camino::Utf8Path,
    index: usize,
    tx: mpsc::Sender<(usize, Option<Event>)>,
) -> Result<Running> {
    let log = logs.join(format!("{}.log", group.name));
    let file = fs_err::File::create(&log)?;
    let mut args: Vec<String> = vec!["--child".into(), group.name.into()];
    for f in &sel.include {
        args.push(f.clone());
    }
    for f in &sel.skip {
        args.push("--skip".into());
        args.push(f.clone());
    }
    if sel.exact {
        args.push("--exact".into());
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(&args)
        .env(GROUP_ENV, group.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file.try_clone()?.into_parts().0))
        .spawn()
        .with_context(|| format!("starting the {} group", group.name))?;
    let stdout = child.stdout.take().expect("piped");
    let mut log_file = file;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log_file, "{line}");
            let _ = tx.send((index, Some(parse_event(&line))));
        }
        let _ = tx.send((index, None));
    });
    Ok(Running {
        group,
        child,
        log,
        started: Instant::now(),
    })
}

/// A child: run the group's selected scenarios in order, then take its machines down.
fn child(group: &str, sel: &Selection, all: &'static [Scenario]) -> ExitCode {
    xtask::interrupt::install();
    // The delay proxy runs as `xtask testhost proxy`: point the library at the built binary.
    std::env::set_var(th::XTASK_BIN_ENV, env!("CARGO_BIN_EXE_xtask"));
    let g = GROUPS
        .iter()
        .copied()
        .find(|g| g.name == group)
        .expect("validated by the parser");
    if current_group().map(|c| c.name) != Some(g.name) {
        println!(
            "{MARK}note the group's process needs {GROUP_ENV}={}",
            g.name
        );
        return ExitCode::FAILURE;
    }
    let mut ctx = match Ctx::new() {
        Ok(c) => c,
        Err(e) => {
            println!("{MARK}note cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for s in all
        .iter()
        .filter(|s| s.group.name == g.name && sel.wants(s))
    {
        if xtask::interrupt::requested() {
            println!("{MARK}note interrupted: the remaining scenarios did not run");
            ok = false;
            break;
        }
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| (s.run)(&mut ctx)));
        let took = start.elapsed().as_secs_f64();
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(p) => Some(format!("panicked: {}", crate::panic_message(&*p))),
        };
        match error {
            None => println!("{MARK}pass {} {took:.3}", s.name),
            Some(e) => {
                ok = false;
                println!("{MARK}fail {} {took:.3}", s.name);
                for line in e.lines() {
                    println!("{MARK}error {line}");
                }
            }
        }
    }
    // The shared machines go down whatever happened, and so does every other machine of this
    // group's names (a scenario that failed half way may have left one).
    if let Err(e) = ctx.take_down() {
        println!("{MARK}note taking the shared machines down failed: {e:#}");
        ok = false;
    }
    let sh = match Shell::new() {
        Ok(sh) => sh,
        Err(e) => {
            println!("{MARK}note {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for (name, _) in th::machines_named(&group_prefix(g)) {
        println!("{MARK}note machine {name} was still there after the group: taking it down");
        if let Err(e) = th::down(&sh, &name) {
            println!("{MARK}note could not take {name} down: {e:#}");
        }
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The fault scenarios `MODULE::FAULT_at_STEP` (`faults::kill_at_sync`,
/// `outage::pgstop_at_migrate`), STEP one of the columns, as a table: fault × step → pass/FAIL.
fn print_fault_matrix(outcomes: &[Outcome]) {
    const STEPS: [&str; 6] = ["lock", "upload", "sync", "migrate", "activate", "record"];
    let cells: Vec<(&str, &str, bool)> = outcomes
        .iter()
        .filter_map(|o| {
            let (_, rest) = o.scenario.name.split_once("::")?;
            let (fault, step) = rest.split_once("_at_")?;
            STEPS
                .contains(&step)
                .then_some((fault, step, o.error.is_none()))
        })
        .collect();
    if cells.is_empty() {
        return;
    }
    println!();
    println!("fault matrix (step at which the fault strikes)");
    print!("{:<14}", "fault");
    for step in STEPS {
        print!("{step:>10}");
    }
    println!();
    let mut faults: Vec<&str> = cells.iter().map(|c| c.0).collect();
    faults.dedup();
    for fault in faults {
        print!("{fault:<14}");
        for step in STEPS {
            let cell = cells
                .iter()
                .find(|c| c.0 == fault && c.1 == step)
                .map_or("-", |c| if c.2 { "pass" } else { "FAIL" });
            print!("{cell:>10}");
        }
        println!();
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
