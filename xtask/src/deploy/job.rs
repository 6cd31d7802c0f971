//! The client side of the server-side job (scripts/deploy-job.sh): start it, send it messages,
//! follow its events, and re-attach after a lost connection. The job owns the outcome; this
//! side only asks and watches, and renders what the job reports.
//!
//! One ssh call carries both directions: `deploy.sh run` (or `follow`) writes the job's events
//! to stdout and reads the deployer's messages, one per line, from stdin; a heartbeat thread
//! says `beat` every [`crate::contract::HEARTBEAT_MS`]. When this process dies, stdin closes and the job knows.
//!
//! Whenever the deployer may have missed something (a connection lost and re-attached, a
//! message that could not be sent, this process stopped for a while), its last words are a
//! [`Reading`] of the server's files at that moment, never what it expects the job to do.
//! Every wait here polls (see [`crate::wait`]): no clock can stretch it, and a signal ends it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::contract::{EventKind, JobResult, Message, Note, Phase, Step, StepStatus};
use crate::deploy::entry::Entry;
use crate::deploy::event::{Event, Outcome, Watcher};
use crate::deploy::follower::{last_line, Follower, Incoming};
use crate::deploy::lock::LockInfo;
use crate::deploy::reading::{since_epoch, Reading};
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::interrupt;
use crate::remote::{Call, Reply};
use crate::ssh::Session;
use crate::wait::{self, Deadline, Missed};

/// How long a lost connection is tried again before the deployer gives up on it: long enough
/// for a link that comes back to tell how the job ended (the job goes on by itself either way);
/// the first Ctrl-C stops trying.
pub const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// A stop of this process worth saying: half the time after which the job decides the
/// deployer is gone.
const STOP_WORTH_MS: u64 = crate::contract::CLIENT_GRACE_SECS * 1000 / 2;

/// deploy.log lines a reading looks at (the job's own line and whatever came after it).
const LOG_LINES: u32 = 40;

/// Why `run` did not start a job.
#[derive(Debug)]
pub enum Refusal {
    /// Another deploy holds the lock.
    Locked {
        message: String,
        lock: Option<Box<LockInfo>>,
    },
    /// The server said no (preflight, current changed, ...), before anything changed.
    Refused(String),
}

/// A started job and the connection following it.
pub struct Job {
    pub host: String,
    pub token: String,
    pub root: String,
    /// The release it deploys (or rolls back to), and who asked: its deploy.log line's words.
    pub release: String,
    deployer: String,
    /// What current was when the job was planned (`releases/NAME`, empty for none).
    planned_on: String,
    /// Server time (Unix seconds) at or before the job started: deploy.log lines from then on
    /// are the job's own or came after it.
    since: i64,
    session: Session,
    follower: Option<Follower>,
    /// Bytes of the job's event stream seen so far (where a re-attach resumes).
    offset: u64,
    /// The phase it announced last (None: none yet, or one the contract does not know).
    pub phase: Option<Phase>,
    /// The step that started last (snapshot: the deployer may still stop the job).
    pub step: Option<Step>,
    pub outcome: Option<Outcome>,
    /// `note` events seen, in order.
    pub notes: Vec<Vec<String>>,
    /// The messages that move the job on or stop it, whole, in order: sent again after a
    /// re-attach (the server keeps each as a file, so a second copy changes nothing).
    said: Vec<String>,
    /// What the last follower said on stderr when it ended without the job's result.
    pub last_error: String,
    /// Re-attaches so far.
    pub reattaches: u32,
    /// The deployer may have missed part of the job: a connection was lost, a message could not
    /// be sent, or this process was stopped. Its last words are then a [`Reading`].
    pub lost_sight: bool,
    /// The longest time (ms) a heartbeat's sleep or a wait's nap took: this process was
    /// stopped for about that long; and whether that was said.
    longest_gap: Arc<AtomicU64>,
    stop_seen: bool,
    /// A reading found the job neither running nor with a result (it died: a reboot, a kill):
    /// nothing more will come from it.
    pub gone: bool,
}

/// What [`Job::wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// The predicate became true.
    Reached,
    /// The job reported its outcome.
    Finished,
    /// The connection dropped before the job ended.
    Lost,
    /// The job's events ended without its result while the connection stayed up: its process
    /// is gone (killed on the server). The server's files say what became of it.
    Ended,
    /// The timeout passed, or a signal arrived (the caller looks which).
    Timeout,
}

