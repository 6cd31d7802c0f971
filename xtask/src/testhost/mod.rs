//! `cargo xtask testhost`: real Debian 12 servers booted locally with systemd-nspawn, to
//! deploy to in tests, benchmarks and the demo.
//!
//! Each machine is a bookworm system with systemd as PID 1, sshd and sudo, on a copy-on-write
//! overlay of a cached image that looks like a fresh LXC container; the `db` role adds a
//! PostgreSQL layer listening on the machine's own address. Layout on the host:
//!
//! ```text
//! /var/lib/innercontext-testhost/
//!   images/base/        debootstrapped rootfs (systemd, sshd, sudo, curl, python3; no app software)
//!   images/base.done    stamp with the image format version
//!   images/db/          overlay layer over base: PostgreSQL with the app's database and user
//!   images/db.done
//!   images/build.log    output of the last build
//!   key/id_ed25519      throwaway key authorized for root on every machine (0600, + .pub)
//!   machines/NAME/      info (role, subnet), pid (systemd-nspawn), log (console),
//!                       upper/ work/ (the disk: the overlay's upper layer) root/ (the
//!                       overlay, mounted only in the machine's own mount namespace, so it
//!                       vanishes with it), ssh_config, known_hosts, up.pid (while booting),
//!                       stopped (shut down with the disk kept, and how),
//!                       proxy.pid proxy.port proxy.log delay (the latency proxy)
//!   lock/               short-lived lock around subnet allocation and NAT changes
//!   ip_forward.orig     the host's net.ipv4.ip_forward before the first machine came up
//!   forwarding/NAME     machine NAME holds forwarding (removed by its down)
//! ```
//!
//! Machine with subnet N: `10.213.N.2/24` on `host0` inside, `10.213.N.1/24` on `ve-NAME` on
//! the host. cgroups: `/sys/fs/cgroup/{unified,systemd}/innercontext-testhost/NAME`. NAT:
//! nftables table `inet innercontext_testhost` with one rule per machine (tagged
//! `machine NAME`) masquerading what leaves its subnet for outside 10.213.0.0/16, and a hold on
//! forwarding per machine (`forwarding/NAME`); the table is removed and ip_forward restored when
//! the last machine goes down.

pub mod balancer;
mod boot;
mod image;
mod inspect;
mod layout;
mod lifecycle;
mod machine;
mod net;
mod proxy;
mod render;
mod sys;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::Shell;

use crate::flags::{self, Role, Testhost};
use crate::{quote, ui};

pub use layout::{CGROUP_DIR, DB_NAME, DB_PASSWORD, NFT_TABLE, STATE_DIR, SUBNET, XTASK_BIN_ENV};
pub use machine::{db_info, DbInfo, Machine, Use};

/// Install the host packages, make the throwaway key and debootstrap the images, unless cached.
pub fn build(sh: &Shell, rebuild: bool) -> Result<()> {
    require_root()?;
    image::build(sh, rebuild)
}

/// Whether the images are built and current (nothing to build before a machine boots).
pub fn image_ready() -> bool {
    image::require(Role::Db).is_ok()
}

/// Boot machine `name` on a new disk. A running, healthy machine is returned as is; a stale
/// one (a test run that died) or a stopped one is removed and built afresh.
pub fn up(sh: &Shell, name: &str, role: Role) -> Result<Machine> {
    require_root()?;
    check_name(name)?;
    lifecycle::up(sh, name, role)
}

/// Boot stopped machine `name` from its kept disk (same address, host keys, known_hosts) and
/// wait until it is up as `up` does. A running, healthy machine is returned as is.
pub fn start(sh: &Shell, name: &str) -> Result<Machine> {
    require_root()?;
    check_name(name)?;
    lifecycle::start(sh, name)
}

/// Reboot running machine `name` cleanly (`systemctl reboot` inside: units are stopped) and
/// boot it again from the same disk, waiting until it is up as `up` does.
pub fn reboot(sh: &Shell, name: &str) -> Result<Machine> {
    require_root()?;
    check_name(name)?;
    lifecycle::reboot(sh, name)
}

/// Shut running machine `name` down and keep its disk, stopped: `systemctl poweroff` inside,
/// or with `hard` a power cut (every process killed at once, no shutdown). Idempotent.
pub fn poweroff(sh: &Shell, name: &str, hard: bool) -> Result<()> {
    require_root()?;
    check_name(name)?;
    lifecycle::poweroff(sh, name, hard)
}

/// Shut machine `name` down and remove every trace of it (also of a stale or stopped one,
/// its disk included). Idempotent.
pub fn down(sh: &Shell, name: &str) -> Result<()> {
    require_root()?;
    check_name(name)?;
    lifecycle::down(sh, name)
}

/// Take every machine down, and whatever stale machine left behind.
pub fn down_all(sh: &Shell) -> Result<()> {
    require_root()?;
    lifecycle::down_all(sh)
}

