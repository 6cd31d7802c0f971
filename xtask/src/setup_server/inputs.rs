//! What setup-server takes from the developer's machine: the deploy key, the env files (their
//! sha256 only), the sudoers source, the units rendered for the deploy root, the nginx site.
//! Read and checked before the first connection.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::contract::{self, layout::NGINX_SITE_SOURCE, DEFAULT_ROOT};
use crate::flags::SetupServer;

/// The services a deploy restarts, as unit file names (the units installed are every
/// [`is_unit_file`] of `systemd/`, their sockets included).
pub fn services() -> Vec<String> {
    contract::UNITS
        .iter()
        .map(|u| format!("{}.service", u.name))
        .collect()
}

/// The sudoers drop-in's source in the repository.
pub const SUDOERS_SOURCE: &str = "systemd/innercontext-deploy.sudoers";

/// Test hook: a different sudoers source file (the e2e tests feed one that visudo rejects).
pub const SUDOERS_SOURCE_ENV: &str = "INNERCONTEXT_SUDOERS_SOURCE";

/// A local env file: its path and sha256 (its contents stay in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub path: Utf8PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    Backend,
    Frontend,
}

impl EnvKind {
    /// Its path below the deploy root.
    pub fn rel(self) -> &'static str {
        match self {
            EnvKind::Backend => contract::layout::ENV_BACKEND,
            EnvKind::Frontend => contract::layout::ENV_FRONTEND,
        }
    }
    pub fn remote_path(self, root: &str) -> String {
        format!("{root}/{}", self.rel())
    }
    pub(super) fn label(self) -> &'static str {
        match self {
            EnvKind::Backend => "backend env",
            EnvKind::Frontend => "frontend env",
        }
    }
    pub(super) fn flag(self) -> &'static str {
        match self {
            EnvKind::Backend => "--backend-env",
            EnvKind::Frontend => "--frontend-env",
        }
    }
}

/// `--tls-cert`/`--tls-key`: the certificate (public: it travels as an argument) and the key's
/// path and sha256 (its contents travel only on ssh's stdin, and only when the server's differs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: String,
    pub key_path: Utf8PathBuf,
    pub key_sha256: String,
    pub redirect: bool,
}

/// Check that `cert` is PEM certificates only and `key` one PEM private key only (the
/// server checks with openssl that they parse and belong together).
pub fn check_tls_files(cert: &str, key: &str) -> Result<()> {
    if cert.contains("PRIVATE KEY-----") {
        bail!("--tls-cert holds a private key: pass the certificate (and its chain) alone");
    }
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        bail!("--tls-cert is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)");
    }
    let begins = key.matches("-----BEGIN ").count();
    if !key.contains("PRIVATE KEY-----") || begins != 1 {
        bail!("--tls-key must hold exactly one PEM private key (-----BEGIN ... PRIVATE KEY-----) and nothing else");
    }
    if key.contains("ENCRYPTED") {
        bail!("--tls-key is encrypted: nginx needs it without a passphrase (openssl pkey -in KEY -out KEY.plain)");
    }
    Ok(())
}

/// Everything setup-server takes from the developer's machine, read and checked before the
/// first connection.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// One public key line.
    pub deploy_key: Option<String>,
    pub backend_env: Option<EnvFile>,
    pub frontend_env: Option<EnvFile>,
    pub sudoers_path: Utf8PathBuf,
    pub sudoers: String,
    /// (unit name, text rendered for the deploy root)
    pub units: Vec<(String, String)>,
    pub nginx: String,
    pub tls: Option<Tls>,
}

