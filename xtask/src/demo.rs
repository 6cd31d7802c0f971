//! `cargo xtask demo`: the whole product on local test machines, the way a newcomer tries it.
//!
//! Boots an app machine (a fresh Debian 12 host) and a db machine (PostgreSQL), provisions the
//! app machine with `setup-server`, deploys with `deploy all`, and prints the URL of the app
//! through nginx. The same binary runs each step as a child process with the environment a
//! user would set, so the demo exercises exactly the documented commands.

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use xshell::{cmd, Shell};

use crate::flags::{Demo, Role};
use crate::{testhost, tools, ui};

pub const APP: &str = "app";
pub const DB: &str = "db";

/// Test hook: the demo's machines are named `<prefix>app` and `<prefix>db` instead of `app` and
/// `db`, so the end-to-end run can try the demo without touching a user's running demo.
pub const PREFIX_ENV: &str = "INNERCONTEXT_DEMO_PREFIX";

/// The demo's app and db machine names.
pub fn machine_names() -> Result<(String, String)> {
    let prefix = std::env::var(PREFIX_ENV).unwrap_or_default();
    let names = (format!("{prefix}{APP}"), format!("{prefix}{DB}"));
    for name in [&names.0, &names.1] {
        crate::flags::validate_machine_name(name)
            .map_err(|e| anyhow::anyhow!("{PREFIX_ENV}='{prefix}' does not work: {e}"))?;
    }
    Ok(names)
}

