//! Destinations (`deploy/<name>.env`, `--to`, `DEPLOY_TO`, `deploy/default`): a staging and a
//! production destination deployed from one checkout, each listed on its own, deploy.log
//! saying which; a typo and two destinations sharing a host refused before anything changes.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use xshell::Shell;
use xtask::flags::Role;
use xtask::testhost::{self as th, Machine};

use crate::support::{scratch, xtask_bin, Run};
use crate::Ctx;

const ROOT: &str = "/opt/innercontext";

/// The staging database beside production's on the db machine (its own database and login
/// line; the password is the test host's).
fn add_staging_database(db: &Machine) -> Result<String> {
    let info = th::db_info(db);
    let name = format!("{}_staging", info.database);
    let sql = format!("CREATE DATABASE {name} OWNER {}", info.user);
    db.ssh(&["runuser", "-u", "postgres", "--", "psql", "-qc", &sql])?;
    let hba = format!("host {name} {} all scram-sha-256", info.user);
    let script = format!(
        "f=$(runuser -u postgres -- psql -tAc 'SHOW hba_file') && echo '{hba}' >> \"$f\" && \
         runuser -u postgres -- psql -qc 'SELECT pg_reload_conf()'"
    );
    db.ssh(&["bash", "-c", &script])?;
    let url = info.url();
    let base = url
        .strip_suffix(&format!("/{}", info.database))
        .with_context(|| format!("{url} does not end with the database's name"))?;
    Ok(format!("{base}/{name}"))
}

/// The xtask on `dir` as a user with two destinations runs it: the ssh config in the
/// environment (where a user's keys are), no DEPLOY_SERVER, DEPLOY_ADMIN or DEPLOY_ROOT.
fn user(dir: &camino::Utf8Path, ssh_config: &camino::Utf8Path, args: &[&str]) -> Command {
    let mut c = Command::new(xtask_bin());
    c.args(args)
        .current_dir(dir)
        .env("XTASK_PROJECT_ROOT", dir)
        .env("DEPLOY_SSH_CONFIG", ssh_config)
        .env("CI", "true")
        .env_remove("DEPLOY_SERVER")
        .env_remove("DEPLOY_ADMIN")
        .env_remove("DEPLOY_ROOT")
        .env_remove("DEPLOY_TO")
        .env_remove("DEPLOY_ALLOW_DIRTY")
        .stdin(std::process::Stdio::null());
    c
}

fn last_log(m: &Machine) -> Result<String> {
    m.ssh(&["bash", "-c", &format!("tail -n 1 {ROOT}/deploy.log")])
}

fn log_len(m: &Machine) -> Result<usize> {
    let n = m.ssh(&["bash", "-c", &format!("wc -l < {ROOT}/deploy.log")])?;
    n.trim().parse().context("deploy.log's length")
}

/// Every line of `out` after the first starts with `[name] `.
fn prefixed(out: &str, name: &str) -> Result<()> {
    let want = format!("[{name}] ");
    let bad: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(&want))
        .collect();
    ensure!(
        bad.is_empty(),
        "lines without the destination's prefix {want:?}: {bad:?}\n{out}"
    );
    Ok(())
}

/// Staging and production from one checkout: setup-server and a deploy to each (the deploys
/// at once), each listed on its own with its own release, every line prefixed with the
/// destination, deploy.log on each host saying `destination=NAME`; `deploy/default` chooses
/// when nothing else does; the environment's settings win and the first line says which; a
/// typo lists the destinations; a destination sharing a host with another is refused, nothing
/// changed.
pub fn staging_and_production_from_one_checkout(_ctx: &mut Ctx) -> Result<()> {
    let sh = Shell::new()?;
    th::build(&sh, false)?;
    let (stg_name, prd_name, db_name) = (
        crate::machine_name("stg"),
        crate::machine_name("prd"),
        crate::db_name(),
    );
    let role = crate::app_role();
    let up = |name: &str, role| th::up(&Shell::new()?, name, role);
    let (stg, prd, db) = std::thread::scope(|s| {
        let stg = s.spawn(|| up(&stg_name, role));
        let prd = s.spawn(|| up(&prd_name, role));
        let db = s.spawn(|| up(&db_name, Role::Db));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Machine>>| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("boot panicked")))
        };
        (join(stg), join(prd), join(db))
    });
    let machines = [&stg, &prd, &db].map(|m| m.as_ref().ok().map(|m| m.name.clone()));
    let result = match (stg, prd, db) {
        (Ok(stg), Ok(prd), Ok(db)) => two_destinations(&stg, &prd, &db),
        (stg, prd, db) => stg.and(prd).and(db).map(|_| ()),
    };
    // Its machines go down with it (the group's harness fails a group that leaves any).
    for name in machines.into_iter().flatten() {
        th::down(&sh, &name)?;
    }
    result
}

