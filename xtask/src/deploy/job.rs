//! The client side of the server-side job (scripts/deploy-job.sh): start it, send it messages,
//! follow its events, and re-attach after a lost connection. The job owns the outcome; this
//! side only asks and watches, and renders what the job reports.
//!
//! One ssh call carries both directions: `deploy.sh run` (or `follow`) writes the job's events
//! to stdout and reads the deployer's messages, one per line, from stdin; a heartbeat thread
//! says `beat` every [`HEARTBEAT_MS`]. When this process dies, stdin closes and the job knows.
//!
//! Whenever the deployer may have missed something (a connection lost and re-attached, a
//! message that could not be sent, this process stopped for a while), its last words are a
//! [`Reading`] of the server's files at that moment, never what it expects the job to do.
//! Every wait here polls (see [`crate::wait`]): no clock can stretch it, and a signal ends it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::contract::HEARTBEAT_MS;
use crate::deploy::log::Entry;
use crate::deploy::snapshot::Snapshot;
use crate::interrupt;
use crate::lock::LockInfo;
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

/// One event of the job, as it wrote it: server time (ms), kind, fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ms: u64,
    pub kind: String,
    pub fields: Vec<String>,
}

impl Event {
    /// `MS<TAB>KIND<TAB>FIELD...`; None for anything else.
    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split('\t');
        let ms = parts.next()?.parse().ok()?;
        let kind = parts.next()?.to_string();
        if !crate::contract::EVENTS.contains(&kind.as_str()) {
            return None;
        }
        Some(Event {
            ms,
            kind,
            fields: parts.map(str::to_string).collect(),
        })
    }

    pub fn field(&self, i: usize) -> &str {
        self.fields.get(i).map(String::as_str).unwrap_or("")
    }
}

/// How a job ended, as it reported it (read back from the server: the truth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: String,
    pub reason: String,
    pub duration: String,
    pub revision: String,
    /// What `current` is after the job, read by the job itself.
    pub current: String,
}

impl Outcome {
    fn from_event(e: &Event) -> Outcome {
        Outcome {
            result: e.field(0).to_string(),
            reason: e.field(1).to_string(),
            duration: e.field(2).to_string(),
            revision: e.field(3).to_string(),
            current: e.field(4).to_string(),
        }
    }

    fn from_reply(r: &Reply) -> Option<Outcome> {
        Some(Outcome {
            result: r.get("job.result")?.to_string(),
            reason: r.get("job.reason").unwrap_or("").to_string(),
            duration: r.get("job.duration").unwrap_or("").to_string(),
            revision: r.get("job.revision").unwrap_or("").to_string(),
            current: r.get("job.current").unwrap_or("").to_string(),
        })
    }

    pub fn success(&self) -> bool {
        self.result == "success"
    }
}

/// What comes out of the follower.
enum Incoming {
    Reply(String),
    Event(Event, usize),
    Eof,
    /// stdout closed: the call ended (the connection may be gone).
    Closed,
}

/// One running follower call (ssh to `deploy.sh run|follow`).
struct Follower {
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    rx: Receiver<Incoming>,
    stderr: Arc<Mutex<String>>,
    beating: Arc<AtomicBool>,
}

