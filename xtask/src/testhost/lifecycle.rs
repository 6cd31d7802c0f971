//! A machine's life: `up` (a new disk, booted), `poweroff` (shut down from inside, or a power
//! cut: every process killed at once; the disk kept), `start` (the kept disk booted again),
//! `reboot` (`systemctl reboot` inside, then the same disk booted again: systemd-nspawn exits
//! on a reboot and does not boot by itself here), and `down` (everything removed).
//!
//! Every stop goes through [`stop_runtime`], which removes what runs and what goes with it
//! (cgroups, mounts, veth, nspawn's runtime directories) and keeps the disk; `down` then also
//! forgets the machine ([`forget`]). A machine found stale (its nspawn gone, e.g. after a test
//! run was killed) is removed by the next `up` or `down`, so one crashed run never poisons the
//! next.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use xshell::{cmd, Shell};

use super::layout::{lock_dir, machine_dir, machines_dir, veth};
use super::machine::Machine;
use super::machine::{self, booting_pid, info, machine_names, nspawn_marker, nspawn_pid, running};
use super::{boot, image, net, proxy, sys};
use crate::flags::{validate_machine_name, Role};
use crate::interrupt;

/// Every machine's systemd, journald, logind and friends take inotify instances from root's
/// per-user limit on the host (the machines share root's uid); Debian's 128 runs out with
/// about eight machines ("Failed to create control group inotify object: Too many open
/// files"). `up` raises it to this (never lowers it; it stays raised, like a sysctl.d setting).
pub const MIN_INOTIFY_INSTANCES: u64 = 8192;

/// How long a machine may take to shut down after `systemctl reboot|poweroff` inside it
/// (systemd's own default stop timeout for a unit that hangs).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(90);

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
            machine::write_ssh_config(&m, None)?;
        }
        if machine::healthy(&m) {
            return Ok(m);
        }
        eprintln!("testhost: machine {name} runs but its sshd does not answer: booting it again");
    } else if let Some(pid) = booting_pid(name) {
        bail!("machine {name} is being booted by process {pid}: wait for it, or take it down (cargo xtask testhost down {name})");
    }
    // Whatever an earlier run left behind goes first; a stopped machine's disk too.
    let stopped = machine::stopped(name);
    let found = cleanup(sh, name)?;
    if let Some(how) = stopped {
        eprintln!(
            "testhost: machine {name} was stopped ({how}): 'up' builds it afresh on a new disk ('start {name}' boots the kept one)"
        );
    } else if !found.is_empty() {
        eprintln!(
            "testhost: cleaned up what a previous run left of {name}: {}",
            found.join(", ")
        );
    }
    sys::ensure_inotify_instances(MIN_INOTIFY_INSTANCES)?;
    let m = prepare(sh, name, role)?;
    let result = boot::provision_disk(sh, &m).and_then(|()| boot::boot(sh, &m));
    machine::done_booting(name);
    if let Err(e) = result {
        let tail = machine::log_tail(name, 15);
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
                .filter_map(|n| machine::subnet_in_use(&n))
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
    machine::mark_booting(name)?;
    sys::write_atomic(
        &dir.join("info"),
        &machine::render_info(role, subnet),
        0o644,
    )?;
    net::add_machine(sh, name, subnet)?;
    Ok(machine::to_machine(name, role, subnet))
}

/// Boot a stopped machine from its kept disk: same overlay, address, host keys, known_hosts.
/// A running, healthy machine is returned as is.
pub fn start(sh: &Shell, name: &str) -> Result<Machine> {
    if let Some(m) = running(name)? {
        if machine::healthy(&m) {
            return Ok(m);
        }
        bail!("machine {name} runs but its sshd does not answer: reboot it (cargo xtask testhost reboot {name}), or take it down and up for a new one");
    }
    if let Some(pid) = booting_pid(name) {
        bail!("machine {name} is being booted by process {pid}: wait for it");
    }
    let Some((role, subnet)) = info(name) else {
        bail!("there is no machine {name} to start: boot a new one with 'cargo xtask testhost up {name}'");
    };
    if machine::stopped(name).is_none() {
        bail!(
            "machine {name} was not stopped by 'poweroff' or 'reboot' but left by a run that died (its disk may be half made): build it afresh with 'cargo xtask testhost up {name}', or remove it with 'down {name}'"
        );
    }
    image::require(role)?;
    sys::ensure_inotify_instances(MIN_INOTIFY_INSTANCES)?;
    let m = machine::to_machine(name, role, subnet);
    machine::mark_booting(name)?;
    let result = boot_again(sh, &m, subnet);
    machine::done_booting(name);
    result.map(|()| m)
}