/// A running machine.
pub fn machine(name: &str) -> Result<Machine> {
    check_name(name)?;
    machine::running(name)?.with_context(|| machine::not_running(name))
}

/// Every process of machine `name` on the host (in its cgroups, systemd-nspawn included).
pub fn processes(name: &str) -> Result<Vec<u32>> {
    check_name(name)?;
    Ok(machine::processes(name))
}

/// Every running machine, by name.
pub fn list() -> Result<Vec<Machine>> {
    machine::list_running()
}

/// Put a proxy adding `millis` ms each way in front of the machine's sshd and point its
/// ssh_config there (`HostKeyAlias` keeps checking the real host key); 0 removes it.
pub fn delay(sh: &Shell, name: &str, millis: u32) -> Result<()> {
    require_root()?;
    let m = machine(name)?;
    proxy::set_delay(sh, &m, millis)
}

/// One ssh_config naming every machine of `apps` (it includes each machine's own, so it
/// follows a delay set later): `ssh -F FILE innercontext@NAME` for any of them.
pub fn fleet_ssh_config(apps: &[Machine]) -> String {
    let configs: Vec<&Utf8Path> = apps.iter().map(|m| m.ssh_config.as_path()).collect();
    render::fleet_ssh_config(&configs)
}

/// The delay currently in front of a machine's sshd, in ms (None: direct).
pub fn current_delay(name: &str) -> Option<u32> {
    proxy::current_delay(name)
}

/// Run `argv` inside the machine (in all its namespaces, as root, without ssh) and return its
/// stdout; fails with its stderr if it exits non-zero.
pub fn exec(_sh: &Shell, name: &str, argv: &[String]) -> Result<String> {
    require_root()?;
    machine::exec(name, argv)
}

/// Anything machines leave behind that no running machine accounts for: mounts under the
/// state directory, cgroup directories, `ve-*` interfaces, the nftables table and changed
/// ip_forward (once no machine runs), systemd-nspawn and proxy processes, machine directories,
/// nspawn's runtime directories. Empty after `down` of every machine.
pub fn leftovers() -> Result<Vec<String>> {
    Ok(inspect::leftovers()?.into_iter().map(|l| l.what).collect())
}

/// What machines `names` left behind: each one's mounts, cgroups, veth, NAT rule, hold on
/// forwarding, processes and directories, told apart from other machines that still run.
/// Empty after `down` of each of them, whatever else is up.
pub fn leftovers_of(names: &[&str]) -> Result<Vec<String>> {
    leftovers_matching(|m| names.contains(&m))
}

/// What machines whose name satisfies `belongs` left behind (see [`leftovers_of`]).
pub fn leftovers_matching(belongs: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    Ok(inspect::leftovers()?
        .into_iter()
        .filter(|l| l.machine.as_deref().is_some_and(&belongs))
        .map(|l| l.what)
        .collect())
}

