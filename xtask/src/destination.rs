//! Destinations: named sets of servers and their settings, committed as `deploy/<name>.env`
//! and chosen with `cargo xtask --to NAME COMMAND`, `DEPLOY_TO=NAME`, or `deploy/default`
//! (a file holding one name). Without any of them everything is as it was: the settings come
//! from the environment alone.
//!
//! A destination file is an env file ([`crate::envfile`]) holding only the settings of
//! [`SETTINGS`], never a secret (the file is committed; secrets live in the server's env
//! files). Its settings become the command's environment, except where the environment already
//! sets one: the environment wins, and the first line of the run says which variables did.
//! One app per host: a destination that shares a host with another destination is refused
//! (the units, ports and nginx site are per host). Every line the run prints then starts with
//! `[NAME] `, and the server's deploy.log lines say `destination=NAME`.
//!
//! [`choose_name`], [`check_settings`], [`looks_secret`] and [`overlap`] are pure; [`load`]
//! reads the files, [`apply`] sets the environment.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::envfile::{self, Entry};

/// Where destination files live, relative to the checkout.
pub const DIR: &str = "deploy";
/// The file that names the destination used when none is given.
pub const DEFAULT_FILE: &str = "default";
/// The variable that chooses a destination (`--to` wins over it).
pub const ENV: &str = "DEPLOY_TO";

/// The settings a destination file may hold (the documented `DEPLOY_*` variables that describe
/// servers: not the per-run ones like `DEPLOY_ALLOW_DIRTY`, and not `DEPLOY_TO` itself).
pub const SETTINGS: &[&str] = &[
    "DEPLOY_SERVER",
    "DEPLOY_ROOT",
    "DEPLOY_ADMIN",
    "DEPLOY_SSH_CONFIG",
    "DEPLOY_KEEP",
    "DEPLOY_HEALTH_TIMEOUT",
    "DEPLOY_HEALTH_STABLE_MS",
    "DEPLOY_DB_SNAPSHOT",
    "DEPLOY_JOURNAL",
    "DEPLOY_HOOK_TIMEOUT",
];

static CHOSEN: OnceLock<String> = OnceLock::new();

/// The destination this run acts on, if one was chosen.
pub fn name() -> Option<&'static str> {
    CHOSEN.get().map(String::as_str)
}

/// How the destination was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Default,
}

impl Source {
    fn said(self) -> String {
        match self {
            Source::Flag => "--to".into(),
            Source::Env => ENV.into(),
            Source::Default => format!("{DIR}/{DEFAULT_FILE}"),
        }
    }
}

/// A destination as its file says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub source: Source,
    /// `deploy/NAME.env`, relative to the checkout.
    pub file: Utf8PathBuf,
    pub settings: Vec<Entry>,
}

/// Whether `name` can name a destination: 1-32 lowercase letters, digits and `-`, starting
/// with a letter (it becomes a file name, a line prefix and a deploy.log word).
pub fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(ok)
}

/// Which destination, from `--to`, `DEPLOY_TO` and `deploy/default`'s text, in that order;
/// None when none of them says one (empty `DEPLOY_TO` says none).
pub fn choose_name(
    flag: Option<&str>,
    env: Option<&str>,
    default_file: Option<&str>,
) -> Result<Option<(String, Source)>> {
    let default = default_file.map(|text| {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
            .to_string()
    });
    let (name, source) = match (flag, env.filter(|e| !e.is_empty()), default) {
        (Some(f), _, _) => (f.to_string(), Source::Flag),
        (None, Some(e), _) => (e.to_string(), Source::Env),
        (None, None, Some(d)) => (d, Source::Default),
        (None, None, None) => return Ok(None),
    };
    if !valid_name(&name) {
        bail!(
            "{} names the destination '{}', which is not a destination name: 1-32 lowercase \
             letters, digits and -, starting with a letter",
            source.said(),
            name.escape_debug()
        );
    }
    Ok(Some((name, source)))
}

