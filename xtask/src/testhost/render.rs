//! Every text the test host writes or runs, as pure functions of their inputs.
//!
//! Files put into a machine (network, known_hosts, ssh_config), the nftables ruleset, the apt
//! sources, and the shell scripts that boot a machine or build an image are rendered here and
//! checked by the unit tests below; the modules that run them stay thin.

use camino::{Utf8Path, Utf8PathBuf};

use crate::quote;

/// The systemd-networkd file for the container side of the veth (`host0`).
pub fn host0_network(ip: &str, host_ip: &str) -> String {
    format!(
        "# Written by cargo xtask testhost: a static address on the private test subnet.\n\
         [Match]\n\
         Name=host0\n\
         \n\
         [Network]\n\
         Address={ip}/24\n\
         Gateway={host_ip}\n\
         LinkLocalAddressing=no\n\
         IPv6AcceptRA=no\n"
    )
}

/// The per-machine known_hosts: the machine's own host keys under its name and address.
/// `pubkeys` are the contents of the `ssh_host_*_key.pub` files.
pub fn known_hosts(name: &str, ip: &str, pubkeys: &[String]) -> String {
    let mut out = String::new();
    for key in pubkeys {
        // "TYPE BASE64 COMMENT": drop the comment (root@host of the machine that made it).
        let mut words = key.split_whitespace();
        if let (Some(kind), Some(blob)) = (words.next(), words.next()) {
            out.push_str(&format!("{name},{ip} {kind} {blob}\n"));
        }
    }
    out
}

/// Where ssh reaches a machine: its sshd directly, or the delay proxy in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The per-machine ssh_config. `Host NAME` goes to `endpoint` (the machine, or its delay
/// proxy); every other setting applies to both NAME and the address. `User root` is only a
/// default: `ssh -F FILE innercontext@NAME` overrides it. `HostKeyAlias NAME` makes ssh check
/// the machine's real key whichever address and port it connects to.
pub fn ssh_config(
    name: &str,
    ip: &str,
    endpoint: &Endpoint,
    key: &Utf8Path,
    known_hosts: &Utf8Path,
) -> String {
    format!(
        "# Written by cargo xtask testhost for machine {name}; rewritten by 'testhost delay'.\n\
         Host {name}\n\
         \x20   HostName {host}\n\
         \x20   Port {port}\n\
         \n\
         Host {name} {ip}\n\
         \x20   User root\n\
         \x20   IdentityFile {key}\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {known_hosts}\n\
         \x20   GlobalKnownHostsFile /dev/null\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   HostKeyAlias {name}\n\
         \x20   UpdateHostKeys no\n\
         \x20   BatchMode yes\n\
         \x20   ConnectTimeout 5\n",
        host = endpoint.host,
        port = endpoint.port,
    )
}

/// One ssh_config for a fleet: an `Include` of each machine's own (absolute paths, which the
/// test host makes from validated machine names), so a delay set later, which rewrites a
/// machine's file, is followed.
pub fn fleet_ssh_config(configs: &[&Utf8Path]) -> String {
    let mut text = String::from("# Written by cargo xtask for a fleet of test machines.\n");
    for c in configs {
        text.push_str(&format!("Include \"{c}\"\n"));
    }
    text
}

/// nginx as a load balancer on loopback `port` in front of each address's port 80: a request
/// that fails, times out or gets 502-504 goes to the next upstream; upstreams are never
/// marked down (`max_fails=0`: a host that restarts is tried again at once). Its access log:
/// `$msec $status $upstream_addr $upstream_status $request_time`.
pub fn balancer_conf(dir: &Utf8Path, port: u16, upstreams: &[&str]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|ip| format!("        server {ip}:80 max_fails=0;\n"))
        .collect();
    format!(
        "pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log;\n\
         events {{}}\n\
         http {{\n\
         \x20   log_format lb '$msec $status $upstream_addr $upstream_status $request_time';\n\
         \x20   access_log {dir}/access.log lb;\n\
         \x20   upstream apps {{\n\
         {servers}\
         \x20       keepalive 16;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://apps;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_next_upstream error timeout http_502 http_503 http_504;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// The nftables table that lets the machines reach the package registries, with the NAT rule
/// of one machine: masquerade what leaves its own subnet for outside the test subnet (traffic
/// between machines is untouched: the database sees the app machine's own address). The table
/// and its chain are declared (created if missing, left as they are otherwise); the rule is
/// added, tagged with the machine's name so it can be found, told apart and removed.
pub fn nft_add_machine(table: &str, name: &str, machine_subnet: &str, all: &str) -> String {
    format!(
        "table inet {table} {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20 }}\n\
         }}\n\
         add rule inet {table} postrouting ip saddr {machine_subnet} ip daddr != {all} masquerade comment \"{}\"\n",
        nft_tag(name)
    )
}

/// The comment that tags a machine's rules.
pub fn nft_tag(name: &str) -> String {
    format!("machine {name}")
}

/// Masquerade rules without a machine's tag in `nft -a list table …` output: the one rule for
/// the whole subnet that xtask versions before per-machine rules put there (replacing the table).
pub fn nft_untagged_rules(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.contains(" masquerade") && !l.contains("comment \"machine "))
        .count()
}

