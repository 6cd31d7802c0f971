//! `cargo xtask env push` and `env rollback`: a server job of its own (`mode=env`,
//! scripts/deploy-job.sh `job_env`), one host after the other, stopping at the first that fails.
//!
//! Each host's job takes the deploy lock (the plan of a rollback to current, so the lock's
//! checks hold: current must still be the release it was planned against), keeps the env file
//! as a timestamped 0600 backup beside it, puts the new one in place (push: the bytes this side
//! sent on ssh's stdin, `deploy.sh envstage`, staged beside it under the lock; rollback: the
//! newest backup), restarts the units that read it, checks health, and if they are not healthy
//! puts the backup back, restarts and checks again. Its deploy.log line says `env-pushed` or
//! `env-restored` with the backup's name, never a value. Once the new file is written the job
//! finishes by itself: a Ctrl-C or a lost connection only stops the watching.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{Config, Host, HostRole};
use crate::contract::{Half, JobResult, Message};
use crate::deploy::fleet::{self, Member, Output};
use crate::deploy::job::{Wait, RECONNECT_FOR};
use crate::deploy::local;
use crate::deploy::plan::{self, Asker, JobPlan, Mode};
use crate::deploy::report::{self, Printer};
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::flags::EnvKind;
use crate::remote::Call;
use crate::{interrupt, say, say_event, ui};

/// What replaces the server's env file.
pub enum Change {
    /// A local file that passed the format check: its name (for the lines) and its bytes.
    Push { file: String, bytes: Vec<u8> },
    /// The newest backup on the server.
    Rollback,
}

impl Change {
    fn action(&self) -> &'static str {
        match self {
            Change::Push { .. } => "push",
            Change::Rollback => "rollback",
        }
    }
}

/// The half whose units read the env file of `kind`.
fn half(kind: EnvKind) -> Half {
    match kind {
        EnvKind::Backend => Half::Backend,
        EnvKind::Frontend => Half::Frontend,
    }
}

/// The job's plan on a host of `role` whose current is `snap`'s (pure): the units that read
/// the file restart and are checked, their probes answer; current must stay what it is.
pub fn env_plan(kind: EnvKind, role: HostRole, snap: &Snapshot) -> Result<JobPlan> {
    let Some(current) = snap.current.name() else {
        bail!(
            "{} has no current release ({}): deploy first, then change its env file (nothing was changed)",
            snap.host,
            snap.current.describe()
        );
    };
    let units: Vec<_> = plan::units_of(role)
        .into_iter()
        .filter(|u| u.half == half(kind))
        .collect();
    Ok(JobPlan {
        mode: Mode::Rollback {
            target: current.to_string(),
            force: false,
        },
        expect_current: snap.current.link(),
        restart: units.iter().map(|u| u.name).collect(),
        check: units.iter().map(|u| u.name).collect(),
        probes: units.iter().filter_map(|u| u.probe).collect(),
        prune: Vec::new(),
        need_mb: 1,
        role,
        wait_for_verdict: false,
        begin: true,
        clean: false,
        maintenance: false,
    })
}

/// The `run` call of an env job (pure): the plan's, in mode `env`, with the file and action.
pub fn env_call(p: &JobPlan, cfg: &Config, who: &Asker, kind: EnvKind, action: &str) -> Call {
    let mut call = p.run_call(cfg, who);
    for a in call.args.iter_mut() {
        if a.starts_with("mode=") {
            *a = "mode=env".to_string();
        } else if a.starts_with("command=") {
            *a = format!("command=env {action} {}", kind.name());
        }
    }
    call.args.push(format!("env={}", kind.name()));
    call.args.push(format!("env_action={action}"));
    call
}

