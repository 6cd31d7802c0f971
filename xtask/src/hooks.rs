//! Hooks: executables in `deploy/hooks/` of the checkout, run on the deploying machine around a
//! deploy or a rollback (`pre-deploy`, `post-deploy`, `pre-rollback`, `post-rollback`) and
//! around each host of a fleet (`pre-host-switch`, `post-host-healthy`: drain a host from a load
//! balancer and put it back). As in Kamal, a hook is a file path run with the deploy's facts as
//! environment: the deployer's own environment, less any `INNERCONTEXT_*` it had, plus the
//! facts as `INNERCONTEXT_*` variables ([`vars`], pure). The server's env files never pass
//! through the deployer, so no hook sees their values.
//!
//! A hook runs in a process group of its own, its output passed through under its step line;
//! past `DEPLOY_HOOK_TIMEOUT` (or at a signal) its whole group is ended and the hook fails. The
//! server jobs keep hearing from the deployer meanwhile: their heartbeat is a thread of its own
//! ([`crate::deploy::follower`]), never the one that waits for the hook.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::interrupt::{self, SIGKILL, SIGTERM};
use crate::wait::{self, Deadline};
use crate::{proc, say, ui};

/// Where the hooks are, in the checkout.
pub const DIR: &str = "deploy/hooks";

/// The variable that bounds a hook's run (whole seconds).
pub const TIMEOUT_VAR: &str = "DEPLOY_HOOK_TIMEOUT";
pub const DEFAULT_TIMEOUT: u64 = 60;

/// Every hook there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreDeploy,
    PostDeploy,
    PreRollback,
    PostRollback,
    PreHostSwitch,
    PostHostHealthy,
}

impl Hook {
    pub const ALL: [Hook; 6] = [
        Hook::PreDeploy,
        Hook::PostDeploy,
        Hook::PreRollback,
        Hook::PostRollback,
        Hook::PreHostSwitch,
        Hook::PostHostHealthy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::PreDeploy => "pre-deploy",
            Hook::PostDeploy => "post-deploy",
            Hook::PreRollback => "pre-rollback",
            Hook::PostRollback => "post-rollback",
            Hook::PreHostSwitch => "pre-host-switch",
            Hook::PostHostHealthy => "post-host-healthy",
        }
    }

    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The hook before (`pre`) or after a command's run.
    pub fn around(command: &str, pre: bool) -> Hook {
        match (command == "rollback", pre) {
            (false, true) => Hook::PreDeploy,
            (false, false) => Hook::PostDeploy,
            (true, true) => Hook::PreRollback,
            (true, false) => Hook::PostRollback,
        }
    }
}

/// What a hook is told: the deploy's facts, as far as they are known when it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `deploy` or `rollback`.
    pub command: String,
    pub destination: Option<String>,
    /// Every host, as DEPLOY_SERVER names it (without the user).
    pub hosts: Vec<String>,
    /// The host a per-host hook is about.
    pub host: String,
    /// Per-host hooks: `forward` (to the new release) or `back` (the fleet goes back).
    pub direction: String,
    /// The release deployed (or rolled back to), and what was current before.
    pub release: String,
    pub previous: String,
    pub commit: String,
    pub scope: String,
    /// `user@host` of the deploying machine.
    pub deployer: String,
    /// After the run: its result (`success`, `rolled-back`, `failed`, ...).
    pub result: String,
    pub duration: Option<Duration>,
    /// After the run: the deploy.log line each host wrote for it.
    pub log_lines: Vec<String>,
}

/// The facts as the hook's `INNERCONTEXT_*` variables: always every one, empty when not known
/// (yet) or not about this hook, so a hook under `set -u` can read them all.
pub fn vars(hook: Hook, f: &Facts) -> Vec<(String, String)> {
    let v = |k: &str, val: &str| (format!("INNERCONTEXT_{k}"), val.to_string());
    vec![
        v("HOOK", hook.name()),
        v("COMMAND", &f.command),
        v("DESTINATION", f.destination.as_deref().unwrap_or("")),
        v("HOSTS", &f.hosts.join(",")),
        v("HOST", &f.host),
        v("DIRECTION", &f.direction),
        v("RELEASE", &f.release),
        v("PREVIOUS_RELEASE", &f.previous),
        v("COMMIT", &f.commit),
        v("SCOPE", &f.scope),
        v("DEPLOYER", &f.deployer),
        v("RESULT", &f.result),
        v(
            "DURATION",
            &f.duration
                .map(|d| format!("{:.1}", d.as_secs_f64()))
                .unwrap_or_default(),
        ),
        v("LOG_LINE", &f.log_lines.join("\n")),
    ]
}