/// The machines that have rules in `nft -a list table …` output, with each rule's handle.
pub fn nft_machine_rules(listing: &str) -> Vec<(String, u64)> {
    listing
        .lines()
        .filter_map(|line| {
            let (_, after) = line.split_once("comment \"machine ")?;
            let (name, rest) = after.split_once('"')?;
            let handle = rest.split_once("# handle ")?.1.trim().parse().ok()?;
            Some((name.to_string(), handle))
        })
        .collect()
}

/// The Debian mirrors named by the host's apt sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub debian: String,
    pub security: String,
}

impl Default for Mirrors {
    fn default() -> Mirrors {
        Mirrors {
            debian: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
        }
    }
}

/// Find the Debian and security mirrors in a deb822 `.sources` file or a one-line
/// `sources.list`; what is not found keeps the default.
pub fn parse_mirrors(text: &str) -> Mirrors {
    let mut m = Mirrors::default();
    let mut found_debian = false;
    let mut found_security = false;
    for line in text.lines().map(str::trim) {
        let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().collect()
        } else if line.starts_with("deb ") {
            line.split_whitespace()
                .skip(1)
                .filter(|w| !w.starts_with('['))
                .take(1)
                .collect()
        } else {
            continue;
        };
        for uri in uris {
            let uri = uri.trim_end_matches('/');
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                continue;
            }
            if uri.ends_with("-security") {
                if !found_security {
                    m.security = uri.to_string();
                    found_security = true;
                }
            } else if uri.ends_with("/debian") && !found_debian {
                m.debian = uri.to_string();
                found_debian = true;
            }
        }
    }
    m
}

/// apt sources for the machines: the host's mirror with -updates and -security, as a fresh
/// Debian 12 server has them.
pub fn apt_sources(m: &Mirrors) -> String {
    format!(
        "Types: deb\n\
         URIs: {debian}\n\
         Suites: bookworm bookworm-updates\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
         \n\
         Types: deb\n\
         URIs: {security}\n\
         Suites: bookworm-security\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        debian = m.debian,
        security = m.security,
    )
}

/// Packages of the base image: what a fresh Debian 12 LXC container has, plus python3.
pub const IMAGE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "libnss-myhostname",
    "openssh-server",
    "sudo",
    "curl",
    "ca-certificates",
    "iproute2",
    "procps",
    "netbase",
    "python3",
];

/// The argv of debootstrap for the base image.
pub fn debootstrap_args(target: &Utf8Path, mirror: &str) -> Vec<String> {
    vec![
        "--variant=minbase".into(),
        format!("--include={}", IMAGE_PACKAGES.join(",")),
        "bookworm".into(),
        target.to_string(),
        mirror.into(),
    ]
}

/// Run inside the fresh debootstrap tree (under systemd-nspawn, not booted): trust the host's
/// CAs (copied in beforehand), enable systemd-networkd, and leave it looking like a new
/// container: no machine-id, hostname or ssh host keys of its own, empty apt lists.
pub const CUSTOMIZE_BASE: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
update-ca-certificates --fresh >/dev/null
systemctl enable systemd-networkd.service systemd-networkd.socket >/dev/null 2>&1
rm -f /etc/apt/sources.list /etc/hostname /etc/ssh/ssh_host_*
# A machine-id of its own at first boot (dbus's copy would otherwise be everyone's id).
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /var/lib/apt/lists/partial
"#;

/// Run inside the database layer (an overlay over the base image, under systemd-nspawn, not
/// booted): install PostgreSQL, listen on every address (the veth address is configured at
/// boot, after the image is built), allow password logins from the test subnet, and create the
/// app's database and user. `$1` = subnet, `$2` = database and user, `$3` = password.
pub const BUILD_DB_LAYER: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
subnet=$1 db=$2 password=$3
# Packages must not start daemons inside the build container.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get update -q
apt-get install -y -q --no-install-recommends postgresql
rm -f /usr/sbin/policy-rc.d
version=$(ls /etc/postgresql | sort -n | tail -n 1)
conf=/etc/postgresql/$version/main
echo "listen_addresses = '*'" > "$conf/conf.d/innercontext-testhost.conf"
echo "host $db $db $subnet scram-sha-256" >> "$conf/pg_hba.conf"
pg_ctlcluster "$version" main start
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v db="$db" -v pw="$password" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
SQL
pg_ctlcluster "$version" main stop
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /var/lib/apt/lists/partial
"#;

