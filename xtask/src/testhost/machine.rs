//! What a machine is, as the state directory records it, and what runs of it.
//!
//! A machine is: a directory under `machines/` (its `info`, its disk: the overlay's `upper/`
//! and `work/`, its console `log`, ssh_config and known_hosts), a systemd-nspawn process (PID
//! in `pid`, started detached in its own session, mount namespace and cgroup), a veth, and a
//! share of the NAT. While `up`, `start` or `reboot` boots it, `up.pid` names the process doing
//! so; a machine shut down with its disk kept (`poweroff`, or a reboot that did not come back)
//! has a `stopped` file. Without nspawn, `up.pid` or `stopped` it is stale: left by a run that
//! died. This room only reads and records; booting and removing live in `boot` and `lifecycle`.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;

use super::layout::{
    host_ip, ip, key_path, machine_dir, machines_dir, CGROUP_DIR, DB_NAME, DB_PASSWORD,
};
use super::render::{self, Endpoint};
use super::sys;
use crate::flags::{validate_machine_name, Role};
use crate::quote;

/// A running machine and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub role: Role,
    /// The machine's address on its veth, e.g. 10.213.N.2.
    pub ip: String,
    /// The host side of the veth, 10.213.N.1.
    pub host_ip: String,
    /// Per-machine ssh_config: `ssh -F <ssh_config> NAME` (root) or `innercontext@NAME`.
    pub ssh_config: Utf8PathBuf,
    /// Private key authorized for root (0600).
    pub key: Utf8PathBuf,
    pub known_hosts: Utf8PathBuf,
}

/// The key exchange of the test host's own logins (see [`Machine::ssh_args`]).
pub const HARNESS_KEX: &str = "curve25519-sha256";

impl Machine {
    /// The public half of [`Machine::key`], to authorize for other users (the deploy user).
    pub fn public_key(&self) -> Utf8PathBuf {
        Utf8PathBuf::from(format!("{}.pub", self.key))
    }

    /// ssh arguments (without the `ssh` program) to run `argv` on the machine as `user`
    /// (None: root, the ssh_config default). Words are quoted for the remote shell.
    ///
    /// These logins (the tests' and `testhost ssh`) use the `curve25519-sha256` key exchange:
    /// OpenSSH 9.2's default, `sntrup761x25519-sha512`, costs the client about 100 ms of CPU a
    /// connection (measured: 2.2 s for 20 logins, 0.2 s with curve25519), and the tests open
    /// thousands, most of them polls. The ssh_config, which the deployer under test uses,
    /// keeps the default: what the deployer pays is measured as a user would pay it.
    pub fn ssh_args(&self, user: Option<&str>, argv: &[String]) -> Vec<String> {
        let dest = match user {
            Some(u) => format!("{u}@{}", self.name),
            None => self.name.clone(),
        };
        let mut args = vec![
            "-F".to_string(),
            self.ssh_config.to_string(),
            format!("-oKexAlgorithms={HARNESS_KEX}"),
            dest,
        ];
        if !argv.is_empty() {
            args.push("--".to_string());
            args.push(quote::join(argv));
        }
        args
    }

    /// Run `argv` as root over ssh and capture its output, whatever its exit status.
    pub fn ssh_output(&self, argv: &[&str]) -> Result<std::process::Output> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        duct::cmd("ssh", self.ssh_args(None, &argv))
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .context("running ssh (is openssh-client installed?)")
    }

    /// Run `argv` as root over ssh (strict host-key checking) and return its stdout; fails
    /// with a diagnosis if ssh cannot connect, with stderr if the command fails.
    pub fn ssh(&self, argv: &[&str]) -> Result<String> {
        let out = self.ssh_output(argv)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() == Some(255) {
                bail!("{}", crate::ssh::diagnose(&self.name, &stderr));
            }
            bail!(
                "'{}' failed on {} ({}): {}",
                quote::join(argv),
                self.name,
                out.status,
                stderr.trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// How the app reaches the database of a `db` machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl DbInfo {
    /// The backend's `DATABASE_URL`, as in the deployment guide.
    pub fn url(&self) -> String {
        format!(
            "postgresql+psycopg://{}:{}@{}/{}",
            self.user, self.password, self.host, self.database
        )
    }
}

/// The database of a `db` machine: database and user `innercontext`, on the machine's address.
pub fn db_info(m: &Machine) -> DbInfo {
    DbInfo {
        host: m.ip.clone(),
        port: 5432,
        database: DB_NAME.to_string(),
        user: DB_NAME.to_string(),
        password: DB_PASSWORD.to_string(),
    }
}

/// How a machine name is used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Running,
    Booting,
    /// Shut down with its disk kept (`poweroff`, `reboot`): `start` boots it, `up` builds it
    /// afresh, `down` removes it.
    Stopped,
    /// Left by a run that died: `up` and `down` clean it.
    Stale,
}

