//! Booting a machine from its disk, in steps: the first boot's files ([`provision_disk`],
//! only for a new disk), then every boot's ([`boot`]): its cgroups, systemd-nspawn started
//! detached, the veth configured, then waiting the way a user would (sshd answers, systemd
//! says `running`, PostgreSQL accepts connections on a `db` machine). `up`, `start` and
//! `reboot` share [`boot`]; only `up` provisions.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use super::layout::{machine_dir, veth};
use super::machine::Machine;
use super::machine::{self, nspawn_pid};
use super::render::{self, Launch};
use super::{image, net, sys};
use crate::flags::Role;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Lower layers of a role's root filesystem, topmost first.
pub fn lower_layers(role: Role) -> Vec<Utf8PathBuf> {
    image::layer_of(role)
        .into_iter()
        .chain([image::base_dir()])
        .collect()
}

/// The files of a new machine, written into its overlay's upper layer before its first boot:
/// host name, network, root's authorized key, ssh host keys of its own (so known_hosts is
/// exact and no two machines share a key), and the known_hosts and ssh_config to reach it.
pub fn provision_disk(sh: &Shell, m: &Machine) -> Result<()> {
    let name = m.name.as_str();
    let upper = machine_dir(name).join("upper");
    let lowers = lower_layers(m.role);
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
    machine::write_ssh_config(m, None)
}

/// Boot machine `m` from its disk and wait until it is up: sshd answers, systemd says
/// `running`, and on a `db` machine PostgreSQL accepts connections. Nothing of an earlier
/// boot may run (callers stop it first).
pub fn boot(sh: &Shell, m: &Machine) -> Result<()> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    launch(m)?;
    attach_network(sh, m, deadline)?;
    wait_for_sshd(m, deadline)?;
    wait_for_systemd(m, deadline)?;
    if m.role == Role::Db {
        wait_for_postgres(m, deadline)?;
    }
    Ok(())
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Start systemd-nspawn detached, in cgroups of the machine's own (nspawn `--keep-unit` puts
/// `payload/` and `supervisor/` there), on the overlay of its disk.
fn launch(m: &Machine) -> Result<()> {
    let name = m.name.as_str();
    let dir = machine_dir(name);
    let cgroups = machine::cgroups(name);
    for cg in &cgroups {
        fs_err::create_dir_all(cg)?;
    }
    // The PID of an earlier boot would pass for this one's until the launcher writes its own.
    let pid_file = machine::pid_file(name);
    if pid_file.exists() {
        fs_err::remove_file(&pid_file)?;
    }
    let launch = Launch {
        name: name.to_string(),
        pid_file,
        cgroups,
        lower: lower_layers(m.role),
        upper: dir.join("upper"),
        work: dir.join("work"),
        root: dir.join("root"),
    };
    sys::spawn_detached_in_namespace(&render::launch_script(&launch), &machine::log_file(name))
}

/// Wait for nspawn to create the veth, and give its host side the address.
fn attach_network(sh: &Shell, m: &Machine, deadline: Instant) -> Result<()> {
    let name = m.name.as_str();
    let pid_file = machine::pid_file(name);
    if !sys::wait_for(Duration::from_secs(10), || {
        sys::read_pid(&pid_file).is_some()
    }) {
        bail!("the launcher of {name} did not record a PID in {pid_file}");
    }
    // The launcher records its PID, joins the cgroups and mounts the overlay before it becomes
    // systemd-nspawn (exec): until then the PID runs without nspawn's command line.
    let launcher_runs = || sys::read_pid(&pid_file).is_some_and(sys::running);
    if !sys::wait_for(left(deadline), || {
        net::veth_exists(name) || !launcher_runs()
    }) || nspawn_pid(name).is_none()
    {
        bail!(
            "systemd-nspawn for {name} exited before creating {}",
            veth(name)
        );
    }
    net::configure_veth(sh, name, &m.host_ip)
}

fn wait_for_sshd(m: &Machine, deadline: Instant) -> Result<()> {
    let name = m.name.as_str();
    let alive = || nspawn_pid(name).is_some();
    let addr: SocketAddr = format!("{}:22", m.ip).parse()?;
    let mut last_err = None;
    let answered = sys::wait_for(left(deadline), || {
        if !alive() {
            return true;
        }
        match machine::ssh_banner(addr, Duration::from_secs(2)) {
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
    Ok(())
}

/// `systemctl is-system-running --wait` over ssh: "running", or why not ("degraded" exits
/// non-zero but is an answer, not an ssh failure).
fn wait_for_systemd(m: &Machine, deadline: Instant) -> Result<()> {
    let name = m.name.as_str();
    let secs = left(deadline).as_secs().max(5).to_string();
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
    Ok(())
}

fn wait_for_postgres(m: &Machine, deadline: Instant) -> Result<()> {
    let ip = m.ip.clone();
    let mut last = String::new();
    let ready = sys::wait_for(left(deadline), || {
        match machine::exec(
            &m.name,
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
        bail!(
            "PostgreSQL on {} does not accept connections on {ip}: {last}",
            m.name
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_and_primed_machines_stack_their_layer_on_the_base() {
        assert_eq!(lower_layers(Role::App), vec![image::base_dir()]);
        assert_eq!(
            lower_layers(Role::Db),
            vec![image::db_layer_dir(), image::base_dir()]
        );
        assert_eq!(
            lower_layers(Role::Primed),
            vec![image::primed_layer_dir(), image::base_dir()]
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
