//! The Forgejo deploy workflow's own shell steps, run against the test host with secrets of
//! the same shape a maintainer configures, so the workflow cannot drift from the CLI.
//!
//! The `run:` blocks of `.forgejo/workflows/deploy.yml` are extracted verbatim and run in order
//! the way a runner does (bash -eo pipefail, `$GITHUB_ENV` carried to later steps,
//! `if: always()` steps run after a failure).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use camino::Utf8PathBuf;

use crate::support::repo;
use crate::Ctx;

/// A workflow step: its name, its `run:` script, and whether it runs after a failure.
#[derive(Debug)]
struct Step {
    name: String,
    script: String,
    always: bool,
}

/// The steps with a `run: |` block, in order (the workflow's own text, nothing rewritten).
fn steps(yaml: &str) -> Vec<Step> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut steps = Vec::new();
    let mut name = String::new();
    let mut always = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(n) = trimmed.strip_prefix("- name: ") {
            name = n.trim().to_string();
            always = false;
        } else if trimmed == "if: always()" {
            always = true;
        } else if trimmed == "run: |" {
            let indent = line.len() - trimmed.len();
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let ind = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && ind <= indent {
                    break;
                }
                body.push(l.get(indent + 2..).unwrap_or("").to_string());
                i += 1;
            }
            steps.push(Step {
                name: name.clone(),
                script: body.join("\n"),
                always,
            });
            continue;
        }
        i += 1;
    }
    steps
}

struct Runner {
    dir: Utf8PathBuf,
    env: BTreeMap<String, String>,
    temp: Utf8PathBuf,
    github_env: Utf8PathBuf,
    summary: Utf8PathBuf,
}

