//! The deploy driver when it loses sight of a job: its connection dropped (reconnect and
//! re-attach), or the job's events ended without a result while the connection stayed up (its
//! process is gone). What the deployer says then is read from the server's files.

use anyhow::{bail, Result};

use super::Driver;
use crate::contract::JobResult;
use crate::deploy::job::RECONNECT_FOR;
use crate::deploy::reading::LockNow;
use crate::deploy::report;
use crate::{say, say_event};

impl Driver<'_> {
    /// The job's events ended without its result, the connection up: the server's files say
    /// what became of it, never the connection. A job gone without a result is left (the last
    /// line reads the server) and a fleet goes back; anything else (the files unreadable, or a
    /// job that still runs) is followed again as after a lost connection.
    pub(super) fn on_ended(&mut self, i: usize) -> Result<()> {
        match self.members[i].job.read_now() {
            Ok(r) if r.gone_without_result() => {
                if let Some(c) = self.uploads[i].carrying.take() {
                    c.stop();
                    self.uploads[i].started = true;
                }
                if self.members.len() == 1 {
                    self.stop_local();
                }
                self.out.close();
                self.left_gone(i);
                Ok(())
            }
            _ => self.on_lost(i),
        }
    }

    /// Job `i` is gone without a result: nothing more comes from it; a fleet goes back.
    fn left_gone(&mut self, i: usize) {
        let name = self.members[i].name().to_string();
        self.members[i].job.detach();
        self.members[i].job.gone = true;
        if self.fleet() {
            let why = format!("the job on {name} is gone without a result");
            self.rollout
                .back(&mut self.members, &why, self.out.as_mut());
        }
    }

    /// A connection dropped (or a message could not be sent): reconnect and re-attach. A job
    /// that has recorded its result meanwhile is only followed to its end; one that is gone
    /// without a result is left (the last line reads the server); otherwise, before `checked`,
    /// every job is asked to stop (we cannot know what the network did to the upload), and in a
    /// fleet after it, the fleet goes back. What the deployer says is read, never foreseen.
    pub(super) fn on_lost(&mut self, i: usize) -> Result<()> {
        let stage = self.stage_name();
        if let Some(c) = self.uploads[i].carrying.take() {
            c.stop();
            self.uploads[i].started = true;
        }
        if self.members.len() == 1 {
            self.stop_local();
        }
        self.out.close();
        let name = self.members[i].name().to_string();
        let cause = self.members[i].job.last_error.clone();
        say_event!(
            "the connection to {name} was lost during {stage}{}: reconnecting (for up to {}s; Ctrl-C stops trying)",
            if cause.is_empty() {
                String::new()
            } else {
                format!(" ({cause})")
            },
            RECONNECT_FOR.as_secs()
        );
        let dest = self.members[i].host.dest.clone();
        if let Err(e) = self.members[i]
            .job
            .reattach(&dest, self.cfg.ssh_config.as_deref())
        {
            self.stop_local();
            bail!(
                "{}",
                report::unreachable_line(&self.what, &name, &format!("{e:#}"))
            );
        }
        say!("    reconnected to {name}; following its job again");
        match self.members[i].job.read_now() {
            // Its remaining events (and its result) come through the new connection.
            Ok(r) if r.outcome.is_some() => return Ok(()),
            Ok(r) if !matches!(r.lock, LockNow::Ours { alive: true, .. }) => {
                self.left_gone(i);
                return Ok(());
            }
            _ => {}
        }
        if !self.checked || self.fleet() {
            let why = format!("the connection to {name} was lost during {stage}");
            self.abort(JobResult::Interrupted, &why);
        }
        Ok(())
    }
}