/// One entry of `deploy/hooks/` as the directory says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// A regular file (or a link to one).
    pub file: bool,
    pub executable: bool,
}

/// Whether a name in `deploy/hooks/` is one the deployer leaves alone: `*.example`, a README,
/// a dotfile.
fn ignored(name: &str) -> bool {
    name.ends_with(".example") || name.starts_with("README") || name.starts_with('.')
}

/// The hooks the directory's entries make, or one line on the first bad one: a name that is no
/// hook, a hook that is not an executable file. Pure.
pub fn check(entries: &[Entry]) -> Result<Vec<Hook>> {
    let valid = || {
        Hook::ALL
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut found = Vec::new();
    for e in entries {
        if ignored(&e.name) {
            continue;
        }
        let shown = crate::quote::printable(&e.name);
        let Some(hook) = Hook::parse(&e.name) else {
            bail!(
                "{DIR}/{shown} is no hook: the hooks are {}; rename it (or add .example to keep it unused)",
                valid()
            );
        };
        if !e.file {
            bail!("{DIR}/{shown} is not a file: a hook is an executable file");
        }
        if !e.executable {
            bail!(
                "{DIR}/{shown} is not executable: 'chmod +x {DIR}/{shown}' (or rename it {shown}.example to keep it unused)"
            );
        }
        found.push(hook);
    }
    found.sort_by_key(|h| Hook::ALL.iter().position(|a| a == h));
    Ok(found)
}

/// The hooks of a checkout and how long each may run.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// The checkout (where a hook runs) and its hooks' directory.
    root: Utf8PathBuf,
    dir: Utf8PathBuf,
    present: Vec<Hook>,
    timeout: Duration,
}

