//! The server side of the fault matrix (issue 25): the deploy job SIGKILLed on the server (the
//! job's pid from `jobs/TOKEN/pid`, not the deployer), and the app machine's power cut (`testhost
//! poweroff --hard`, then `start` on the same disk), at each step of a deploy.
//!
//! Every cell strikes inside its step without racing: the deploy is held there first, by the
//! job's test pause point (`INNERCONTEXT_TEST_PAUSE_AT`: `seed` for the lock, `prepare` for `uv
//! sync`, `migrate`, `health` after the switch and restart, `record`), or for the upload by the
//! deployer's (`INNERCONTEXT_TEST_PAUSE_BEFORE_SEND`: the release uploaded, the job waiting for
//! the word that says so, which the deployer sends once the fault has struck).
//!
//! The checks are [`power::invariants`], right after the fault and again after the next deploy
//! ([`power::next_deploy`]): the lock is what `deploy status` says (left by a job that died, at
//! the step the cell names), current is the release before the fault, or the new one when the
//! job was killed after its switch, and the units run it; no job process or child of one is
//! left; nothing is left `preparing` but the dead lock's release, which `list` shows so; the site
//! answers through nginx. Besides: the deployer that was attached ends with what the server's
//! files say; after a power cut the boot check tells the truth (it leaves an intact current
//! alone, and puts back the previous release when current had never been verified); the next
//! deploy takes the lock over in one line naming the dead job and its step, marks its release
//! failed, and deploy.log has an `interrupted` line for it.
//!
//! `power::` already has the power cut in prepare (`sync`) and after the switch (`activate`);
//! the cells here add the others.

use anyhow::{ensure, Context, Result};

use crate::power::{
    cut_power, invariants, last_line, line_of, next_deploy, Want, DEPLOYER_ENDS, EVERY_UNIT,
};
use crate::support::{
    change, held_after_switch, held_in_upload, kill_job, let_send, log_len, log_since, paused,
    took_over_line, Scratch, ROOT,
};
use crate::Ctx;

/// What strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// SIGKILL to the job on the server (its pid file), as root.
    KillJob,
    /// The app machine's power cut, then the same disk booted again.
    PowerOff,
}

/// The step a strike lands in (the fault matrix's columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The lock taken, nothing made yet (held before `seed`).
    Lock,
    /// The release seeded and uploaded, the job waiting for the deployer to say so.
    Upload,
    /// prepare, where `uv sync` builds the virtualenv (held before `prepare`).
    Sync,
    /// The migration (held before `migrate`, the snapshot taken).
    Migrate,
    /// After the switch and the restart, before the health checks.
    Activate,
    /// The bookkeeping after a successful switch (held in the job's record, before it writes).
    Record,
}

impl At {
    /// The lock's phase while the job is held there: what `status` and a takeover name.
    fn phase(self) -> &'static str {
        match self {
            At::Lock => "seed",
            At::Upload => "awaiting-upload",
            At::Sync => "prepare",
            At::Migrate => "migrate",
            At::Activate => "health",
            At::Record => "record",
        }
    }

    /// Whether current names the new release when the job is held there.
    fn switched(self) -> bool {
        matches!(self, At::Activate | At::Record)
    }
}

/// This module's checkout; the site has a current release before the first cell.
fn scratch(ctx: &mut Ctx) -> Result<&Scratch> {
    if ctx.jobkill_scratch.is_none() {
        let s = crate::support::scratch("jobkill")?;
        let site = ctx.site()?;
        if site.current_opt()?.is_none() {
            site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
                .ok()?;
        }
        ctx.jobkill_scratch = Some(s);
    }
    Ok(ctx.jobkill_scratch.as_ref().unwrap())
}

/// The units a backend deploy restarts.
fn backend_units() -> Vec<&'static str> {
    xtask::contract::UNITS
        .iter()
        .filter(|u| u.half == xtask::contract::Half::Backend)
        .map(|u| u.name)
        .collect()
}