pub fn run(demo: Demo, sh: &Shell) -> Result<()> {
    if !tools::is_root() {
        bail!("the demo boots local machines with systemd-nspawn and needs root: run it with sudo");
    }
    let (app_name, db_name) = machine_names()?;
    if demo.down {
        for name in [&app_name, &db_name] {
            ui::step(&format!("stop machine {name}"), || testhost::down(sh, name))?;
        }
        return Ok(());
    }
    testhost::build(sh, false)?;
    let db = ui::step("boot the db machine", || {
        testhost::up(sh, &db_name, Role::Db)
    })?;
    let app = ui::step("boot the app machine", || {
        testhost::up(sh, &app_name, Role::App)
    })?;
    let env = Environment::for_machines(&app, &db)?;
    let xtask = std::env::current_exe().context("locating the xtask binary")?;

    // setup-server's report (a line per step and a verification table) goes to a file: the
    // demo shows one line for it, and the report's end when it fails.
    let setup = env.setup_server_args();
    let report = env.backend_env.with_file_name("setup-server.log");
    ui::step("provision the app machine (setup-server)", || {
        let out = env
            .apply(cmd!(sh, "{xtask} {setup...}"))
            .quiet()
            .ignore_status()
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs_err::write(&report, &text)?;
        if !out.status.success() {
            let lines: Vec<&str> = text.lines().collect();
            bail!(
                "setup-server on the demo machine failed; its report is {report}, ending with:\n{}",
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        Ok(())
    })?;

    env.apply(cmd!(sh, "{xtask} deploy all"))
        .env("DEPLOY_ALLOW_DIRTY", "1")
        .quiet()
        .run()
        .context("deploy to the demo machine")?;

    let url = format!("http://{}/", app.ip);
    println!();
    println!("innercontext is running at {url} (API: {url}api/health-check)");
    println!("Deploy again, list releases or roll back with:");
    println!(
        "  export DEPLOY_SSH_CONFIG={} DEPLOY_SERVER=innercontext@{}",
        app.ssh_config, app.name
    );
    println!("  cargo xtask deploy list");
    println!("setup-server's report: {report}");
    println!(
        "Log in: cargo xtask testhost ssh {}. Stop it all: cargo xtask demo --down",
        app.name
    );
    Ok(())
}

/// The environment and env files a user would prepare for the two machines.
#[derive(Debug, Clone)]
pub struct Environment {
    pub ssh_config: Utf8PathBuf,
    pub server: String,
    pub admin: String,
    /// The public key setup-server authorizes for the deploy user.
    pub deploy_key: Utf8PathBuf,
    pub backend_env: Utf8PathBuf,
    pub frontend_env: Utf8PathBuf,
}

impl Environment {
    /// Write env files for `app` talking to `db` under target/demo/<app name>/.
    pub fn for_machines(app: &testhost::Machine, db: &testhost::Machine) -> Result<Environment> {
        let dir = tools::target_dir().join("demo").join(&app.name);
        fs_err::create_dir_all(&dir)?;
        let backend_env = dir.join("backend.env");
        let frontend_env = dir.join("frontend.env.production");
        let db = testhost::db_info(db);
        write_private(
            &backend_env,
            &format!("DATABASE_URL={}\nPRICING_INTERVAL_SECONDS=30\n", db.url()),
        )?;
        write_private(
            &frontend_env,
            &format!(
                "PUBLIC_API_BASE=http://127.0.0.1:8000\nORIGIN=http://{}\n",
                app.ip
            ),
        )?;
        Ok(Environment {
            ssh_config: app.ssh_config.clone(),
            server: format!("innercontext@{}", app.name),
            admin: format!("root@{}", app.name),
            deploy_key: app.public_key(),
            backend_env,
            frontend_env,
        })
    }

    /// A fleet: `apps` (the first is the primary) talking to `db`. The env files are the
    /// first app machine's ([`Environment::for_machines`]); beside them one ssh config naming
    /// every app machine ([`testhost::fleet_ssh_config`]); `DEPLOY_SERVER` lists them;
    /// `DEPLOY_ADMIN` is the user only for several (setup-server logs in as root on each).
    pub fn for_fleet(apps: &[testhost::Machine], db: &testhost::Machine) -> Result<Environment> {
        let first = apps
            .first()
            .context("a fleet needs at least one app machine")?;
        let mut env = Environment::for_machines(first, db)?;
        let ssh_config = env.backend_env.with_file_name("fleet_ssh_config");
        fs_err::write(&ssh_config, testhost::fleet_ssh_config(apps))?;
        env.ssh_config = ssh_config;
        env.server = apps
            .iter()
            .map(|m| format!("innercontext@{}", m.name))
            .collect::<Vec<_>>()
            .join(",");
        if apps.len() > 1 {
            env.admin = "root".to_string();
        }
        Ok(env)
    }

    /// The xtask binary `exe` run on the checkout `dir` with this environment, as a user would
    /// (a clean slate for the other deploy variables; non-interactive output).
    pub fn command(
        &self,
        exe: impl AsRef<std::ffi::OsStr>,
        dir: &camino::Utf8Path,
        args: &[&str],
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(args)
            .current_dir(dir)
            .env("XTASK_PROJECT_ROOT", dir)
            .env("DEPLOY_SSH_CONFIG", &self.ssh_config)
            .env("DEPLOY_SERVER", &self.server)
            .env("DEPLOY_ADMIN", &self.admin)
            .env("CI", "true")
            .env_remove("DEPLOY_ALLOW_DIRTY")
            .env_remove("DEPLOY_ROOT")
            .env_remove(crate::destination::ENV)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// `setup-server` with this environment's deploy key and env files.
    pub fn setup_server_args(&self) -> Vec<&str> {
        vec![
            "setup-server",
            "--deploy-key",
            self.deploy_key.as_str(),
            "--backend-env",
            self.backend_env.as_str(),
            "--frontend-env",
            self.frontend_env.as_str(),
        ]
    }

    /// Add the deploy variables to a command.
    pub fn apply<'a>(&self, cmd: xshell::Cmd<'a>) -> xshell::Cmd<'a> {
        cmd.env("DEPLOY_SSH_CONFIG", &self.ssh_config)
            .env("DEPLOY_SERVER", &self.server)
            .env("DEPLOY_ADMIN", &self.admin)
            .env_remove(crate::destination::ENV)
    }
}

fn write_private(path: &Utf8PathBuf, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::write(path, contents)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
