//! Deploy configuration from the environment, validated before anything touches the server.

use anyhow::{bail, Result};
use camino::Utf8PathBuf;

pub const DEFAULT_SERVER: &str = "innercontext";
pub const DEFAULT_ROOT: &str = crate::contract::DEFAULT_ROOT;
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 60;
pub const DEFAULT_KEEP: usize = 5;
/// How long every unit must have been up, and every probe answering, to count as healthy.
pub const DEFAULT_HEALTH_STABLE_MS: u64 = 500;

/// A host's part in a fleet: the primary migrates the database and runs the worker; the
/// others run the API and the web server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRole {
    Primary,
    Secondary,
}

impl HostRole {
    pub fn name(self) -> &'static str {
        match self {
            HostRole::Primary => "primary",
            HostRole::Secondary => "secondary",
        }
    }

    /// The role named `word` (as setup-server records it on the host).
    pub fn parse(word: &str) -> Option<HostRole> {
        [HostRole::Primary, HostRole::Secondary]
            .into_iter()
            .find(|r| r.name() == word)
    }
}

/// One app host of `DEPLOY_SERVER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// ssh destination, `[user@]host` (an IPv6 literal without brackets).
    pub dest: String,
    /// What DEPLOY_SERVER says this host is: its mark, or its place in a fleet (without a
    /// `#primary` mark, the first host not marked `#secondary` is the primary).
    pub role: HostRole,
    /// Whether DEPLOY_SERVER says it: false for a lone host without a mark, whose role is the
    /// one recorded on it (its `role` is then `Primary`, what setup-server records on a host
    /// that has no record yet).
    pub stated: bool,
}