/// Why `value` looks like a secret, if it does: a password in a URL or `user:password@host`,
/// a private key, or a long token (32 or more letters and digits without a separator).
pub fn looks_secret(value: &str) -> Option<&'static str> {
    let userinfo = value
        .split(['/', ','])
        .filter_map(|part| part.split_once('@').map(|(u, _)| u))
        .any(|user| user.contains(':'));
    let token = value
        .split(|c: char| !(c.is_ascii_alphanumeric() || "+=_".contains(c)))
        .any(|w| w.len() >= 32);
    if value.contains("PRIVATE KEY") {
        Some("a private key")
    } else if userinfo {
        Some("a password (user:password@)")
    } else if token {
        Some("a token (32 or more letters and digits in a row)")
    } else {
        None
    }
}

/// A destination file's entries are settings of [`SETTINGS`] and hold no secret.
pub fn check_settings(file: &Utf8Path, entries: &[Entry]) -> Result<()> {
    for e in entries {
        if !SETTINGS.contains(&e.key.as_str()) {
            bail!(
                "{file} line {}: {} is not a destination setting (a destination file holds \
                 only {}; secrets go in the server's env files)",
                e.line,
                e.key,
                SETTINGS.join(", ")
            );
        }
        if let Some(what) = looks_secret(&e.value) {
            bail!(
                "{file} line {}: {} looks like it holds {what}: destination files are \
                 committed, so they hold no secrets (keep them in the server's env files or \
                 your ssh config)",
                e.line,
                e.key
            );
        }
    }
    Ok(())
}

/// The hosts a destination's `DEPLOY_SERVER` names (lower case, without users), given the
/// value in effect (the default server when unset).
pub fn hosts_of(server: Option<&str>) -> Result<Vec<String>> {
    let server = server
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(crate::config::DEFAULT_SERVER);
    let hosts = crate::config::parse_hosts(server)?;
    Ok(hosts
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect())
}

/// The first host `mine` shares with another destination's hosts: (that destination, host).
pub fn overlap(mine: &[String], others: &[(String, Vec<String>)]) -> Option<(String, String)> {
    others.iter().find_map(|(name, hosts)| {
        mine.iter()
            .find(|h| hosts.contains(h))
            .map(|h| (name.clone(), h.clone()))
    })
}