/// The `info` file of a machine: its role and subnet number.
pub fn render_info(role: Role, subnet: u8) -> String {
    format!("role={}\nsubnet={subnet}\n", role.name())
}

fn parse_info(text: &str) -> Option<(Role, u8)> {
    let mut role = None;
    let mut subnet = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("role", r)) => role = Role::ALL.into_iter().find(|x| x.name() == r),
            Some(("subnet", n)) => subnet = n.parse().ok().filter(|n| (1..=254).contains(n)),
            _ => {}
        }
    }
    Some((role?, subnet?))
}

/// The subnet recorded in an info file, whatever its role says (a machine booted by another
/// checkout may carry a role this one does not know, and still holds its subnet).
fn parse_subnet(text: &str) -> Option<u8> {
    text.lines().find_map(|line| match line.split_once('=') {
        Some(("subnet", n)) => n.parse().ok().filter(|n| (1..=254).contains(n)),
        _ => None,
    })
}

/// The subnet machine `name` holds, if its info file records one.
pub fn subnet_in_use(name: &str) -> Option<u8> {
    parse_subnet(&std::fs::read_to_string(machine_dir(name).join("info")).ok()?)
}

/// The role and subnet recorded for machine `name`.
pub fn info(name: &str) -> Option<(Role, u8)> {
    parse_info(&std::fs::read_to_string(machine_dir(name).join("info")).ok()?)
}

pub fn to_machine(name: &str, role: Role, subnet: u8) -> Machine {
    let dir = machine_dir(name);
    Machine {
        name: name.to_string(),
        role,
        ip: ip(subnet),
        host_ip: host_ip(subnet),
        ssh_config: dir.join("ssh_config"),
        key: key_path(),
        known_hosts: dir.join("known_hosts"),
    }
}

/// What identifies machine `name`'s launcher and systemd-nspawn in a command line.
pub fn nspawn_marker(name: &str) -> String {
    format!("--directory={}", machine_dir(name).join("root"))
}

/// Where the launcher records systemd-nspawn's PID.
pub fn pid_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("pid")
}

/// PID of the machine's systemd-nspawn, if it runs.
pub fn nspawn_pid(name: &str) -> Option<u32> {
    sys::live_pid(&pid_file(name), &nspawn_marker(name))
}

fn up_pid_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("up.pid")
}

/// PID of the process booting machine `name` (its `up`, `start` or `reboot` has not finished).
pub fn booting_pid(name: &str) -> Option<u32> {
    let pid = sys::read_pid(&up_pid_file(name))?;
    sys::running(pid).then_some(pid)
}

/// Record that this process boots machine `name` (until [`done_booting`]).
pub fn mark_booting(name: &str) -> Result<()> {
    sys::write_atomic(
        &up_pid_file(name),
        &format!("{}\n", std::process::id()),
        0o644,
    )
}

pub fn done_booting(name: &str) {
    let _ = std::fs::remove_file(up_pid_file(name));
}

fn stopped_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("stopped")
}

/// Record that machine `name` is shut down with its disk kept, and how (one line).
pub fn mark_stopped(name: &str, how: &str) -> Result<()> {
    sys::write_atomic(&stopped_file(name), &format!("{how}\n"), 0o644)
}

pub fn clear_stopped(name: &str) -> Result<()> {
    let f = stopped_file(name);
    if f.exists() {
        fs_err::remove_file(f)?;
    }
    Ok(())
}

/// How machine `name` was stopped, if it is stopped with its disk kept (and not running).
pub fn stopped(name: &str) -> Option<String> {
    if nspawn_pid(name).is_some() {
        return None;
    }
    let how = std::fs::read_to_string(stopped_file(name)).ok()?;
    Some(how.trim().to_string())
}

/// How machine `name` is used right now (None: no such machine directory).
pub fn use_of(name: &str) -> Option<Use> {
    if nspawn_pid(name).is_some() {
        Some(Use::Running)
    } else if booting_pid(name).is_some() {
        Some(Use::Booting)
    } else if stopped(name).is_some() {
        Some(Use::Stopped)
    } else if machine_dir(name).is_dir() {
        Some(Use::Stale)
    } else {
        None
    }
}

/// The machine, if its systemd-nspawn runs.
pub fn running(name: &str) -> Result<Option<Machine>> {
    let Some((role, subnet)) = info(name) else {
        return Ok(None);
    };
    Ok(nspawn_pid(name).map(|_| to_machine(name, role, subnet)))
}

