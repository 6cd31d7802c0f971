//! What is on the host: `testhost status`, and whatever machines left behind.
//!
//! A running or booting machine owns everything of its own; a stopped one owns only what it
//! keeps while off (its directory with the disk, its NAT rule and hold on forwarding, its
//! delay proxy: the link in front of it); anything else is a leftover.

use anyhow::Result;
use camino::Utf8Path;
use xshell::Shell;

use super::layout::{ip, machine_dir, machines_dir, state, CGROUP_DIR, NFT_TABLE};
use super::machine::Use;
use super::machine::{self, machine_names};
use super::{net, proxy};

/// `testhost status`: every machine directory, running, stopped or stale.
pub fn status_table() -> Result<String> {
    let names = machine_names();
    if names.is_empty() {
        return Ok("no machines (start one with 'cargo xtask testhost up NAME')\n".into());
    }
    let mut s = format!(
        "{:<13} {:<6} {:<8} {:<13} {:<8} {}\n",
        "NAME", "ROLE", "STATE", "ADDRESS", "DELAY", "SSH"
    );
    let mut seen = Vec::new();
    for name in names {
        let (role, addr) = match machine::info(&name) {
            Some((role, subnet)) => (role.name(), ip(subnet)),
            None => ("?", "-".to_string()),
        };
        let state = match machine::use_of(&name) {
            Some(Use::Running) => "running",
            Some(Use::Booting) => "booting",
            Some(Use::Stopped) => "stopped",
            Some(Use::Stale) | None => "stale",
        };
        seen.push(state);
        let delay = proxy::current_delay(&name).map_or("-".to_string(), |d| format!("{d}ms"));
        let ssh = format!("ssh -F {} {name}", machine_dir(&name).join("ssh_config"));
        s.push_str(&format!(
            "{name:<13} {role:<6} {state:<8} {addr:<13} {delay:<8} {ssh}\n"
        ));
    }
    if seen.contains(&"stopped") {
        s.push_str("stopped: shut down with its disk kept; 'start NAME' boots it, 'up NAME' builds it afresh, 'down NAME' removes it\n");
    }
    if seen.contains(&"stale") {
        s.push_str("stale: left by a run that died; 'up NAME' or 'down NAME' cleans it up\n");
    }
    Ok(s)
}

/// systemd-nspawn and proxy processes of ours that no machine owns: nspawn (and its launcher)
/// of a machine not in `live`, a proxy of one not in `kept`.
pub fn stray_processes(live: &[String], kept: &[String]) -> Vec<(u32, String)> {
    let machines = format!("{}/", machines_dir());
    let owned_by = |names: &[String], cmd: &str| {
        names
            .iter()
            .any(|n| cmd.contains(&format!("{}/", machine_dir(n))))
    };
    super::sys::processes_mentioning(&machines)
        .into_iter()
        .filter(|(_, cmd)| {
            if cmd.contains(" testhost proxy ") {
                !owned_by(kept, cmd)
            } else if cmd.starts_with("systemd-nspawn ") || cmd.contains("unshare --mount") {
                !owned_by(live, cmd)
            } else {
                false
            }
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
    let uses = machine::uses();
    let named = |f: fn(Use) -> bool| -> Vec<String> {
        uses.iter()
            .filter(|(_, u)| f(*u))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let live = named(|u| matches!(u, Use::Running | Use::Booting));
    let kept = named(|u| matches!(u, Use::Running | Use::Booting | Use::Stopped));
    let is_live = |n: &str| live.iter().any(|l| l == n);
    let is_kept = |n: &str| kept.iter().any(|l| l == n);
    let mut out = Vec::new();
    let mut add = |machine: Option<&str>, what: String| {
        out.push(Leftover {
            machine: machine.map(str::to_string),
            what,
        })
    };
    let machines = machines_dir();
    for mount in super::sys::mounts_under(&state()) {
        let owner = Utf8Path::new(&mount)
            .strip_prefix(&machines)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_str().to_string());
        if owner.as_deref().is_none_or(|n| !is_live(n)) {
            add(owner.as_deref(), format!("mount {mount}"));
        }
    }
    for h in super::sys::cgroup_hierarchies() {
        let parent = h.join(CGROUP_DIR);
        if let Ok(d) = parent.read_dir_utf8() {
            for e in d.flatten() {
                if e.path().is_dir() && !is_live(e.file_name()) {
                    add(Some(e.file_name()), format!("cgroup {}", e.path()));
                }
            }
        }
        if parent.exists() && kept.is_empty() {
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
        if !is_kept(&name) {
            add(
                Some(&name),
                format!("nftables rule of machine {name} (inet {NFT_TABLE} handle {handle})"),
            );
        }
    }
    for name in net::forwarding_holds() {
        if !is_kept(&name) {
            add(Some(&name), format!("hold on forwarding of machine {name}"));
        }
    }
    // The shared parts, once no machine is left at all.
    if kept.is_empty() {
        if net::nat_table_exists(&sh) {
            add(None, format!("nftables table inet {NFT_TABLE}"));
        }
        if let Some(orig) = net::ip_forward_changed() {
            add(None, format!("net.ipv4.ip_forward changed (was {orig})"));
        }
    }
    for (pid, cmd) in stray_processes(&live, &kept) {
        let short: String = cmd.chars().take(100).collect();
        let owner = machine_names()
            .into_iter()
            .find(|n| cmd.contains(&format!("{}/", machine_dir(n))));
        add(owner.as_deref(), format!("process {pid}: {short}"));
    }
    for name in machine_names() {
        if !is_kept(&name) {
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
