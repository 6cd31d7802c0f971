//! The test host's names on this machine: its state directory and the paths in it, the
//! subnet and each machine's addresses, the nftables table, the cgroup directory, the `db`
//! role's database. Every other room of `testhost/` takes them from here.

use camino::Utf8PathBuf;

/// Everything the test host keeps on this machine.
pub const STATE_DIR: &str = "/var/lib/innercontext-testhost";
/// The private subnet of all machines; machine N uses 10.213.N.0/24.
pub const SUBNET: &str = "10.213.0.0/16";
pub(super) const SUBNET_PREFIX: &str = "10.213";
/// nftables table (family inet) with the NAT rule.
pub const NFT_TABLE: &str = "innercontext_testhost";
/// Name of the cgroup directory holding one directory per machine.
pub const CGROUP_DIR: &str = "innercontext-testhost";

/// The database the `db` role serves, and its user (same name).
pub const DB_NAME: &str = "innercontext";
/// Password of the database user: a throwaway for machines on a private subnet.
pub const DB_PASSWORD: &str = "testhost-db-4b1c9e";

/// Overrides where the delay proxy's binary (this xtask) is found: tests run from another
/// executable and set it to `env!("CARGO_BIN_EXE_xtask")`.
pub const XTASK_BIN_ENV: &str = "INNERCONTEXT_XTASK_BIN";

/// Paths of the state directory.
pub(super) fn state() -> Utf8PathBuf {
    Utf8PathBuf::from(STATE_DIR)
}

pub(super) fn machines_dir() -> Utf8PathBuf {
    state().join("machines")
}

pub(super) fn machine_dir(name: &str) -> Utf8PathBuf {
    machines_dir().join(name)
}

pub(super) fn key_path() -> Utf8PathBuf {
    state().join("key/id_ed25519")
}

pub(super) fn lock_dir() -> Utf8PathBuf {
    state().join("lock")
}

pub(super) fn ip(subnet: u8) -> String {
    format!("{SUBNET_PREFIX}.{subnet}.2")
}

pub(super) fn host_ip(subnet: u8) -> String {
    format!("{SUBNET_PREFIX}.{subnet}.1")
}

pub(super) fn veth(name: &str) -> String {
    format!("ve-{name}")
}