/// Names of the machine directories (running or not).
pub fn machine_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(machines_dir())
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| validate_machine_name(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn list_running() -> Result<Vec<Machine>> {
    let mut out = Vec::new();
    for name in machine_names() {
        if let Some(m) = running(&name)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Every machine directory and how it is used.
pub fn uses() -> Vec<(String, Use)> {
    machine_names()
        .into_iter()
        .filter_map(|n| use_of(&n).map(|u| (n, u)))
        .collect()
}

/// The machine's cgroup directory in each hierarchy (nspawn `--keep-unit` puts `payload/` and
/// `supervisor/` there).
pub fn cgroups(name: &str) -> Vec<Utf8PathBuf> {
    sys::cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP_DIR).join(name))
        .collect()
}

/// Every process of machine `name` on the host: whatever is in its cgroups (systemd-nspawn
/// and everything the machine runs), sorted.
pub fn processes(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroups(name)
        .iter()
        .flat_map(|cg| sys::cgroup_procs(cg))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Read sshd's greeting from `addr`: the port answers and it is an ssh server.
pub fn ssh_banner(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)
        .with_context(|| format!("reading the ssh banner from {addr}"))?;
    if &buf != b"SSH-" {
        bail!("{addr} answered, but not as an ssh server");
    }
    Ok(())
}

/// Whether a running machine answers ssh with its key.
pub fn healthy(m: &Machine) -> bool {
    let Ok(addr) = format!("{}:22", m.ip).parse() else {
        return false;
    };
    ssh_banner(addr, Duration::from_secs(3)).is_ok() && m.ssh(&["true"]).is_ok()
}

/// Write the machine's ssh_config: straight to its sshd, or through the proxy on `proxy_port`.
pub fn write_ssh_config(m: &Machine, proxy_port: Option<u16>) -> Result<()> {
    let endpoint = match proxy_port {
        Some(port) => Endpoint {
            host: "127.0.0.1".into(),
            port,
        },
        None => Endpoint {
            host: m.ip.clone(),
            port: 22,
        },
    };
    let text = render::ssh_config(&m.name, &m.ip, &endpoint, &m.key, &m.known_hosts);
    sys::write_atomic(&m.ssh_config, &text, 0o644)
}

/// The machine's console log.
pub fn log_file(name: &str) -> Utf8PathBuf {
    machine_dir(name).join("log")
}

/// How long the console log is now (what a later [`console_since`] starts from).
pub fn log_len(name: &str) -> u64 {
    std::fs::metadata(log_file(name)).map_or(0, |m| m.len())
}

/// What the console printed since it was `offset` bytes long.
pub fn console_since(name: &str, offset: u64) -> String {
    let text = std::fs::read(log_file(name)).unwrap_or_default();
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

pub fn log_tail(name: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(log_file(name)).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Why machine `name` cannot be reached, and what to do (it does not run).
pub fn not_running(name: &str) -> String {
    match use_of(name) {
        Some(Use::Stopped) => format!(
            "machine {name} is stopped: boot it from its disk with 'cargo xtask testhost start {name}'"
        ),
        Some(Use::Booting) => format!("machine {name} is still booting: wait for it"),
        _ => format!(
            "machine {name} is not running: start it with 'cargo xtask testhost up {name}'"
        ),
    }
}

/// The `nsenter` command running `argv` inside machine `name` as root.
pub fn exec_expr(name: &str, argv: &[String]) -> Result<duct::Expression> {
    let pid = nspawn_pid(name).with_context(|| not_running(name))?;
    let init = *sys::children(pid)
        .first()
        .with_context(|| format!("machine {name} has no init process (still starting?)"))?;
    let mut args: Vec<String> = [
        "--target",
        &init.to_string(),
        "--all",
        "--root",
        "--wd",
        "--",
        "/usr/bin/env",
        "-i",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "USER=root",
        "LOGNAME=root",
        "LANG=C.UTF-8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(argv.iter().cloned());
    Ok(duct::cmd("nsenter", args))
}

/// Run `argv` inside machine `name` (in all its namespaces, as root, without ssh) and return
/// its stdout; fails with its stderr if it exits non-zero.
pub fn exec(name: &str, argv: &[String]) -> Result<String> {
    let out = exec_expr(name, argv)?
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running nsenter for machine {name}"))?;
    if !out.status.success() {
        bail!(
            "'{}' failed in machine {name} ({}): {}",
            crate::quote::join(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_roundtrip() {
        for role in Role::ALL {
            assert_eq!(parse_info(&render_info(role, 7)), Some((role, 7)));
        }
        assert_eq!(parse_info("role=app\nsubnet=0\n"), None);
        assert_eq!(parse_info("role=web\nsubnet=3\n"), None);
        // Another checkout's role: not a machine this one runs, but its subnet is taken.
        assert_eq!(parse_subnet("role=primed\nsubnet=3\n"), Some(3));
        assert_eq!(parse_subnet("role=app\nsubnet=0\n"), None);
    }
}