impl Host {
    /// The host part, for messages.
    pub fn name(&self) -> &str {
        host_of(&self.dest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Every app host, in the order given (the order locks are taken and hosts activated).
    pub hosts: Vec<Host>,
    /// The primary's ssh destination, `[user@]host` (a lone host marked `#secondary`: that
    /// host's).
    pub server: String,
    /// Absolute path of the deploy root on the server.
    pub root: String,
    pub allow_dirty: bool,
    /// ssh config file (`ssh -F`); None uses the user's own.
    pub ssh_config: Option<Utf8PathBuf>,
    pub health_timeout: u64,
    pub health_stable_ms: u64,
    pub keep: usize,
    /// Seconds a hook in deploy/hooks/ may run (`DEPLOY_HOOK_TIMEOUT`).
    pub hook_timeout: u64,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Build from any lookup function (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let hosts = parse_hosts(
            &get("DEPLOY_SERVER")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        )?;
        let server = hosts
            .iter()
            .find(|h| h.role == HostRole::Primary)
            .unwrap_or(&hosts[0])
            .dest
            .clone();
        let root = get("DEPLOY_ROOT").unwrap_or_else(|| DEFAULT_ROOT.to_string());
        validate_root(&root)?;
        let allow_dirty = match get("DEPLOY_ALLOW_DIRTY").as_deref() {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => bail!("DEPLOY_ALLOW_DIRTY must be 1 or 0, not '{other}'"),
        };
        // Read where events are printed (ui::journal_shown); checked here, before anything runs.
        if let Some(other) = get("DEPLOY_JOURNAL").filter(|v| !["", "0", "1"].contains(&v.as_str()))
        {
            bail!("DEPLOY_JOURNAL must be 1 (a failing unit's journal lines in CI too) or 0 (never), not '{other}'");
        }
        let ssh_config = match get("DEPLOY_SSH_CONFIG").filter(|s| !s.is_empty()) {
            None => None,
            Some(path) => {
                let path = Utf8PathBuf::from(path);
                if !path.is_file() {
                    bail!("DEPLOY_SSH_CONFIG points to '{path}', which is not a file");
                }
                Some(path)
            }
        };
        let health_timeout = number(
            &get,
            "DEPLOY_HEALTH_TIMEOUT",
            DEFAULT_HEALTH_TIMEOUT,
            1,
            3600,
        )?;
        let health_stable_ms = number(
            &get,
            "DEPLOY_HEALTH_STABLE_MS",
            DEFAULT_HEALTH_STABLE_MS,
            0,
            60_000,
        )?;
        let keep = number(&get, "DEPLOY_KEEP", DEFAULT_KEEP as u64, 1, 100)? as usize;
        let hook_timeout = number(
            &get,
            crate::hooks::TIMEOUT_VAR,
            crate::hooks::DEFAULT_TIMEOUT,
            1,
            3600,
        )?;
        Ok(Config {
            hosts,
            server,
            root,
            allow_dirty,
            ssh_config,
            health_timeout,
            health_stable_ms,
            keep,
            hook_timeout,
        })
    }

    /// The host part of the destination (`innercontext` for `deploy@innercontext`).
    pub fn host(&self) -> &str {
        host_of(&self.server)
    }
}

/// `DEPLOY_SERVER`: one or more ssh destinations, comma separated, each optionally marked
/// `#primary` or `#secondary`. Without a `#primary` mark, the first host not marked `#secondary`
/// is the primary; a fleet with every host marked `#secondary` is refused (nothing would migrate
/// the database or run the worker). A lone host without a mark states no role (the one recorded
/// on it counts); a lone host marked `#secondary` is one secondary, alone.
pub fn parse_hosts(value: &str) -> Result<Vec<Host>> {
    let mut hosts: Vec<Host> = Vec::new();
    let mut marks: Vec<Option<HostRole>> = Vec::new();
    let mut marked_primary = 0;
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            bail!("DEPLOY_SERVER '{value}' has an empty entry: separate hosts with single commas");
        }
        let (dest, role) = match item.split_once('#') {
            None => (item, None),
            Some((d, "primary")) => (d, Some(HostRole::Primary)),
            Some((d, "secondary")) => (d, Some(HostRole::Secondary)),
            Some((_, other)) => bail!(
                "DEPLOY_SERVER entry '{item}': unknown role '{other}' (use #primary or #secondary)"
            ),
        };
        let dest = normalize_destination("DEPLOY_SERVER", dest)?;
        if hosts.iter().any(|h| h.dest == dest) {
            bail!("DEPLOY_SERVER names {dest} twice");
        }
        if role == Some(HostRole::Primary) {
            marked_primary += 1;
        }
        marks.push(role);
        hosts.push(Host {
            dest,
            role: role.unwrap_or(HostRole::Secondary),
            stated: true,
        });
    }
    if marked_primary > 1 {
        bail!("DEPLOY_SERVER marks {marked_primary} hosts #primary: exactly one migrates the database and runs the worker");
    }
    if marked_primary == 0 {
        if let Some(i) = marks.iter().position(Option::is_none) {
            hosts[i].role = HostRole::Primary;
            hosts[i].stated = hosts.len() > 1;
        } else if hosts.len() > 1 {
            bail!("DEPLOY_SERVER '{value}' marks every host #secondary: a fleet needs exactly one primary (it migrates the database and runs the worker): mark one host #primary");
        }
    }
    Ok(hosts)
}

/// A destination as ssh wants it: an IPv6 literal may come in brackets (`user@[fd00::2]`, as
/// rsync needs it); ssh gets it without them.
pub fn normalize_destination(var: &str, dest: &str) -> Result<String> {
    let bare = match dest.rsplit_once('@') {
        Some((u, h)) if h.starts_with('[') && h.ends_with(']') => {
            format!("{u}@{}", &h[1..h.len() - 1])
        }
        None if dest.starts_with('[') && dest.ends_with(']') => dest[1..dest.len() - 1].to_string(),
        _ => dest.to_string(),
    };
    validate_destination(var, &bare)?;
    Ok(bare)
}

pub fn host_of(dest: &str) -> &str {
    dest.rsplit_once('@').map_or(dest, |(_, h)| h)
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64> {
    match get(key).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => bail!("{key} must be a whole number from {min} to {max}, not '{v}'"),
        },
    }
}