pub fn change(cfg: &Config, kind: EnvKind, change: Change) -> Result<()> {
    let started = Instant::now();
    let sessions = server::connect_all(cfg)?;
    let snaps = server::probe_all(&sessions, cfg, Look::default())?;
    let hosts: Vec<(Host, Snapshot)> = cfg.hosts.iter().cloned().zip(snaps).collect();
    let roles = crate::deploy::drift::roles(&hosts)?;
    let plans = hosts
        .iter()
        .zip(&roles)
        .map(|((_, s), r)| env_plan(kind, *r, s))
        .collect::<Result<Vec<_>>>()?;
    let what = match &change {
        Change::Push { file, .. } => format!("env push of {file} ({} env file)", kind.name()),
        Change::Rollback => format!("env rollback of the {} env file", kind.name()),
    };
    let (user, me) = local::deployer();
    let deployer = format!("{user}@{me}");
    let n = hosts.len();
    let mut done: Vec<String> = Vec::new();
    for (((h, s), session), p) in hosts.into_iter().zip(sessions).zip(plans) {
        server::stop_before_the_lock(cfg)?;
        let token = plan::token();
        let commit = s
            .releases
            .iter()
            .find(|r| Some(r.name.as_str()) == s.current.name())
            .map(|r| r.commit.clone())
            .unwrap_or_else(|| "-".into());
        let asker = Asker {
            token: &token,
            deployer: &deployer,
            host: &me,
            commit: &commit,
            dirty: false,
        };
        let call = env_call(&p, cfg, &asker, kind, change.action());
        let name = s.host.clone();
        let mut out = Printer::new(n > 1);
        let mut members = fleet::start_all(
            vec![(h, s, session, call)],
            &mut out,
            cfg.ssh_config.as_deref(),
        )?;
        let m = &mut members[0];
        if let Change::Push { bytes, .. } = &change {
            if let Err(e) = stage(m, cfg, kind, bytes) {
                let why = format!("{e:#}");
                let _ = m.job.abort(JobResult::Failed, &why);
            } else {
                m.job.send(Message::Uploaded)?;
            }
        }
        follow(m, &mut out, cfg, &what)?;
        out.close();
        let (line, ok) = report::last_words(&what, m)?;
        if !ok {
            let rest = if done.is_empty() {
                String::new()
            } else {
                format!(" (already changed: {})", done.join(", "))
            };
            return Err(anyhow!("{line}{rest}"));
        }
        say!("{line}");
        done.push(name);
    }
    if n > 1 {
        say!(
            "{what}: {} hosts changed in {}",
            done.len(),
            ui::secs(started.elapsed())
        );
    }
    Ok(())
}

