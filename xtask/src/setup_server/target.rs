//! Running a call on the target over the ssh master connection, and the one line each step
//! prints.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use camino::Utf8Path;

use super::calls::{checked, Call};
use crate::remote::Reply;
use crate::ssh::Session;
use crate::{interrupt, ui};

pub(super) struct Target<'a> {
    pub(super) session: &'a Session,
    pub(super) admin: &'a str,
    /// `--dry-run`: every changing call gets `--check`.
    pub(super) check: bool,
}

impl Target<'_> {
    /// Run a call; stdin is a local file or nothing. A failure becomes the script's `error=`
    /// line (or ssh's last words), with the remote stderr printed below the step line.
    pub(super) fn call(&self, call: &Call, stdin: Option<&Utf8Path>) -> Result<Reply> {
        interrupt::check()?;
        let call = if self.check {
            checked(call)
        } else {
            call.clone()
        };
        // A Ctrl-C lets the step in flight finish (no half-done step); the next one does not
        // start.
        let out = self.session.run_captured(&call, stdin)?;
        let reply = Reply::parse(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("      | {l}");
            }
            let why = reply
                .get("error")
                .map(str::to_string)
                .or_else(|| {
                    stderr
                        .lines()
                        .map(str::trim)
                        .rfind(|l| !l.is_empty())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("exit status {}", out.status));
            bail!(
                "setup-server step '{}' failed on {}: {why}",
                call.sub,
                self.admin
            );
        }
        Ok(reply)
    }

    pub(super) fn step(&self, name: &str, call: &Call, stdin: Option<&Utf8Path>) -> Result<()> {
        self.step_with(name, call, stdin, |_, _| {})
    }

    /// Run a changing call as a named step and print its line.
    pub(super) fn step_with(
        &self,
        name: &str,
        call: &Call,
        stdin: Option<&Utf8Path>,
        adjust: impl FnOnce(&Reply, &mut String),
    ) -> Result<()> {
        let t = Instant::now();
        let reply = match self.call(call, stdin) {
            Ok(r) => r,
            Err(e) => {
                print_line(Status::Failed, name, "", t.elapsed());
                return Err(e);
            }
        };
        let status = match (reply.get("changed"), self.check) {
            (Some("yes"), false) => Status::Changed,
            (Some("yes"), true) => Status::WouldChange,
            (Some("no"), _) => Status::Unchanged,
            _ => {
                print_line(Status::Failed, name, "", t.elapsed());
                bail!(
                    "setup-server step '{}' on {} gave no result (changed=yes|no missing)",
                    call.sub,
                    self.admin
                );
            }
        };
        let mut detail = reply.get("detail").unwrap_or("").to_string();
        adjust(&reply, &mut detail);
        print_line(status, name, &detail, t.elapsed());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Changed,
    Unchanged,
    WouldChange,
    Failed,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "[ok]",
            Status::Changed => "[changed]",
            Status::Unchanged => "[unchanged]",
            Status::WouldChange => "[would change]",
            Status::Failed => "[failed]",
        }
    }
}

/// `  [changed]       packages        install nginx libpq5  41.2s`
pub fn step_line(status: Status, name: &str, detail: &str, took: Duration) -> String {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!("{detail}  ")
    };
    format!(
        "  {:<15} {:<14} {detail}{}",
        status.label(),
        name,
        ui::secs(took)
    )
}

pub(super) fn print_line(status: Status, name: &str, detail: &str, took: Duration) {
    println!("{}", step_line(status, name, detail, took));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines() {
        assert_eq!(
            step_line(
                Status::Changed,
                "packages",
                "install nginx libpq5",
                Duration::from_millis(41_230)
            ),
            "  [changed]       packages       install nginx libpq5  41.2s"
        );
        assert_eq!(
            step_line(Status::Unchanged, "uv", "", Duration::from_millis(12)),
            "  [unchanged]     uv             0.0s"
        );
    }
}