/// An ssh destination `[user@]host`: no option injection, nothing a shell would interpret.
pub fn validate_destination(var: &str, dest: &str) -> Result<()> {
    let (user, host) = match dest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, dest),
    };
    let ipv6 = host.contains(':');
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && if ipv6 {
            host.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        };
    let user_ok = user.is_none_or(|u| {
        !u.is_empty()
            && !u.starts_with('-')
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    });
    if !host_ok || !user_ok {
        bail!("{var} '{dest}' is not a valid ssh destination: use [user@]host with letters, digits, '.', '-', '_', or an IPv6 address as user@[fd00::2] (or a Host alias from your ssh config)");
    }
    Ok(())
}

/// The deploy root: absolute, normalised, made of characters no shell treats specially.
pub fn validate_root(root: &str) -> Result<()> {
    let chars_ok = root
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    let parts_ok = root
        .split('/')
        .skip(1)
        .all(|p| !p.is_empty() && p != "." && p != "..");
    if root == "/" {
        bail!("DEPLOY_ROOT '/' is the filesystem's root, which setup-server would give to the app user: use a directory of the app's own like {DEFAULT_ROOT}");
    }
    if !root.starts_with('/') || !chars_ok || !parts_ok {
        bail!(
            "DEPLOY_ROOT '{}' must be an absolute path like {DEFAULT_ROOT} made of letters, digits, '/', '.', '-', '_' (no spaces, quotes, '..' or shell syntax)",
            root.escape_debug()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.server, "innercontext");
        assert_eq!(c.root, "/opt/innercontext");
        assert!(!c.allow_dirty);
        assert_eq!(c.keep, 5);
        assert_eq!(c.ssh_config, None);
    }

    #[test]
    fn hostile_roots_are_rejected() {
        for bad in [
            "opt/innercontext",
            "/",
            "/opt/inner context",
            "/opt/'x'",
            "/opt/\"x\"",
            "/opt/$(touch /tmp/pwned)",
            "/opt/x;rm -rf /",
            "/opt/x\ny",
            "/opt/../etc",
            "/opt//x",
            "/opt/x/",
            "/opt/`id`",
            "",
        ] {
            let e = cfg(&[("DEPLOY_ROOT", bad)]).unwrap_err().to_string();
            assert!(e.starts_with("DEPLOY_ROOT"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{bad:?} error spans lines: {e}");
        }
        let e = cfg(&[("DEPLOY_ROOT", "/")]).unwrap_err().to_string();
        assert!(e.contains("filesystem's root"), "{e}");
        assert!(cfg(&[("DEPLOY_ROOT", "/srv/app-1/v_2.0")]).is_ok());
    }

    #[test]
    fn destinations_are_validated() {
        for bad in [
            "-oProxyCommand=x",
            "a b",
            "u@",
            "@h",
            "h;id",
            "-l@h",
            "u@-h",
            "$(id)",
        ] {
            assert!(cfg(&[("DEPLOY_SERVER", bad)]).is_err(), "{bad}");
        }
        let c = cfg(&[("DEPLOY_SERVER", "innercontext@10.213.1.2")]).unwrap();
        assert_eq!(c.host(), "10.213.1.2");
        assert_eq!(c.hosts.len(), 1);
        assert_eq!(c.hosts[0].role, HostRole::Primary);
    }

    #[test]
    fn ipv6_literals_with_or_without_brackets() {
        let c = cfg(&[("DEPLOY_SERVER", "innercontext@[fd00::2]")]).unwrap();
        assert_eq!(c.server, "innercontext@fd00::2");
        let c = cfg(&[("DEPLOY_SERVER", "innercontext@fd00::2")]).unwrap();
        assert_eq!(c.server, "innercontext@fd00::2");
        let e = cfg(&[("DEPLOY_SERVER", "innercontext@[fd00::zz]")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv6") && e.contains("user@[fd00::2]"), "{e}");
        assert!(cfg(&[("DEPLOY_SERVER", "u@[fd00::2")]).is_err());
    }

    #[test]
    fn several_hosts_one_primary() {
        let c = cfg(&[("DEPLOY_SERVER", "app1, app2,app3")]).unwrap();
        let roles: Vec<(&str, HostRole)> =
            c.hosts.iter().map(|h| (h.dest.as_str(), h.role)).collect();
        assert_eq!(
            roles,
            vec![
                ("app1", HostRole::Primary),
                ("app2", HostRole::Secondary),
                ("app3", HostRole::Secondary)
            ]
        );
        assert_eq!(c.server, "app1");
        let c = cfg(&[("DEPLOY_SERVER", "app1,ops@app2#primary")]).unwrap();
        assert_eq!(c.server, "ops@app2");
        assert_eq!(c.hosts[0].role, HostRole::Secondary);
        // Without a #primary mark: the first host not marked #secondary.
        let c = cfg(&[("DEPLOY_SERVER", "app1#secondary,app2,app3")]).unwrap();
        assert_eq!(c.server, "app2");
        assert!(c.hosts.iter().all(|h| h.stated));
        assert_eq!(c.hosts[1].role, HostRole::Primary);
        for (bad, why) in [
            ("app1,app1", "twice"),
            ("app1#primary,app2#primary", "exactly one"),
            // Nothing would migrate the database or run the worker.
            (
                "app2#secondary,app3#secondary",
                "marks every host #secondary: a fleet needs exactly one primary",
            ),
            (
                "app1#secondary,app2#secondary,app3#secondary",
                "mark one host #primary",
            ),
            ("app1,,app2", "empty entry"),
            ("app1#leader", "unknown role"),
        ] {
            let e = cfg(&[("DEPLOY_SERVER", bad)]).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: one line: {e}");
        }
    }

    #[test]
    fn a_lone_host_states_a_role_only_with_a_mark() {
        let c = cfg(&[("DEPLOY_SERVER", "app2")]).unwrap();
        assert!(!c.hosts[0].stated, "its record decides");
        let c = cfg(&[("DEPLOY_SERVER", "app2#secondary")]).unwrap();
        assert_eq!(
            (c.hosts[0].role, c.hosts[0].stated),
            (HostRole::Secondary, true)
        );
        assert_eq!(c.server, "app2");
        let c = cfg(&[("DEPLOY_SERVER", "app2#primary")]).unwrap();
        assert_eq!(
            (c.hosts[0].role, c.hosts[0].stated),
            (HostRole::Primary, true)
        );
        // In a fleet every host has a stated role.
        let c = cfg(&[("DEPLOY_SERVER", "app1,app2")]).unwrap();
        assert!(c.hosts.iter().all(|h| h.stated));
        assert_eq!(HostRole::parse("secondary"), Some(HostRole::Secondary));
        assert_eq!(HostRole::parse("leader"), None);
    }

    #[test]
    fn flags_and_numbers() {
        assert!(cfg(&[("DEPLOY_ALLOW_DIRTY", "1")]).unwrap().allow_dirty);
        assert!(cfg(&[("DEPLOY_ALLOW_DIRTY", "yes")]).is_err());
        assert!(cfg(&[("DEPLOY_JOURNAL", "1")]).is_ok());
        assert!(cfg(&[("DEPLOY_JOURNAL", "yes")]).is_err());
        assert!(cfg(&[("DEPLOY_KEEP", "0")]).is_err());
        assert_eq!(
            cfg(&[("DEPLOY_HEALTH_TIMEOUT", "5")])
                .unwrap()
                .health_timeout,
            5
        );
        assert!(cfg(&[("DEPLOY_SSH_CONFIG", "/nonexistent/cfg")]).is_err());
        assert_eq!(cfg(&[]).unwrap().hook_timeout, 60);
        assert_eq!(
            cfg(&[("DEPLOY_HOOK_TIMEOUT", "2")]).unwrap().hook_timeout,
            2
        );
        assert_eq!(
            cfg(&[("DEPLOY_HOOK_TIMEOUT", "1m")])
                .unwrap_err()
                .to_string(),
            "DEPLOY_HOOK_TIMEOUT must be a whole number from 1 to 3600, not '1m'"
        );
        assert!(cfg(&[("DEPLOY_HOOK_TIMEOUT", "0")]).is_err());
    }
}
