//! The host side of the network: each machine's veth, and what lets the machines reach the
//! package registries. Per machine: a NAT rule in the nftables table, tagged with the
//! machine's name, and a hold on forwarding (`forwarding/NAME`), added by `up` and removed by
//! `down`, so what one machine leaves behind can be told apart while others run. Shared: the
//! table itself and `net.ipv4.ip_forward`, set up with the first machine and given back (the
//! table removed, ip_forward restored) with the last. Callers hold the state lock around
//! [`add_machine`], [`remove_machine`] and [`remove_nat`].

use std::time::Duration;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;
use xshell::{cmd, Shell};

use super::layout::{state, veth, NFT_TABLE, SUBNET, SUBNET_PREFIX};
use super::{render, sys};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn ip_forward_orig() -> Utf8PathBuf {
    state().join("ip_forward.orig")
}

fn holds_dir() -> Utf8PathBuf {
    state().join("forwarding")
}

/// Turn on forwarding (remembering the host's setting) for machine `name`, and add its NAT
/// rule (any earlier rule of the same name is replaced).
pub fn add_machine(sh: &Shell, name: &str, subnet: u8) -> Result<()> {
    let current = fs_err::read_to_string(IP_FORWARD)?.trim().to_string();
    if !ip_forward_orig().exists() {
        sys::write_atomic(&ip_forward_orig(), &format!("{current}\n"), 0o644)?;
    }
    fs_err::create_dir_all(holds_dir())?;
    sys::write_atomic(
        &holds_dir().join(name),
        &format!("subnet={subnet}\n"),
        0o644,
    )?;
    if current != "1" {
        fs_err::write(IP_FORWARD, "1\n")?;
    }
    delete_rules(sh, name)?;
    let machine_subnet = format!("{SUBNET_PREFIX}.{subnet}.0/24");
    let rules = render::nft_add_machine(NFT_TABLE, name, &machine_subnet, SUBNET);
    cmd!(sh, "nft -f -")
        .stdin(rules)
        .quiet()
        .run()
        .with_context(|| format!("adding the NAT rule of machine {name} (nft -f -)"))?;
    Ok(())
}

/// Remove machine `name`'s NAT rule and its hold on forwarding.
pub fn remove_machine(sh: &Shell, name: &str) -> Result<()> {
    delete_rules(sh, name)?;
    let hold = holds_dir().join(name);
    if hold.exists() {
        fs_err::remove_file(hold)?;
    }
    Ok(())
}

fn delete_rules(sh: &Shell, name: &str) -> Result<()> {
    for (_, handle) in machine_rules(sh)?.into_iter().filter(|(n, _)| n == name) {
        let handle = handle.to_string();
        cmd!(
            sh,
            "nft delete rule inet {NFT_TABLE} postrouting handle {handle}"
        )
        .quiet()
        .run()
        .with_context(|| format!("removing the NAT rule of machine {name}"))?;
    }
    Ok(())
}

/// Every machine's NAT rule in the table: (machine, rule handle).
pub fn machine_rules(sh: &Shell) -> Result<Vec<(String, u64)>> {
    Ok(render::nft_machine_rules(&listing(sh)?))
}

/// Untagged masquerade rules: an older xtask replaced the table with its one rule.
pub fn untagged_rules(sh: &Shell) -> Result<usize> {
    Ok(render::nft_untagged_rules(&listing(sh)?))
}

fn listing(sh: &Shell) -> Result<String> {
    if !nat_table_exists(sh) {
        return Ok(String::new());
    }
    cmd!(sh, "nft -a list table inet {NFT_TABLE}")
        .quiet()
        .read()
        .context("listing the test host's nftables table")
}

/// Machines that hold forwarding.
pub fn forwarding_holds() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(holds_dir()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.contains(".tmp"))
        .collect();
    v.sort();
    v
}

/// Remove the NAT table and give ip_forward back its old value (no machine is left).
pub fn remove_nat(sh: &Shell) -> Result<()> {
    if nat_table_exists(sh) {
        cmd!(sh, "nft delete table inet {NFT_TABLE}")
            .quiet()
            .run()
            .context("removing the test host's nftables table")?;
    }
    if let Ok(orig) = fs_err::read_to_string(ip_forward_orig()) {
        fs_err::write(IP_FORWARD, format!("{}\n", orig.trim()))?;
        fs_err::remove_file(ip_forward_orig())?;
    }
    let _ = std::fs::remove_dir(holds_dir());
    Ok(())
}

pub fn nat_table_exists(sh: &Shell) -> bool {
    cmd!(sh, "nft list table inet {NFT_TABLE}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// ip_forward differs from what the host had before the first machine (Some(original)).
pub fn ip_forward_changed() -> Option<String> {
    fs_err::read_to_string(ip_forward_orig())
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn veth_exists(name: &str) -> bool {
    Utf8PathBuf::from(format!("/sys/class/net/{}", veth(name))).exists()
}

/// Every `ve-*` interface on the host.
pub fn veths() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("ve-"))
        .collect();
    v.sort();
    v
}

/// Give the host side of the machine's veth its address and bring it up.
pub fn configure_veth(sh: &Shell, name: &str, host_ip: &str) -> Result<()> {
    let dev = veth(name);
    let addr = format!("{host_ip}/24");
    cmd!(sh, "ip addr replace {addr} dev {dev}")
        .quiet()
        .run()
        .with_context(|| format!("giving {dev} the address {addr}"))?;
    cmd!(sh, "ip link set {dev} up")
        .quiet()
        .run()
        .with_context(|| format!("bringing {dev} up"))?;
    Ok(())
}

/// The veth goes away with the machine's network namespace; delete it if it lingers.
pub fn remove_veth(sh: &Shell, name: &str) -> Result<()> {
    if sys::settle(Duration::from_secs(5), || !veth_exists(name)) {
        return Ok(());
    }
    let dev = veth(name);
    cmd!(sh, "ip link delete {dev}")
        .quiet()
        .run()
        .with_context(|| format!("deleting the stale interface {dev}"))?;
    Ok(())
}