fn two_destinations(stg: &Machine, prd: &Machine, db: &Machine) -> Result<()> {
    // The checkout: two committed destination files; the user's ssh config names both hosts.
    let s = scratch("destinations")?;
    let files = [
        ("staging", &stg, "DEPLOY_KEEP=2\n"),
        ("production", &prd, "DEPLOY_HEALTH_TIMEOUT=40\n"),
    ];
    for (name, m, more) in files {
        let text = format!("# {name}\nDEPLOY_SERVER=innercontext@{}\n{more}", m.name);
        s.write(&format!("deploy/{name}.env"), &text)?;
    }
    s.commit("staging and production")?;
    let ssh_config = s.dir.with_file_name("destinations_ssh_config");
    fs_err::write(
        &ssh_config,
        th::fleet_ssh_config(&[stg.clone(), prd.clone()]),
    )?;
    let run = |args: &[&str], extra: &[(&str, &str)]| -> Result<Run> {
        let mut c = user(&s.dir, &ssh_config, args);
        c.envs(extra.iter().copied());
        Run::capture(c)
    };

    // setup-server on each, one by --to, one by DEPLOY_TO, at once.
    let stg_env = xtask::demo::Environment::for_machines(stg, db)?;
    let prd_env = xtask::demo::Environment::for_machines(prd, db)?;
    let url = add_staging_database(db)?;
    fs_err::write(
        &stg_env.backend_env,
        format!("DATABASE_URL={url}\nPRICING_INTERVAL_SECONDS=30\n"),
    )?;
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| {
            let mut args = vec!["--to", "staging"];
            args.extend(stg_env.setup_server_args());
            run(&args, &[])
        });
        let b = t.spawn(|| run(&prd_env.setup_server_args(), &[("DEPLOY_TO", "production")]));
        (a.join(), b.join())
    });
    let (a, b) = (
        a.map_err(|_| anyhow::anyhow!("panicked"))??,
        b.map_err(|_| anyhow::anyhow!("panicked"))??,
    );
    let a = a.ok().context("setup-server --to staging")?;
    let b = b.ok().context("DEPLOY_TO=production setup-server")?;
    let first = a.stderr.lines().next().unwrap_or("");
    ensure!(
        first
            == "destination staging (deploy/staging.env); from the environment: DEPLOY_SSH_CONFIG",
        "setup-server --to staging's first line: {first}\n{}",
        a.all()
    );
    prefixed(&a.stderr, "staging")?;
    let first = b.stderr.lines().next().unwrap_or("");
    ensure!(
        first.starts_with("destination production (deploy/production.env, chosen by DEPLOY_TO)"),
        "DEPLOY_TO=production setup-server's first line: {first}"
    );
    prefixed(&b.stderr, "production")?;

    // A deploy to each, at once, from the one checkout.
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| {
            run(
                &["--to", "staging", "deploy", "all", "--skip-local-checks"],
                &[],
            )
        });
        let b = t.spawn(|| {
            let args = ["deploy", "all", "--skip-local-checks"];
            run(&args, &[("DEPLOY_TO", "production")])
        });
        (a.join(), b.join())
    });
    let a = a.map_err(|_| anyhow::anyhow!("panicked"))??;
    let b = b.map_err(|_| anyhow::anyhow!("panicked"))??;
    let (a, b) = (a.ok()?, b.ok()?);
    prefixed(&a.stderr, "staging")?;
    prefixed(&b.stderr, "production")?;
    let stg_rel = a.release().context("the staging deploy named no release")?;
    let prd_rel = b
        .release()
        .context("the production deploy named no release")?;
    // (Deploys to two destinations in the same second make releases of the same name: each on
    // its own servers.)
    for (m, rel, name) in [(&stg, &stg_rel, "staging"), (&prd, &prd_rel, "production")] {
        let cur = m.ssh(&["readlink", &format!("{ROOT}/current")])?;
        ensure!(
            cur.trim() == format!("releases/{rel}"),
            "{name}'s current is {cur}, not {rel}"
        );
        let line = last_log(m)?;
        ensure!(
            line.contains(&format!(" release={rel} result=success "))
                && line.contains(&format!(" destination={name}")),
            "{name}'s deploy.log line does not record the destination: {line}"
        );
        let (code, _) = crate::support::http_get(&m.ip, 80, "/")?;
        ensure!(code == 200, "{name} answered {code}");
    }

    // A second staging release, then each destination listed on its own: staging's list has
    // both, production's only its own.
    let again = [
        "--to",
        "staging",
        "deploy",
        "all",
        "--redeploy",
        "--skip-local-checks",
    ];
    let stg_rel2 = run(&again, &[])?
        .ok()?
        .release()
        .context("the redeploy's release")?;
    ensure!(stg_rel2 != stg_rel, "the redeploy made no new release");
    for (name, mine, other) in [
        ("staging", &stg_rel2, &stg_rel2),
        ("production", &prd_rel, &stg_rel2),
    ] {
        let l = run(&["--to", name, "deploy", "list"], &[])?.ok()?;
        let listed = l.stdout.contains(mine.as_str());
        let foreign = name == "production" && l.all().contains(other.as_str());
        ensure!(
            listed && !foreign,
            "--to {name} deploy list does not list {mine} (or lists {other}):\n{}",
            l.all()
        );
        prefixed(&format!("first\n{}", l.stdout), name)?;
    }

    // deploy/default chooses when neither --to nor DEPLOY_TO does; the environment's settings
    // win over the file's, and the first line says so.
    s.write("deploy/default", "production\n")?;
    let l = run(&["deploy", "list"], &[("DEPLOY_KEEP", "4")])?.ok()?;
    let first = l.stderr.lines().next().unwrap_or("");
    ensure!(
        first
            == "destination production (deploy/production.env, chosen by deploy/default); \
                  from the environment: DEPLOY_SSH_CONFIG, DEPLOY_KEEP",
        "deploy list with deploy/default's first line: {first}"
    );
    ensure!(
        l.stdout.contains(prd_rel.as_str()) && !l.all().contains(stg_rel2.as_str()),
        "deploy list with deploy/default production is not production's:\n{}",
        l.all()
    );
    fs_err::remove_file(s.dir.join("deploy/default"))?;

    // Bad input, one line each, nothing changed on either host.
    let before = (log_len(stg)?, log_len(prd)?);
    let typo = run(&["--to", "stagin", "deploy", "all"], &[])?.failed()?;
    ensure!(
        typo.all().trim()
            == "error: no destination 'stagin' (--to names it, but there is no \
                deploy/stagin.env): the destinations are: production, staging",
        "the typo's error:\n{}",
        typo.all()
    );
    let qa = format!(
        "DEPLOY_SERVER=innercontext@{},innercontext@qa-1\n",
        stg.name
    );
    s.write("deploy/qa.env", &qa)?;
    let shared = run(&["--to", "qa", "deploy", "all"], &[])?.failed()?;
    ensure!(
        shared.all().trim()
            == format!(
                "error: destinations qa and staging both deploy to {}: one app per host (its \
                 units, ports and nginx site are the host's), so give each destination its own \
                 servers in deploy/qa.env and deploy/staging.env",
                stg.name
            ),
        "the shared host's error:\n{}",
        shared.all()
    );
    s.write("deploy/qa.env", "DEPLOY_SERVER=innercontext:hunter2@qa-1\n")?;
    let secret = run(&["--to", "qa", "deploy", "list"], &[])?.failed()?;
    ensure!(
        secret.all().trim().lines().count() == 1
            && secret
                .all()
                .contains("deploy/qa.env line 1: DEPLOY_SERVER looks like it holds a password"),
        "the secret's error:\n{}",
        secret.all()
    );
    let after = (log_len(stg)?, log_len(prd)?);
    ensure!(
        before == after,
        "bad input changed deploy.log: {before:?} -> {after:?}"
    );
    Ok(())
}
