//! Where a deploy or a rollback calls its hooks ([`crate::hooks`]): the facts it knows before
//! the lock, the `pre-` hook (a failure stops it with nothing changed), and the `post-` hook
//! once every job ended (success or not), told the result, the duration and the deploy.log
//! line each host wrote. The per-host hooks of a fleet are the rollout's
//! ([`crate::deploy::rollout`]).

use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::config::{host_of, Config};
use crate::contract::JobResult;
use crate::deploy::entry::Entry;
use crate::deploy::fleet::Member;
use crate::deploy::server;
use crate::deploy::snapshot::Snapshot;
use crate::hooks::{Facts, Hook, Hooks};
use crate::remote::Call;
use crate::say;

/// What a hook of `command` (`deploy`, `rollback`) knows before the lock.
pub fn facts(
    command: &str,
    cfg: &Config,
    snaps: &[Snapshot],
    [release, commit, scope, deployer]: [&str; 4],
) -> Facts {
    Facts {
        command: command.into(),
        destination: crate::destination::name().map(str::to_string),
        hosts: cfg
            .hosts
            .iter()
            .map(|h| host_of(&h.dest).to_string())
            .collect(),
        release: release.into(),
        previous: snaps
            .first()
            .and_then(|s| s.current.name())
            .unwrap_or("")
            .into(),
        commit: commit.into(),
        scope: scope.into(),
        deployer: deployer.into(),
        ..Facts::default()
    }
}

/// The `pre-` hook; its failure stops the command before any lock.
pub fn before(hooks: &Hooks, facts: &Facts) -> Result<()> {
    let hook = Hook::around(&facts.command, true);
    hooks.run(hook, facts, "").map_err(|e| {
        anyhow!(
            "{} stopped by its {} hook: nothing was changed on the server (no lock was taken): {e:#}",
            facts.command,
            hook.name()
        )
    })
}

/// The run's result in one word: `success` when every host succeeded, else the first other
/// result a host reported (`unknown` for a host that reported none). Pure.
pub fn result_word(results: &[Option<&str>]) -> String {
    let ok = JobResult::Success.name();
    if !results.is_empty() && results.iter().all(|r| *r == Some(ok)) {
        return ok.to_string();
    }
    results
        .iter()
        .find(|r| **r != Some(ok))
        .map(|r| r.unwrap_or("unknown"))
        .unwrap_or("unknown")
        .to_string()
}

/// The `post-` hook once the jobs ended (`members`: none when none started, then `refused`);
/// its own failure, if any (the command's outcome is said apart, and stands).
pub fn after(hooks: &Hooks, facts: &mut Facts, members: &[Member], took: Duration) -> Result<()> {
    let hook = Hook::around(&facts.command, false);
    if !hooks.has(hook) {
        return Ok(());
    }
    facts.result = if members.is_empty() {
        JobResult::Refused.name().to_string()
    } else {
        let results: Vec<Option<&str>> = members
            .iter()
            .map(|m| m.job.outcome.as_ref().map(|o| o.result.as_str()))
            .collect();
        result_word(&results)
    };
    facts.duration = Some(took);
    // The job's result event carries its line; read from deploy.log only when it did not
    // (a job followed after a reconnect, a result read from its file).
    facts.log_lines = members
        .iter()
        .filter_map(
            |m| match m.job.outcome.as_ref().map(|o| o.logged.as_str()) {
                Some(line) if !line.is_empty() => Some(line.to_string()),
                _ => log_line(m, &facts.release, &facts.deployer),
            },
        )
        .collect();
    hooks.run(hook, facts, "")
}

/// The command's outcome with its `post-` hook's: a failed hook fails a command that
/// succeeded (it is said after the command's own last line); after a failed command it is a
/// warning, and the command's error stands.
pub fn verdict(command: Result<()>, hook: Result<()>) -> Result<()> {
    match (command, hook) {
        (c, Ok(())) => c,
        (Ok(()), Err(e)) => Err(anyhow!(
            "the servers' outcome above stands, but {e:#}: fix the hook and run it by hand if its work is needed"
        )),
        (Err(c), Err(e)) => {
            say!("warning: {e:#}");
            Err(c)
        }
    }
}

/// The deploy.log line the job on `m` wrote: the last of its last lines naming the release and
/// the deployer (not a refusal or an unlock).
fn log_line(m: &Member, release: &str, deployer: &str) -> Option<String> {
    let call = Call::deploy(
        "log",
        &[("root", m.job.root.clone()), ("lines", "40".to_string())],
    );
    let reply = server::read(m.job.session(), &call).ok()?;
    reply
        .all("line")
        .into_iter()
        .rev()
        .find(|l| {
            let e = Entry::parse(l);
            e.get("release") == release
                && e.get("deployer") == deployer
                && !matches!(
                    e.result(),
                    Some(JobResult::Refused | JobResult::Unlocked) | None
                )
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_for_the_fleets_result() {
        assert_eq!(result_word(&[Some("success"), Some("success")]), "success");
        assert_eq!(
            result_word(&[Some("success"), Some("rolled-back"), Some("failed")]),
            "rolled-back"
        );
        assert_eq!(result_word(&[Some("success"), None]), "unknown");
        assert_eq!(result_word(&[]), "unknown");
    }

    #[test]
    fn a_failed_post_hook_fails_a_command_that_succeeded_only() {
        assert!(verdict(Ok(()), Ok(())).is_ok());
        let e = verdict(Ok(()), Err(anyhow!("the post-deploy hook: exited with 1"))).unwrap_err();
        assert!(e.to_string().starts_with(
            "the servers' outcome above stands, but the post-deploy hook: exited with 1"
        ));
        let e = verdict(Err(anyhow!("deploy failed")), Err(anyhow!("x"))).unwrap_err();
        assert_eq!(e.to_string(), "deploy failed");
    }
}
