//! Booting, inspecting and removing machines.
//!
//! A machine is: a directory under `machines/`, a systemd-nspawn process (PID recorded, started
//! detached in its own session, mount namespace and cgroup), a veth, and a share of the NAT.
//! `down` removes all of it, and so does `up` for a machine found stale (its nspawn gone, e.g.
//! after a test run was killed), so one crashed run never poisons the next.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use super::render::{self, Endpoint, Launch};
use super::{
    host_ip, image, ip, key_path, lock_dir, machine_dir, machines_dir, net, proxy, state, sys,
    veth, Machine, CGROUP_DIR,
};
use crate::flags::{validate_machine_name, Role};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The `info` file of a machine: its role and subnet number.
fn render_info(role: Role, subnet: u8) -> String {
    format!("role={}\nsubnet={subnet}\n", role.name())
}

fn parse_info(text: &str) -> Option<(Role, u8)> {
    let mut role = None;
    let mut subnet = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("role", "app")) => role = Some(Role::App),
            Some(("role", "db")) => role = Some(Role::Db),
            Some(("subnet", n)) => subnet = n.parse().ok().filter(|n| (1..=254).contains(n)),
            _ => {}
        }
    }
    Some((role?, subnet?))
}

fn info(name: &str) -> Option<(Role, u8)> {
    parse_info(&std::fs::read_to_string(machine_dir(name).join("info")).ok()?)
}

