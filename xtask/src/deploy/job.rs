//! The client side of the server-side job (scripts/deploy-job.sh): start it, send it messages,
//! follow its events, and re-attach after a lost connection. The job owns the outcome; this
//! side only asks and watches, and renders what the job reports.
//!
//! One ssh call carries both directions: `deploy.sh run` (or `follow`) writes the job's events
//! to stdout and reads the deployer's messages, one per line, from stdin; a heartbeat thread
//! says `beat` every [`HEARTBEAT_MS`]. When this process dies, stdin closes and the job knows.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::contract::HEARTBEAT_MS;
use crate::lock::LockInfo;
use crate::remote::{Call, Reply};
use crate::ssh::Session;

/// How long a lost connection is tried again before the deployer gives up on it (the job goes
/// on by itself either way).
pub const RECONNECT_FOR: Duration = Duration::from_secs(20);

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
    fn start(session: &Session, call: &Call, driver: bool) -> Result<Follower> {
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
                    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
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

    /// Close our end: the follower on the server stops (the job goes on).
    fn close(&mut self) {
        self.beating.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.stdin.lock() {
            s.take();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    session: Session,
    follower: Option<Follower>,
    /// Bytes of the job's event stream seen so far (where a re-attach resumes).
    offset: u64,
    pub phase: String,
    pub outcome: Option<Outcome>,
    /// `note` events seen, in order.
    pub notes: Vec<Vec<String>>,
    /// Messages sent, in order.
    pub sent: Vec<String>,
    /// What the last follower said on stderr when it ended without the job's result.
    pub last_error: String,
    /// Re-attaches so far.
    pub reattaches: u32,
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
        let mut follower = Follower::start(&session, call, true)?;
        let mut reply = Reply::default();
        loop {
            match follower.rx.recv_timeout(Duration::from_secs(120)) {
                Ok(Incoming::Reply(line)) => {
                    reply.push(&line);
                    if line == "started=yes" {
                        break;
                    }
                }
                Ok(Incoming::Event(..)) | Ok(Incoming::Eof) => {}
                Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => {
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
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{host} did not answer within 120s while taking the lock")
                }
            }
        }
        Ok(Ok(Job {
            host: host.to_string(),
            token,
            root,
            session,
            follower: Some(follower),
            offset: 0,
            phase: String::new(),
            outcome: None,
            notes: Vec::new(),
            sent: Vec::new(),
            last_error: String::new(),
            reattaches: 0,
        }))
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Send a message to the job. Fails when the connection is gone.
    pub fn send(&mut self, msg: &str) -> Result<()> {
        let f = self
            .follower
            .as_ref()
            .ok_or_else(|| anyhow!("not connected to the job on {}", self.host))?;
        f.send(msg)?;
        self.sent
            .push(msg.split(' ').next().unwrap_or(msg).to_string());
        Ok(())
    }

    /// Whether `msg` was sent already.
    pub fn has_sent(&self, msg: &str) -> bool {
        self.sent.iter().any(|m| m == msg)
    }

    /// The file list the release must be made of.
    pub fn send_manifest(&mut self, paths: &[String]) -> Result<()> {
        let f = self
            .follower
            .as_ref()
            .ok_or_else(|| anyhow!("not connected to the job on {}", self.host))?;
        let mut text = format!("manifest {}\n", paths.len());
        for p in paths {
            text.push_str(p);
            text.push('\n');
        }
        f.send(text.trim_end_matches('\n'))?;
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
        let deadline = Instant::now() + timeout;
        let signals = crate::interrupt::count();
        loop {
            if self.outcome.is_some() {
                return Wait::Finished;
            }
            if until(self) {
                return Wait::Reached;
            }
            if crate::interrupt::count() != signals || Instant::now() >= deadline {
                return Wait::Timeout;
            }
            let Some(f) = self.follower.as_ref() else {
                return Wait::Lost;
            };
            let got = f.rx.recv_timeout(Duration::from_millis(50));
            match got {
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
                Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => {
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
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn absorb(&mut self, e: &Event) {
        match e.kind.as_str() {
            "phase" => self.phase = e.field(0).to_string(),
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

    /// The connection dropped: connect again and re-attach where we left off. Returns whether
    /// that worked (one extra handshake).
    pub fn reattach(&mut self, dest: &str, ssh_config: Option<&camino::Utf8Path>) -> Result<()> {
        if let Some(mut f) = self.follower.take() {
            f.close();
        }
        self.last_error.clear();
        self.reattaches += 1;
        if self.reattaches > 3 {
            bail!(
                "the connection dropped {} times ({})",
                self.reattaches,
                self.last_error
            );
        }
        // A dropped link often comes back within seconds (Wi-Fi, a VPN, a proxy restarting).
        let deadline = Instant::now() + RECONNECT_FOR;
        let session = loop {
            match Session::connect(dest, ssh_config) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline && !crate::interrupt::requested() => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
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
        let follower = Follower::start(&session, &call, true)?;
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

    /// Ask the server how the job ended (after a lost connection, or to confirm).
    pub fn read_back(&self) -> Option<Outcome> {
        let call = Call::deploy("probe", &[("root", self.root.clone())]);
        let (_, reply) = self.session.call(&call).ok()?;
        (reply.get("job.token") == Some(self.token.as_str()))
            .then(|| Outcome::from_reply(&reply))
            .flatten()
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
    let f = Follower::start(session, &call, false)?;
    let mut outcome = None;
    let signals = crate::interrupt::count();
    loop {
        if crate::interrupt::count() != signals {
            break;
        }
        match f.rx.recv_timeout(Duration::from_millis(100)) {
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
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
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
}