impl Hooks {
    /// The hooks in `root`'s `deploy/hooks/` (none without the directory), checked.
    pub fn find(root: &Utf8Path, timeout_secs: u64) -> Result<Hooks> {
        let dir = root.join(DIR);
        let mut entries = Vec::new();
        if dir.is_dir() {
            for e in fs_err::read_dir(&dir)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Through a link, as running it would.
                let meta = std::fs::metadata(e.path()).ok();
                entries.push(Entry {
                    name,
                    file: meta.as_ref().is_some_and(|m| m.is_file()),
                    executable: meta.is_some_and(|m| m.permissions().mode() & 0o111 != 0),
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Hooks {
            root: root.to_path_buf(),
            dir,
            present: check(&entries)?,
            timeout: Duration::from_secs(timeout_secs),
        })
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.present.contains(&hook)
    }

    /// Run `hook` with `facts` if it is there (its step line: `hook NAME` and `label`, if any);
    /// Ok when it is absent or exits 0.
    pub fn run(&self, hook: Hook, facts: &Facts, label: &str) -> Result<()> {
        if !self.has(hook) {
            return Ok(());
        }
        let path = self.dir.join(hook.name());
        let step = match label {
            "" => format!("hook {}", hook.name()),
            l => format!("hook {} ({l})", hook.name()),
        };
        run_one(&self.root, &path, &step, &vars(hook, facts), self.timeout)
            .with_context(|| format!("the {} hook ({DIR}/{})", hook.name(), hook.name()))
    }
}

/// A line the hook printed, under its step line (which it ends: the outcome repeats the name).
fn shown(line: &str) {
    ui::break_line();
    say!("    | {line}");
}

/// How a hook's run ended, when not by itself.
enum Cut {
    Timeout,
    Signal,
}

/// Run one hook: its own process group, stdin from nothing, its output passed through as it
/// comes; ended with its group past `timeout` or at a signal.
fn run_one(
    root: &Utf8Path,
    path: &Utf8Path,
    step: &str,
    vars: &[(String, String)],
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    ui::break_line();
    let id = ui::step_start(step);
    let mut cmd = Command::new(path);
    cmd.current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("INNERCONTEXT_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    let mut child = match proc::isolate(&mut cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            ui::step_end(
                id,
                step,
                &format!("FAILED ({})", ui::secs(started.elapsed())),
            );
            return Err(anyhow!("could not start it: {e}"));
        }
    };
    let (tx, rx) = mpsc::channel::<String>();
    let pass = |pipe: Option<Box<dyn Read + Send>>, tx: mpsc::Sender<String>| {
        std::thread::spawn(move || {
            if let Some(p) = pipe {
                for line in BufReader::new(p).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line);
                    if tx
                        .send(crate::quote::printable(text.trim_end_matches('\r')))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        })
    };
    pass(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        tx.clone(),
    );
    pass(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        tx,
    );
    let deadline = Deadline::after(timeout);
    let mark = interrupt::mark();
    let ended = loop {
        while let Ok(line) = rx.try_recv() {
            shown(&line);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => bail!("waiting for it: {e}"),
        }
        if deadline.passed() {
            break Err(Cut::Timeout);
        }
        if mark.passed() {
            break Err(Cut::Signal);
        }
        std::thread::sleep(wait::TICK);
    };
    if ended.is_err() {
        // Its whole group: SIGTERM, a moment to go, then SIGKILL for whatever is left.
        proc::signal_group(child.id(), SIGTERM);
        let _ = wait::poll(Deadline::after(Duration::from_secs(2)), || {
            child.try_wait().ok().flatten()
        });
        proc::signal_group(child.id(), SIGKILL);
        let _ = child.wait();
    }
    // What it printed last (a process that left its group could hold the pipes open: not for
    // long).
    let drain = Deadline::after(Duration::from_secs(1));
    loop {
        match rx.try_recv() {
            Ok(line) => shown(&line),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if drain.passed() => break,
            Err(TryRecvError::Empty) => drain.nap(wait::TICK),
        }
    }
    let took = ui::secs(started.elapsed());
    match ended {
        Ok(status) if status.success() => {
            ui::step_end(id, step, &format!("ok ({took})"));
            Ok(())
        }
        Ok(status) => {
            ui::step_end(id, step, &format!("FAILED ({took})"));
            match status.code() {
                Some(code) => bail!("exited with {code}"),
                None => bail!("was ended by a signal ({status})"),
            }
        }
        Err(Cut::Timeout) => {
            ui::step_end(id, step, &format!("TIMED OUT ({took})"));
            bail!(
                "ran past {TIMEOUT_VAR} ({}s): it was ended with its process group",
                timeout.as_secs()
            )
        }
        Err(Cut::Signal) => {
            ui::step_end(id, step, &format!("stopped ({took})"));
            bail!(
                "interrupted by {}: it was ended with its process group",
                interrupt::describe()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, executable: bool) -> Entry {
        Entry {
            name: name.into(),
            file: true,
            executable,
        }
    }

    #[test]
    fn every_hook_has_one_name() {
        for h in Hook::ALL {
            assert_eq!(Hook::parse(h.name()), Some(h));
        }
        assert_eq!(Hook::parse("pre_deploy"), None);
        assert_eq!(Hook::around("deploy", true), Hook::PreDeploy);
        assert_eq!(Hook::around("rollback", false), Hook::PostRollback);
    }

    #[test]
    fn the_directory_holds_hooks_examples_and_a_readme_only() {
        let ok = check(&[
            entry("post-deploy.example", false),
            entry("README.md", false),
            entry(".gitkeep", false),
            entry("post-host-healthy", true),
            entry("pre-deploy", true),
        ])
        .unwrap();
        assert_eq!(ok, vec![Hook::PreDeploy, Hook::PostHostHealthy]);
        let e = check(&[entry("pre-deploy.sh", true)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "deploy/hooks/pre-deploy.sh is no hook: the hooks are pre-deploy, post-deploy, pre-rollback, post-rollback, pre-host-switch, post-host-healthy; rename it (or add .example to keep it unused)"
        );
        let e = check(&[entry("pre-deploy", false)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "deploy/hooks/pre-deploy is not executable: 'chmod +x deploy/hooks/pre-deploy' (or rename it pre-deploy.example to keep it unused)"
        );
        let dir = Entry {
            name: "post-deploy".into(),
            file: false,
            executable: true,
        };
        assert!(check(&[dir])
            .unwrap_err()
            .to_string()
            .contains("is not a file"));
        let e = check(&[entry("bad\nname", true)]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(check(&[]).unwrap(), vec![]);
    }

    #[test]
    fn the_facts_are_every_variable_empty_when_unknown() {
        let f = Facts {
            command: "deploy".into(),
            destination: Some("staging".into()),
            hosts: vec!["10.0.0.2".into(), "10.0.0.3".into()],
            host: "10.0.0.3".into(),
            direction: "forward".into(),
            release: "20261206T120000Z".into(),
            previous: "20261205T120000Z".into(),
            commit: "abc1234".into(),
            scope: "all".into(),
            deployer: "me@laptop".into(),
            result: "success".into(),
            duration: Some(Duration::from_millis(12_345)),
            log_lines: vec!["L1".into(), "L2".into()],
        };
        let got = vars(Hook::PostHostHealthy, &f);
        let want = [
            ("HOOK", "post-host-healthy"),
            ("COMMAND", "deploy"),
            ("DESTINATION", "staging"),
            ("HOSTS", "10.0.0.2,10.0.0.3"),
            ("HOST", "10.0.0.3"),
            ("DIRECTION", "forward"),
            ("RELEASE", "20261206T120000Z"),
            ("PREVIOUS_RELEASE", "20261205T120000Z"),
            ("COMMIT", "abc1234"),
            ("SCOPE", "all"),
            ("DEPLOYER", "me@laptop"),
            ("RESULT", "success"),
            ("DURATION", "12.3"),
            ("LOG_LINE", "L1\nL2"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (format!("INNERCONTEXT_{k}"), v.to_string()))
            .collect();
        assert_eq!(got, want);
        let empty = vars(Hook::PreDeploy, &Facts::default());
        assert_eq!(empty.len(), want.len());
        assert!(empty
            .iter()
            .all(|(k, v)| v.is_empty() || (k == "INNERCONTEXT_HOOK" && v == "pre-deploy")));
    }

    fn script(dir: &Utf8Path, hook: Hook, body: &str) {
        let hooks = dir.join(DIR);
        fs_err::create_dir_all(&hooks).unwrap();
        let p = hooks.join(hook.name());
        fs_err::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tmp(name: &str) -> Utf8PathBuf {
        let d = Utf8PathBuf::from(std::env::temp_dir().to_string_lossy().into_owned())
            .join(format!("xtask-hooks-{name}-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&d);
        fs_err::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_hook_gets_the_facts_and_its_exit_counts() {
        let d = tmp("facts");
        script(
            &d,
            Hook::PreDeploy,
            "printf '%s|%s|%s' \"$INNERCONTEXT_HOOK\" \"$INNERCONTEXT_RELEASE\" \"$PWD\" > out; exit \"${CODE:-0}\"",
        );
        let hooks = Hooks::find(&d, 5).unwrap();
        assert!(hooks.has(Hook::PreDeploy) && !hooks.has(Hook::PostDeploy));
        let facts = Facts {
            release: "R1".into(),
            ..Facts::default()
        };
        hooks.run(Hook::PreDeploy, &facts, "").unwrap();
        assert_eq!(
            fs_err::read_to_string(d.join("out")).unwrap(),
            format!("pre-deploy|R1|{d}")
        );
        // An absent hook is no failure.
        hooks.run(Hook::PostDeploy, &facts, "").unwrap();
        script(&d, Hook::PostDeploy, "echo said; exit 3");
        let hooks = Hooks::find(&d, 5).unwrap();
        let e = format!("{:#}", hooks.run(Hook::PostDeploy, &facts, "").unwrap_err());
        assert_eq!(
            e,
            "the post-deploy hook (deploy/hooks/post-deploy): exited with 3"
        );
        let _ = fs_err::remove_dir_all(&d);
    }

    #[test]
    fn a_hook_past_its_time_is_ended_with_its_group() {
        let d = tmp("timeout");
        // A child of the hook that would outlive it, writing its pid first.
        script(&d, Hook::PreHostSwitch, "sleep 30 & echo $! > child; wait");
        let hooks = Hooks::find(&d, 1).unwrap();
        let started = Instant::now();
        let e = format!(
            "{:#}",
            hooks
                .run(Hook::PreHostSwitch, &Facts::default(), "h")
                .unwrap_err()
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{e}");
        assert!(
            e.ends_with("ran past DEPLOY_HOOK_TIMEOUT (1s): it was ended with its process group"),
            "{e}"
        );
        let pid = fs_err::read_to_string(d.join("child")).unwrap();
        let gone = wait::poll(Deadline::after(Duration::from_secs(5)), || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok();
            // Gone, or a zombie waiting for its reaper.
            stat.is_none_or(|s| s.split_whitespace().nth(2) == Some("Z"))
                .then_some(())
        });
        assert!(gone.is_ok(), "the hook's child {pid} outlived it");
        let _ = fs_err::remove_dir_all(&d);
    }
}
