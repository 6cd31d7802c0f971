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

/// That an env file given to setup-server is in the env-file format ([`crate::envfile`]): one
/// line naming the file and the line that is not, before anything is sent.
pub fn check_env_file(flag: &str, path: &Utf8Path) -> Result<()> {
    let text = fs_err::read(path).with_context(|| format!("reading {flag} {path}"))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{flag} {path} is not UTF-8 text: nothing was changed"))?;
    crate::envfile::parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "{flag} {path} is not in the env-file format: {e}; nothing was changed (see docs/env-files.md)"
        )
    })?;
    Ok(())
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
    /// `--deploy-key`: authorized_keys lines, the set to authorize.
    pub deploy_keys: Vec<String>,
    /// `--add-deploy-key`: lines added to the recorded set.
    pub add_keys: Vec<String>,
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
        let keys = |flag: &str, paths: &[String]| -> Result<Vec<String>> {
            let mut lines = Vec::new();
            for path in paths {
                let text = fs_err::read_to_string(path)
                    .with_context(|| format!("reading the deploy key {flag} {path}"))?;
                let line = public_key_line(&text)
                    .with_context(|| format!("{flag} {path} is not a public key"))?;
                lines.push(line);
            }
            Ok(lines)
        };
        let deploy_keys = keys("--deploy-key", &cmd.deploy_keys)?;
        let add_keys = keys("--add-deploy-key", &cmd.add_deploy_keys)?;
        let env = |flag: &str, path: &Option<String>| -> Result<Option<EnvFile>> {
            let Some(path) = path else { return Ok(None) };
            let path = Utf8PathBuf::from(path);
            if !path.is_file() {
                bail!("{flag} {path}: no such file");
            }
            check_env_file(flag, &path)?;
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
            deploy_keys,
            add_keys,
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

/// What the key step does with the keys given: the set authorized is the `--deploy-key` ones
/// (plus any `--add-deploy-key`), the recorded set plus the `--add-deploy-key` ones, or the
/// recorded set as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlan {
    Set(Vec<String>),
    Add(Vec<String>),
    Keep,
}

impl KeyPlan {
    pub fn of(inputs: &Inputs) -> KeyPlan {
        // One line per key (its blob): a later line of the same key wins.
        let mut lines: Vec<String> = Vec::new();
        for line in inputs.deploy_keys.iter().chain(&inputs.add_keys) {
            lines.retain(|l| key_blob(l) != key_blob(line));
            lines.push(line.clone());
        }
        match (inputs.deploy_keys.is_empty(), inputs.add_keys.is_empty()) {
            (false, _) => KeyPlan::Set(lines),
            (true, false) => KeyPlan::Add(lines),
            (true, true) => KeyPlan::Keep,
        }
    }

    /// The script's words: the mode and the lines.
    pub fn args(&self) -> [String; 2] {
        match self {
            KeyPlan::Set(l) => ["set".into(), l.join("\n")],
            KeyPlan::Add(l) => ["add".into(), l.join("\n")],
            KeyPlan::Keep => ["keep".into(), String::new()],
        }
    }
}

/// The key types setup-server accepts.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The options an authorized_keys line may start with (sshd(8), AUTHORIZED_KEYS FILE FORMAT).
const KEY_OPTIONS: &[&str] = &[
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-touch-required",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "restrict",
    "tunnel",
    "user-rc",
    "verify-required",
    "x11-forwarding",
];

/// The base64 blob of a key line (the field after its type), or "".
pub fn key_blob(line: &str) -> &str {
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields
        .windows(2)
        .find(|w| KEY_TYPES.contains(&w[0]))
        .map_or("", |w| w[1])
}

/// Check the options before a key (`from="10.0.0.0/8",restrict,pty`): comma separated, each a
/// known name, alone or with a double-quoted value (no quote or control character inside).
/// Returns the rest of the line after them.
fn key_options(line: &str) -> Result<&str> {
    let mut rest = line;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if !KEY_OPTIONS.contains(&name.to_ascii_lowercase().as_str()) {
            bail!(
                "'{name}' is not an option of an authorized_keys line (known: {})",
                KEY_OPTIONS.join(", ")
            );
        }
        rest = &rest[end..];
        if let Some(value) = rest.strip_prefix("=\"") {
            let Some(close) = value.find('"') else {
                bail!("the value of the key option '{name}' has no closing quote");
            };
            if value[..close].contains('\\') {
                bail!("the value of the key option '{name}' holds a backslash: setup-server takes values without escapes");
            }
            rest = &value[close + 1..];
        }
        match rest.chars().next() {
            Some(',') => rest = &rest[1..],
            Some(' ' | '\t') => return Ok(rest.trim_start()),
            _ => bail!("after the key option '{name}' comes a comma, a space before the key, or =\"VALUE\""),
        }
    }
}

