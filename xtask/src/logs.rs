//! `cargo xtask logs [api|web|worker|all]... [-f] [-n N] [--since WHEN] [--host HOST]`: the
//! units' journal, read on the server through the log reader setup-server installs for the
//! deploy user (`sudo -n` [`JOURNAL_READER`]), over one ssh connection per host.
//!
//! One host: its lines as journalctl prints them (`-o short-iso`). Several hosts (DEPLOY_SERVER a
//! fleet): every host at once, each line prefixed with `[host] `; without `-f` each host's block
//! in DEPLOY_SERVER's order, with `-f` lines as they arrive. `--host` picks one host (no prefix).
//! `-f` ends with Ctrl-C (exit 0); the reader's journalctl ends when the connection closes.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, Host};
use crate::contract::JOURNAL_READER;
use crate::deploy::server;
use crate::flags::Logs;
use crate::interrupt::{self, SIGTERM};
use crate::wait::{self, Deadline, Missed};
use crate::{proc, quote, show};

/// The remote command line: the reader with validated options, every word quoted.
pub fn remote_line(l: &Logs) -> String {
    let mut words: Vec<String> = vec![
        "sudo".into(),
        "-n".into(),
        JOURNAL_READER.into(),
        "-n".into(),
        l.lines.to_string(),
        "-o".into(),
        "short-iso".into(),
    ];
    if l.follow {
        words.push("-f".into());
    }
    if let Some(since) = &l.since {
        words.push("--since".into());
        words.push(since.clone());
    }
    words.extend(l.units.iter().map(|u| u.to_string()));
    quote::join(&words)
}

