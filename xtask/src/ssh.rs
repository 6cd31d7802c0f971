//! One ssh master connection per command, shared by every ssh and rsync call.
//!
//! [`Session::connect`] authenticates once and keeps an OpenSSH ControlMaster (a child of the
//! xtask, which dies with it) behind a private socket; every later call multiplexes over it
//! (≈12 ms instead of ≈300 ms each).
//! [`Session`] closes the master when dropped. Remote command lines are built only from
//! [`crate::quote`]d words. Host keys are always checked strictly (`StrictHostKeyChecking=yes`
//! on the command line wins over any `~/.ssh/config`). Every ssh process runs in its own
//! process group ([`crate::proc`]): a terminal's Ctrl-C reaches the xtask, not the connection;
//! the xtask stops the handshake and read-only calls on it (nothing has run on the server),
//! and lets a call that changes something finish, so that its outcome is known.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::interrupt::{self, Mark, SIGTERM};
use crate::proc;
use crate::remote::{Call, Reply};
use crate::wait::{self, Deadline};

pub struct Session {
    dest: String,
    config: Option<Utf8PathBuf>,
    control_dir: Utf8PathBuf,
    closed: bool,
}

impl Session {
    /// Open the master connection (one handshake) or fail with a one-line diagnosis.
    pub fn connect(dest: &str, config: Option<&Utf8Path>) -> Result<Session> {
        if let Some(cfg) = config {
            if cfg.as_str().contains(['\'', '"', '\\']) {
                bail!("ssh config path '{cfg}' must not contain quotes or backslashes");
            }
        }
        let control_dir = private_tempdir()?;
        let mut session = Session {
            dest: dest.to_string(),
            config: config.map(Utf8Path::to_path_buf),
            control_dir,
            closed: false,
        };
        let mut args = session.base_args();
        args.splice(
            0..0,
            [
                "-M",
                "-N",
                "-o",
                "ControlPersist=no",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ServerAliveCountMax=3",
            ]
            .map(String::from),
        );
        // Remove the ControlMaster=no that base_args carries: the first one wins in ssh.
        if let Some(i) = args.iter().position(|a| a == "ControlMaster=no") {
            args.drain(i - 1..=i);
        }
        args.push(dest.to_string());
        // A signal during the handshake stops it there: nothing has run on the server yet.
        let mark = interrupt::mark();
        let (pid, master) = start_master(args)?;
        let socket = session.control_path();
        let up = wait::poll_until(
            Deadline::after(Duration::MAX),
            || mark.passed(),
            || match master.try_recv() {
                Ok(out) => Some(Err(out)),
                Err(TryRecvError::Disconnected) => Some(Err(None)),
                // ssh listens on the socket once it has logged in.
                Err(TryRecvError::Empty) => {
                    (socket.exists() && session.master_pid().is_some()).then_some(Ok(()))
                }
            },
        );
        let failed = match up {
            Ok(Ok(())) => return Ok(session),
            Ok(Err(out)) => out,
            Err(_) => {
                // Interrupted: stop the handshake, and wait for it to end.
                proc::signal_group(pid, SIGTERM);
                let _ = master.recv();
                None
            }
        };
        session.closed = true;
        let _ = fs_err::remove_dir_all(&session.control_dir);
        if mark.passed() {
            bail!(
                "interrupted by {} while connecting to {dest}: nothing ran there",
                interrupt::describe()
            );
        }
        let stderr = failed.map(|o| o.stderr).unwrap_or_default();
        bail!("{}", diagnose(dest, &String::from_utf8_lossy(&stderr)));
    }

    pub fn dest(&self) -> &str {
        &self.dest
    }

    fn control_path(&self) -> Utf8PathBuf {
        self.control_dir.join("master")
    }

