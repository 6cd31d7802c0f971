//! The upload of a release's files to one host, as local processes: `rsync` into the release
//! the server job seeded (only what changed travels), or for a few small files `tar | ssh …
//! receive`. Each process runs in its own process group; rsync's progress becomes the step
//! line's detail on a terminal, its `--stats` the step's note, and a failure names the server's
//! own cause (a full disk shows on our side only as a broken pipe).

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use camino::Utf8Path;

use crate::deploy::local::Carrier;
use crate::interrupt::SIGTERM;
use crate::remote::Call;
use crate::ssh::Session;
use crate::{proc, ui};

/// One host's upload.
#[derive(Default)]
pub struct Upload {
    /// The processes carrying it (rsync; or tar and ssh) and when they started.
    pub carrying: Option<Carrying>,
    /// The upload ended and the job was told `uploaded`.
    pub done: bool,
    pub started: bool,
    pub summary: String,
    /// Its step line (one host): the id and name to end it with, on its own line if other
    /// lines came meanwhile (a job that ended while we were stopped).
    pub line: Option<(u64, String)>,
}

impl Upload {
    /// End its step line with `outcome` (one host; a fleet prints one line for all uploads).
    pub fn end_line(&mut self, outcome: &str) {
        if let Some((id, name)) = self.line.take() {
            ui::step_end(id, &name, outcome);
        }
    }
}

/// The local processes of one upload: `rsync`, or `tar | ssh … receive` (the last one's
/// output is what the upload said). Each runs in its own process group.
pub struct Carrying {
    procs: Vec<Child>,
    /// rsync's stdout (its --stats), read by a thread that also turns its progress into the
    /// step line's detail on a terminal.
    reader: Option<std::thread::JoinHandle<String>>,
    pub started: Instant,
    pub carrier: Carrier,
}