/// Run inside the primed layer (an overlay over the base image, under systemd-nspawn, not
/// booted): install the packages given as arguments (setup-server's list) with the options of
/// setup-server's `packages` step, starting no daemon, then run `$1`, setup-server's own `uv`
/// call. The services the packages bring are enabled as a fresh install leaves them, so a
/// primed machine boots like a host where an admin ran apt and an earlier setup-server got uv.
pub const BUILD_PRIMED_LAYER: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
uv_call=$1
shift
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt-get update -q
apt-get install -y -q -o Dpkg::Options::=--force-confold --no-install-recommends "$@"
rm -f /usr/sbin/policy-rc.d
eval "$uv_call"
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /var/lib/apt/lists/partial
"#;

/// Everything the boot script needs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub name: String,
    pub pid_file: Utf8PathBuf,
    /// cgroup directories the launcher joins before starting systemd-nspawn.
    pub cgroups: Vec<Utf8PathBuf>,
    /// Overlay lower layers, topmost first.
    pub lower: Vec<Utf8PathBuf>,
    pub upper: Utf8PathBuf,
    pub work: Utf8PathBuf,
    pub root: Utf8PathBuf,
}

/// The bash script that boots a machine. It runs in a private mount namespace (`unshare
/// --mount`), so the overlay vanishes with the machine even if everything is killed; it keeps
/// its PID through every `exec`, so the PID it records is systemd-nspawn's.
pub fn launch_script(l: &Launch) -> String {
    let q = |p: &Utf8Path| quote::sh(p.as_str());
    let lower = l
        .lower
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(":");
    let mut s = String::from(
        "set -eu\n\
         # Close inherited descriptors but stdio: whoever captures our caller's output must not\n\
         # wait for the container to exit.\n\
         for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ \"$fd\" -gt 2 ]; then eval \"exec $fd>&-\"; fi; done\n",
    );
    s.push_str(&format!("echo $$ > {}\n", q(&l.pid_file)));
    for cg in &l.cgroups {
        s.push_str(&format!("echo $$ > {}\n", q(&cg.join("cgroup.procs"))));
    }
    s.push_str(&format!(
        "mount -t overlay overlay -o {} {}\n",
        quote::sh(&format!(
            "lowerdir={lower},upperdir={},workdir={}",
            l.upper, l.work
        )),
        q(&l.root)
    ));
    s.push_str("exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 ");
    s.push_str(&quote::join(nspawn_boot_args(&l.name, &l.root)));
    s.push('\n');
    s
}

/// systemd-nspawn booting a machine. PID 1 of the host is not systemd: without both
/// `--register=no` and `--keep-unit` nspawn wants the system bus.
pub fn nspawn_boot_args(name: &str, root: &Utf8Path) -> Vec<String> {
    vec![
        "systemd-nspawn".into(),
        "--boot".into(),
        format!("--directory={root}"),
        format!("--machine={name}"),
        "--register=no".into(),
        "--keep-unit".into(),
        "--network-veth".into(),
        "--resolv-conf=copy-host".into(),
        "--console=read-only".into(),
        "--link-journal=no".into(),
    ]
}

/// The bash script that runs one command in an image tree under systemd-nspawn (not booted,
/// host network) for the build: in a private mount namespace, optionally on an overlay.
pub fn build_script(
    cgroups: &[Utf8PathBuf],
    overlay: Option<(&[Utf8PathBuf], &Utf8Path, &Utf8Path)>,
    root: &Utf8Path,
    command: &[String],
) -> String {
    let mut s = String::from("set -eu\n");
    for cg in cgroups {
        s.push_str(&format!(
            "echo $$ > {}\n",
            quote::sh(cg.join("cgroup.procs").as_str())
        ));
    }
    if let Some((lower, upper, work)) = overlay {
        let lower = lower
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(":");
        s.push_str(&format!(
            "mount -t overlay overlay -o {} {}\n",
            quote::sh(&format!("lowerdir={lower},upperdir={upper},workdir={work}")),
            quote::sh(root.as_str())
        ));
    }
    let mut argv: Vec<String> = vec![
        "systemd-nspawn".into(),
        "--quiet".into(),
        format!("--directory={root}"),
        "--machine=ictestbuild".into(),
        "--register=no".into(),
        "--keep-unit".into(),
        "--resolv-conf=copy-host".into(),
        "--link-journal=no".into(),
        "--pipe".into(),
        "--".into(),
    ];
    argv.extend(command.iter().cloned());
    s.push_str("exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 ");
    s.push_str(&quote::join(argv));
    s.push('\n');
    s
}

/// The bash script that starts a long-running process detached from its caller: own session,
/// no inherited descriptors but stdio, PID recorded before `exec`.
pub fn detach_script(pid_file: &Utf8Path, argv: &[String]) -> String {
    format!(
        "set -eu\n\
         for fd in /proc/$$/fd/*; do fd=${{fd##*/}}; if [ \"$fd\" -gt 2 ]; then eval \"exec $fd>&-\"; fi; done\n\
         echo $$ > {}\n\
         exec {}\n",
        quote::sh(pid_file.as_str()),
        quote::join(argv)
    )
}

#[cfg(test)]
mod tests;
