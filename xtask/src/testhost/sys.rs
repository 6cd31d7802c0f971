//! The host side: processes, mounts, cgroups, waiting with deadlines, and the state lock.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::interrupt::{self, SIGKILL, SIGTERM};
use crate::proc::signal;

/// State and parent PID from the text of `/proc/PID/stat` (the command name may contain
/// spaces and parentheses, so parse after the last `)`).
pub fn parse_stat(text: &str) -> Option<(char, u32)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn stat(pid: u32) -> Option<(char, u32)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` runs. An exited child stays a zombie until reaped, and `kill -0` still
/// succeeds on it: look at the state instead.
pub fn running(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    Some(words.join(" "))
}

/// Every PID on the host.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Running children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|p| matches!(stat(*p), Some((s, ppid)) if ppid == pid && s != 'Z'))
        .collect()
}

/// Running processes (not this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    pids()
        .into_iter()
        .filter(|p| *p != me && running(*p))
        .filter_map(|p| cmdline(p).filter(|c| c.contains(needle)).map(|c| (p, c)))
        .collect()
}

/// Read a PID file; None if absent or garbage.
pub fn read_pid(path: &Utf8Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The PID in `path` if that process still runs and its command line contains `marker` (so a
/// recycled PID is never taken for ours).
pub fn live_pid(path: &Utf8Path, marker: &str) -> Option<u32> {
    let pid = read_pid(path)?;
    (running(pid) && cmdline(pid).is_some_and(|c| c.contains(marker))).then_some(pid)
}

/// TERM, wait up to `grace`, then KILL and wait again.
pub fn terminate(pid: u32, grace: Duration) -> Result<()> {
    signal(pid, SIGTERM);
    if settle(grace, || !running(pid)) {
        return Ok(());
    }
    signal(pid, SIGKILL);
    if settle(Duration::from_secs(5), || !running(pid)) {
        return Ok(());
    }
    bail!("process {pid} survived SIGKILL")
}

/// Poll `done` every 20 ms until it holds or `timeout` passes; false on timeout or interrupt.
pub fn wait_for(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    poll(timeout, true, done)
}

/// As [`wait_for`], but an interrupt does not cut it short: for cleanup (stopping processes,
/// removing cgroups and interfaces), which must run to its end after a Ctrl-C.
pub fn settle(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    poll(timeout, false, done)
}

fn poll(timeout: Duration, interruptible: bool, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline || (interruptible && interrupt::requested()) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points (from mountinfo text) at or below `dir`.
pub fn parse_mounts_under(mountinfo: &str, dir: &str) -> Vec<String> {
    let dir = dir.trim_end_matches('/');
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir` in this mount namespace.
pub fn mounts_under(dir: &Utf8Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mounts_under(&text, dir.as_str())
}

/// The cgroup hierarchies the machines need a directory in: on this hybrid layout the
/// `unified` (v2) and the named `systemd` (v1) ones; on a pure v2 host, the root.
pub fn cgroup_hierarchies() -> Vec<Utf8PathBuf> {
    let base = Utf8Path::new("/sys/fs/cgroup");
    let hybrid: Vec<Utf8PathBuf> = ["unified", "systemd"]
        .iter()
        .map(|h| base.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    if !hybrid.is_empty() {
        hybrid
    } else if base.join("cgroup.controllers").exists() {
        vec![base.to_path_buf()]
    } else {
        Vec::new()
    }
}

/// Kill every process in the cgroup tree `dir` and remove it, deepest first.
pub fn remove_cgroup_tree(dir: &Utf8Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup v2 kills the whole subtree at once; v1 needs each PID.
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let emptied = settle(Duration::from_secs(10), || {
        let procs = cgroup_procs(dir);
        for p in &procs {
            signal(*p, SIGKILL);
        }
        procs.is_empty()
    });
    if !emptied {
        bail!("processes are still left in {dir} after SIGKILL");
    }
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    // Children come after their parent in the walk: remove in reverse.
    for d in dirs.iter().rev() {
        // A cgroup can stay busy for a moment after its last process exits.
        let mut last = Ok(());
        let ok = settle(Duration::from_secs(5), || {
            last = std::fs::remove_dir(d);
            last.is_ok() || !d.exists()
        });
        if !ok {
            return last.with_context(|| format!("removing cgroup {d}"));
        }
    }
    Ok(())
}

/// Every PID in the cgroup tree `dir`.
pub fn cgroup_procs(dir: &Utf8Path) -> Vec<u32> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn collect_dirs(dir: &Utf8Path, out: &mut Vec<Utf8PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = dir.read_dir_utf8() {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(e.path(), out);
            }
        }
    }
}