/// The hosts to read: all of DEPLOY_SERVER, or the one `--host` names.
pub fn pick_hosts(cfg: &Config, wanted: Option<&str>) -> Result<Vec<Host>> {
    let Some(w) = wanted else {
        return Ok(cfg.hosts.clone());
    };
    match cfg.hosts.iter().find(|h| h.dest == w || h.name() == w) {
        Some(h) => Ok(vec![h.clone()]),
        None => bail!(
            "--host {w} is not a host of DEPLOY_SERVER (its hosts: {})",
            cfg.hosts
                .iter()
                .map(|h| h.dest.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One line for a reader that failed on `host`: what the server said, and what to do.
pub fn diagnose(host: &str, status: Option<i32>, stderr: &str) -> String {
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if stderr.contains("a password is required")
        || stderr.contains("a terminal is required")
        || stderr.contains("not allowed to execute")
        || stderr.contains("may not run sudo")
    {
        return format!(
            "the deploy user may not run the log reader {JOURNAL_READER} on {host} (sudo said: {last}): run cargo xtask setup-server, which installs it and its sudoers line"
        );
    }
    if stderr.contains("command not found") || stderr.contains("No such file") {
        return format!(
            "the log reader {JOURNAL_READER} is missing on {host}: run cargo xtask setup-server"
        );
    }
    if status == Some(255) {
        return format!("lost the ssh connection to {host} while reading the logs");
    }
    if let Some(msg) = last.strip_prefix("innercontext-journal: ") {
        return format!("the log reader on {host} refused: {msg}");
    }
    format!(
        "reading the logs on {host} failed ({}){}",
        status.map_or("killed".to_string(), |c| format!("exit {c}")),
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    )
}

enum Msg {
    Line(usize, String),
    /// Host `i`'s output ended: its stderr.
    Done(usize, String),
}

pub fn run(l: Logs) -> Result<()> {
    interrupt::install();
    let mut cfg = Config::from_env()?;
    let hosts = pick_hosts(&cfg, l.host.as_deref())?;
    let prefix = hosts.len() > 1;
    cfg.server = hosts
        .iter()
        .find(|h| h.role == crate::config::HostRole::Primary)
        .unwrap_or(&hosts[0])
        .dest
        .clone();
    cfg.hosts = hosts.clone();
    let sessions = server::connect_all(&cfg)?;
    let line = remote_line(&l);
    let (tx, rx) = mpsc::channel();
    let mut children: Vec<Child> = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let mut child = session.spawn_line(&line)?;
        let out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        children.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(Msg::Line(i, line)).is_err() {
                    return;
                }
            }
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = tx.send(Msg::Done(i, text));
        });
    }
    drop(tx);
    let names: Vec<String> = hosts.iter().map(|h| h.name().to_string()).collect();
    let mut blocks: Vec<Vec<String>> = vec![Vec::new(); hosts.len()];
    let mut ended: Vec<Option<(Option<i32>, String)>> = vec![None; hosts.len()];
    let print = |i: usize, text: &str| {
        if prefix {
            show!("[{}] {text}", names[i]);
        } else {
            show!("{text}");
        }
    };
    while ended.iter().any(Option::is_none) {
        if interrupt::requested() {
            break;
        }
        // Polled: a wait with a timeout would trust the clock (see crate::wait).
        match wait::recv_until(&rx, Deadline::after(Duration::from_millis(100)), || {
            interrupt::requested()
        }) {
            Ok(Msg::Line(i, text)) => {
                if l.follow || !prefix {
                    print(i, &text);
                } else {
                    blocks[i].push(text);
                }
            }
            Ok(Msg::Done(i, stderr)) => {
                let code = children[i].wait().ok().and_then(|s| s.code());
                ended[i] = Some((code, stderr));
            }
            Err(Missed::TimedOut) | Err(Missed::Interrupted) => {}
            Err(Missed::Disconnected) => break,
        }
    }
    let stopped = interrupt::requested();
    for c in &mut children {
        if c.try_wait().ok().flatten().is_none() {
            proc::signal_group(c.id(), SIGTERM);
            let _ = c.wait();
        }
    }
    for (i, block) in blocks.iter().enumerate() {
        for text in block {
            print(i, text);
        }
    }
    if stopped && l.follow {
        return Ok(());
    }
    if stopped {
        bail!("interrupted by {}", interrupt::describe());
    }
    let failures: Vec<String> = ended
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Some((Some(0), _)) => None,
            Some((code, stderr)) => Some(diagnose(&names[i], *code, stderr)),
            None => Some(format!("no answer from {}", names[i])),
        })
        .collect();
    match failures.len() {
        0 => Ok(()),
        1 => Err(anyhow!("{}", failures[0])),
        _ => Err(anyhow!("{}", failures.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{API, UNITS, WEB};

    fn logs(units: &[&'static str]) -> Logs {
        Logs {
            units: units.to_vec(),
            follow: false,
            lines: 100,
            since: None,
            host: None,
        }
    }

    #[test]
    fn the_remote_line_is_the_reader_with_quoted_options() {
        let mut l = logs(&[API.name, WEB.name]);
        assert_eq!(
            remote_line(&l),
            "sudo -n /usr/local/sbin/innercontext-journal -n 100 -o short-iso innercontext innercontext-node"
        );
        l.follow = true;
        l.lines = 0;
        l.since = Some("2026-11-28 10:15:00".into());
        assert_eq!(
            remote_line(&l),
            "sudo -n /usr/local/sbin/innercontext-journal -n 0 -o short-iso -f --since '2026-11-28 10:15:00' innercontext innercontext-node"
        );
        let all = logs(&UNITS.map(|u| u.name));
        assert!(remote_line(&all).ends_with(&UNITS.map(|u| u.name).join(" ")));
    }

    #[test]
    fn hosts_are_picked_by_destination_or_name() {
        let cfg = Config::from_lookup(|k| {
            (k == "DEPLOY_SERVER").then(|| "ic@app1,ic@app2,app3".to_string())
        })
        .unwrap();
        assert_eq!(pick_hosts(&cfg, None).unwrap().len(), 3);
        assert_eq!(pick_hosts(&cfg, Some("app2")).unwrap()[0].dest, "ic@app2");
        assert_eq!(
            pick_hosts(&cfg, Some("ic@app1")).unwrap()[0].dest,
            "ic@app1"
        );
        let e = pick_hosts(&cfg, Some("app9")).unwrap_err().to_string();
        assert!(
            e.contains("--host app9") && e.contains("ic@app1, ic@app2, app3"),
            "{e}"
        );
    }

    #[test]
    fn failures_say_what_to_do() {
        let d = diagnose("app", Some(1), "sudo: a password is required\n");
        assert!(
            d.contains("setup-server") && d.contains("may not run"),
            "{d}"
        );
        let d = diagnose(
            "app",
            Some(2),
            "innercontext-journal: -n takes 0 to 100000 lines, not 'x' (usage: ...)\n",
        );
        assert_eq!(
            d,
            "the log reader on app refused: -n takes 0 to 100000 lines, not 'x' (usage: ...)"
        );
        assert!(diagnose("app", Some(255), "").contains("lost the ssh connection to app"));
        assert!(!diagnose("app", Some(1), "x\ny\n").contains('\n'));
    }
}