/// Machines whose NAT rule is in the table right now.
pub fn nat_rules() -> Result<Vec<String>> {
    let mut v: Vec<String> = net::machine_rules(&Shell::new()?)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Whether the table holds a rule for the whole subnet without a machine's tag: an xtask from
/// before per-machine rules (another checkout) replaced the table, and with it the tagged rules.
pub fn nat_replaced_by_older_xtask() -> Result<bool> {
    Ok(net::untagged_rules(&Shell::new()?)? > 0)
}

/// Machines that hold forwarding right now.
pub fn forwarding_holds() -> Vec<String> {
    net::forwarding_holds()
}

/// Every machine with a directory whose name starts with `prefix`, and how it is used.
pub fn machines_named(prefix: &str) -> Vec<(String, Use)> {
    machine::uses()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .collect()
}

/// Run one `cargo xtask testhost` command.
pub fn run(cmd: Testhost, sh: &Shell) -> Result<()> {
    if let Testhost::Proxy {
        listen,
        to,
        millis,
        port_file,
    } = &cmd
    {
        return proxy::serve(listen, to, *millis, Utf8Path::new(port_file));
    }
    require_root()?;
    match cmd {
        Testhost::Build { rebuild } => build(sh, rebuild),
        Testhost::Up { name, role } => {
            let start = std::time::Instant::now();
            let m = up(sh, &name, role)?;
            print!("{}", describe(&m, start.elapsed()));
            Ok(())
        }
        Testhost::Start { name } => {
            ui::step(&format!("start {name} from its disk"), || start(sh, &name))?;
            Ok(())
        }
        Testhost::Reboot { name } => {
            ui::step(&format!("reboot {name}"), || reboot(sh, &name))?;
            Ok(())
        }
        Testhost::Poweroff { name, hard } => {
            let what = if hard {
                format!("poweroff --hard {name} (a power cut)")
            } else {
                format!("poweroff {name}")
            };
            ui::step(&what, || poweroff(sh, &name, hard))
        }
        Testhost::Down { name: Some(name) } => down(sh, &name),
        Testhost::Down { name: None } => down_all(sh),
        Testhost::Status => {
            print!("{}", inspect::status_table()?);
            Ok(())
        }
        Testhost::Ssh { name, command } => {
            let m = machine(&name)?;
            // Like ssh itself: the words are joined and the remote shell parses them, so
            // `testhost ssh app 'systemctl is-active nginx || journalctl -u nginx'` works.
            let mut args = m.ssh_args(None, &[]);
            if !command.is_empty() {
                args.push("--".into());
                args.push(command.join(" "));
            }
            let status = duct::cmd("ssh", args)
                .unchecked()
                .run()
                .context("running ssh (is openssh-client installed?)")?
                .status;
            if !status.success() {
                bail!("ssh to {name} exited with {status}");
            }
            Ok(())
        }
        Testhost::Exec { name, command } => {
            let status = machine::exec_expr(&name, &command)?
                .unchecked()
                .run()
                .with_context(|| format!("running nsenter for machine {name}"))?
                .status;
            if !status.success() {
                bail!("'{}' in {name} exited with {status}", quote::join(&command));
            }
            Ok(())
        }
        Testhost::Delay { name, millis } => {
            delay(sh, &name, millis)?;
            let m = machine(&name)?;
            if millis == 0 {
                println!(
                    "{name}: no delay; ssh -F {} {name} goes straight to {}",
                    m.ssh_config, m.ip
                );
            } else {
                println!(
                    "{name}: +{millis} ms each way; ssh -F {} {name} goes through the proxy",
                    m.ssh_config
                );
            }
            Ok(())
        }
        Testhost::Proxy { .. } => unreachable!("handled above"),
    }
}

/// What `up` prints: how to reach the machine.
fn describe(m: &Machine, took: Duration) -> String {
    let mut s = format!(
        "machine {name} (role {role}) is up in {took}\n\
         \x20 ssh:          ssh -F {cfg} {name}\n\
         \x20 address:      {ip} (host side {host_ip})\n\
         \x20 user:         root (or any user you authorize: ssh -F {cfg} USER@{name})\n\
         \x20 key:          {key} (public: {public})\n\
         \x20 ssh_config:   {cfg}\n\
         \x20 known_hosts:  {kh} (strict host-key checking)\n",
        name = m.name,
        role = m.role.name(),
        took = crate::ui::secs(took),
        cfg = m.ssh_config,
        ip = m.ip,
        host_ip = m.host_ip,
        key = m.key,
        public = m.public_key(),
        kh = m.known_hosts,
    );
    if m.role == Role::Db {
        let db = db_info(m);
        s.push_str(&format!(
            "  PostgreSQL:   {}:{} database {} user {}\n  DATABASE_URL={}\n",
            db.host,
            db.port,
            db.database,
            db.user,
            db.url()
        ));
    }
    s
}

fn check_name(name: &str) -> Result<()> {
    flags::validate_machine_name(name).map_err(|e| anyhow::anyhow!("{e}"))
}

fn require_root() -> Result<()> {
    if !cfg!(target_os = "linux") || !sys::is_root() {
        bail!(
            "cargo xtask testhost needs root on Linux (systemd-nspawn, overlay mounts, veth, nftables): run it as root, e.g. 'sudo -E cargo xtask testhost ...'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::layout::{host_ip, ip, key_path, machine_dir, veth};
    use super::*;

    fn sample() -> Machine {
        Machine {
            name: "app".into(),
            role: Role::App,
            ip: ip(3),
            host_ip: host_ip(3),
            ssh_config: machine_dir("app").join("ssh_config"),
            key: key_path(),
            known_hosts: machine_dir("app").join("known_hosts"),
        }
    }

    #[test]
    fn addresses_follow_the_subnet() {
        let m = sample();
        assert_eq!(
            (m.ip.as_str(), m.host_ip.as_str()),
            ("10.213.3.2", "10.213.3.1")
        );
        assert_eq!(veth("app"), "ve-app");
        assert_eq!(
            m.public_key(),
            "/var/lib/innercontext-testhost/key/id_ed25519.pub"
        );
    }

    #[test]
    fn ssh_args_quote_the_remote_command() {
        let m = sample();
        assert_eq!(
            m.ssh_args(Some("innercontext"), &["echo".into(), "a b".into()]),
            vec![
                "-F",
                "/var/lib/innercontext-testhost/machines/app/ssh_config",
                "-oKexAlgorithms=curve25519-sha256",
                "innercontext@app",
                "--",
                "echo 'a b'"
            ]
        );
        assert_eq!(m.ssh_args(None, &[]).len(), 4);
    }

    #[test]
    fn database_url_matches_the_deployment_guide() {
        let mut m = sample();
        m.role = Role::Db;
        let db = db_info(&m);
        assert_eq!(
            db.url(),
            format!("postgresql+psycopg://innercontext:{DB_PASSWORD}@10.213.3.2/innercontext")
        );
        // No character that would need escaping in the URL or the env file.
        assert!(DB_PASSWORD
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(describe(&m, Duration::from_secs(2)).contains("DATABASE_URL=postgresql+psycopg://"));
    }
}