fn to_machine(name: &str, role: Role, subnet: u8) -> Machine {
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
fn nspawn_marker(name: &str) -> String {
    format!("--directory={}", machine_dir(name).join("root"))
}

/// PID of the machine's systemd-nspawn, if it runs.
fn nspawn_pid(name: &str) -> Option<u32> {
    sys::live_pid(&machine_dir(name).join("pid"), &nspawn_marker(name))
}

/// PID of the process booting machine `name` (its `up` has not finished yet).
fn booting_pid(name: &str) -> Option<u32> {
    let pid = sys::read_pid(&machine_dir(name).join("up.pid"))?;
    sys::running(pid).then_some(pid)
}

/// A machine that runs or is being booted: nothing of it is a leftover.
fn active(name: &str) -> bool {
    nspawn_pid(name).is_some() || booting_pid(name).is_some()
}

/// The machine, if its systemd-nspawn runs.
pub fn running(name: &str) -> Result<Option<Machine>> {
    let Some((role, subnet)) = info(name) else {
        return Ok(None);
    };
    Ok(nspawn_pid(name).map(|_| to_machine(name, role, subnet)))
}

/// Names of the machine directories (running or not).
fn machine_names() -> Vec<String> {
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
pub fn uses() -> Vec<(String, super::Use)> {
    machine_names()
        .into_iter()
        .map(|n| {
            let u = if nspawn_pid(&n).is_some() {
                super::Use::Running
            } else if booting_pid(&n).is_some() {
                super::Use::Booting
            } else {
                super::Use::Stale
            };
            (n, u)
        })
        .collect()
}

/// `testhost status`: every machine directory, running or stale.
pub fn status_table() -> Result<String> {
    let names = machine_names();
    if names.is_empty() {
        return Ok("no machines (start one with 'cargo xtask testhost up NAME')\n".into());
    }
    let mut s = format!(
        "{:<13} {:<5} {:<8} {:<13} {:<8} {}\n",
        "NAME", "ROLE", "STATE", "ADDRESS", "DELAY", "SSH"
    );
    for name in names {
        let (role, addr) = match info(&name) {
            Some((role, subnet)) => (role.name(), ip(subnet)),
            None => ("?", "-".to_string()),
        };
        let state = if nspawn_pid(&name).is_some() {
            "running"
        } else if booting_pid(&name).is_some() {
            "booting"
        } else {
            "stale"
        };
        let delay = proxy::current_delay(&name).map_or("-".to_string(), |d| format!("{d}ms"));
        let ssh = format!("ssh -F {} {name}", machine_dir(&name).join("ssh_config"));
        s.push_str(&format!(
            "{name:<13} {role:<5} {state:<8} {addr:<13} {delay:<8} {ssh}\n"
        ));
    }
    if s.contains(" stale ") {
        s.push_str("stale: left by a run that died; 'up NAME' or 'down NAME' cleans it up\n");
    }
    Ok(s)
}

/// Every machine's systemd, journald, logind and friends take inotify instances from root's
/// per-user limit on the host (the machines share root's uid); Debian's 128 runs out with
/// about eight machines ("Failed to create control group inotify object: Too many open
/// files"). `up` raises it to this (never lowers it; it stays raised, like a sysctl.d setting).
pub const MIN_INOTIFY_INSTANCES: u64 = 8192;

pub fn up(sh: &Shell, name: &str, role: Role) -> Result<Machine> {
    image::require(role)?;
    if let Some(m) = running(name)? {
        if m.role != role {
            bail!(
                "machine {name} is already up with role {}: take it down first (cargo xtask testhost down {name})",
                m.role.name()
            );
        }
        // A delay proxy that died (killed with a test run) would make ssh look broken.
        if proxy::live_pid(name).is_none() && proxy::current_delay_file(name).is_some() {
            proxy::stop(name)?;
            write_ssh_config(&m, None)?;
        }
        if healthy(&m) {
            return Ok(m);
        }
        eprintln!("testhost: machine {name} runs but its sshd does not answer: booting it again");
    } else if let Some(pid) = booting_pid(name) {
        bail!("machine {name} is being booted by process {pid}: wait for it, or take it down (cargo xtask testhost down {name})");
    }
    // Whatever an earlier run left behind goes first.
    let found = cleanup(sh, name)?;
    if !found.is_empty() {
        eprintln!(
            "testhost: cleaned up what a previous run left of {name}: {}",
            found.join(", ")
        );
    }
    sys::ensure_inotify_instances(MIN_INOTIFY_INSTANCES)?;
    let m = prepare(sh, name, role)?;
    let result = boot(sh, &m);
    let _ = std::fs::remove_file(machine_dir(name).join("up.pid"));
    if let Err(e) = result {
        let tail = log_tail(name, 15);
        let _ = cleanup(sh, name);
        return Err(e.context(format!(
            "machine {name} did not come up; last lines of its console:\n{tail}"
        )));
    }
    Ok(m)
}

/// Allocate a subnet, create the machine directory and make sure NAT is on (under the lock).
fn prepare(sh: &Shell, name: &str, role: Role) -> Result<Machine> {
    fs_err::create_dir_all(machines_dir())?;
    let _lock = sys::StateLock::acquire(&lock_dir())?;
    // Every machine directory counts, also names this checkout would not accept: another
    // checkout of the project (with other naming rules) may have booted it.
    let used: Vec<u8> = std::fs::read_dir(machines_dir())
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| info(&n).map(|(_, s)| s))
                .collect()
        })
        .unwrap_or_default();
    let subnet = (1..=254u8).find(|n| !used.contains(n)).context(
        "all 254 test subnets are in use: take machines down (cargo xtask testhost down --all)",
    )?;
    let dir = machine_dir(name);
    for sub in ["upper", "work", "root"] {
        fs_err::create_dir_all(dir.join(sub))?;
    }
    sys::write_atomic(
        &dir.join("up.pid"),
        &format!("{}\n", std::process::id()),
        0o644,
    )?;
    sys::write_atomic(&dir.join("info"), &render_info(role, subnet), 0o644)?;
    net::add_machine(sh, name, subnet)?;
    Ok(to_machine(name, role, subnet))
}

/// Lower layers of a role's root filesystem, topmost first.
fn lower_layers(role: Role) -> Vec<Utf8PathBuf> {
    match role {
        Role::App => vec![image::base_dir()],
        Role::Db => vec![image::db_layer_dir(), image::base_dir()],
    }
}