/// Check a public key file's text and return its one line (`[OPTIONS] TYPE BASE64 [COMMENT]`),
/// options kept as given.
pub fn public_key_line(text: &str) -> Result<String> {
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
    if line.chars().any(char::is_control) {
        bail!("the key line contains control characters");
    }
    let first = line.split_whitespace().next().unwrap_or("");
    let key = if KEY_TYPES.contains(&first) {
        line
    } else {
        key_options(line)?
    };
    let mut fields = key.split_whitespace();
    let kind = fields.next().unwrap_or("");
    let blob = fields.next().unwrap_or("");
    let blob_ok = blob.len() >= 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !KEY_TYPES.contains(&kind) || !blob_ok {
        bail!(
            "expected '[OPTIONS] TYPE BASE64 [COMMENT]' with TYPE one of {}",
            KEY_TYPES.join(", ")
        );
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
    fn env_files_are_checked_against_the_format() {
        let dir = std::env::temp_dir().join(format!("envcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = Utf8PathBuf::try_from(dir.join(".env")).unwrap();
        std::fs::write(&p, "A=1\nA=2\n").unwrap();
        let e = check_env_file("--backend-env", &p).unwrap_err().to_string();
        assert!(
            e.contains("--backend-env") && e.contains("line 2: A is set twice"),
            "{e}"
        );
        std::fs::write(&p, "A=1\r\n").unwrap();
        assert!(check_env_file("--backend-env", &p).is_err());
        std::fs::write(&p, "# ok\nA=1\n").unwrap();
        check_env_file("--backend-env", &p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
        // Options before the key are kept as given; their syntax is checked.
        let blob = "AAAAC3NzaC1lZDI1NTE5AAAAIBc2rS0r8";
        for good in [
            format!("from=\"10.0.0.0/8,192.0.2.7\" ssh-ed25519 {blob} ci"),
            format!("restrict,pty ssh-ed25519 {blob}"),
            format!("from=\"10.1.2.3\",restrict,pty,command=\"a b\"  ssh-ed25519 {blob} ci"),
        ] {
            assert_eq!(public_key_line(&good).unwrap(), good);
            assert_eq!(key_blob(&good), blob);
        }
        let e = |l: &str| public_key_line(l).unwrap_err().to_string();
        assert!(
            e(&format!("form=\"10.0.0.1\" ssh-ed25519 {blob}")).contains("'form' is not an option")
        );
        assert!(e(&format!("from=\"10.0.0.1 ssh-ed25519 {blob}")).contains("no closing quote"));
        assert!(e(&format!("from=10.0.0.1 ssh-ed25519 {blob}")).contains("comes a comma"));
        assert!(e(&format!("from=\"a\\\"b\" ssh-ed25519 {blob}")).contains("backslash"));
        assert!(e("restrict ssh-ed25519 short").contains("expected '[OPTIONS] TYPE"));
    }

    #[test]
    fn keys_given_make_the_plan() {
        let k = |b: &str, c: &str| format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5{b} {c}");
        let mut i = crate::setup_server::test_support::inputs();
        assert_eq!(KeyPlan::of(&i), KeyPlan::Keep);
        assert_eq!(KeyPlan::of(&i).args(), ["keep".to_string(), String::new()]);
        i.add_keys = vec![k("AAA", "new")];
        assert_eq!(KeyPlan::of(&i), KeyPlan::Add(vec![k("AAA", "new")]));
        // --deploy-key sets; an --add-deploy-key with it joins the set; one line per key.
        i.deploy_keys = vec![k("BBB", "laptop"), k("AAA", "old")];
        let plan = KeyPlan::of(&i);
        assert_eq!(
            plan,
            KeyPlan::Set(vec![k("BBB", "laptop"), k("AAA", "new")])
        );
        assert_eq!(
            plan.args()[1],
            format!("{}\n{}", k("BBB", "laptop"), k("AAA", "new"))
        );
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
