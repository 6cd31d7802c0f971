//! `cargo xtask verify [--host HOST]`: a tripwire. On each host of DEPLOY_SERVER, through the
//! admin login (DEPLOY_ADMIN, as setup-server resolves it) and as root, never as the app user
//! it checks: current's release, its virtualenv and the uv cache compared with what this
//! checkout ships, every file that differs or should not be there listed (`HOST: PATH: WHY`).
//!
//! The checker ([`plan::CHECKER`], Python) travels from this checkout on ssh's stdin and runs as
//! `/usr/bin/python3 -I -`: root runs nothing the app user can write. It first names current's
//! release and its commits (a checkout at another commit is told which to check out), then
//! compares; see `checker.py` for what is compared and how. Nothing on the server changes: the
//! reference it builds lives in a root-owned temp directory, removed when it ends or when this
//! process goes away (Ctrl-C closes the connection, the checker notices).
//!
//! Exit 0 when everything is as shipped, 1 when something is not (or a host could not be
//! checked: the error line says why), 2 for a usage error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use xshell::{cmd, Shell};

use crate::config::{Config, Host};
use crate::deploy::{local, seal};
use crate::flags::{Scope, Verify};
use crate::ssh::Session;
use crate::{interrupt, proc, say, ui};

pub mod plan;

use plan::{Line, Mode};

pub fn run(v: Verify, sh: &Shell) -> Result<()> {
    interrupt::install();
    let cfg = Config::from_env()?;
    let hosts = crate::logs::pick_hosts(&cfg, v.host.as_deref())?;
    let env_admin = std::env::var("DEPLOY_ADMIN").ok();
    let fleet = cfg.hosts.len() > 1;
    let here = checkout(sh)?;
    let manifest = local::manifest(sh, Scope::All)?;
    let root = crate::project_root();
    let hashes = ui::step(
        &format!("hash this checkout's {} files", manifest.len()),
        || seal::hashes(&root, &manifest),
    )?;
    let mut found = Vec::new();
    for host in &hosts {
        let admin = crate::setup_server::admin_for(None, env_admin.as_deref(), host, fleet)?;
        let n = check_host(&cfg, host, &admin, &here, &hashes)?;
        found.push((host.name().to_string(), n));
    }
    match plan::verdict(&found, hosts.len()) {
        Ok(line) => {
            say!("{line}");
            Ok(())
        }
        Err(line) => bail!("{line}"),
    }
}

/// This checkout's commit as releases record it (`+dirty` with uncommitted changes).
fn checkout(sh: &Shell) -> Result<String> {
    let commit = cmd!(sh, "git rev-parse --short=12 HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("reading the commit: is this a git checkout with at least one commit?")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()?;
    let dirty = if status.trim().is_empty() {
        ""
    } else {
        "+dirty"
    };
    Ok(format!("{commit}{dirty}"))
}

/// Check one host; the number of files it found.
fn check_host(cfg: &Config, host: &Host, admin: &str, here: &str, hashes: &str) -> Result<usize> {
    let name = host.name().to_string();
    let session = ui::step(&format!("connect {admin}"), || {
        Session::connect(admin, cfg.ssh_config.as_deref()).map_err(|e| {
            anyhow!("{e}; verify logs in through the admin login (root, or a user with passwordless sudo: DEPLOY_ADMIN)")
        })
    })?;
    let meta = checker(
        &session,
        &plan::facts(Mode::Meta, &cfg.root, ""),
        &mut |_| {},
    )?;
    let release = meta
        .iter()
        .find_map(|l| match l {
            Line::Release(r) => Some(r.clone()),
            _ => None,
        })
        .ok_or_else(|| failed(&name, admin, &meta))?;
    if let Some(why) = plan::mismatch(&name, here, &release) {
        bail!("{why}");
    }
    // The server's steps, each a step line as it ends (the checker times them).
    let facts = plan::facts(Mode::Check, &cfg.root, hashes);
    let lines = checker(&session, &facts, &mut |l| {
        if let Line::Step(step, secs, detail) = l {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" [{detail}]")
            };
            say!(
                "{}",
                ui::step_line(
                    &format!("{name}: {step}"),
                    &format!("ok ({secs:.1}s){detail}")
                )
            );
        }
    })?;
    if !lines
        .iter()
        .any(|l| matches!(l, Line::Step(s, _, _) if s == plan::LAST_STEP))
    {
        return Err(failed(&name, admin, &lines));
    }
    let findings: Vec<String> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Finding(path, why) => Some(plan::finding_line(&name, path, why)),
            _ => None,
        })
        .collect();
    for f in &findings {
        crate::show!("{f}");
    }
    if !lines
        .iter()
        .any(|l| matches!(l, Line::Step(s, _, _) if s == plan::LAST_STEP))
    {
        return Err(failed(&name, admin, &lines));
    }
    Ok(findings.len())
}

/// The one-line error of a checker that did not finish.
fn failed(host: &str, admin: &str, lines: &[Line]) -> anyhow::Error {
    let why = lines
        .iter()
        .find_map(|l| match l {
            Line::Error(e) => Some(e.clone()),
            _ => None,
        })
        .or_else(|| {
            lines.iter().rev().find_map(|l| match l {
                Line::Other(o) if !o.trim().is_empty() => Some(o.clone()),
                _ => None,
            })
        })
        .unwrap_or_else(|| "it printed nothing".to_string());
    anyhow!("verify could not check {host} (through {admin}): {why}")
}

/// Run the checker with `facts` over `session`; its lines, each also handed to `each` as it
/// arrives. A signal stops it (the connection closes; the checker removes its temp directory).
fn checker(session: &Session, facts: &str, each: &mut dyn FnMut(&Line)) -> Result<Vec<Line>> {
    let program = session.private_dir().join("verify.py");
    fs_err::write(&program, plan::program(facts))?;
    let mut args = session.base_args();
    args.push(session.dest().to_string());
    args.push(plan::remote_line());
    let mut cmd = Command::new("ssh");
    cmd.args(args)
        .stdin(Stdio::from(fs_err::File::open(&program)?.into_parts().0))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = proc::isolate(&mut cmd).spawn().context("starting ssh")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mark = interrupt::mark();
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(text) => {
                let l = plan::parse(&text);
                each(&l);
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if mark.passed() {
            proc::signal_group(child.id(), interrupt::SIGTERM);
            let _ = child.wait();
            let _ = fs_err::remove_file(&program);
            bail!(
                "verify stopped by {}: nothing was changed on the server",
                interrupt::describe()
            );
        }
    }
    let _ = reader.join();
    let status = child.wait()?;
    let _ = fs_err::remove_file(&program);
    let stderr = errs.join().unwrap_or_default();
    if lines.is_empty() && !status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let why = if last.contains("sudo") && last.contains("password") {
            format!("{} cannot become root without a password: verify needs root, or a user with passwordless sudo (DEPLOY_ADMIN)", session.dest())
        } else {
            crate::quote::printable(last)
        };
        lines.push(Line::Other(why));
    }
    let _ = std::io::stdout().flush();
    Ok(lines)
}