/// One cell: `strike` while a backend deploy is held `at` its step.
pub fn strike_at(ctx: &mut Ctx, strike: Strike, at: At) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    ensure!(
        site.state(&prev)? == "succeeded",
        "current ({prev}) is {} before the cell",
        site.state(&prev)?
    );
    let from = log_len(&site)?;
    let releases = site.releases()?;
    change(s, &format!("{strike:?} at {at:?}"))?;
    let args = ["deploy", "backend", "--skip-local-checks"];
    let p = match at {
        At::Upload => held_in_upload(&site, s, &args)?,
        At::Activate => held_after_switch(&site, s, &args)?,
        At::Lock => paused(&site, s, "seed", &args)?,
        At::Sync => paused(&site, s, "prepare", &args)?,
        At::Migrate => paused(&site, s, "migrate", &args)?,
        At::Record => paused(&site, s, "record", &args)?,
    };
    let (token, release) = (p.token.clone(), p.release.clone());
    // Held inside its step: the lock names it, and the release exists from the seed on.
    let phase = site.sh(&format!("cat {ROOT}/.deploy.lock/phase"))?;
    ensure!(
        phase.trim() == at.phase(),
        "the job is held at phase '{}', not {}",
        phase.trim(),
        at.phase()
    );
    let made = site.releases()?.contains(&release);
    ensure!(
        made == (at != At::Lock),
        "release {release} {} although the job is held at {}",
        if made { "exists" } else { "does not exist" },
        at.phase()
    );
    match strike {
        Strike::KillJob => kill_job(&site, &p)?,
        Strike::PowerOff => cut_power(&site)?,
    }
    if at == At::Upload {
        let_send(s)?;
    }
    let (status, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    ensure!(
        !out.contains("by itself"),
        "the deployer foretold instead of reading:\n{out}"
    );
    // Where current is now: a killed job moved nothing back; after a power cut the boot check
    // put back the previous release when current was the unverified new one.
    let restored = strike == Strike::PowerOff && at.switched();
    let now = if strike == Strike::KillJob && at.switched() {
        release.as_str()
    } else {
        prev.as_str()
    };
    // Only the job died: the connection never dropped, and the deployer does not say it did.
    if let Some(lost) = out
        .lines()
        .find(|l| strike == Strike::KillJob && l.contains("connection to") && l.contains("lost"))
    {
        anyhow::bail!(
            "the deployer says its connection was lost, but only the job died on the server: {lost}"
        );
    }
    let last = last_line(&out);
    let died = last.contains(&format!("its job died at {} ", at.phase()))
        && last.contains(&format!("current is {now}"));
    let said = match strike {
        Strike::KillJob => died,
        Strike::PowerOff if restored => {
            last.contains("outcome is unknown here")
                || (last.contains(&format!("current is {now} again"))
                    && last.contains("restored at boot"))
        }
        Strike::PowerOff => last.contains("outcome is unknown here") || died,
    };
    ensure!(
        said,
        "the deployer's last line does not say what the server's files say (its job died at {}, current is {now}{}): {last}",
        at.phase(),
        if restored { " again, restored at boot" } else { "" }
    );
    let backend = backend_units();
    invariants(
        &site,
        s,
        &Want {
            current: now,
            // A boot starts every unit from current; a killed job restarted the backend alone.
            units: if strike == Strike::PowerOff {
                &EVERY_UNIT
            } else {
                &backend
            },
            dead_lock: Some(&token),
        },
    )
    .context("after the fault")?;
    let st = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let job = line_of(&st.stdout, "last job:");
    ensure!(
        job.contains(&format!("DIED at {}", at.phase())),
        "status does not say the job died at {}: {job}\n{}",
        at.phase(),
        st.all()
    );
    if strike == Strike::PowerOff {
        // The boot check's word, in deploy.log: a restore exactly when current was unverified.
        let log = log_since(&site, from)?;
        let boot: Vec<_> = log
            .iter()
            .filter(|(_, res, _)| res == "restored-at-boot")
            .collect();
        if restored {
            ensure!(
                boot.len() == 1 && boot[0].0 == prev && boot[0].2.contains(&release),
                "deploy.log has no one restored-at-boot line for {prev} (from {release}):\n{log:#?}"
            );
            let current = line_of(&st.stdout, "current:");
            ensure!(
                current.contains("restored at boot"),
                "status does not say current was restored at boot: {current}\n{}",
                st.all()
            );
        } else {
            ensure!(
                boot.is_empty(),
                "the boot check moved an intact current:\n{log:#?}"
            );
        }
    }
    let next = next_deploy(&site, s, &format!("after {strike:?} at {at:?}"))?;
    let line = took_over_line(&next.all())?;
    ensure!(
        line.contains(&token) && line.contains(&format!("died at {}", at.phase())),
        "the takeover line does not name the dead job ({token}) and the step it died in ({}): {line}",
        at.phase()
    );
    if strike == Strike::KillJob && at.switched() {
        ensure!(
            line.contains("after the switch") && line.contains(&release),
            "the takeover line does not say the job died after its switch to {release}: {line}"
        );
    }
    if made {
        ensure!(
            site.state(&release)? == "failed",
            "the dead job's release {release} is {}",
            site.state(&release)?
        );
    } else {
        let new: Vec<String> = site
            .releases()?
            .into_iter()
            .filter(|r| !releases.contains(r))
            .collect();
        ensure!(
            !new.contains(&release),
            "a release {release} appeared for a job that died before its seed"
        );
    }
    let log = log_since(&site, from)?;
    ensure!(
        log.iter().any(|(r, res, why)| r == &release
            && res == "interrupted"
            && why.contains(&format!("died at {}", at.phase()))),
        "deploy.log has no interrupted line for {release} saying it died at {}:\n{log:#?}",
        at.phase()
    );
    Ok(())
}

macro_rules! cells {
    ($($name:ident => $strike:ident @ $at:ident;)*) => {
        $(pub fn $name(ctx: &mut Ctx) -> Result<()> {
            strike_at(ctx, Strike::$strike, At::$at)
        })*
    };
}