/// Whether this process runs as root on Linux, from `/proc/self/status` (no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A host-wide lock on the state directory (an atomic `mkdir` holding the owner's PID),
/// taken around everything that allocates or frees shared things: subnets, the nftables table,
/// ip_forward. Held for milliseconds, never while a machine boots. A lock whose owner died is
/// taken over.
pub struct StateLock {
    dir: Utf8PathBuf,
}

impl StateLock {
    pub fn acquire(dir: &Utf8Path) -> Result<StateLock> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    std::fs::write(dir.join("pid"), std::process::id().to_string())
                        .with_context(|| format!("writing {dir}/pid"))?;
                    return Ok(StateLock {
                        dir: dir.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = read_pid(&dir.join("pid"));
                    let age = std::fs::metadata(dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    let dead = match owner {
                        Some(pid) => !running(pid),
                        // Between mkdir and writing the pid, or a crash right there.
                        None => age > Duration::from_secs(5),
                    };
                    if dead {
                        let _ = std::fs::remove_dir_all(dir);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "the test host state is locked by process {} ({dir}): wait for it to finish, or remove {dir} if it is gone",
                            owner.map_or("?".to_string(), |p| p.to_string())
                        );
                    }
                    // Held for milliseconds: waited for even after a Ctrl-C, so cleanup completes.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).with_context(|| format!("creating lock {dir}")),
            }
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Write a file atomically (temporary file, then rename).
pub fn write_atomic(path: &Utf8Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = Utf8PathBuf::from(format!("{path}.tmp{}", std::process::id()));
    fs_err::write(&tmp, contents)?;
    fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// Start a bash script detached: its own session (`setsid --fork`, so it is never our child
/// and never our zombie), stdin from /dev/null, output appended to `log`.
pub fn spawn_detached(script: &str, log: &Utf8Path) -> Result<()> {
    spawn(&["setsid", "--fork", "bash", "-c", script], log)
}

/// As [`spawn_detached`], in a private mount namespace.
pub fn spawn_detached_in_namespace(script: &str, log: &Utf8Path) -> Result<()> {
    spawn(
        &[
            "setsid",
            "--fork",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
        ],
        log,
    )
}

fn spawn(argv: &[&str], log: &Utf8Path) -> Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {log}"))?;
    let err = out.try_clone()?;
    let status = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("starting {} (util-linux)", argv[0]))?;
    if !status.success() {
        bail!(
            "{} failed ({status}): see {log}",
            argv.join(" ").chars().take(80).collect::<String>()
        );
    }
    Ok(())
}

/// Raise `fs.inotify.max_user_instances` to at least `min` (never lower it).
pub fn ensure_inotify_instances(min: u64) -> Result<()> {
    const KNOB: &str = "/proc/sys/fs/inotify/max_user_instances";
    let now: u64 = fs_err::read_to_string(KNOB)?
        .trim()
        .parse()
        .with_context(|| format!("reading {KNOB}"))?;
    if now < min {
        fs_err::write(KNOB, format!("{min}\n"))
            .with_context(|| format!("raising {KNOB} from {now} to {min}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        assert_eq!(
            parse_stat("42 (systemd-nspawn) S 1 42 42 0 -1"),
            Some(('S', 1))
        );
        assert_eq!(parse_stat("7 (a ) b) Z 3 7"), Some(('Z', 3)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_runs_and_a_reaped_child_does_not() {
        assert!(running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie, which `kill -0` would call alive.
        assert!(wait_for(Duration::from_secs(5), || !running(pid)));
        child.wait().unwrap();
        assert!(!running(pid));
    }

    #[test]
    fn mounts_under_a_directory() {
        let info = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
90 22 0:50 / /var/lib/innercontext-testhost/machines/app/root rw - overlay overlay rw
91 22 0:51 / /var/lib/innercontext-testhost-other rw - tmpfs tmpfs rw
92 22 0:52 / /var/lib/innercontext-testhost/a\\040b rw - tmpfs tmpfs rw
";
        assert_eq!(
            parse_mounts_under(info, "/var/lib/innercontext-testhost/"),
            vec![
                "/var/lib/innercontext-testhost/machines/app/root",
                "/var/lib/innercontext-testhost/a b"
            ]
        );
    }

    #[test]
    fn lock_is_exclusive_and_taken_over_from_the_dead() {
        let dir = Utf8PathBuf::from(format!("/tmp/th-lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let _held = StateLock::acquire(&dir).unwrap();
            assert_eq!(read_pid(&dir.join("pid")), Some(std::process::id()));
        }
        assert!(!dir.exists());
        // A lock left by a process that no longer runs.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pid"), dead.to_string()).unwrap();
        let held = StateLock::acquire(&dir).unwrap();
        drop(held);
        assert!(!dir.exists());
    }
}