impl Job {
    /// Run the `run` call: on success the job has the lock and its events stream in.
    pub fn start(
        session: Session,
        call: &Call,
        host: &str,
    ) -> Result<std::result::Result<Job, Refusal>> {
        let arg = |key: &str| {
            call.args
                .iter()
                .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        let (root, token) = (arg("root"), arg("token"));
        let release = match arg("release") {
            r if r.is_empty() => arg("target"),
            r => r,
        };
        let asked = Instant::now();
        let longest_gap = Arc::new(AtomicU64::new(0));
        let mut follower = Follower::start(&session, call, true, longest_gap.clone())?;
        let mut reply = Reply::default();
        // The lock handshake: the server answers in milliseconds. A signal meanwhile is acted
        // on as soon as the answer is in (the caller asks the job to stop), so that whether a
        // job started is never left unknown.
        let deadline = Deadline::after(Duration::from_secs(120));
        loop {
            match wait::recv_until(&follower.rx, deadline, || false) {
                Ok(Incoming::Reply(line)) => {
                    reply.push(&line);
                    if line == "started=yes" {
                        break;
                    }
                }
                Ok(Incoming::Event(..)) | Ok(Incoming::Eof) => {}
                Ok(Incoming::Closed) | Err(Missed::Disconnected) | Err(Missed::Interrupted) => {
                    let _ = follower.child.wait();
                    let message = reply.get("error").map(str::to_string).unwrap_or_else(|| {
                        format!(
                            "the deploy could not start on {host}: {}",
                            last_line(&follower.stderr_text()).unwrap_or("the connection closed")
                        )
                    });
                    if reply.get("conflict") == Some("yes") {
                        return Ok(Err(Refusal::Locked {
                            message,
                            lock: LockInfo::from_reply(&reply).map(Box::new),
                        }));
                    }
                    if reply.get("error").is_some() {
                        return Ok(Err(Refusal::Refused(message)));
                    }
                    bail!("{message}");
                }
                Err(Missed::TimedOut) => {
                    bail!("{host} did not answer within 120s while taking the lock: 'cargo xtask deploy status' shows whether a job started there")
                }
            }
        }
        let since = since_epoch(
            reply.get("now").and_then(|n| n.parse().ok()),
            asked.elapsed(),
        );
        Ok(Ok(Job {
            host: host.to_string(),
            token,
            root,
            release,
            deployer: arg("deployer"),
            planned_on: match arg("expect_current") {
                c if c == "-" => String::new(),
                c => c,
            },
            since,
            session,
            follower: Some(follower),
            offset: 0,
            phase: None,
            step: None,
            outcome: None,
            notes: Vec::new(),
            said: Vec::new(),
            last_error: String::new(),
            reattaches: 0,
            lost_sight: false,
            longest_gap,
            stop_seen: false,
            gone: false,
        }))
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Send a message to the job. Fails when the connection is gone: then the follower hangs
    /// up (what it still has to say is read, then [`Job::wait`] says `Lost` unless the job's
    /// result came), and the deployer has lost sight of the job.
    pub fn send(&mut self, msg: Message) -> Result<()> {
        self.send_line(msg.name())
    }

    /// Ask the job to stop before it changes current (in a fleet after the switch: to go
    /// back), recording `result` and why ([`Message::abort_line`]).
    pub fn abort(&mut self, result: JobResult, why: &str) -> Result<()> {
        self.send_line(&Message::abort_line(result, why))
    }

    /// Send a whole message line (its first word is the message), kept to be sent again after
    /// a re-attach (see [`Job::send`]).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let word = line.split(' ').next().unwrap_or(line).to_string();
        self.write(&word, line)?;
        self.said.push(line.to_string());
        Ok(())
    }

    /// Write one message (`word` names it); a failure hangs the follower up (see [`Job::send`]).
    fn write(&mut self, word: &str, msg: &str) -> Result<()> {
        test_pause_before_send(word, &self.host);
        let f = self
            .follower
            .as_ref()
            .ok_or_else(|| anyhow!("not connected to the job on {}", self.host))?;
        if let Err(e) = f.send(msg) {
            f.hang_up();
            self.lost_sight = true;
            let why = format!("sending '{word}' to the job on {} failed: {e:#}", self.host);
            if self.last_error.is_empty() {
                self.last_error = why.clone();
            }
            bail!("{why}");
        }
        Ok(())
    }

    /// Whether messages can be sent (a follower that has not hung up).
    pub fn can_send(&self) -> bool {
        self.follower
            .as_ref()
            .is_some_and(|f| f.stdin.lock().is_ok_and(|s| s.is_some()))
    }

    /// Whether nothing more will come from the job: it reported its outcome, or it is gone.
    pub fn over(&self) -> bool {
        self.outcome.is_some() || self.gone
    }

    /// How long this process was stopped (SIGSTOP, a suspended machine), once: the first time
    /// a stop of at least half the job's grace ([`crate::contract::CLIENT_GRACE_SECS`]) shows
    /// in the heartbeat's sleeps or the waits' naps. Marks the job as one the deployer lost
    /// sight of.
    pub fn new_stop(&mut self) -> Option<Duration> {
        let gap = self.longest_gap.load(Ordering::SeqCst);
        if gap < STOP_WORTH_MS || self.stop_seen {
            return None;
        }
        self.stop_seen = true;
        self.lost_sight = true;
        Some(Duration::from_millis(gap))
    }

    /// Whether exactly this message was sent already.
    pub fn has_said(&self, msg: &str) -> bool {
        self.said.iter().any(|m| m == msg)
    }

    /// The file list the release must be made of (never sent again after a re-attach: a
    /// deploy that lost its connection before the checks passed is stopped).
    pub fn send_manifest(&mut self, paths: &[String]) -> Result<()> {
        let word = Message::Manifest.name();
        let mut text = format!("{word} {}\n", paths.len());
        for p in paths {
            text.push_str(p);
            text.push('\n');
        }
        self.write(word, text.trim_end_matches('\n'))
    }

    /// Follow the job until `until` holds, it finishes, the connection drops, or `timeout`
    /// passes; a signal also returns (as Timeout) so the caller can decide.
    pub fn wait(
        &mut self,
        watcher: &mut dyn Watcher,
        timeout: Duration,
        until: &dyn Fn(&Job) -> bool,
    ) -> Wait {
        let deadline = Deadline::after(timeout);
        let mark = interrupt::mark();
        loop {
            if self.outcome.is_some() {
                return Wait::Finished;
            }
            if until(self) {
                return Wait::Reached;
            }
            if mark.passed() || deadline.passed() {
                return Wait::Timeout;
            }
            let Some(f) = self.follower.as_ref() else {
                return Wait::Lost;
            };
            match f.rx.try_recv() {
                Ok(Incoming::Event(e, bytes)) => {
                    self.offset += bytes as u64;
                    self.absorb(&e);
                    watcher.event(&self.host, &e);
                }
                Ok(Incoming::Reply(line)) => {
                    if let Some(e) = line.strip_prefix("error=") {
                        self.last_error = e.to_string();
                    }
                }
                Ok(Incoming::Eof) => {
                    // The job ended; its result event came before, unless it died.
                    if self.outcome.is_none() {
                        return Wait::Ended;
                    }
                }
                Err(TryRecvError::Empty) => {
                    // A nap far longer than asked: this process was stopped (SIGSTOP, a
                    // suspended machine). The caller looks around before reading on.
                    let napped = Instant::now();
                    deadline.nap(wait::TICK);
                    let took = napped.elapsed().as_millis() as u64;
                    self.longest_gap.fetch_max(took, Ordering::SeqCst);
                    if took >= STOP_WORTH_MS {
                        return Wait::Timeout;
                    }
                }
                Ok(Incoming::Closed) | Err(TryRecvError::Disconnected) => {
                    if let Some(mut f) = self.follower.take() {
                        f.beating.store(false, Ordering::SeqCst);
                        let status = f.child.wait();
                        // The reader thread may still hold the last words: give it a moment.
                        std::thread::sleep(Duration::from_millis(20));
                        if self.last_error.is_empty() {
                            self.last_error = match last_line(&f.stderr_text()) {
                                Some(l) => l.to_string(),
                                None => format!(
                                    "ssh ended: {}",
                                    status.map(|s| s.to_string()).unwrap_or_default()
                                ),
                            };
                        }
                    }
                    if self.outcome.is_some() {
                        return Wait::Finished;
                    }
                    return Wait::Lost;
                }
            }
        }
    }

    fn absorb(&mut self, e: &Event) {
        match e.kind {
            EventKind::Phase => self.phase = Phase::parse(e.field(0)),
            EventKind::Step => {
                if let Some((step, StepStatus::Start)) = e.step() {
                    self.step = step;
                }
            }
            EventKind::Note => self.notes.push(e.fields.clone()),
            EventKind::Result => self.outcome = Some(Outcome::from_event(e)),
            _ => {}
        }
    }

    /// The `note` events of kind `note` seen so far (each with its fields, the kind first).
    pub fn notes_of(&self, note: Note) -> impl Iterator<Item = &[String]> {
        self.notes
            .iter()
            .filter(move |n| n.first().and_then(|w| Note::parse(w)) == Some(note))
            .map(Vec::as_slice)
    }

    /// The connection dropped: connect again (for up to [`RECONNECT_FOR`]; a signal stops
    /// trying) and re-attach where we left off, then send again what the job may have missed.
    pub fn reattach(&mut self, dest: &str, ssh_config: Option<&camino::Utf8Path>) -> Result<()> {
        if let Some(mut f) = self.follower.take() {
            f.close();
        }
        self.lost_sight = true;
        self.reattaches += 1;
        if self.reattaches > 3 {
            bail!(
                "the connection dropped {} times ({})",
                self.reattaches,
                self.last_error
            );
        }
        self.last_error.clear();
        // A dropped link often comes back (Wi-Fi, a VPN, a proxy restarting).
        let deadline = Deadline::after(RECONNECT_FOR);
        let mark = interrupt::mark();
        let session = loop {
            match Session::connect(dest, ssh_config) {
                Ok(s) => break s,
                Err(_) if mark.passed() => {
                    bail!(
                        "interrupted by {} while reconnecting",
                        interrupt::describe()
                    )
                }
                Err(e) if deadline.passed() => return Err(e),
                Err(_) => {
                    // One attempt a second, the signals looked at meanwhile.
                    let pause = Deadline::after(Duration::from_secs(1));
                    let _ = wait::poll_until(pause, || mark.passed(), || None::<()>);
                }
            }
        };
        let call = Call::deploy(
            "follow",
            &[
                ("root", self.root.clone()),
                ("token", self.token.clone()),
                ("offset", self.offset.to_string()),
                ("role", "driver".to_string()),
            ],
        );
        let follower = Follower::start(&session, &call, true, self.longest_gap.clone())?;
        for msg in &self.said {
            if follower.send(msg).is_err() {
                break;
            }
        }
        self.session = session;
        self.follower = Some(follower);
        Ok(())
    }

    /// Stop following (the job goes on by itself).
    pub fn detach(&mut self) {
        if let Some(mut f) = self.follower.take() {
            f.close();
        }
    }

    /// What the server's files say about this job now: its result file, `current`, the lock,
    /// and deploy.log's lines since it started (two read-only calls; a signal stops them).
    pub fn read_now(&self) -> Result<Reading> {
        let probe = server::probe_call(&self.root, Look::default());
        let reply = server::read(&self.session, &probe)?;
        let recorded = (reply.get("job.token") == Some(self.token.as_str()))
            .then(|| Outcome::from_reply(&reply))
            .flatten();
        let log = Call::deploy(
            "log",
            &[
                ("root", self.root.clone()),
                ("lines", LOG_LINES.to_string()),
            ],
        );
        let lines = server::read(&self.session, &log)?;
        let since = crate::deploy::release::iso(
            time::OffsetDateTime::from_unix_timestamp(self.since)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        );
        let entries = lines
            .all("line")
            .into_iter()
            .map(Entry::parse)
            // ISO times on one clock sort as text.
            .filter(|e| e.when >= since)
            .collect();
        Ok(Reading::from_server(
            &Snapshot::from_reply(&reply),
            recorded,
            &self.token,
            (&self.release, &self.deployer),
            &self.planned_on,
            entries,
        ))
    }
}

/// Test hook (`INNERCONTEXT_TEST_PAUSE_BEFORE_SEND=FILE`, FILE holding `WORD HOST`): before
/// message WORD goes to the job on HOST, wait while FILE exists, so a test can drop that host's
/// connection right before the message is written. A signal ends the wait.
fn test_pause_before_send(word: &str, host: &str) {
    let Some(file) = std::env::var_os("INNERCONTEXT_TEST_PAUSE_BEFORE_SEND") else {
        return;
    };
    let path = std::path::Path::new(&file);
    let armed = |text: String| text.split_whitespace().eq([word, host]);
    if !std::fs::read_to_string(path).is_ok_and(armed) {
        return;
    }
    crate::say!(
        "(test hook: paused before sending '{word}' to the job on {host} while {} exists)",
        path.display()
    );
    let _ = wait::poll(Deadline::after(Duration::MAX), || {
        (!path.exists()).then_some(())
    });
}

impl Drop for Job {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Follow a job as an observer (`deploy status --follow`): its events from `offset` until it
/// ends. Returns its outcome when it reported one.
pub fn observe(
    session: &Session,
    root: &str,
    token: &str,
    offset: u64,
    watcher: &mut dyn Watcher,
    host: &str,
) -> Result<Option<Outcome>> {
    let call = Call::deploy(
        "follow",
        &[
            ("root", root.to_string()),
            ("token", token.to_string()),
            ("offset", offset.to_string()),
            ("role", "observer".to_string()),
        ],
    );
    let f = Follower::start(session, &call, false, Arc::default())?;
    let mut outcome = None;
    let mark = interrupt::mark();
    loop {
        match wait::recv_until(&f.rx, Deadline::after(Duration::from_millis(100)), || {
            mark.passed()
        }) {
            Ok(Incoming::Event(e, _)) => {
                if e.kind == EventKind::Result {
                    outcome = Some(Outcome::from_event(&e));
                }
                watcher.event(host, &e);
            }
            Ok(Incoming::Reply(line)) => {
                if let Some(err) = line.strip_prefix("error=") {
                    bail!("{err}");
                }
            }
            Ok(Incoming::Eof) | Ok(Incoming::Closed) => break,
            Err(Missed::TimedOut) => {}
            Err(Missed::Interrupted) | Err(Missed::Disconnected) => break,
        }
    }
    Ok(outcome)
}