/// Send the file's bytes on ssh's stdin to `envstage` (under this job's lock) and check that
/// the server's sha256 of what it wrote is this side's.
fn stage(m: &Member, cfg: &Config, kind: EnvKind, bytes: &[u8]) -> Result<()> {
    let call = Call::deploy(
        "envstage",
        &[
            ("root", cfg.root.clone()),
            ("token", m.job.token.clone()),
            ("env", kind.name().to_string()),
        ],
    );
    let mut child = m.job.session().start(&call, Stdio::piped())?;
    let mut stdin = child.stdin.take().context("ssh's stdin")?;
    stdin
        .write_all(bytes)
        .context("sending the env file to the server")?;
    drop(stdin);
    let out = child.wait_with_output().context("waiting for ssh")?;
    let reply = crate::remote::Reply::parse(&String::from_utf8_lossy(&out.stdout));
    if let Some(e) = reply.get("error") {
        bail!("{e}");
    }
    let want = sha256(bytes)?;
    match reply.get("staged.sha256") {
        Some(got) if got == want => Ok(()),
        Some(_) => bail!(
            "the env file arrived damaged on {} (sha256 mismatch): nothing was changed",
            m.name()
        ),
        None => bail!(
            "sending the env file to {} failed: {}",
            m.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

fn sha256(bytes: &[u8]) -> Result<String> {
    let out = duct::cmd!("sha256sum")
        .stdin_bytes(bytes.to_vec())
        .read()
        .context("running sha256sum")?;
    Ok(out.split_whitespace().next().unwrap_or("").to_string())
}

/// Follow the job to its end, re-attaching when the connection drops. A first Ctrl-C before
/// the file is written stops the job (nothing changed); after, it runs to its end, and a second
/// stops the watching.
fn follow(m: &mut Member, out: &mut dyn Output, cfg: &Config, what: &str) -> Result<()> {
    let mut seen = 0;
    loop {
        if m.job.over() {
            return Ok(());
        }
        if m.job.wait(out, Duration::from_millis(50), &|_| false) == Wait::Lost {
            out.close();
            let name = m.name().to_string();
            say_event!(
                "the connection to {name} was lost: reconnecting (for up to {}s; Ctrl-C stops trying)",
                RECONNECT_FOR.as_secs()
            );
            let dest = m.host.dest.clone();
            m.job
                .reattach(&dest, cfg.ssh_config.as_deref())
                .map_err(|e| {
                    anyhow!(
                        "{}",
                        report::unreachable_line(what, &name, &format!("{e:#}"))
                    )
                })?;
            say!("    reconnected to {name}; following its job again");
        }
        let n = interrupt::count();
        if n != seen {
            seen = n;
            out.close();
            if n >= 2 {
                m.job.detach();
                say!("stopped watching: the env change goes on by itself; 'cargo xtask deploy status --follow' shows how it ends");
                bail!("interrupted by {} (twice)", interrupt::describe());
            }
            let why = format!("{} received", interrupt::describe());
            // Before the file is written the job stops at its wait; after, it ignores this.
            let _ = m.job.abort(JobResult::Interrupted, &why);
            say_event!("{why}: the job stops if it has not written the file yet, else runs to its end; Ctrl-C again to stop watching");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Reply;

    fn snap(current: &str) -> Snapshot {
        Snapshot::from_reply(&Reply::parse(&format!(
            "host=app\nnow=1795864590\ncurrent.status=ok\ncurrent.link=releases/{current}\ncurrent={current}\n\
             release={current} succeeded abc 0002\n"
        )))
    }

    #[test]
    fn each_file_restarts_the_units_that_read_it() {
        let s = snap("20261128T101530Z");
        let b = env_plan(EnvKind::Backend, HostRole::Primary, &s).unwrap();
        assert_eq!(b.restart, ["innercontext", "innercontext-pricing-worker"]);
        assert_eq!(b.probes, ["http://127.0.0.1:8000/health-check"]);
        let b2 = env_plan(EnvKind::Backend, HostRole::Secondary, &s).unwrap();
        assert_eq!(b2.restart, ["innercontext"]);
        let f = env_plan(EnvKind::Frontend, HostRole::Primary, &s).unwrap();
        assert_eq!(f.restart, ["innercontext-node"]);
        assert_eq!(f.expect_current, "releases/20261128T101530Z");
    }

    #[test]
    fn backups_are_listed_oldest_first_and_pruned_to_the_newest() {
        let make: String = (1..=7)
            .map(|d| format!("touch s/.env.backup-2026120{d}T100000Z; "))
            .collect();
        let out = crate::contract::run_with_lib(
            "envbackups",
            &["s", "s/.env.backup-20261208T100000Z"],
            &format!(
                "touch s/.env s/.env.backup-bad s/.env.push-t1; ln -s x s/.env.backup-20261209T100000Z; \
                 {make} env_backups s/.env | head -n 2; echo --; prune_env_backups s/.env; ls -1A s"
            ),
        );
        assert_eq!(
            out,
            "s/.env.backup-20261201T100000Z\ns/.env.backup-20261202T100000Z\n--\n.env\n\
             .env.backup-20261203T100000Z\n.env.backup-20261204T100000Z\n.env.backup-20261205T100000Z\n\
             .env.backup-20261206T100000Z\n.env.backup-20261207T100000Z\n.env.backup-20261208T100000Z\n\
             .env.backup-20261209T100000Z\n.env.backup-bad\n.env.push-t1\n"
        );
    }

    #[test]
    fn no_current_release_is_refused() {
        let s = Snapshot::from_reply(&Reply::parse("host=app\nnow=1\ncurrent.status=missing\n"));
        let e = env_plan(EnvKind::Backend, HostRole::Primary, &s)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("app has no current release"), "{e}");
    }

    #[test]
    fn the_call_is_an_env_job_with_only_the_contracts_keys() {
        let cfg = Config::from_lookup(|_| None).unwrap();
        let p = env_plan(
            EnvKind::Frontend,
            HostRole::Primary,
            &snap("20261128T101530Z"),
        )
        .unwrap();
        let who = Asker {
            token: "t1",
            deployer: "a@b",
            host: "b",
            commit: "abc",
            dirty: false,
        };
        let call = env_call(&p, &cfg, &who, EnvKind::Frontend, "push");
        let args = call.args.join(" ");
        assert!(
            args.contains("mode=env")
                && args.contains("target=20261128T101530Z")
                && args.contains("command=env push frontend")
                && args.contains("restart=innercontext-node ")
                && args.ends_with("env=frontend env_action=push"),
            "{args}"
        );
        let keys = crate::contract::keys("run");
        for a in &call.args {
            let k = a.split_once('=').unwrap().0;
            assert!(keys.contains(&k), "{k}");
        }
    }
}