cells! {
    killjob_at_lock => KillJob @ Lock;
    killjob_at_upload => KillJob @ Upload;
    killjob_at_sync => KillJob @ Sync;
    killjob_at_migrate => KillJob @ Migrate;
    killjob_at_activate => KillJob @ Activate;
    killjob_at_record => KillJob @ Record;
    // sync and activate: power::a_power_cut_in_prepare_leaves_a_lock_the_next_deploy_takes_over
    // and power::a_power_cut_after_the_switch_is_restored_at_boot.
    poweroff_at_lock => PowerOff @ Lock;
    poweroff_at_upload => PowerOff @ Upload;
    poweroff_at_migrate => PowerOff @ Migrate;
    poweroff_at_record => PowerOff @ Record;
}

/// The job SIGKILLed while its migration runs (`deploytool migrate`, a child of the job, in a
/// migration that sleeps): the migration is not cut short, and nothing takes the lock while it
/// runs. Until it ends, `deploy status` says the job died and its step still runs, and the next
/// deploy refuses (a second migration beside it could interleave); once it ended, the next
/// deploy takes the lock over, and the database is at the revision the migration reached.
pub fn killjob_during_the_migration(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = scratch(ctx)?;
    let prev = site.current()?;
    let from = log_len(&site)?;
    let (n, head) = crate::database::head(s)?;
    let rev = format!("{:04}_killjob_slow", n + 1);
    s.write(
        &format!("backend/alembic/versions/{rev}.py"),
        &format!("\"\"\"A slow migration (the job killed during it).\"\"\"\n\nfrom alembic import op\n\nrevision = \"{rev}\"\ndown_revision = \"{head}\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.execute(\"SELECT pg_sleep(30)\")\n\n\ndef downgrade() -> None:\n    pass\n"),
    )?;
    s.commit("a slow migration")?;
    let args = ["deploy", "backend", "--skip-local-checks"];
    let p = paused(&site, s, "migrate", &args)?;
    let (token, release) = (p.token.clone(), p.release.clone());
    crate::support::resume(&site)?;
    let migrating =
        "pgrep -u innercontext -f '^[^ ]*python[0-9.]* -m innercontext[.]deploytool migrate'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while site
        .sh(&format!("{migrating} >/dev/null && echo yes || echo no"))?
        .trim()
        != "yes"
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "the migration never started:\n{}",
            p.bg.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    site.sh(&format!("kill -KILL {}", p.pid))?;
    crate::support::wait_gone(&site, p.pid)?;
    // The migration goes on without its job, and holds the lock meanwhile.
    let still = site.sh(&format!("{migrating} >/dev/null && echo yes || echo no"))?;
    ensure!(still.trim() == "yes", "the migration ended with its job");
    let st = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
    let lock = line_of(&st.stdout, "lock:");
    ensure!(
        lock.contains("its job died at migrate, but a process it started still runs and holds the lock")
            && !lock.contains("STALE"),
        "while the dead job's migration runs, status does not say the job died and its migration holds the lock: {lock}\n{}",
        st.all()
    );
    change(s, "beside a running migration")?;
    let beside = site.xtask(&s.dir, &args)?;
    ensure!(
        !beside.status.success() && !beside.all().contains("took over"),
        "a deploy went ahead beside the dead job's migration:\n{}",
        beside.all()
    );
    s.undo()?;
    let (status, out) = p.bg.wait(DEPLOYER_ENDS)?;
    println!("the deployer ({status}):\n{out}");
    ensure!(!status.success(), "the deployer succeeded:\n{out}");
    let last = last_line(&out);
    ensure!(
        last.contains("its job died at migrate") && last.contains(&format!("current is {prev}")),
        "the deployer's last line does not say the job died at migrate, current {prev}: {last}"
    );
    // The migration ran to its end (it was not killed with its job).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while site
        .sh(&format!("{migrating} >/dev/null && echo yes || echo no"))?
        .trim()
        == "yes"
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "the dead job's migration still runs after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let at = crate::database::psql(&site, "SELECT version_num FROM alembic_version")?;
    ensure!(at == rev, "the database is at {at}, not {rev}");
    let backend = backend_units();
    invariants(
        &site,
        s,
        &Want {
            current: &prev,
            units: &backend,
            dead_lock: Some(&token),
        },
    )
    .context("after the migration ended")?;
    let next = next_deploy(&site, s, "after the job was killed during its migration")?;
    let line = took_over_line(&next.all())?;
    ensure!(
        line.contains(&token) && line.contains("died at migrate"),
        "the takeover line does not name the dead job ({token}) at migrate: {line}"
    );
    ensure!(
        site.state(&release)? == "failed",
        "the dead job's release {release} is {}",
        site.state(&release)?
    );
    let log = log_since(&site, from)?;
    ensure!(
        log.iter().any(|(r, res, why)| r == &release
            && res == "interrupted"
            && why.contains("died at migrate")),
        "deploy.log has no interrupted line for {release} saying it died at migrate:\n{log:#?}"
    );
    Ok(())
}