    /// Options every ssh call of this session carries.
    pub fn base_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(cfg) = &self.config {
            args.push("-F".to_string());
            args.push(cfg.to_string());
        }
        for opt in [
            format!("ControlPath={}", self.control_path()),
            "ControlMaster=no".to_string(),
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "ConnectTimeout=10".to_string(),
        ] {
            args.push("-o".to_string());
            args.push(opt);
        }
        args
    }

    /// The `-e` value for rsync: ssh with this session's options (rsync splits it on spaces and
    /// honours single quotes).
    pub fn rsync_rsh(&self) -> String {
        let mut words = vec!["ssh".to_string()];
        words.extend(self.base_args().into_iter().map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a
            }
        }));
        words.join(" ")
    }

    /// A private (0700) directory of this session, for temporary files (removed with it).
    pub fn private_dir(&self) -> &Utf8Path {
        &self.control_dir
    }

    /// The ssh command for a remote command line (already quoted), in its own process group.
    fn command(&self, line: &str) -> Command {
        let mut cmd = self.bare_command(line);
        proc::isolate(&mut cmd);
        cmd
    }

    /// The same, not isolated yet (for [`proc::output_unless_interrupted`], which does it).
    fn bare_command(&self, line: &str) -> Command {
        let mut args = self.base_args();
        args.push(self.dest.clone());
        args.push(line.to_string());
        let mut cmd = Command::new("ssh");
        cmd.args(args);
        cmd
    }

    /// Run a remote command line (already quoted) to its end and capture stdout; stderr passes
    /// through. Interrupts do not stop it: calls are short, and their outcome must be known.
    pub fn run_line(&self, line: &str, what: &str) -> Result<Output> {
        self.command(line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running ssh for {what}"))
    }

    /// Run a call to its end: its output and its `key=value` reply.
    pub fn call(&self, call: &Call) -> Result<(Output, Reply)> {
        let out = self.run_line(&call.try_line()?, &call.what())?;
        let reply = Reply::parse(&String::from_utf8_lossy(&out.stdout));
        Ok((out, reply))
    }

    /// Run a call that only reads (a probe, deploy.log) to its end, unless a signal arrives
    /// after `mark`: then it stops there (None), which changes nothing.
    pub fn call_unless_interrupted(
        &self,
        call: &Call,
        mark: Mark,
    ) -> Result<Option<(Output, Reply)>> {
        let out =
            proc::output_unless_interrupted(&mut self.bare_command(&call.try_line()?), mark, false)
                .with_context(|| format!("running ssh for {}", call.what()))?;
        Ok(out.map(|out| {
            let reply = Reply::parse(&String::from_utf8_lossy(&out.stdout));
            (out, reply)
        }))
    }

    /// Run a call to its end with stdin from a local file (or nothing), capturing stdout and
    /// stderr (setup-server shows the remote stderr only when a step fails).
    pub fn run_captured(&self, call: &Call, stdin: Option<&Utf8Path>) -> Result<Output> {
        let input = match stdin {
            Some(p) => Stdio::from(
                fs_err::File::open(p)
                    .with_context(|| format!("opening {p} to send"))?
                    .into_parts()
                    .0,
            ),
            None => Stdio::null(),
        };
        self.command(&call.try_line()?)
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running ssh for {}", call.what()))
    }

    /// Start a remote command line (already quoted) that runs until it ends or is stopped, with
    /// stdout and stderr as pipes and no stdin (`logs -f`).
    pub fn spawn_line(&self, line: &str) -> Result<Child> {
        self.command(line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")
    }

    /// Start a long-running call with its stdin, stdout and stderr as pipes (the deploy job's
    /// follower: messages in, events out).
    pub fn stream(&self, call: &Call) -> Result<Child> {
        self.command(&call.try_line()?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting ssh for {}", call.what()))
    }

    /// Start a call with `stdin` (an upload stream), its stdout and stderr as pipes.
    pub fn start(&self, call: &Call, stdin: Stdio) -> Result<Child> {
        self.command(&call.try_line()?)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting ssh for {}", call.sub))
    }

    /// Whether the master connection is up, and its pid (`ssh -O check`).
    pub fn master_pid(&self) -> Option<u32> {
        let mut args = self.base_args();
        args.extend(["-O".to_string(), "check".to_string(), self.dest.clone()]);
        let out = proc::isolated(duct::cmd("ssh", &args))
            .stdin_null()
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        master_pid(&String::from_utf8_lossy(&out.stderr))
    }

    /// Close the master connection. Also done on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut args = self.base_args();
        args.extend(["-O".to_string(), "exit".to_string(), self.dest.clone()]);
        let _ = proc::isolated(duct::cmd("ssh", &args))
            .stdin_null()
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run();
        let _ = fs_err::remove_dir_all(&self.control_dir);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// One ssh for one remote command line, without a master connection (`exec`, `db psql`: a
/// handshake and one round trip is all they cost). The same checks as a session's calls
/// (strict host keys, batch mode, keep-alives); `tty`: a terminal is allocated (`-t`), else
/// none and no escape character (`-T -e none`: every byte of stdin is the command's). ssh's
/// own messages go to `log` at DEBUG1 (`-E`), not to stderr, which carries the remote
/// command's bytes: the log says whether the command's exit status came (`Exit status N`),
/// which tells a remote 255 from ssh's own. Not in a process group of its own: with a
/// terminal it must be in the terminal's foreground group (it reads it and sets it raw); it
/// still ends when the xtask dies.
pub fn direct_command(
    dest: &str,
    config: Option<&Utf8Path>,
    tty: bool,
    log: &Utf8Path,
    line: std::ffi::OsString,
) -> Command {
    let mut cmd = Command::new("ssh");
    if let Some(cfg) = config {
        cmd.arg("-F").arg(cfg.as_str());
    }
    for opt in [
        "ControlMaster=no",
        "ControlPath=none",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "ConnectTimeout=10",
        "ServerAliveInterval=5",
        "ServerAliveCountMax=3",
        "LogLevel=DEBUG1",
    ] {
        cmd.args(["-o", opt]);
    }
    cmd.arg("-E").arg(log.as_str());
    match tty {
        true => cmd.arg("-t"),
        false => cmd.args(["-T", "-e", "none"]),
    };
    cmd.arg(dest).arg(line);
    proc::dies_with_parent(&mut cmd);
    cmd
}

/// A new private (0700) directory for a command's temporary files; the caller removes it.
pub fn private_dir() -> Result<Utf8PathBuf> {
    private_tempdir()
}

/// How the master ended, as its keeper thread saw it (None: it could not be waited for).
type Ended = Option<Output>;

/// Start the master connection, `ssh -M -N` in the foreground: a child of this process that
/// gets SIGTERM when the xtask dies, even by SIGKILL (`PR_SET_PDEATHSIG`), where a master that
/// put itself in the background (`ControlPersist`) outlived a killed deployer by minutes. A
/// thread of its own spawns it and waits for it, and so lives exactly as long: the parent-death
/// signal fires when the spawning *thread* ends, and sessions are opened from short-lived
/// threads (a fleet's hosts). Returns its pid and where its end is reported.
fn start_master(args: Vec<String>) -> Result<(u32, Receiver<Ended>)> {
    let (started_tx, started_rx) = mpsc::channel();
    let (ended_tx, ended_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new("ssh");
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        proc::isolate(&mut cmd);
        match cmd.spawn() {
            Ok(child) => {
                let _ = started_tx.send(Ok(child.id()));
                // Reads stderr as it comes (a long session's warnings never fill the pipe).
                let _ = ended_tx.send(child.wait_with_output().ok());
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        }
    });
    let pid = started_rx
        .recv()
        .context("the ssh master's thread ended before starting it")?
        .context("running ssh (is openssh-client installed?)")?;
    Ok((pid, ended_rx))
}

/// The longest `$TMPDIR` the control socket fits under: a unix socket's path has 107 bytes,
/// and `/ic-ssh-PID-NANOSn/master` plus the 17 bytes of ssh's temporary name need 50 of them.
const MAX_CONTROL_BASE: usize = 50;

/// Where the session's private directory goes: `$TMPDIR` when it is an absolute path of plain
/// characters (`A-Z a-z 0-9 / . _ -`: it goes into ssh and rsync command lines) short enough
/// for the socket, else `/tmp`. A deploy job gives each run a directory of its own this way
/// and removes it, with any socket a killed deployer left, at its end (docs/forgejo.md).
fn control_base(tmpdir: Option<&str>) -> Utf8PathBuf {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-".contains(c);
    match tmpdir.map(|t| t.trim_end_matches('/')) {
        Some(t)
            if t.starts_with('/')
                && t.len() > 1
                && t.len() <= MAX_CONTROL_BASE
                && t.chars().all(plain)
                && !t.split('/').any(|w| w == "..") =>
        {
            Utf8PathBuf::from(t)
        }
        _ => Utf8PathBuf::from("/tmp"),
    }
}

/// A 0700 directory for the control socket (short path: unix sockets are limited to 108 bytes).
fn private_tempdir() -> Result<Utf8PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let tmpdir = std::env::var("TMPDIR").ok();
    let mut base = control_base(tmpdir.as_deref());
    if !base.is_dir() {
        base = Utf8PathBuf::from("/tmp");
    }
    remove_dead_tempdirs(&base);
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "ic-ssh-{}-{:x}{attempt}",
            std::process::id(),
            nanos
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {dir}")),
        }
    }
    bail!("could not create a private directory under {base} for the ssh control socket")
}