/// A clean reboot that keeps the disk: `systemctl reboot` inside, wait for the machine to go
/// down, boot the same disk again and wait until it is up as `up` does.
pub fn reboot(sh: &Shell, name: &str) -> Result<Machine> {
    let m = running(name)?.with_context(|| machine::not_running(name))?;
    let (_, subnet) = info(name).with_context(|| format!("machine {name} has no info file"))?;
    // Booting from here on, for `up`, `status` and the test harness.
    machine::mark_booting(name)?;
    let result = shut_down(sh, &m, Shutdown::Reboot).and_then(|()| boot_again(sh, &m, subnet));
    machine::done_booting(name);
    result.map(|()| m)
}

/// Shut a running machine down and keep its disk: `systemctl poweroff` inside, or with `hard`
/// a power cut (every process of the machine killed at once through its cgroup's
/// `cgroup.kill`, no shutdown at all). A machine already stopped is left as it is.
pub fn poweroff(sh: &Shell, name: &str, hard: bool) -> Result<()> {
    if machine::stopped(name).is_some() {
        return Ok(());
    }
    let m = running(name)?.with_context(|| machine::not_running(name))?;
    if hard {
        cut_power(sh, &m.name)
    } else {
        shut_down(sh, &m, Shutdown::Poweroff)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Reboot,
    Poweroff,
}

impl Shutdown {
    fn verb(self) -> &'static str {
        match self {
            Shutdown::Reboot => "reboot",
            Shutdown::Poweroff => "poweroff",
        }
    }

    /// What systemd-nspawn prints when the machine's init ends this way (the kernel ends it
    /// with SIGHUP for a reboot, SIGINT for a power-off).
    fn farewell(self, name: &str) -> String {
        match self {
            Shutdown::Reboot => format!("Container {name} is being rebooted."),
            Shutdown::Poweroff => format!("Container {name} has been shut down."),
        }
    }
}