fn boot(sh: &Shell, m: &Machine) -> Result<()> {
    let name = m.name.as_str();
    let dir = machine_dir(name);
    let upper = dir.join("upper");
    let lowers = lower_layers(m.role);

    // Files of this machine, written into the overlay's upper layer before boot.
    put(&upper, &lowers, "etc/hostname", &format!("{name}\n"), 0o644)?;
    put(
        &upper,
        &lowers,
        "etc/systemd/network/10-host0.network",
        &render::host0_network(&m.ip, &m.host_ip),
        0o644,
    )?;
    // systemd makes a machine-id at first boot, unless it finds dbus's copy (images built
    // before the base image linked it to /etc/machine-id).
    make_dirs(&upper, &lowers, Utf8Path::new("var/lib/dbus"))?;
    let dbus_id = upper.join("var/lib/dbus/machine-id");
    if dbus_id.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)
            .with_context(|| format!("linking {dbus_id}"))?;
    }
    let authorized = fs_err::read_to_string(m.public_key())?;
    put(
        &upper,
        &lowers,
        "root/.ssh/authorized_keys",
        &authorized,
        0o600,
    )?;
    // Host keys of its own, so known_hosts is exact and no two machines share a key.
    make_dirs(&upper, &lowers, Utf8Path::new("etc/ssh"))?;
    cmd!(sh, "ssh-keygen -q -A -f {upper}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("generating the machine's ssh host keys")?;
    let mut pubkeys = Vec::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let p = upper.join(format!("etc/ssh/ssh_host_{kind}_key.pub"));
        if p.exists() {
            pubkeys.push(fs_err::read_to_string(p)?);
        }
    }
    sys::write_atomic(
        &m.known_hosts,
        &render::known_hosts(name, &m.ip, &pubkeys),
        0o644,
    )?;
    write_ssh_config(m, None)?;

    // Its own cgroup in each hierarchy: nspawn --keep-unit puts payload/ and supervisor/ there.
    let cgroups: Vec<Utf8PathBuf> = sys::cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP_DIR).join(name))
        .collect();
    for cg in &cgroups {
        fs_err::create_dir_all(cg)?;
    }
    let pid_file = dir.join("pid");
    let launch = Launch {
        name: name.to_string(),
        pid_file: pid_file.clone(),
        cgroups,
        lower: lowers,
        upper,
        work: dir.join("work"),
        root: dir.join("root"),
    };
    spawn_detached_in_namespace(&render::launch_script(&launch), &dir.join("log"))?;

    let deadline = Instant::now() + BOOT_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let alive = || nspawn_pid(name).is_some();
    if !sys::wait_for(Duration::from_secs(10), || {
        sys::read_pid(&pid_file).is_some()
    }) {
        bail!("the launcher of {name} did not record a PID in {pid_file}");
    }
    // The launcher records its PID, joins the cgroups and mounts the overlay before it becomes
    // systemd-nspawn (exec): until then the PID runs without nspawn's command line.
    let launcher_runs = || sys::read_pid(&pid_file).is_some_and(sys::running);
    if !sys::wait_for(left(), || net::veth_exists(name) || !launcher_runs()) || !alive() {
        bail!(
            "systemd-nspawn for {name} exited before creating {}",
            veth(name)
        );
    }
    net::configure_veth(sh, name, &m.host_ip)?;
    let addr: SocketAddr = format!("{}:22", m.ip).parse()?;
    let mut last_err = None;
    let answered = sys::wait_for(left(), || {
        if !alive() {
            return true;
        }
        match ssh_banner(addr, Duration::from_secs(2)) {
            Ok(()) => true,
            Err(e) => {
                last_err = Some(e);
                false
            }
        }
    });
    if !alive() {
        bail!("systemd-nspawn for {name} exited during boot");
    }
    if !answered {
        bail!(
            "sshd of {name} did not answer on {addr} within {}s ({})",
            BOOT_TIMEOUT.as_secs(),
            last_err.map_or(String::new(), |e| format!("{e:#}"))
        );
    }
    let secs = left().as_secs().max(5).to_string();
    // "running", or why not ("degraded" exits non-zero but is an answer, not an ssh failure).
    let out = m.ssh_output(&["timeout", &secs, "systemctl", "is-system-running", "--wait"])?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.code() == Some(255) {
        bail!(
            "{}",
            crate::ssh::diagnose(name, &String::from_utf8_lossy(&out.stderr))
        );
    }
    if state.is_empty() {
        bail!(
            "systemd on {name} did not settle within {secs}s ({}, {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if state != "running" {
        let failed = m
            .ssh(&["systemctl", "--failed", "--no-legend", "--plain"])
            .unwrap_or_default();
        bail!(
            "{name} booted but systemd says '{state}' instead of 'running'; failed units: {}",
            failed.trim()
        );
    }
    if m.role == Role::Db {
        let ip = m.ip.clone();
        let mut last = String::new();
        let ready = sys::wait_for(left(), || {
            match super::exec(
                sh,
                name,
                &["pg_isready".into(), "-q".into(), "-h".into(), ip.clone()],
            ) {
                Ok(_) => true,
                Err(e) => {
                    last = format!("{e:#}");
                    false
                }
            }
        });
        if !ready {
            bail!("PostgreSQL on {name} does not accept connections on {ip}: {last}");
        }
    }
    Ok(())
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
fn healthy(m: &Machine) -> bool {
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

/// Start a bash script detached: its own session (`setsid --fork`, so it is never our child
/// and never our zombie), stdin from /dev/null, output appended to `log`.
pub fn spawn_detached(script: &str, log: &Utf8Path) -> Result<()> {
    spawn(&["setsid", "--fork", "bash", "-c", script], log)
}

/// As [`spawn_detached`], in a private mount namespace.
fn spawn_detached_in_namespace(script: &str, log: &Utf8Path) -> Result<()> {
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

/// Create `rel` (a directory path) under `upper`, each new directory with the owner and mode
/// of the same directory in the image, so the overlay does not change them (`/root` stays 0700).
fn make_dirs(upper: &Utf8Path, lowers: &[Utf8PathBuf], rel: &Utf8Path) -> Result<()> {
    let mut cur = Utf8PathBuf::new();
    for comp in rel.components() {
        cur.push(comp);
        let target = upper.join(&cur);
        if target.is_dir() {
            continue;
        }
        let meta = lowers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(&cur)).ok());
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            bail!("{cur} is a symlink in the image: refusing to shadow it in {upper}");
        }
        fs_err::create_dir(&target)?;
        // Not in the image: private for ~/.ssh, as sshd's StrictModes expects.
        let default_mode = if comp.as_str() == ".ssh" {
            0o700
        } else {
            0o755
        };
        let mode = match &meta {
            Some(m) => {
                std::os::unix::fs::chown(&target, Some(m.uid()), Some(m.gid()))
                    .with_context(|| format!("chown {target}"))?;
                m.mode() & 0o7777
            }
            None => default_mode,
        };
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write a root-owned file into the upper layer (parents as in the image).
fn put(
    upper: &Utf8Path,
    lowers: &[Utf8PathBuf],
    rel: &str,
    contents: &str,
    mode: u32,
) -> Result<()> {
    let rel = Utf8Path::new(rel);
    if let Some(parent) = rel.parent() {
        make_dirs(upper, lowers, parent)?;
    }
    let path = upper.join(rel);
    fs_err::write(&path, contents)?;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn log_tail(name: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(machine_dir(name).join("log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `nsenter` command running `argv` inside machine `name` as root.
pub fn exec_expr(name: &str, argv: &[String]) -> Result<duct::Expression> {
    let pid = nspawn_pid(name).with_context(|| {
        format!("machine {name} is not running: start it with 'cargo xtask testhost up {name}'")
    })?;
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

pub fn down(sh: &Shell, name: &str) -> Result<()> {
    cleanup(sh, name).map(|_| ())
}

/// Remove every trace of machine `name`, running or stale; returns what was found.
fn cleanup(sh: &Shell, name: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let dir = machine_dir(name);
    if proxy::live_pid(name).is_some() {
        found.push("delay proxy".to_string());
    }
    proxy::stop(name)?;
    // An orderly shutdown: SIGTERM makes nspawn power the container off.
    if let Some(pid) = nspawn_pid(name) {
        sys::terminate(pid, Duration::from_secs(30))
            .with_context(|| format!("stopping systemd-nspawn of {name}"))?;
    }
    for (pid, _) in sys::processes_mentioning(&nspawn_marker(name)) {
        found.push(format!("process {pid}"));
        sys::terminate(pid, Duration::from_secs(5))?;
    }
    // Whatever still runs in its cgroups (a container whose nspawn was killed).
    for h in sys::cgroup_hierarchies() {
        let cg = h.join(CGROUP_DIR).join(name);
        if cg.exists() {
            if !sys::cgroup_procs(&cg).is_empty() {
                found.push(format!("processes in {cg}"));
            }
            sys::remove_cgroup_tree(&cg)?;
        }
    }
    for mount in sys::mounts_under(&dir) {
        found.push(format!("mount {mount}"));
        cmd!(sh, "umount --lazy {mount}").quiet().run()?;
    }
    if net::veth_exists(name) {
        found.push(veth(name));
        net::remove_veth(sh, name)?;
    }
    for d in nspawn_runtime_dirs(name) {
        if d.exists() && sys::mounts_under(&d).is_empty() {
            fs_err::remove_dir_all(&d)?;
        }
    }
    let _lock = sys::StateLock::acquire(&lock_dir())?;
    if net::machine_rules(sh)?.iter().any(|(n, _)| n == name) && !dir.exists() {
        found.push(format!("the NAT rule of {name}"));
    }
    net::remove_machine(sh, name)?;
    if dir.exists() {
        if !found.is_empty() || dir.join("pid").exists() || dir.join("up.pid").exists() {
            found.push(dir.to_string());
        }
        if !sys::mounts_under(&dir).is_empty() {
            bail!("{dir} still has mounts: not removing it (see /proc/self/mountinfo)");
        }
        fs_err::remove_dir_all(&dir)?;
    }
    if machine_names().is_empty() {
        net::remove_nat(sh)?;
        for h in sys::cgroup_hierarchies() {
            // Fails while a build or another machine still has a directory there.
            let _ = std::fs::remove_dir(h.join(CGROUP_DIR));
        }
        // nspawn's own runtime directories, once empty.
        for d in ["propagate", "unix-export", "locks", ""] {
            let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/{d}"));
        }
    }
    Ok(found)
}

/// Runtime directories systemd-nspawn makes on the host for a machine.
fn nspawn_runtime_dirs(name: &str) -> Vec<Utf8PathBuf> {
    ["propagate", "unix-export"]
        .iter()
        .map(|d| Utf8PathBuf::from(format!("/run/systemd/nspawn/{d}/{name}")))
        .collect()
}

/// Every machine name anything of ours is left under.
fn known_names() -> Vec<String> {
    let mut names = machine_names();
    for h in sys::cgroup_hierarchies() {
        if let Ok(d) = h.join(CGROUP_DIR).read_dir_utf8() {
            names.extend(d.flatten().map(|e| e.file_name().to_string()));
        }
    }
    for v in net::veths() {
        names.push(v.trim_start_matches("ve-").to_string());
    }
    names.extend(net::forwarding_holds());
    if let Ok(sh) = Shell::new() {
        names.extend(
            net::machine_rules(&sh)
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n),
        );
    }
    names.retain(|n| validate_machine_name(n).is_ok());
    names.sort();
    names.dedup();
    names
}

pub fn down_all(sh: &Shell) -> Result<()> {
    let mut errors = Vec::new();
    for name in known_names() {
        if let Err(e) = cleanup(sh, &name) {
            errors.push(format!("{name}: {e:#}"));
        }
    }
    // Stray processes of ours not tied to a known machine name.
    for (pid, _) in stray_processes(&[]) {
        let _ = sys::terminate(pid, Duration::from_secs(5));
    }
    if machine_names().is_empty() {
        let _lock = sys::StateLock::acquire(&lock_dir())?;
        net::remove_nat(sh)?;
    }
    if !errors.is_empty() {
        bail!(
            "could not take every machine down:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// systemd-nspawn and proxy processes of ours that no running machine in `live` owns.
fn stray_processes(live: &[String]) -> Vec<(u32, String)> {
    let machines = format!("{}/", machines_dir());
    sys::processes_mentioning(&machines)
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.starts_with("systemd-nspawn ")
                || cmd.contains(" testhost proxy ")
                || cmd.contains("unshare --mount")
        })
        .filter(|(_, cmd)| {
            !live
                .iter()
                .any(|n| cmd.contains(&format!("{}/", machine_dir(n))))
        })
        .collect()
}

/// Something a machine left behind: the machine it belongs to (None: shared by all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub machine: Option<String>,
    pub what: String,
}

pub fn leftovers() -> Result<Vec<Leftover>> {
    let sh = Shell::new()?;
    let live: Vec<String> = machine_names().into_iter().filter(|n| active(n)).collect();
    let is_live = |n: &str| live.iter().any(|l| l == n);
    let mut out = Vec::new();
    let mut add = |machine: Option<&str>, what: String| {
        out.push(Leftover {
            machine: machine.map(str::to_string),
            what,
        })
    };
    let machines = machines_dir();
    for mount in sys::mounts_under(&state()) {
        let owner = Utf8Path::new(&mount)
            .strip_prefix(&machines)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_str().to_string());
        if owner.as_deref().is_none_or(|n| !is_live(n)) {
            add(owner.as_deref(), format!("mount {mount}"));
        }
    }
    for h in sys::cgroup_hierarchies() {
        let parent = h.join(CGROUP_DIR);
        if let Ok(d) = parent.read_dir_utf8() {
            for e in d.flatten() {
                if e.path().is_dir() && !is_live(e.file_name()) {
                    add(Some(e.file_name()), format!("cgroup {}", e.path()));
                }
            }
        }
        if parent.exists() && live.is_empty() {
            add(None, format!("cgroup {parent}"));
        }
    }
    for v in net::veths() {
        let name = v.trim_start_matches("ve-");
        if !is_live(name) {
            add(Some(name), format!("interface {v}"));
        }
    }
    // Each machine's own NAT rule and hold on forwarding, whatever else runs.
    for (name, handle) in net::machine_rules(&sh)? {
        if !is_live(&name) {
            add(
                Some(&name),
                format!(
                    "nftables rule of machine {name} (inet {} handle {handle})",
                    super::NFT_TABLE
                ),
            );
        }
    }
    for name in net::forwarding_holds() {
        if !is_live(&name) {
            add(Some(&name), format!("hold on forwarding of machine {name}"));
        }
    }
    // The shared parts, once no machine runs at all.
    if live.is_empty() {
        if net::nat_table_exists(&sh) {
            add(None, format!("nftables table inet {}", super::NFT_TABLE));
        }
        if let Some(orig) = net::ip_forward_changed() {
            add(None, format!("net.ipv4.ip_forward changed (was {orig})"));
        }
    }
    for (pid, cmd) in stray_processes(&live) {
        let short: String = cmd.chars().take(100).collect();
        let owner = machine_names()
            .into_iter()
            .find(|n| cmd.contains(&format!("{}/", machine_dir(n))));
        add(owner.as_deref(), format!("process {pid}: {short}"));
    }
    for name in machine_names() {
        if !is_live(&name) {
            add(Some(&name), format!("directory {}", machine_dir(&name)));
        }
    }
    for base in ["propagate", "unix-export"] {
        if let Ok(d) = Utf8Path::new("/run/systemd/nspawn")
            .join(base)
            .read_dir_utf8()
        {
            for e in d.flatten() {
                if !is_live(e.file_name()) {
                    add(
                        Some(e.file_name()),
                        format!("nspawn runtime directory {}", e.path()),
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_roundtrip() {
        assert_eq!(parse_info(&render_info(Role::Db, 7)), Some((Role::Db, 7)));
        assert_eq!(parse_info("role=app\nsubnet=0\n"), None);
        assert_eq!(parse_info("role=web\nsubnet=3\n"), None);
    }

    #[test]
    fn db_machines_stack_the_postgres_layer_on_the_base() {
        assert_eq!(lower_layers(Role::App), vec![image::base_dir()]);
        assert_eq!(
            lower_layers(Role::Db),
            vec![image::db_layer_dir(), image::base_dir()]
        );
    }

    #[test]
    fn upper_dirs_copy_the_image_modes() {
        let base = Utf8PathBuf::from(format!("/tmp/th-put-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let lower = base.join("lower");
        let upper = base.join("upper");
        fs_err::create_dir_all(lower.join("root")).unwrap();
        fs_err::set_permissions(lower.join("root"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        fs_err::create_dir_all(&upper).unwrap();
        put(
            &upper,
            std::slice::from_ref(&lower),
            "root/.ssh/authorized_keys",
            "k\n",
            0o600,
        )
        .unwrap();
        let mode = |p: Utf8PathBuf| fs_err::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(upper.join("root")), 0o700);
        assert_eq!(mode(upper.join("root/.ssh")), 0o700);
        assert_eq!(mode(upper.join("root/.ssh/authorized_keys")), 0o600);
        std::os::unix::fs::symlink("root", lower.join("link")).unwrap();
        assert!(put(&upper, &[lower], "link/x", "", 0o644).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