/// Remove the control directories that xtasks which no longer run left under `base` (one killed
/// by SIGKILL could not remove its own; its master ended with it): only directories, never a
/// link, owned by this user, named `ic-ssh-PID-…` with no process PID.
fn remove_dead_tempdirs(base: &Utf8Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs_err::read_dir(base) else {
        return;
    };
    let me = fs_err::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = dead_tempdir_pid(&name) else {
            continue;
        };
        let path = base.join(&name);
        let ours = fs_err::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && Some(m.uid()) == me);
        if ours && !Utf8Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs_err::remove_dir_all(&path);
        }
    }
}

/// The PID in a control directory's name `ic-ssh-PID-SUFFIX`.
fn dead_tempdir_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ic-ssh-")?;
    let (pid, suffix) = rest.split_once('-')?;
    (!suffix.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// The pid in `ssh -O check`'s `Master running (pid=1234)`.
pub fn master_pid(check_output: &str) -> Option<u32> {
    let rest = check_output.split("(pid=").nth(1)?;
    rest.split(')').next()?.trim().parse().ok()
}

/// Turn ssh's stderr into one line that says what to do.
pub fn diagnose(dest: &str, stderr: &str) -> String {
    let s = stderr;
    let hint = if s.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || s.contains("Host key verification failed")
        || s.contains("No ED25519 host key is known")
        || s.contains("host key for")
    {
        "the server's host key is unknown or does not match known_hosts: verify the key out of band and add it (ssh-keyscan, then compare fingerprints); host-key checking is never disabled"
    } else if s.contains("Permission denied") {
        "the server refused the key: authorize your public key for that user (cargo xtask setup-server --deploy-key FILE) or check DEPLOY_SERVER's user"
    } else if s.contains("Could not resolve hostname") {
        "the host name does not resolve: check DEPLOY_SERVER and your ~/.ssh/config (or DEPLOY_SSH_CONFIG)"
    } else if s.contains("Connection refused") {
        "nothing accepts ssh connections there: is sshd running and the port right?"
    } else if s.contains("timed out") || s.contains("No route to host") || s.contains("unreachable")
    {
        "the host is unreachable: check the address, the network and that the server is up"
    } else {
        "ssh failed"
    };
    let detail = s
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("@@@"))
        .unwrap_or("");
    format!("cannot connect to {dest}: {hint} ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_pid_from_check() {
        assert_eq!(master_pid("Master running (pid=4242)\r\n"), Some(4242));
        assert_eq!(master_pid("Control socket connect(/x): No such file"), None);
    }

    #[test]
    fn control_directories_name_their_xtask() {
        assert_eq!(dead_tempdir_pid("ic-ssh-1234-5f3a0"), Some(1234));
        for other in [
            "ic-ssh-1234-",
            "ic-ssh-x-1",
            "ic-ssh-1234",
            "ssh-1234-1",
            "ic-ssh--1",
        ] {
            assert_eq!(dead_tempdir_pid(other), None, "{other}");
        }
    }

    #[test]
    fn diagnosis_is_one_line_with_advice() {
        let d = diagnose(
            "innercontext@10.0.0.2",
            "@@@@@\nHost key verification failed.\n",
        );
        assert!(
            d.contains("host key") && d.contains("never disabled"),
            "{d}"
        );
        assert!(!d.contains('\n'));
        let d = diagnose("h", "ssh: connect to host h port 22: Connection refused\n");
        assert!(d.contains("sshd running"), "{d}");
        let d = diagnose("u@h", "u@h: Permission denied (publickey).\n");
        assert!(d.contains("setup-server --deploy-key"), "{d}");
    }

    #[test]
    fn rsync_rsh_reuses_the_master() {
        let s = Session {
            dest: "x".into(),
            config: Some("/tmp/a b/cfg".into()),
            control_dir: "/tmp/ic-ssh-1".into(),
            closed: true,
        };
        let rsh = s.rsync_rsh();
        assert!(rsh.starts_with("ssh -F '/tmp/a b/cfg' -o ControlPath=/tmp/ic-ssh-1/master"));
        assert!(rsh.contains("ControlMaster=no") && rsh.contains("BatchMode=yes"));
        assert!(rsh.contains("StrictHostKeyChecking=yes"));
    }

    #[test]
    fn the_control_directory_goes_under_a_short_plain_tmpdir() {
        assert_eq!(control_base(None), "/tmp");
        assert_eq!(
            control_base(Some("/tmp/ic-job-Ab3_x.Y")),
            "/tmp/ic-job-Ab3_x.Y"
        );
        assert_eq!(control_base(Some("/run/user/0/")), "/run/user/0");
        let long = format!("/{}", "a".repeat(MAX_CONTROL_BASE));
        for bad in [
            "",
            "/",
            "tmp",
            "/tmp/a b",
            "/tmp/it's",
            "/tmp/../etc",
            long.as_str(),
        ] {
            assert_eq!(control_base(Some(bad)), "/tmp", "{bad}");
        }
        // The longest socket path fits: 107 bytes with ssh's temporary suffix.
        let base = "/".to_string() + &"a".repeat(MAX_CONTROL_BASE - 1);
        let socket = format!("{base}/ic-ssh-{}-{:x}{}/master", 4_194_304, u32::MAX, 99);
        assert!(
            socket.len() + ".XXXXXXXXXXXXXXXX".len() <= 107,
            "{}",
            socket.len()
        );
    }
}