impl Runner {
    fn run(&mut self, step: &Step, extra: &[(&str, &str)]) -> Result<(bool, String)> {
        let out = Command::new("bash")
            .args([
                "--noprofile",
                "--norc",
                "-eo",
                "pipefail",
                "-c",
                &step.script,
            ])
            .current_dir(&self.dir)
            .env_clear()
            .envs(&self.env)
            .envs(extra.iter().copied())
            .env("RUNNER_TEMP", &self.temp)
            .env("GITHUB_ENV", &self.github_env)
            .env("GITHUB_STEP_SUMMARY", &self.summary)
            .output()
            .with_context(|| format!("running step '{}'", step.name))?;
        // Like a runner: what a step appends to $GITHUB_ENV is set for the later steps.
        let appended = fs_err::read_to_string(&self.github_env).unwrap_or_default();
        for line in appended.lines() {
            if let Some((k, v)) = line.split_once('=') {
                self.env.insert(k.to_string(), v.to_string());
            }
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }
}

fn base_env() -> BTreeMap<String, String> {
    [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "PIP_CERT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect()
}

/// The deploy workflow's scripts deploy the scratch checkout with the secrets' shape and clean
/// up the key; a bad input fails its step and the key is still removed.
pub fn deploy_workflow_runs_against_the_test_host(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let yaml = fs_err::read_to_string(repo().join(".forgejo/workflows/deploy.yml"))?;
    let all = steps(&yaml);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    ensure!(
        names
            == [
                "Install the ssh key and known_hosts",
                "Deploy",
                "Remove the ssh key"
            ],
        "unexpected run steps: {names:?}"
    );
    ensure!(
        !yaml.contains("StrictHostKeyChecking no") && !yaml.contains("StrictHostKeyChecking=no")
    );
    let scratch = crate::support::scratch("workflow")?;
    let temp = scratch.dir.with_file_name("innercontext-runner-temp");
    if temp.exists() {
        fs_err::remove_dir_all(&temp)?;
    }
    fs_err::create_dir_all(&temp)?;
    // The secrets, as a maintainer stores them: the private key, the known_hosts line(s), and
    // the server's address.
    let key = fs_err::read_to_string(&site.app.key)?;
    let known_hosts = fs_err::read_to_string(&site.app.known_hosts)?;
    let server = format!("innercontext@{}", site.app.ip);
    let mut env = base_env();
    env.insert("DEPLOY_SERVER".into(), server);
    env.insert("DEPLOY_ROOT".into(), "/opt/innercontext".into());
    env.insert("CI".into(), "true".into());
    // Like a deploy runner with its toolchains installed: the ones under target/tools are
    // already there. The xtask itself is built from the checkout, into a target directory of
    // its own (never over the binary this test runs).
    fs_err::create_dir_all(scratch.dir.join("target"))?;
    std::os::unix::fs::symlink(
        repo().join("target/tools"),
        scratch.dir.join("target/tools"),
    )?;
    env.insert(
        "CARGO_TARGET_DIR".into(),
        repo().join("target/workflow-runner").to_string(),
    );
    let mut runner = Runner {
        dir: scratch.dir.clone(),
        env,
        temp: temp.clone(),
        github_env: temp.join("github_env"),
        summary: temp.join("summary.md"),
    };
    let secrets = [
        ("DEPLOY_SSH_KEY", key.trim_end()),
        ("DEPLOY_KNOWN_HOSTS", known_hosts.trim_end()),
    ];

    let before = site.current_opt()?;
    let (ok, out) = runner.run(&all[0], &secrets)?;
    ensure!(ok, "{}:\n{out}", all[0].name);
    let mode = site_mode(&temp.join("deploy-ssh/key"))?;
    ensure!(mode == 0o600, "the key was written with mode {mode:o}");
    let (ok, out) = runner.run(&all[1], &[("COMMAND", "all"), ("RELEASE", "")])?;
    ensure!(ok, "Deploy:\n{out}");
    let (ok, out) = runner.run(&all[2], &[])?;
    ensure!(ok, "{}:\n{out}", all[2].name);
    ensure!(!temp.join("deploy-ssh").exists(), "the key was not removed");
    let after = site.current()?;
    ensure!(
        Some(&after) != before.as_ref(),
        "the workflow did not deploy a new release"
    );
    let summary = fs_err::read_to_string(&runner.summary)?;
    ensure!(
        summary.contains("Result: **success**") && summary.contains(&format!("deploy of {after}")),
        "summary:\n{summary}"
    );
    site.assert_serving()?;

    // A bad command fails the Deploy step; the key is removed all the same. The key is there
    // before (so its removal is a result), and the removal step itself succeeds.
    let (ok, out) = runner.run(&all[0], &secrets)?;
    ensure!(ok, "{} (second time):\n{out}", all[0].name);
    let mode = site_mode(&temp.join("deploy-ssh/key"))?;
    ensure!(mode == 0o600, "the key was written with mode {mode:o}");
    let (ok, out) = runner.run(&all[1], &[("COMMAND", "everything"), ("RELEASE", "")])?;
    ensure!(
        !ok && out.contains("unknown command"),
        "bad command:\n{out}"
    );
    ensure!(
        all[2].always,
        "the key removal must run on failure (if: always())"
    );
    let (ok, out) = runner.run(&all[2], &[])?;
    ensure!(ok, "{} after a failure:\n{out}", all[2].name);
    ensure!(
        !temp.join("deploy-ssh").exists(),
        "the key was not removed after a failure"
    );

    // Missing secrets: a clear error, nothing deployed.
    let (ok, out) = runner.run(
        &all[0],
        &[("DEPLOY_SSH_KEY", ""), ("DEPLOY_KNOWN_HOSTS", "")],
    )?;
    ensure!(
        !ok && out.contains("set the DEPLOY_SSH_KEY"),
        "missing secrets:\n{out}"
    );
    ensure!(site.current()? == after);
    fs_err::remove_dir_all(&temp).ok();
    Ok(())
}

fn site_mode(path: &camino::Utf8Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    match fs_err::metadata(path) {
        Ok(m) => Ok(m.permissions().mode() & 0o777),
        Err(e) => bail!("{path}: {e}"),
    }
}

/// The parser itself, checked on the real workflow without a machine; and the deploy job's
/// isolation from pull requests: its own runner label, which the CI job does not use, and no
/// cache (anything a pull request can write would run with the production key).
pub fn workflow_steps_parse(_ctx: &mut Ctx) -> Result<()> {
    let yaml = fs_err::read_to_string(repo().join(".forgejo/workflows/deploy.yml"))?;
    let ci = fs_err::read_to_string(repo().join(".forgejo/workflows/ci.yml"))?;
    let runs_on = |y: &str| -> Vec<String> {
        y.lines()
            .filter_map(|l| l.trim().strip_prefix("runs-on:"))
            .map(|l| l.trim().to_string())
            .collect()
    };
    ensure!(
        runs_on(&yaml) == ["deploy"],
        "the deploy job must run on its own runner label: runs-on {:?}",
        runs_on(&yaml)
    );
    ensure!(
        runs_on(&ci).iter().all(|l| !l.contains("deploy")),
        "the CI job runs on the deploy runner: {:?}",
        runs_on(&ci)
    );
    let cache = yaml
        .lines()
        .map(|l| l.trim().trim_start_matches("- "))
        .find(|l| l.starts_with("uses:") && l.contains("cache"));
    ensure!(
        cache.is_none(),
        "the deploy workflow restores a cache: {cache:?}"
    );
    let all = steps(&yaml);
    ensure!(all.len() == 3, "{all:?}");
    ensure!(
        all[1].script.contains("cargo xtask deploy \"${args[@]}\""),
        "{}",
        all[1].script
    );
    ensure!(
        !all[1].script.contains("${{"),
        "a run block uses an expression; put it in env:"
    );
    ensure!(
        all.iter().all(|s| !s.script.starts_with(' ')),
        "not dedented"
    );
    Ok(())
}
