//! The local checks of a deploy, run beside the upload: each part of `cargo xtask check` as a
//! child process of its own (its own process group: the deployer stops it on an interrupt;
//! its output in target/checks/PART.log, shown when it fails). The frontend build runs first
//! (the upload needs it), its checks after it; the backend checks from the start.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;

use crate::flags::{CheckPart, Scope};
use crate::interrupt::SIGTERM;
use crate::{check, proc};

struct Running {
    part: CheckPart,
    child: Child,
    log: Utf8PathBuf,
    started: Instant,
}

/// A part that ended: its result and how long it took.
pub struct Finished {
    pub part: CheckPart,
    pub ok: bool,
    pub secs: f64,
    /// The last lines of its output when it failed.
    pub tail: String,
    /// Whether it was answered from the cache (passed for this tree before).
    pub cached: bool,
    /// Why a build that passed before ran again (its output was no longer what it produced).
    pub rebuilt: Option<String>,
}

pub struct Checks {
    running: Vec<Running>,
    /// Parts still to start once the build is done.
    after_build: Vec<CheckPart>,
    recheck: bool,
    pub done: Vec<Finished>,
}

fn log_dir() -> Utf8PathBuf {
    crate::project_root().join("target/checks")
}

impl Checks {
    /// Start the parts `scope` needs: the build always when the frontend ships (the server
    /// never builds), the checks unless `skip`.
    pub fn start(scope: Scope, skip: bool, recheck: bool) -> Result<Checks> {
        let mut c = Checks {
            running: Vec::new(),
            after_build: Vec::new(),
            recheck,
            done: Vec::new(),
        };
        if scope.backend() && !skip {
            c.spawn(CheckPart::Backend)?;
        }
        if scope.frontend() {
            c.spawn(CheckPart::Build)?;
            if !skip {
                c.after_build.push(CheckPart::Frontend);
            }
        }
        Ok(c)
    }

    fn spawn(&mut self, part: CheckPart) -> Result<()> {
        fs_err::create_dir_all(log_dir())?;
        let log = log_dir().join(format!("{}.log", part.name()));
        let file = fs_err::File::create(&log)?;
        let err = file.try_clone()?;
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("check").arg(part.name());
        if self.recheck {
            cmd.arg("--recheck");
        }
        cmd.current_dir(crate::project_root())
            .env("XTASK_PROJECT_ROOT", crate::project_root())
            .env(proc::GROUP_DIES_WITH_PARENT_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.into_parts().0))
            .stderr(Stdio::from(err.into_parts().0));
        proc::isolate(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {} checks", part.name()))?;
        self.running.push(Running {
            part,
            child,
            log,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Collect parts that ended (non-blocking); start what waited for the build.
    pub fn poll(&mut self) -> Result<Vec<CheckPart>> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let status = self.running[i].child.try_wait()?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let r = self.running.remove(i);
            let text = fs_err::read_to_string(&r.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let finished = Finished {
                part: r.part,
                ok: status.success(),
                secs: r.started.elapsed().as_secs_f64(),
                tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                cached: text.contains(check::CACHED),
                rebuilt: check::rebuilt_because(&text).map(str::to_string),
            };
            if r.part == CheckPart::Build && finished.ok {
                for p in std::mem::take(&mut self.after_build) {
                    self.spawn(p)?;
                }
            }
            ended.push(r.part);
            self.done.push(finished);
        }
        Ok(ended)
    }

    /// Whether `part` ended, and how.
    pub fn result(&self, part: CheckPart) -> Option<&Finished> {
        self.done.iter().find(|f| f.part == part)
    }

    /// The first part that failed.
    pub fn failed(&self) -> Option<&Finished> {
        self.done.iter().find(|f| !f.ok)
    }

    /// Whether every started part ended (and nothing waits to start).
    pub fn all_done(&self) -> bool {
        self.running.is_empty() && (self.after_build.is_empty() || self.failed().is_some())
    }

    /// Whether the build is needed and has not ended yet.
    pub fn build_pending(&self) -> bool {
        self.running.iter().any(|r| r.part == CheckPart::Build)
    }

    /// Stop every running part (the whole process group of each).
    pub fn abort(&mut self) {
        self.after_build.clear();
        for r in &mut self.running {
            proc::signal_group(r.child.id(), SIGTERM);
        }
        for r in &mut self.running {
            let _ = r.child.wait();
        }
        self.running.clear();
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.abort();
    }
}