/// `systemctl reboot|poweroff` inside, wait for systemd-nspawn to exit, stop what is left on
/// the host; the machine is then stopped with its disk kept.
fn shut_down(sh: &Shell, m: &Machine, how: Shutdown) -> Result<()> {
    let name = m.name.as_str();
    let from = machine::log_len(name);
    machine::exec(name, &["systemctl".into(), how.verb().into()])?;
    let down = sys::wait_for(SHUTDOWN_TIMEOUT, || nspawn_pid(name).is_none());
    if !down {
        interrupt::check()?;
        bail!(
            "machine {name} did not shut down within {}s of 'systemctl {}' (it still runs): see its console {}; 'cargo xtask testhost poweroff --hard {name}' cuts its power",
            SHUTDOWN_TIMEOUT.as_secs(),
            how.verb(),
            machine::log_file(name)
        );
    }
    let console = machine::console_since(name, from);
    stop_runtime(sh, name)?;
    machine::mark_stopped(name, &format!("systemctl {}", how.verb()))?;
    let farewell = how.farewell(name);
    if !console.contains(&farewell) {
        bail!(
            "systemd-nspawn of {name} exited without saying '{farewell}' after 'systemctl {}': it is stopped with its disk kept; its console said:\n{}",
            how.verb(),
            console.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// A power cut: SIGKILL to every process of the machine at once (its cgroup's `cgroup.kill`,
/// systemd-nspawn included), then what is left on the host removed; the disk is kept.
fn cut_power(sh: &Shell, name: &str) -> Result<()> {
    let cgroup = machine::cgroups(name)
        .into_iter()
        .find(|cg| cg.join("cgroup.kill").exists())
        .with_context(|| {
            format!("machine {name} has no cgroup with cgroup.kill (cgroup v2, Linux 5.14 or later): cannot kill all its processes at once")
        })?;
    fs_err::write(cgroup.join("cgroup.kill"), "1")?;
    let gone = sys::settle(Duration::from_secs(10), || {
        machine::processes(name).is_empty() && nspawn_pid(name).is_none()
    });
    if !gone {
        bail!(
            "processes of machine {name} survived cgroup.kill in {cgroup}: {:?}",
            machine::processes(name)
        );
    }
    let note = format!("-- cargo xtask testhost: power cut (cgroup.kill of {cgroup}) --\n");
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(machine::log_file(name))
        .and_then(|mut f| std::io::Write::write_all(&mut f, note.as_bytes()));
    stop_runtime(sh, name)?;
    machine::mark_stopped(name, "power cut")
}

/// Boot a machine whose disk is kept and of which nothing runs, its NAT rule made sure of. If
/// it does not come up it is left stopped, as it was.
fn boot_again(sh: &Shell, m: &Machine, subnet: u8) -> Result<()> {
    let name = m.name.as_str();
    {
        let _lock = sys::StateLock::acquire(&lock_dir())?;
        net::add_machine(sh, name, subnet)?;
    }
    if let Err(e) = boot::boot(sh, m) {
        let tail = machine::log_tail(name, 15);
        let _ = stop_runtime(sh, name);
        let _ = machine::mark_stopped(name, "a boot that failed");
        return Err(e.context(format!(
            "machine {name} did not come up; it is stopped with its disk kept ('cargo xtask testhost start {name}' tries again, 'down {name}' removes it); last lines of its console:\n{tail}"
        )));
    }
    machine::clear_stopped(name)
}

pub fn down(sh: &Shell, name: &str) -> Result<()> {
    cleanup(sh, name).map(|_| ())
}

/// Remove every trace of machine `name`, running, stopped or stale; returns what was found.
fn cleanup(sh: &Shell, name: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    if proxy::live_pid(name).is_some() {
        found.push("delay proxy".to_string());
    }
    proxy::stop(name)?;
    found.extend(stop_runtime(sh, name)?);
    forget(sh, name, found)
}

/// Stop what runs of machine `name` and remove what goes with it: systemd-nspawn (SIGTERM is
/// an orderly shutdown), any other process of it, its cgroups, mounts, veth and nspawn's
/// runtime directories. Its directory (the disk), NAT rule and delay proxy stay. Returns what
/// was found that should not have been there.
fn stop_runtime(sh: &Shell, name: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    if let Some(pid) = nspawn_pid(name) {
        sys::terminate(pid, Duration::from_secs(30))
            .with_context(|| format!("stopping systemd-nspawn of {name}"))?;
    }
    for (pid, _) in sys::processes_mentioning(&nspawn_marker(name)) {
        found.push(format!("process {pid}"));
        sys::terminate(pid, Duration::from_secs(5))?;
    }
    // Whatever still runs in its cgroups (a container whose nspawn was killed).
    for cg in machine::cgroups(name) {
        if cg.exists() {
            if !sys::cgroup_procs(&cg).is_empty() {
                found.push(format!("processes in {cg}"));
            }
            sys::remove_cgroup_tree(&cg)?;
        }
    }
    for mount in sys::mounts_under(&machine_dir(name)) {
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
    Ok(found)
}

/// Forget a machine of which nothing runs: its NAT rule, hold on forwarding and directory,
/// and the shared parts with the last machine.
fn forget(sh: &Shell, name: &str, mut found: Vec<String>) -> Result<Vec<String>> {
    let dir = machine_dir(name);
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
            let _ = std::fs::remove_dir(h.join(super::layout::CGROUP_DIR));
        }
        // nspawn's own runtime directories, once empty.
        for d in ["propagate", "unix-export", "locks", ""] {
            let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/{d}"));
        }
    }
    Ok(found)
}

/// Runtime directories systemd-nspawn makes on the host for a machine.
pub fn nspawn_runtime_dirs(name: &str) -> Vec<Utf8PathBuf> {
    ["propagate", "unix-export"]
        .iter()
        .map(|d| Utf8PathBuf::from(format!("/run/systemd/nspawn/{d}/{name}")))
        .collect()
}

/// Every machine name anything of ours is left under.
fn known_names() -> Vec<String> {
    let mut names = machine_names();
    for h in sys::cgroup_hierarchies() {
        if let Ok(d) = h.join(super::layout::CGROUP_DIR).read_dir_utf8() {
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
    for (pid, _) in super::inspect::stray_processes(&[], &[]) {
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
