//! Child processes of the xtask (ssh, rsync, the local checks, pnpm, uv): each starts in a
//! process group of its own, so a terminal's Ctrl-C or hang-up reaches only the xtask, which
//! decides what to stop and when; and each gets SIGTERM when the xtask dies, even by SIGKILL
//! (`PR_SET_PDEATHSIG`), so nothing it started goes on without it. A child xtask (the deploy's
//! checks) passes that SIGTERM on to its own group ([`group_dies_with_parent`]), so neither do
//! the processes it started.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use crate::interrupt::{self, Mark, SIGTERM};
use crate::wait::{self, Deadline};

// The process calls of libc (which std links) this project makes; `signal` and `_exit` are
// in `interrupt`, which owns the handlers.
extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn getppid() -> i32;
    fn getpid() -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

const PR_SET_PDEATHSIG: i32 = 1;

/// Set for a child xtask whose own children must not outlive this process (the deploy's
/// checks: pnpm, vite, pytest). A deployer killed with SIGKILL left its frontend build running,
/// and the next deploy's build failed on it ("Found another Vite build process").
pub const GROUP_DIES_WITH_PARENT_ENV: &str = "XTASK_GROUP_DIES_WITH_PARENT";

/// At the start of a command: when [`GROUP_DIES_WITH_PARENT_ENV`] is set (and then removed, so
/// that it goes no further), SIGTERM (what the parent's death sends, or the parent's stop) ends
/// this process's whole process group, not only this process.
pub fn group_dies_with_parent() {
    if std::env::var_os(GROUP_DIES_WITH_PARENT_ENV).is_none() {
        return;
    }
    std::env::remove_var(GROUP_DIES_WITH_PARENT_ENV);
    // The handler only calls kill and _exit, which are async-signal-safe.
    interrupt::handle(SIGTERM, end_group);
}

extern "C" fn end_group(sig: i32) {
    // SAFETY: kill is async-signal-safe; the signal to our own group (us included) stays
    // pending in the handler, and _exit ends us first.
    unsafe {
        kill(0, sig);
    }
    interrupt::exit_now(128 + sig)
}

/// Make `cmd` start in its own process group and die with this process. Note that the parent
/// death signal fires when the *thread* that spawned the child ends: spawn from the thread
/// that waits for the child.
pub fn isolate(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    dies_with_parent(cmd)
}

/// `cmd` gets SIGTERM when the xtask dies, even by SIGKILL (`PR_SET_PDEATHSIG`), and stays in
/// the xtask's process group (a terminal's foreground group: `exec`'s ssh with a terminal).
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid is async-signal-safe; it is read before the fork.
    let parent = unsafe { getpid() };
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            prctl(PR_SET_PDEATHSIG, SIGTERM as u64, 0, 0, 0);
            if getppid() != parent {
                // The parent died before prctl took effect.
                return Err(std::io::Error::other("the xtask exited"));
            }
            Ok(())
        });
    }
    cmd
}

/// The same for a duct expression (every process it starts).
pub fn isolated(expr: duct::Expression) -> duct::Expression {
    expr.before_spawn(|cmd| {
        isolate(cmd);
        Ok(())
    })
}

/// Run `program args` in `dir` in its own process group (see [`isolate`]): its stdout, or an
/// error with what it printed on stderr. For the short local commands a deploy runs (git),
/// which a terminal's Ctrl-C or hang-up must not kill under the xtask: the xtask decides what
/// a signal means (seen: a hang-up that killed `git ls-files` ended a deploy with "command was
/// terminated by a signal" instead of "interrupted").
pub fn read(dir: &camino::Utf8Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = isolate(&mut cmd)
        .output()
        .with_context(|| format!("running {program} in {dir}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed in {dir} ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Send `sig` to the process group led by `pid` (a child started with [`isolate`]); a group
/// that is already gone is not an error.
pub fn signal_group(pid: u32, sig: i32) {
    if let Ok(pid @ 2..) = i32::try_from(pid) {
        // SAFETY: kill has no memory effects on this process.
        unsafe {
            kill(-pid, sig);
        }
    }
}

/// Send `sig` to one process; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid @ 2..) = i32::try_from(pid) {
        // SAFETY: kill has no memory effects on this process.
        unsafe {
            kill(pid, sig);
        }
    }
}

/// Run `cmd` (stdin from nothing, stdout captured; stderr captured, or passed through) to its
/// end, in its own process group, unless a signal arrives after `mark`: then the group gets
/// SIGTERM, is reaped, and the answer is None. The child is polled, never waited for with a
/// timeout (see [`crate::wait`]).
pub fn output_unless_interrupted(
    cmd: &mut Command,
    mark: Mark,
    capture_stderr: bool,
) -> std::io::Result<Option<Output>> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(if capture_stderr {
        Stdio::piped()
    } else {
        Stdio::inherit()
    });
    let mut child = isolate(cmd).spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let ended = wait::poll_until(
        Deadline::after(std::time::Duration::MAX),
        || mark.passed(),
        || child.try_wait().transpose(),
    );
    let status = match ended {
        Ok(status) => status?,
        Err(_) => {
            signal_group(child.id(), SIGTERM);
            let _ = child.wait();
            let _ = (stdout.join(), stderr.join());
            return Ok(None);
        }
    };
    Ok(Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn children_get_their_own_process_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$ $(ps -o pgid= -p $$)"]);
        let out = isolate(&mut cmd).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<i32> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        // The child leads a group of its own, so the terminal's signals to our group miss it.
        assert_eq!(ids.len(), 2, "{text}");
        assert_eq!(
            ids[0], ids[1],
            "the child is not its own process group's leader"
        );
    }

    #[test]
    fn read_runs_its_command_in_a_group_of_its_own_and_names_a_failure() {
        let dir = camino::Utf8Path::new("/");
        let text = read(dir, "sh", &["-c", "echo $$ $(ps -o pgid= -p $$)"]).unwrap();
        let ids: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(ids.len(), 2, "{text}");
        assert_eq!(ids[0], ids[1], "read's child is not its own group's leader");
        let e = read(dir, "sh", &["-c", "echo no >&2; exit 3"]).unwrap_err();
        assert!(
            e.to_string().contains("failed in / (exit status: 3): no"),
            "{e}"
        );
    }

    #[test]
    fn a_polled_child_gives_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = output_unless_interrupted(&mut cmd, crate::interrupt::mark(), true)
            .unwrap()
            .expect("no signal came");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    }

    #[test]
    fn a_signal_stops_a_polled_child_and_its_group() {
        let mut cmd = Command::new("sh");
        // The grandchild holds the pipes: the call returns only once the group is gone.
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let start = Instant::now();
        let out =
            output_unless_interrupted(&mut cmd, crate::interrupt::Mark::already_passed(), true)
                .unwrap();
        assert!(out.is_none(), "a signal came: no output");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the child or its child outlived the signal"
        );
    }

    #[test]
    fn a_group_signal_reaches_the_childs_children() {
        let mut cmd = Command::new("sh");
        // The grandchild holds the stdout pipe: it reads to the end only once that one is gone.
        cmd.args(["-c", "sleep 30 & echo started; wait"])
            .stdout(std::process::Stdio::piped());
        let mut child = isolate(&mut cmd).spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "started");
        let start = Instant::now();
        signal_group(child.id(), SIGTERM);
        child.wait().unwrap();
        std::io::Read::read_to_string(&mut out, &mut line).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the grandchild outlived the group signal"
        );
    }
}
