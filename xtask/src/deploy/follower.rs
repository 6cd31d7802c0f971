//! One running follower call: ssh to `deploy.sh run` or `follow`, its stdout read into events
//! and reply lines by a thread, its stderr kept for the error, and for the deployer (the
//! driver) a heartbeat that says `beat` every [`HEARTBEAT_MS`] and notes how long its sleeps
//! really took (this process stopped).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::contract::{Message, HEARTBEAT_MS};
use crate::deploy::event::Event;
use crate::remote::Call;
use crate::ssh::Session;
use crate::wait::{self, Deadline};

/// What comes out of the follower.
pub enum Incoming {
    Reply(String),
    Event(Event, usize),
    Eof,
    /// stdout closed: the call ended (the connection may be gone).
    Closed,
}

/// One running follower call (ssh to `deploy.sh run|follow`).
pub struct Follower {
    pub child: Child,
    pub stdin: Arc<Mutex<Option<ChildStdin>>>,
    pub rx: Receiver<Incoming>,
    stderr: Arc<Mutex<String>>,
    pub beating: Arc<AtomicBool>,
}

impl Follower {
    /// Start the call; as the driver, with a heartbeat that notes in `gap` the longest time
    /// (ms) it slept between two beats: this process was stopped (SIGSTOP, a suspended
    /// machine) and the job heard nothing from it for about that long.
    pub fn start(
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
                        // It can end up in an error line: server text, printed clean.
                        s.push_str(&crate::quote::printable(&line));
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
                    if !on.load(Ordering::SeqCst)
                        || write_line(&pipe, Message::Beat.name()).is_err()
                    {
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

    pub fn send(&self, line: &str) -> Result<()> {
        write_line(&self.stdin, line)
    }

    /// Stop writing: no more heartbeats, and stdin closed (the server's end of the follower
    /// stops; the job goes on).
    pub fn hang_up(&self) {
        self.beating.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.stdin.lock() {
            s.take();
        }
    }

    /// Close our end and let the ssh call end (a few seconds at most, or a signal: then it is
    /// stopped).
    pub fn close(&mut self) {
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

    pub fn stderr_text(&self) -> String {
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

pub fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}