impl Carrying {
    /// Whether every process has exited.
    pub fn finished(&mut self) -> Result<bool> {
        for p in &mut self.procs {
            if p.try_wait()?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Collect the processes: whether all succeeded, the last one's stdout, everyone's stderr.
    pub fn collect(self) -> Result<(bool, String, String)> {
        let (mut ok, mut stdout, mut stderr) = (true, String::new(), String::new());
        for p in self.procs {
            let out = p.wait_with_output()?;
            ok &= out.status.success();
            stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        if let Some(r) = self.reader {
            stdout = r.join().unwrap_or_default();
        }
        Ok((ok, stdout, stderr))
    }

    /// Stop every process (its whole group) and reap it.
    pub fn stop(self) -> Instant {
        for mut p in self.procs {
            proc::signal_group(p.id(), SIGTERM);
            let _ = p.wait();
        }
        self.started
    }
}

/// Start carrying the files of `list` (NUL-separated, relative to the repository) into
/// release `release` under `root` on `dest`, for the job `token` (tar's stream goes through
/// its `receive` call). `progress`: rsync's progress becomes the step line's detail.
pub fn start(
    carrier: Carrier,
    session: &Session,
    dest: &str,
    root: &str,
    (token, release): (&str, &str),
    progress: bool,
    list: &Utf8Path,
) -> Result<Carrying> {
    let mut reader = None;
    let procs = match carrier {
        Carrier::Rsync => {
            let args = rsync_args(
                &session.rsync_rsh(),
                &rsync_dest(dest),
                root,
                release,
                progress,
                list,
            );
            let mut cmd = Command::new("rsync");
            cmd.args(&args)
                .current_dir(crate::project_root())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            proc::isolate(&mut cmd);
            let mut child = cmd.spawn().context("starting rsync (is it installed?)")?;
            let stdout = child.stdout.take().expect("piped");
            reader = Some(std::thread::spawn(move || read_rsync(stdout, progress)));
            vec![child]
        }
        Carrier::Tar => {
            let mut tar = Command::new("tar");
            tar.args(tar_args(list))
                .current_dir(crate::project_root())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            proc::isolate(&mut tar);
            let mut tar = tar.spawn().context("starting tar")?;
            let stream = tar.stdout.take().expect("piped above");
            let call = Call::deploy(
                "receive",
                &[
                    ("root", root.to_string()),
                    ("token", token.to_string()),
                    ("release", release.to_string()),
                ],
            );
            let ssh = session.start(&call, Stdio::from(stream));
            match ssh {
                Ok(ssh) => vec![tar, ssh],
                Err(e) => {
                    proc::signal_group(tar.id(), SIGTERM);
                    let _ = tar.wait();
                    return Err(e);
                }
            }
        }
    };
    Ok(Carrying {
        procs,
        reader,
        started: Instant::now(),
        carrier,
    })
}

/// What the upload's step line notes: rsync's files and bytes, or that tar sent one stream.
pub fn stats(carrier: Carrier, stdout: &str) -> String {
    match carrier {
        Carrier::Rsync => match (
            rsync_stat(stdout, "Number of regular files transferred"),
            rsync_stat(stdout, "Total bytes sent"),
        ) {
            (Some(files), Some(sent)) => format!("{files} files changed, {sent} bytes sent"),
            _ => String::new(),
        },
        Carrier::Tar => "sent as one tar stream".to_string(),
    }
}

/// Read rsync's stdout to its end (the text, for --stats); on a terminal, each progress update
/// (`--info=progress2`, ended by a carriage return) becomes the step line's detail.
fn read_rsync(mut stdout: impl std::io::Read, show: bool) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if !show {
            continue;
        }
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let Some(d) = progress_detail(&String::from_utf8_lossy(&line)) {
                    ui::step_detail(&d);
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// `  45,102,345  37%   12.34MB/s    0:00:03 (xfr#12, to-chk=30/120)` as `45.1 MB, 37%,
/// 12.34MB/s`; None for anything else.
pub fn progress_detail(line: &str) -> Option<String> {
    let mut w = line.split_whitespace();
    let bytes: u64 = w.next()?.replace(',', "").parse().ok()?;
    let pct = w.next().filter(|p| p.ends_with('%'))?;
    let rate = w.next().filter(|r| r.ends_with("/s"))?;
    Some(format!(
        "{:.1} MB, {pct}, {rate}",
        bytes as f64 / (1024.0 * 1024.0)
    ))
}

/// rsync wants IPv6 literals in brackets (`user@[fd00::2]:path`); ssh wants them bare.
pub fn rsync_dest(server: &str) -> String {
    let (user, host) = match server.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, server),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match user {
        Some(u) => format!("{u}@{host}"),
        None => host,
    }
}

/// The rsync command (argv without the program name). The server seeded the release from
/// current (hard links), so only listed files are compared (by checksum) and only changed bytes
/// travel; rsync writes a changed file beside and renames it, so the seed's links to earlier
/// releases are never written through. Permissions are kept minus group/other write; times are
/// not (a rebuilt but identical file must still match).
pub fn rsync_args(
    rsh: &str,
    dest: &str,
    root: &str,
    release: &str,
    progress: bool,
    file_list: &Utf8Path,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--from0",
        "--checksum",
        "--links",
        "--perms",
        "--chmod=go-w",
        "--omit-dir-times",
        "--stats",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--files-from={file_list}"));
    if progress {
        args.push("--info=progress2".to_string());
    }
    args.push("-e".to_string());
    args.push(rsh.to_string());
    args.push("./".to_string());
    args.push(format!("{dest}:{root}/releases/{release}/"));
    args
}

/// The line that says why an upload failed: the server's own cause when rsync or tar reported
/// one (a full disk shows on our side only as a broken pipe), else the last line.
pub fn upload_error(stderr: &str, stdout: &str) -> String {
    const CAUSES: [&str; 4] = [
        "No space left on device",
        "Disk quota exceeded",
        "Permission denied",
        "Read-only file system",
    ];
    let lines = || stderr.lines().chain(stdout.lines()).map(str::trim);
    lines()
        .find(|l| CAUSES.iter().any(|c| l.contains(c)))
        .or_else(|| lines().rfind(|l| !l.is_empty()))
        .unwrap_or("see the output above")
        .to_string()
}

/// The tar command (argv) for a small upload: the listed files (NUL-separated), without
/// group/other write, owned by nobody in particular.
pub fn tar_args(file_list: &Utf8Path) -> Vec<String> {
    [
        "--create",
        "--file=-",
        "--null",
        "--no-recursion",
        "--mode=go-w",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--files-from={file_list}")])
    .collect()
}

/// `Total bytes sent: 1,234` and friends from rsync --stats.
pub fn rsync_stat(output: &str, label: &str) -> Option<u64> {
    output.split(['\n', '\r']).find_map(|l| {
        let rest = l.trim().strip_prefix(label)?.strip_prefix(':')?;
        let digits: String = rest
            .split_whitespace()
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_writes_into_the_seeded_release() {
        let a = rsync_args(
            "ssh -o ControlPath=/tmp/c",
            "innercontext@app",
            "/opt/ic",
            "20261128T101530Z",
            false,
            camino::Utf8Path::new("/tmp/list"),
        );
        assert!(a.contains(&"--checksum".to_string()));
        assert!(
            !a.iter().any(|x| x == "--inplace"),
            "never write through a hard link"
        );
        assert!(!a.iter().any(|x| x.starts_with("--info=progress")));
        assert_eq!(
            a.last().unwrap(),
            "innercontext@app:/opt/ic/releases/20261128T101530Z/"
        );
    }

    #[test]
    fn an_upload_error_names_the_cause() {
        let stderr = "rsync: [receiver] write failed on \"backend/big.bin\": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(381)\nrsync: [sender] write error: Broken pipe (32)\n";
        assert!(upload_error(stderr, "").contains("No space left on device"));
        assert_eq!(upload_error("a\nlast one\n\n", ""), "last one");
        assert_eq!(upload_error("", ""), "see the output above");
    }

    #[test]
    fn rsync_stats_parse() {
        let out = "Number of files: 120 (reg: 100, dir: 20)\nTotal file size: 1,234,567 bytes\nTotal bytes sent: 4,321\nTotal bytes received: 99\n";
        assert_eq!(rsync_stat(out, "Total bytes sent"), Some(4321));
        assert_eq!(rsync_stat(out, "Total file size"), Some(1_234_567));
        assert_eq!(rsync_stat(out, "Missing"), None);
    }

    #[test]
    fn rsync_progress_becomes_bytes_and_rate() {
        assert_eq!(
            progress_detail("     47,292,345  37%   12.34MB/s    0:00:03 (xfr#12, to-chk=30/120)")
                .as_deref(),
            Some("45.1 MB, 37%, 12.34MB/s")
        );
        assert_eq!(progress_detail("Number of files: 120"), None);
        assert_eq!(progress_detail(""), None);
        let text = read_rsync(
            &b"  1,024 100% 1.00kB/s 0:00:00 (xfr#1, to-chk=0/1)\rTotal bytes sent: 99\n"[..],
            true,
        );
        assert_eq!(rsync_stat(&text, "Total bytes sent"), Some(99));
    }

    #[test]
    fn ipv6_literals_get_brackets_for_rsync() {
        assert_eq!(rsync_dest("innercontext@fd00::2"), "innercontext@[fd00::2]");
        assert_eq!(
            rsync_dest("innercontext@[fd00::2]"),
            "innercontext@[fd00::2]"
        );
        assert_eq!(rsync_dest("app"), "app");
        assert_eq!(rsync_dest("u@10.0.0.2"), "u@10.0.0.2");
    }
}