impl Inputs {
    pub(super) fn load(sh: &Shell, cmd: &SetupServer, root: &str) -> Result<Inputs> {
        let deploy_key = match &cmd.deploy_key {
            None => None,
            Some(path) => {
                let text = fs_err::read_to_string(path)
                    .with_context(|| format!("reading the deploy key --deploy-key {path}"))?;
                Some(
                    public_key_line(&text)
                        .with_context(|| format!("--deploy-key {path} is not a public key"))?,
                )
            }
        };
        let env = |flag: &str, path: &Option<String>| -> Result<Option<EnvFile>> {
            let Some(path) = path else { return Ok(None) };
            let path = Utf8PathBuf::from(path);
            if !path.is_file() {
                bail!("{flag} {path}: no such file");
            }
            let sha256 = sha256(sh, &path)?;
            Ok(Some(EnvFile { path, sha256 }))
        };
        let backend_env = env("--backend-env", &cmd.backend_env)?;
        let frontend_env = env("--frontend-env", &cmd.frontend_env)?;
        let sudoers_path = match std::env::var(SUDOERS_SOURCE_ENV) {
            Ok(p) if !p.is_empty() => Utf8PathBuf::from(p),
            _ => sh.current_dir().join(SUDOERS_SOURCE).try_into()?,
        };
        let sudoers = fs_err::read_to_string(&sudoers_path)?;
        let mut names = Vec::new();
        for entry in sh
            .read_dir("systemd")
            .context("listing systemd/ of the repository")?
        {
            if let Some(name) = entry.file_name().and_then(|n| n.to_str()) {
                if is_unit_file(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        if let Some(missing) = services()
            .into_iter()
            .find(|s| !names.iter().any(|n| n == s))
        {
            bail!("systemd/{missing} is missing from the repository");
        }
        let mut units = Vec::new();
        for name in names {
            let text = sh
                .read_file(format!("systemd/{name}"))
                .with_context(|| format!("reading systemd/{name} of the repository"))?;
            units.push((name, render_unit(&text, root)));
        }
        // The site serves files from the deploy root: another DEPLOY_ROOT is substituted, as in
        // the units.
        let nginx = render_unit(
            &sh.read_file(NGINX_SITE_SOURCE)
                .with_context(|| format!("reading {NGINX_SITE_SOURCE} of the repository"))?,
            root,
        );
        let tls = match (&cmd.tls_cert, &cmd.tls_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = fs_err::read_to_string(cert_path)
                    .with_context(|| format!("reading the certificate --tls-cert {cert_path}"))?;
                let key = fs_err::read_to_string(key_path)
                    .with_context(|| format!("reading the private key --tls-key {key_path}"))?;
                check_tls_files(&cert, &key)?;
                let key_path = Utf8PathBuf::from(key_path);
                let key_sha256 = sha256(sh, &key_path)?;
                Some(Tls {
                    cert,
                    key_path,
                    key_sha256,
                    redirect: cmd.tls_redirect,
                })
            }
            _ => None,
        };
        Ok(Inputs {
            deploy_key,
            backend_env,
            frontend_env,
            sudoers_path,
            sudoers,
            units,
            nginx,
            tls,
        })
    }
}

/// A unit file setup-server installs: `UNIT_PREFIX*.service|socket|timer`.
pub fn is_unit_file(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".service")
        .or_else(|| name.strip_suffix(".socket"))
        .or_else(|| name.strip_suffix(".timer"))
    else {
        return false;
    };
    stem.starts_with(contract::UNIT_PREFIX)
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The repository's units run from /opt/innercontext; another DEPLOY_ROOT is substituted.
pub fn render_unit(text: &str, root: &str) -> String {
    if root == DEFAULT_ROOT {
        text.to_string()
    } else {
        text.replace(&format!("{DEFAULT_ROOT}/"), &format!("{root}/"))
    }
}

/// Check a public key file's text and return its one line (`type base64 [comment]`).
pub fn public_key_line(text: &str) -> Result<String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if text.contains("PRIVATE KEY") {
        bail!("it holds a private key: pass the .pub file");
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let [line] = lines[..] else {
        bail!("expected exactly one key line, found {}", lines.len());
    };
    let mut fields = line.split_whitespace();
    let kind = fields.next().unwrap_or("");
    let blob = fields.next().unwrap_or("");
    let blob_ok = blob.len() >= 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !TYPES.contains(&kind) || !blob_ok {
        bail!(
            "expected 'TYPE BASE64 [COMMENT]' with TYPE one of {}",
            TYPES.join(", ")
        );
    }
    if line.chars().any(char::is_control) {
        bail!("the key line contains control characters");
    }
    Ok(line.to_string())
}

pub(super) fn sha256(sh: &Shell, path: &Utf8Path) -> Result<String> {
    let out = cmd!(sh, "sha256sum -- {path}")
        .quiet()
        .read()
        .with_context(|| format!("computing the sha256 of {path}"))?;
    let sum = out.split_whitespace().next().unwrap_or("").to_string();
    if sum.len() != 64 {
        bail!("sha256sum printed no checksum for {path}");
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_locally() {
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc2rS0r8 alice@laptop\n";
        assert_eq!(public_key_line(k).unwrap(), k.trim());
        assert!(
            public_key_line("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n")
                .unwrap_err()
                .to_string()
                .contains("private key")
        );
        assert!(public_key_line("").is_err());
        assert!(public_key_line(&format!("{k}{k}")).is_err());
        assert!(public_key_line("ssh-ed25519 not_base64!").is_err());
        assert!(public_key_line("command=\"x\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI").is_err());
    }

    #[test]
    fn unit_files_are_the_innercontext_ones() {
        for good in [
            "innercontext.service",
            "innercontext-node.socket",
            "innercontext-x.timer",
        ] {
            assert!(is_unit_file(good), "{good}");
        }
        for bad in [
            "innercontext-deploy.sudoers",
            "nginx.service",
            "innercontext.service~",
            "innercontext .service",
            "innercontext.service.d",
        ] {
            assert!(!is_unit_file(bad), "{bad}");
        }
    }

    /// Each service names its journal lines as the contract says (`Unit::log_id`).
    #[test]
    fn each_service_logs_under_the_contracts_identifier() {
        let dir = crate::project_root().join("systemd");
        for u in crate::contract::UNITS {
            let text = fs_err::read_to_string(dir.join(format!("{}.service", u.name))).unwrap();
            let ids: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("SyslogIdentifier="))
                .collect();
            assert_eq!(ids, [u.log_id], "{}.service", u.name);
        }
    }

    #[test]
    fn units_follow_the_deploy_root() {
        let unit = "WorkingDirectory=/opt/innercontext/current/backend\nExecStart=/opt/innercontext/current/backend/.venv/bin/python\n";
        assert_eq!(render_unit(unit, "/opt/innercontext"), unit);
        assert_eq!(
            render_unit(unit, "/srv/ic"),
            "WorkingDirectory=/srv/ic/current/backend\nExecStart=/srv/ic/current/backend/.venv/bin/python\n"
        );
    }

    #[test]
    fn tls_files_are_checked_locally() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
        check_tls_files(cert, key).unwrap();
        check_tls_files(
            cert,
            "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = |c: &str, k: &str| check_tls_files(c, k).unwrap_err().to_string();
        assert!(e(key, key).contains("--tls-cert holds a private key"));
        assert!(e("hello", key).contains("not a PEM certificate"));
        assert!(e(cert, cert).contains("exactly one PEM private key"));
        assert!(e(cert, &format!("{key}{cert}")).contains("exactly one"));
        assert!(e(
            cert,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
        .contains("encrypted"));
    }
}
