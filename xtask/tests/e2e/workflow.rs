//! The Forgejo deploy workflow's own shell steps, run against the test host with secrets of
//! the same shape a maintainer configures, so the workflow cannot drift from the CLI.
//!
//! The `run:` blocks of `.forgejo/workflows/deploy.yml` are extracted verbatim and run in order
//! the way a runner does (bash -eo pipefail, `$GITHUB_ENV` carried to later steps,
//! `if: always()` steps run after a failure).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{repo, Background, Site, ROOT};
use crate::Ctx;

/// The run steps of the deploy workflow, in order.
const STEPS: [&str; 3] = [
    "Install the ssh key and known_hosts",
    "Deploy",
    "Close the ssh connections and remove the key",
];

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
    fn command(&self, step: &Step, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args([
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
        .env("GITHUB_STEP_SUMMARY", &self.summary);
        cmd
    }

    /// The step in a process group of its own, as a runner starts it (so a cancel can signal
    /// the group), its output to `log`.
    fn spawn(&self, step: &Step, extra: &[(&str, &str)], log: &Utf8Path) -> Result<Background> {
        let mut cmd = self.command(step, extra);
        cmd.process_group(0);
        Background::start(cmd, log)
    }

    fn run(&mut self, step: &Step, extra: &[(&str, &str)]) -> Result<(bool, String)> {
        let out = self
            .command(step, extra)
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
/// up the key; a bad input fails its step and the key is still removed; a release input
/// `--force` is refused in one line, nothing run; a cancelled job (its Deploy step's process
/// group killed, or sent SIGTERM, the deployer's job held on the server) leaves no ssh master
/// and no control socket once its `if: always()` step ran.
pub fn deploy_workflow_runs_against_the_test_host(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let yaml = fs_err::read_to_string(repo().join(".forgejo/workflows/deploy.yml"))?;
    let all = steps(&yaml);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    ensure!(names == STEPS, "unexpected run steps: {names:?}");
    ensure!(
        !yaml.contains("StrictHostKeyChecking no") && !yaml.contains("StrictHostKeyChecking=no")
    );
    let scratch = crate::support::scratch("workflow")?;
    let temp = scratch.dir.with_file_name("innercontext-runner-temp");
    if temp.exists() {
        fs_err::remove_dir_all(&temp)?;
    }
    fs_err::create_dir_all(&temp)?;
    // The secrets, as a maintainer stores them: the private key and the known_hosts line(s).
    // The server is the destination's, from the committed deploy/ci.env: the workflow sets no
    // DEPLOY_* setting of its own.
    let key = fs_err::read_to_string(&site.app.key)?;
    let known_hosts = fs_err::read_to_string(&site.app.known_hosts)?;
    let server = format!("innercontext@{}", site.app.ip);
    scratch.write(
        "deploy/ci.env",
        &format!("# The test host\nDEPLOY_SERVER={server}\n"),
    )?;
    scratch.commit("the workflow's destination")?;
    let mut env = base_env();
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

    // A release before the workflow's (run alone, the group's site has none yet): the cancels
    // below roll back to it. Then a commit the workflow deploys (its local checks pass it as
    // it is), new whatever the site ran before.
    if site.current_opt()?.is_none() {
        site.xtask(&scratch.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()?;
    }
    let css = scratch.read("frontend/src/app.css")?;
    let mark = format!("/* the workflow's deploy after {} */", site.current()?);
    scratch.write("frontend/src/app.css", &format!("{css}\n{mark}\n"))?;
    scratch.commit("a commit for the workflow to deploy")?;
    let before = site.current_opt()?;
    let (ok, out) = runner.run(&all[0], &secrets)?;
    ensure!(ok, "{}:\n{out}", all[0].name);
    let mode = site_mode(&temp.join("deploy-ssh/key"))?;
    ensure!(mode == 0o600, "the key was written with mode {mode:o}");
    // No destination (and no deploy/default): one line, nothing run; a name that is none: the
    // same.
    for (to, want) in [
        ("", "error: no destination"),
        ("../x", "is not a destination name"),
    ] {
        let input = [("COMMAND", "all"), ("RELEASE", ""), ("DESTINATION", to)];
        let (ok, out) = runner.run(&all[1], &input)?;
        ensure!(
            !ok && out.trim().lines().count() == 1 && out.contains(want),
            "the destination input '{to}' was not refused in one line (exit ok: {ok}):\n{out}"
        );
    }
    ensure!(
        site.current_opt()? == before,
        "a refused destination input deployed"
    );
    let input = [("COMMAND", "all"), ("RELEASE", ""), ("DESTINATION", "ci")];
    let (ok, out) = runner.run(&all[1], &input)?;
    ensure!(ok, "Deploy:\n{out}");
    ensure!(
        out.lines().any(|l| l.starts_with("[ci] ==> ")),
        "the destination's step lines do not start with [ci]:\n{out}"
    );
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

    // The release input is data, never a flag: `--force` (which the old step passed on as the
    // flag, rolling back past any migration) is refused in one line, nothing run.
    let (ok, out) = runner.run(&all[0], &secrets)?;
    ensure!(ok, "{} (for --force):\n{out}", all[0].name);
    let input = [
        ("COMMAND", "rollback"),
        ("RELEASE", "--force"),
        ("DESTINATION", "ci"),
    ];
    let (ok, out) = runner.run(&all[1], &input)?;
    ensure!(
        !ok && out.trim().lines().count() == 1 && out.contains("'--force' is not a release name"),
        "the release input --force was not refused in one line (exit ok: {ok}):\n{out}"
    );
    ensure!(
        site.current()? == after,
        "the release input --force changed current from {after} to {}",
        site.current()?
    );
    let (ok, out) = runner.run(&all[2], &[])?;
    ensure!(ok, "{} (after --force):\n{out}", all[2].name);

    // A bad command fails the Deploy step; the key is removed all the same. The key is there
    // before (so its removal is a result), and the removal step itself succeeds.
    let (ok, out) = runner.run(&all[0], &secrets)?;
    ensure!(ok, "{} (second time):\n{out}", all[0].name);
    let mode = site_mode(&temp.join("deploy-ssh/key"))?;
    ensure!(mode == 0o600, "the key was written with mode {mode:o}");
    let input = [
        ("COMMAND", "everything"),
        ("RELEASE", ""),
        ("DESTINATION", "ci"),
    ];
    let (ok, out) = runner.run(&all[1], &input)?;
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

    // A cancelled job: the deployer's ssh master is closed and its control socket removed.
    // Killed (SIGKILL to the step's process group: no cleanup of the deployer's own), the
    // master dies with it (the kernel's parent-death signal), but its directory stays, and the
    // `if: always()` step removes it.
    let before = before.context("the site had no release before the workflow's deploy")?;
    let (pgid, master) = cancel(&site, &mut runner, &all, &secrets, &before, "KILL")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(master.0) {
        ensure!(
            Instant::now() < deadline,
            "a killed deployer's ssh master {} outlived it by 10 s",
            master.0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = master.1.parent().context("control path")?;
    ensure!(
        dir.exists(),
        "a killed deployer removed its control directory {dir}: the test strikes too late"
    );
    let (ok, out) = runner.run(&all[2], &[])?;
    ensure!(ok, "{} after a kill:\n{out}", all[2].name);
    gone(
        &master,
        "after the job was killed and its always() step ran",
    )?;
    crate::support::resume(&site)?;
    crate::support::wait_quiet(&site, Duration::from_secs(180))?;
    ensure!(!in_group(pgid), "the killed step's processes live on");
    // Cancelled (SIGTERM to the process group): the deployer closes its own master, before
    // the always() step runs. (The killed rollback's job went on, or put `after` back.)
    let other = [&before, &after][usize::from(site.current()? == before)];
    let (pgid, master) = cancel(&site, &mut runner, &all, &secrets, other, "TERM")?;
    crate::support::resume(&site)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while in_group(pgid) {
        ensure!(
            Instant::now() < deadline,
            "the deployer still runs 180 s after SIGTERM to its step's process group"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gone(&master, "after SIGTERM to the step's process group")?;
    let (ok, out) = runner.run(&all[2], &[])?;
    ensure!(ok, "{} after a cancel:\n{out}", all[2].name);
    crate::support::wait_quiet(&site, Duration::from_secs(180))?;
    site.assert_serving()?;
    fs_err::remove_dir_all(&temp).ok();
    Ok(())
}

/// Start the Deploy step rolling back to `release`, its job held before its health checks,
/// then signal the step's whole process group (`sig`: KILL or TERM). Returns the group and the
/// deployer's ssh master (pid, control socket) as it was before the signal.
fn cancel(
    site: &Site,
    runner: &mut Runner,
    all: &[Step],
    secrets: &[(&str, &str)],
    release: &str,
    sig: &str,
) -> Result<(u32, (u32, Utf8PathBuf))> {
    let (ok, out) = runner.run(&all[0], secrets)?;
    ensure!(ok, "{} (before a {sig}):\n{out}", all[0].name);
    let log = runner.temp.with_file_name(format!("workflow-{sig}.log"));
    let env = [
        ("COMMAND", "rollback"),
        ("RELEASE", release),
        ("DESTINATION", "ci"),
        ("INNERCONTEXT_TEST_PAUSE_AT", "health"),
    ];
    let mut bg = runner.spawn(&all[1], &env, &log)?;
    let pgid = bg.child.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let at = site.sh(&format!(
            "cat {ROOT}/.deploy.lock/paused 2>/dev/null || true"
        ))?;
        if at.trim() == "health" {
            break;
        }
        if let Some(status) = bg.child.try_wait()? {
            bail!(
                "the Deploy step ended ({status}) before its job paused:\n{}",
                bg.output()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the job never paused:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let found = masters(runner, pgid);
    let [master] = found.as_slice() else {
        bail!(
            "expected one ssh master of the deployer, found {found:?}:\n{}",
            bg.output()
        );
    };
    crate::support::run_ok(
        Command::new("kill").args([&format!("-{sig}"), "--", &format!("-{pgid}")]),
        "kill",
    )?;
    bg.child.wait()?;
    Ok((pgid, master.clone()))
}

/// The ssh masters of the deployer (the `xtask` process of the step's group `pgid`): each one's
/// pid, from `ssh -O check`, and control socket (`ic-ssh-<deployer pid>-*/master`, in /tmp or
/// the job's TMPDIR).
fn masters(runner: &Runner, pgid: u32) -> Vec<(u32, Utf8PathBuf)> {
    let Some(deployer) = group(pgid).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "xtask")
    }) else {
        return Vec::new();
    };
    let prefix = format!("ic-ssh-{deployer}-");
    let dirs = ["/tmp"]
        .into_iter()
        .chain(runner.env.get("TMPDIR").map(String::as_str));
    let mut found = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let socket =
                Utf8PathBuf::from(entry.path().join("master").to_string_lossy().to_string());
            let out = Command::new("ssh")
                .args(["-F", "/dev/null", "-O", "check", "-o"])
                .arg(format!("ControlPath={socket}"))
                .arg("unused")
                .output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stderr).to_string());
            let pid = text.ok().and_then(|t| xtask::ssh::master_pid(&t));
            found.push((pid.unwrap_or(0), socket));
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    // A zombie has no command line left.
    pid != 0 && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The processes of group `pgid` that still run (field 5 of /proc/PID/stat; a zombie waits
/// for its parent, it runs nothing).
fn group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split(' ').collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            pids.push(pid);
        }
    }
    pids
}

fn in_group(pgid: u32) -> bool {
    !group(pgid).is_empty()
}

/// The master `(pid, socket)` is gone, with its socket and its private directory (polled: a
/// master told to exit takes a moment).
fn gone(master: &(u32, Utf8PathBuf), when: &str) -> Result<()> {
    let (pid, socket) = master;
    let dir = socket.parent().context("control path")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (running, there) = (alive(*pid), socket.exists() || dir.exists());
        if !running && !there {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{when}: the ssh master {pid} {} and its control socket {socket} {}",
                ["is gone", "still runs"][usize::from(running)],
                ["is gone", "is still there"][usize::from(there)],
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // Every action pinned by commit (the config stage's check), here and in the example.
    let example = fs_err::read_to_string(
        repo()
            .join(xtask::ci::EXAMPLE_WORKFLOWS)
            .join("deploy-repo-workflow.yml"),
    )?;
    for (name, text) in [
        ("deploy.yml", &yaml),
        ("ci.yml", &ci),
        ("the example", &example),
    ] {
        let bad = xtask::ci::unpinned_uses(text);
        ensure!(
            bad.is_empty(),
            "{name}: actions not pinned by commit: {bad:?}"
        );
    }
    // The separate deploy repository's workflow runs the same steps, word for word, after its
    // own checks of the commit.
    let theirs = steps(&example);
    let tail = &theirs[theirs.len().saturating_sub(3)..];
    ensure!(
        tail.iter()
            .map(|s| (&s.name, &s.script, s.always))
            .eq(all.iter().map(|s| (&s.name, &s.script, s.always))),
        "docs/examples/deploy-repo-workflow.yml's last steps differ from deploy.yml's"
    );
    ensure!(
        runs_on(&example) == ["deploy"],
        "the example's runs-on: {:?}",
        runs_on(&example)
    );
    ensure!(
        all[1].script.contains("args+=(-- \"$RELEASE\")")
            && all[1].script.contains("c_is_release \"$RELEASE\""),
        "the release input must be checked and passed after --:\n{}",
        all[1].script
    );
    ensure!(
        all[1]
            .script
            .contains("cargo xtask \"${to[@]}\" deploy \"${args[@]}\"")
            && all[1].script.contains("to=(--to \"$DESTINATION\")"),
        "the destination input must be checked and passed as --to:\n{}",
        all[1].script
    );
    // The servers are the destination's: the workflow sets no DEPLOY_* setting of its own
    // (DEPLOY_SSH_CONFIG, the ssh config of the key it installs, aside).
    let own: Vec<&str> = yaml
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("DEPLOY_") && !l.starts_with("DEPLOY_SSH_KEY:"))
        .filter(|l| !l.starts_with("DEPLOY_KNOWN_HOSTS:"))
        .collect();
    ensure!(own.is_empty(), "the deploy workflow sets {own:?}");
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
