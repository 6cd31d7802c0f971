//! The host side of the network: each machine's veth, and the NAT that lets the machines reach
//! the package registries (ip_forward plus one nftables table), set up with the first machine
//! and removed with the last. Callers hold the state lock around [`ensure_nat`] and
//! [`remove_nat`].

use std::time::Duration;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;
use xshell::{cmd, Shell};

use super::{render, state, sys, veth, NFT_TABLE, SUBNET};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn ip_forward_orig() -> Utf8PathBuf {
    state().join("ip_forward.orig")
}

/// Turn on forwarding (remembering the host's setting) and install the NAT table.
pub fn ensure_nat(sh: &Shell) -> Result<()> {
    let current = fs_err::read_to_string(IP_FORWARD)?.trim().to_string();
    if !ip_forward_orig().exists() {
        sys::write_atomic(&ip_forward_orig(), &format!("{current}\n"), 0o644)?;
    }
    if current != "1" {
        fs_err::write(IP_FORWARD, "1\n")?;
    }
    let ruleset = render::nft_ruleset(NFT_TABLE, SUBNET);
    cmd!(sh, "nft -f -")
        .stdin(ruleset)
        .quiet()
        .run()
        .context("installing the NAT table for the test machines (nft -f -)")?;
    Ok(())
}

/// Remove the NAT table and give ip_forward back its old value.
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
    if sys::wait_for(Duration::from_secs(5), || !veth_exists(name)) {
        return Ok(());
    }
    let dev = veth(name);
    cmd!(sh, "ip link delete {dev}")
        .quiet()
        .run()
        .with_context(|| format!("deleting the stale interface {dev}"))?;
    Ok(())
}