/// The names of the destination files in `dir`, sorted.
fn names_in(dir: &Utf8Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if !dir.is_dir() {
        return Ok(names);
    }
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".env")) {
            if valid_name(name) && entry.path().is_file() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Read and check one destination file.
fn read(root: &Utf8Path, name: &str) -> Result<Vec<Entry>> {
    let file = Utf8PathBuf::from(DIR).join(format!("{name}.env"));
    let text = fs_err::read_to_string(root.join(&file))
        .with_context(|| format!("reading the destination file {file}"))?;
    let entries = envfile::parse(&text).map_err(|e| anyhow::anyhow!("{file} {e}"))?;
    check_settings(&file, &entries)?;
    Ok(entries)
}

/// The destination this run is asked for, read and checked, with `env` the environment's
/// lookup: `--to` (`flag`), else `DEPLOY_TO`, else `deploy/default`; None when none says one.
/// A name without its file lists the destinations there are; a destination sharing a host
/// with another is refused.
pub fn load(
    root: &Utf8Path,
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Destination>> {
    let dir = root.join(DIR);
    let default_path = dir.join(DEFAULT_FILE);
    let default = match default_path.is_file() {
        true => Some(fs_err::read_to_string(&default_path)?),
        false => None,
    };
    let Some((name, source)) = choose_name(flag, env(ENV).as_deref(), default.as_deref())? else {
        return Ok(None);
    };
    let names = names_in(&dir)?;
    if !names.contains(&name) {
        let there = match names.is_empty() {
            true => format!("there is no {DIR}/*.env in this checkout"),
            false => format!("the destinations are: {}", names.join(", ")),
        };
        bail!(
            "no destination '{name}' ({} names it, but there is no {DIR}/{name}.env): {there}",
            source.said()
        );
    }
    let settings = read(root, &name)?;
    let file_server = |entries: &[Entry]| {
        entries
            .iter()
            .find(|e| e.key == "DEPLOY_SERVER")
            .map(|e| e.value.clone())
    };
    let server = env("DEPLOY_SERVER")
        .filter(|s| !s.trim().is_empty())
        .or_else(|| file_server(&settings));
    let mine = hosts_of(server.as_deref())
        .with_context(|| format!("destination {name}: DEPLOY_SERVER"))?;
    let mut others = Vec::new();
    for other in names.iter().filter(|n| **n != name) {
        let entries = read(root, other)?;
        let hosts = hosts_of(file_server(&entries).as_deref())
            .with_context(|| format!("destination {other}: DEPLOY_SERVER"))?;
        others.push((other.clone(), hosts));
    }
    if let Some((other, host)) = overlap(&mine, &others) {
        bail!(
            "destinations {name} and {other} both deploy to {host}: one app per host (its \
             units, ports and nginx site are the host's), so give each destination its own \
             servers in {DIR}/{name}.env and {DIR}/{other}.env"
        );
    }
    Ok(Some(Destination {
        file: Utf8PathBuf::from(DIR).join(format!("{name}.env")),
        name,
        source,
        settings: anchored(root, settings),
    }))
}

/// The settings with a relative `DEPLOY_SSH_CONFIG` taken from the checkout (`root`), where the
/// file that names it is, not from wherever the command was started.
pub fn anchored(root: &Utf8Path, mut settings: Vec<Entry>) -> Vec<Entry> {
    for e in settings.iter_mut() {
        if e.key == "DEPLOY_SSH_CONFIG" && !e.value.is_empty() && !e.value.starts_with('/') {
            e.value = root.join(&e.value).to_string();
        }
    }
    settings
}

/// Which of [`SETTINGS`] the environment sets (not empty), given its lookup.
pub fn from_environment(env: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .copied()
        .filter(|k| env(k).is_some_and(|v| !v.is_empty()))
        .collect()
}

/// The run's first line: which destination, from which file, and which settings the
/// environment gave (over the file's, where it has them).
pub fn first_line(d: &Destination, from_env: &[&str]) -> String {
    let by = match d.source {
        Source::Flag => String::new(),
        s => format!(", chosen by {}", s.said()),
    };
    let mut line = format!("destination {} ({}{by})", d.name, d.file);
    if !from_env.is_empty() {
        let named: Vec<String> = from_env
            .iter()
            .map(|k| match d.settings.iter().any(|e| e.key == *k) {
                true => format!("{k} (over the file's)"),
                false => k.to_string(),
            })
            .collect();
        line.push_str(&format!("; from the environment: {}", named.join(", ")));
    }
    line
}

/// Make `d` this run's destination: its settings become the environment's where the
/// environment has none, every output line gets its prefix, and the first line is printed.
/// Called once, before the command runs and before any thread starts.
pub fn apply(d: &Destination) {
    let from_env = from_environment(|k| std::env::var(k).ok());
    crate::say!("{}", first_line(d, &from_env));
    for e in &d.settings {
        if !from_env.contains(&e.key.as_str()) {
            std::env::set_var(&e.key, &e.value);
        }
    }
    let _ = CHOSEN.set(d.name.clone());
    crate::ui::set_prefix(format!("[{}] ", d.name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entries(text: &str) -> Vec<Entry> {
        envfile::parse(text).unwrap()
    }

    #[test]
    fn the_flag_wins_then_the_variable_then_the_default() {
        let c = |f, e, d| choose_name(f, e, d).unwrap();
        assert_eq!(
            c(Some("staging"), Some("prod"), Some("x")),
            Some(("staging".into(), Source::Flag))
        );
        assert_eq!(
            c(None, Some("prod"), Some("x")),
            Some(("prod".into(), Source::Env))
        );
        let default = Some("# the usual one\n\nproduction\n");
        assert_eq!(
            c(None, Some(""), default),
            Some(("production".into(), Source::Default))
        );
        assert_eq!(c(None, None, None), None);
        let bad = choose_name(Some("../etc"), None, None)
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("--to names the destination '../etc', which is not"));
        let empty = choose_name(None, None, Some("\n")).unwrap_err().to_string();
        assert!(empty.starts_with("deploy/default names the destination ''"));
    }

    #[test]
    fn only_settings_and_no_secrets() {
        let f = Utf8Path::new("deploy/staging.env");
        let ok = entries(
            "# staging\nDEPLOY_SERVER=innercontext@stg1,innercontext@stg2\nDEPLOY_KEEP=3\n",
        );
        check_settings(f, &ok).unwrap();
        let e = check_settings(f, &entries("DATABASE_URL=x\n")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("deploy/staging.env line 1: DATABASE_URL is not a destination setting"));
        let e = check_settings(f, &entries("\nDEPLOY_SERVER=deploy:hunter2@stg1\n")).unwrap_err();
        assert!(e.to_string().starts_with(
            "deploy/staging.env line 2: DEPLOY_SERVER looks like it holds a password"
        ));
        assert!(looks_secret("ghp_0123456789abcdefghijABCDEFGHIJ0123").is_some());
        assert!(looks_secret("-----BEGIN OPENSSH PRIVATE KEY-----").is_some());
        assert_eq!(
            looks_secret("innercontext@app-1.example.com,root@[fd00::2]"),
            None
        );
        assert_eq!(looks_secret("/opt/innercontext"), None);
        assert_eq!(looks_secret("root@[fd00::2]"), None);
    }

    #[test]
    fn a_shared_host_is_found_whoever_logs_in() {
        let mine = hosts_of(Some("innercontext@App1,innercontext@app2")).unwrap();
        assert_eq!(mine, ["app1", "app2"]);
        let others = vec![
            ("qa".to_string(), hosts_of(Some("qa1")).unwrap()),
            (
                "production".to_string(),
                hosts_of(Some("ops@app2")).unwrap(),
            ),
        ];
        assert_eq!(
            overlap(&mine, &others),
            Some(("production".into(), "app2".into()))
        );
        assert_eq!(overlap(&mine, &others[..1]), None);
        assert_eq!(hosts_of(None).unwrap(), [crate::config::DEFAULT_SERVER]);
    }

    #[test]
    fn the_first_line_names_what_the_environment_gave() {
        let d = Destination {
            name: "staging".into(),
            source: Source::Env,
            file: "deploy/staging.env".into(),
            settings: entries("DEPLOY_SERVER=a\nDEPLOY_KEEP=3\n"),
        };
        let env: BTreeMap<&str, &str> = [
            ("DEPLOY_KEEP", "9"),
            ("DEPLOY_SSH_CONFIG", "/x"),
            ("DEPLOY_ROOT", ""),
        ]
        .into();
        let from_env = from_environment(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(from_env, ["DEPLOY_SSH_CONFIG", "DEPLOY_KEEP"]);
        assert_eq!(
            first_line(&d, &from_env),
            "destination staging (deploy/staging.env, chosen by DEPLOY_TO); from the \
             environment: DEPLOY_SSH_CONFIG, DEPLOY_KEEP (over the file's)"
        );
    }

    #[test]
    fn a_relative_ssh_config_is_the_checkouts() {
        let e = entries("DEPLOY_SSH_CONFIG=deploy/ssh_config\nDEPLOY_ROOT=/srv/ic\n");
        let got = anchored(Utf8Path::new("/home/a/ic"), e);
        assert_eq!(got[0].value, "/home/a/ic/deploy/ssh_config");
        assert_eq!(got[1].value, "/srv/ic");
        let abs = anchored(
            Utf8Path::new("/x"),
            entries("DEPLOY_SSH_CONFIG=/etc/ssh/c\n"),
        );
        assert_eq!(abs[0].value, "/etc/ssh/c");
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("staging") && valid_name("eu-west-2"));
        for bad in ["", "Staging", "-x", "2nd", "a b", "a.b", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