impl Follower {
    /// Start the call; as the driver, with a heartbeat that notes in `gap` the longest time
    /// (ms) it slept between two beats: this process was stopped (SIGSTOP, a suspended
    /// machine) and the job heard nothing from it for about that long.
    fn start(
        session: &Session,
        call: &Call,
        driver: bool,
        gap: Arc<AtomicU64>,
    ) -> Result<Follower> {
        let mut child = session.stream(call)?;
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let stdin = Arc::new(Mutex::new(if driver {
            child.stdin.take()
        } else {
            drop(child.stdin.take());
            None
        }));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let item = match Event::parse(&line) {
                    Some(e) => Incoming::Event(e, line.len() + 1),
                    None if line == "eof=yes" => Incoming::Eof,
                    None => Incoming::Reply(line),
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Closed);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut s) = sink.lock() {
                    if s.len() < 64 * 1024 {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            }
        });
        let beating = Arc::new(AtomicBool::new(driver));
        if driver {
            let (pipe, on) = (stdin.clone(), beating.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::SeqCst) {
                    // A sleep that took far longer than asked: this process was stopped. (Only
                    // the sleep is timed: a write that waits for a slow link is no stop.)
                    let asleep = Instant::now();
                    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
                    gap.fetch_max(asleep.elapsed().as_millis() as u64, Ordering::SeqCst);
                    if !on.load(Ordering::SeqCst) || write_line(&pipe, "beat").is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Follower {
            child,
            stdin,
            rx,
            stderr,
            beating,
        })
    }

    fn send(&self, line: &str) -> Result<()> {
        write_line(&self.stdin, line)
    }

    /// Stop writing: no more heartbeats, and stdin closed (the server's end of the follower
    /// stops; the job goes on).
    fn hang_up(&self) {
        self.beating.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.stdin.lock() {
            s.take();
        }
    }

    /// Close our end and let the ssh call end (a few seconds at most, or a signal: then it is
    /// stopped).
    fn close(&mut self) {
        self.hang_up();
        let child = &mut self.child;
        let ended = wait::poll(Deadline::after(Duration::from_secs(5)), || {
            matches!(child.try_wait(), Ok(Some(_)) | Err(_)).then_some(())
        });
        if ended.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_line(pipe: &Arc<Mutex<Option<ChildStdin>>>, line: &str) -> Result<()> {
    let mut guard = pipe.lock().map_err(|_| anyhow!("stdin lock poisoned"))?;
    let stdin = guard
        .as_mut()
        .ok_or_else(|| anyhow!("the connection to the job is closed"))?;
    stdin.write_all(format!("{line}\n").as_bytes())?;
    stdin.flush()?;
    Ok(())
}

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

/// What a caller does with each event while it waits (render it, note it, ...).
pub trait Watcher {
    fn event(&mut self, host: &str, e: &Event);
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
    pub phase: String,
    /// The step that started last (`snapshot`: the deployer may still stop the job).
    pub step: String,
    pub outcome: Option<Outcome>,
    /// `note` events seen, in order.
    pub notes: Vec<Vec<String>>,
    /// Messages sent, in order.
    pub sent: Vec<String>,
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
            phase: String::new(),
            step: String::new(),
            outcome: None,
            notes: Vec::new(),
            sent: Vec::new(),
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
    pub fn send(&mut self, msg: &str) -> Result<()> {
        let word = msg.split(' ').next().unwrap_or(msg).to_string();
        self.write(&word, msg)?;
        if word != "beat" {
            self.said.push(msg.to_string());
        }
        self.sent.push(word);
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

    /// Whether `msg` was sent already.
    pub fn has_sent(&self, msg: &str) -> bool {
        self.sent.iter().any(|m| m == msg)
    }

    /// The file list the release must be made of (never sent again after a re-attach: a
    /// deploy that lost its connection before the checks passed is stopped).
    pub fn send_manifest(&mut self, paths: &[String]) -> Result<()> {
        let mut text = format!("manifest {}\n", paths.len());
        for p in paths {
            text.push_str(p);
            text.push('\n');
        }
        self.write("manifest", text.trim_end_matches('\n'))?;
        self.sent.push("manifest".to_string());
        Ok(())
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
                    // The job ended; its result event came before.
                    if self.outcome.is_none() {
                        return Wait::Lost;
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
        match e.kind.as_str() {
            "phase" => self.phase = e.field(0).to_string(),
            "step" if e.field(1) == "start" => self.step = e.field(0).to_string(),
            "note" => self.notes.push(e.fields.clone()),
            "result" => self.outcome = Some(Outcome::from_event(e)),
            _ => {}
        }
    }

    /// Whether a step ended (its `step NAME ok|failed` event came).
    pub fn step_done(&self, name: &str) -> bool {
        self.notes
            .iter()
            .any(|n| n.first().map(String::as_str) == Some(name))
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
        let probe = Call::deploy("probe", &[("root", self.root.clone())]);
        let reply = crate::deploy::read(&self.session, &probe)?;
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
        let lines = crate::deploy::read(&self.session, &log)?;
        let since = crate::release::iso(
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

/// The server time a job started at or after: what the server said right after starting it,
/// less how long the call took (rounded up) and a second for the clock's resolution. 0 when
/// the server did not say (then every line counts).
pub fn since_epoch(server_now: Option<i64>, call_took: Duration) -> i64 {
    match server_now {
        Some(now) => now - call_took.as_secs_f64().ceil() as i64 - 1,
        None => 0,
    }
}

/// The lock as a reading found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockNow {
    Free,
    /// This job's lock: whether its job still runs, its step, and whether the server booted
    /// since it was taken.
    Ours {
        alive: bool,
        phase: String,
        rebooted: bool,
    },
    /// Another deploy's lock (its description).
    Other(String),
}

/// What the server's files say about a job at one moment (see [`Job::read_now`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The job's result file; else its own deploy.log line; None: nothing recorded.
    pub outcome: Option<Outcome>,
    /// `current` now (`releases/NAME`, empty for none).
    pub current: String,
    /// What current was when the job was planned (`releases/NAME`, empty for none).
    pub before: String,
    pub lock: LockNow,
    /// deploy.log lines since the job started, other than its own (a boot check's
    /// `restored-at-boot`, an unlock, another deploy).
    pub after: Vec<Entry>,
}

impl Reading {
    /// Read from a probe (and the job's result file it showed, if any) and deploy.log's lines
    /// since the job started; `(release, deployer)` find the job's own line; `before`: what
    /// current was when the job was planned.
    pub fn from_server(
        snap: &Snapshot,
        recorded: Option<Outcome>,
        token: &str,
        (release, deployer): (&str, &str),
        before: &str,
        lines: Vec<Entry>,
    ) -> Reading {
        let own = |e: &Entry| {
            e.get("release") == release
                && e.get("deployer") == deployer
                && !matches!(e.get("result"), "refused" | "unlocked")
        };
        let from_log = || {
            lines.iter().find(|e| own(e)).map(|e| Outcome {
                result: e.get("result").to_string(),
                reason: e.get("reason").replace('_', " "),
                duration: e.get("duration").trim_end_matches('s').to_string(),
                revision: e.get("alembic").to_string(),
                current: String::new(),
            })
        };
        let lock = match &snap.lock {
            None => LockNow::Free,
            Some(l) if l.token == token => LockNow::Ours {
                alive: l.alive != Some(false),
                phase: l.phase.clone(),
                rebooted: l.rebooted,
            },
            Some(l) => LockNow::Other(l.describe(snap.now)),
        };
        Reading {
            outcome: recorded.or_else(from_log),
            current: match snap.current.name() {
                Some(n) => format!("{}/{n}", crate::contract::layout::RELEASES),
                None => match &snap.current {
                    crate::deploy::snapshot::Current::Missing => String::new(),
                    other => other.link(),
                },
            },
            before: before.to_string(),
            lock,
            after: lines
                .into_iter()
                .filter(|e| !own(e) && e.get("result") != "refused")
                .collect(),
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.detach();
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
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
                if e.kind == "result" {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let e = Event::parse("1795860930123\tstep\tprepare\tok\t1.2").unwrap();
        assert_eq!(e.ms, 1_795_860_930_123);
        assert_eq!(e.kind, "step");
        assert_eq!(e.fields, vec!["prepare", "ok", "1.2"]);
        assert_eq!(e.field(7), "");
        assert!(Event::parse("started=yes").is_none());
        assert!(
            Event::parse("12\tbogus\tx").is_none(),
            "kinds come from the contract"
        );
        let r = Event::parse(
            "1\tresult\trolled-back\tnot healthy\t3.4\t0002\treleases/20261128T101530Z",
        )
        .unwrap();
        let o = Outcome::from_event(&r);
        assert_eq!(o.result, "rolled-back");
        assert_eq!(o.current, "releases/20261128T101530Z");
        assert!(!o.success());
    }

    #[test]
    fn a_job_started_at_or_after_the_servers_time_less_the_call() {
        assert_eq!(since_epoch(Some(1000), Duration::from_millis(300)), 998);
        assert_eq!(since_epoch(Some(1000), Duration::from_millis(2100)), 996);
        assert_eq!(
            since_epoch(None, Duration::ZERO),
            0,
            "unknown: every line counts"
        );
    }

    fn probe(extra: &str) -> Snapshot {
        Snapshot::from_reply(&Reply::parse(&format!(
            "now=1795860990\nhost=app\ncurrent.status=ok\ncurrent.link=releases/20261128T101530Z\ncurrent=20261128T101530Z\n{extra}"
        )))
    }

    const RELEASE: &str = "20261128T101600Z";
    const WHO: &str = "alice@laptop";

    fn lines(text: &[&str]) -> Vec<Entry> {
        text.iter().map(|l| Entry::parse(l)).collect()
    }

    #[test]
    fn a_reading_takes_the_result_file_and_what_came_after() {
        let file = Outcome::from_reply(&Reply::parse(
            "job.result=rolled-back\njob.reason=not healthy\njob.current=releases/20261128T101530Z\n",
        ));
        let r = Reading::from_server(
            &probe("locked=no\n"),
            file,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            lines(&[
                "2026-11-28T10:16:00Z deployer=bob@ci commit=x scope=all release=20261128T101601Z result=refused duration=0.0s alembic=- reason=another_deploy_holds_the_lock",
                "2026-11-28T10:16:00Z deployer=alice@laptop commit=x scope=all release=20261128T101600Z result=rolled-back duration=30.1s alembic=0002 reason=not_healthy",
                "2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current_was_x",
            ]),
        );
        assert_eq!(r.outcome.as_ref().unwrap().result, "rolled-back");
        assert_eq!(r.current, "releases/20261128T101530Z");
        assert_eq!(r.lock, LockNow::Free);
        assert_eq!(
            r.after.len(),
            1,
            "not its own line, not a refusal: {:?}",
            r.after
        );
        assert_eq!(r.after[0].get("result"), "restored-at-boot");
    }

    #[test]
    fn without_a_result_file_a_reading_takes_the_jobs_own_log_line_and_the_lock() {
        // Another job's directory is newer: the result comes from deploy.log.
        let r = Reading::from_server(
            &probe("locked=yes\nlock.token=other\nlock.alive=yes\nlock.user=bob\n"),
            None,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            lines(&["2026-11-28T10:16:00Z deployer=alice@laptop commit=x scope=all release=20261128T101600Z result=interrupted duration=12.0s alembic=- reason=the_deployer_fell_silent"]),
        );
        let o = r.outcome.unwrap();
        assert_eq!(
            (o.result.as_str(), o.reason.as_str(), o.duration.as_str()),
            ("interrupted", "the deployer fell silent", "12.0")
        );
        assert!(matches!(r.lock, LockNow::Other(_)));
        // Its own lock, its job dead, nothing recorded.
        let r = Reading::from_server(
            &probe("locked=yes\nlock.token=tok\nlock.alive=no\nlock.phase=prepare\n"),
            None,
            "tok",
            (RELEASE, WHO),
            "releases/20261128T101530Z",
            Vec::new(),
        );
        assert_eq!(r.outcome, None);
        assert_eq!(
            r.lock,
            LockNow::Ours {
                alive: false,
                phase: "prepare".into(),
                rebooted: false,
            }
        );
    }
}
