//! `cargo xtask env show|diff|push|rollback`: the server's env files without ssh.
//!
//! `show` and `diff` read the file on each host (`deploy.sh envread`: its bytes, never through
//! a shell variable) and print keys only, values masked unless `show --reveal`. `push` and
//! `rollback` are a server job of their own ([`crate::deploy::envjob`]). Every file is read
//! with [`crate::envfile`], the one definition of the format: a local file that fails it, is
//! missing or too big is refused before anything is sent.

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Config;
use crate::contract::ENV_MAX_BYTES;
use crate::deploy::envjob::{self, Change};
use crate::deploy::server;
use crate::envfile::{self, Entry};
use crate::flags::{Env, EnvKind};
use crate::remote::Call;
use crate::{interrupt, show};

pub fn run(cmd: Env) -> Result<()> {
    interrupt::install();
    match cmd {
        Env::Show { kind, reveal } => show_all(&Config::from_env()?, kind, reveal),
        Env::Diff { kind, file } => {
            let local = read_local(&file)?;
            diff_all(&Config::from_env()?, kind, &file, &local.1)
        }
        Env::Push { kind, file } => {
            let (bytes, _) = read_local(&file)?;
            envjob::change(&Config::from_env()?, kind, Change::Push { file, bytes })
        }
        Env::Rollback { kind } => envjob::change(&Config::from_env()?, kind, Change::Rollback),
    }
}

/// A local file's bytes and entries, or one line saying why it cannot be sent.
pub fn read_local(file: &str) -> Result<(Vec<u8>, Vec<Entry>)> {
    let bytes = match fs_err::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{file} does not exist: nothing was changed")
        }
        Err(e) => return Err(anyhow!(e).context(format!("reading {file}"))),
    };
    let entries = check_bytes(file, &bytes)?;
    Ok((bytes, entries))
}

/// The entries of `bytes` (pure), or why they are not an env file to send.
pub fn check_bytes(file: &str, bytes: &[u8]) -> Result<Vec<Entry>> {
    if bytes.len() > ENV_MAX_BYTES {
        bail!(
            "{file} is {} bytes, over the {ENV_MAX_BYTES} an env file may have: nothing was changed",
            bytes.len()
        );
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("{file} is not UTF-8 text: nothing was changed"))?;
    envfile::parse(text)
        .map_err(|e| anyhow!("{file} is not in the env-file format: {e}; nothing was changed (see docs/env-files.md)"))
}

/// A value as `show` prints it (pure): masked unless revealed; an empty one says so.
pub fn shown_value(value: &str, reveal: bool) -> String {
    match (value.is_empty(), reveal) {
        (true, _) => "(empty)".to_string(),
        (false, true) => value.to_string(),
        (false, false) => "********".to_string(),
    }
}

/// What `new` changes of `old`, one line a key, values never shown (pure): `+ KEY` added,
/// `- KEY` removed, `~ KEY` changed; keys in `new`'s order, then the removed in `old`'s.
pub fn diff(old: &[Entry], new: &[Entry]) -> Vec<String> {
    let find = |set: &[Entry], k: &str| set.iter().find(|e| e.key == k).map(|e| e.value.clone());
    let mut lines = Vec::new();
    for e in new {
        match find(old, &e.key) {
            None => lines.push(format!("+ {} (added)", e.key)),
            Some(v) if v != e.value => lines.push(format!("~ {} (changed)", e.key)),
            Some(_) => {}
        }
    }
    for e in old {
        if find(new, &e.key).is_none() {
            lines.push(format!("- {} (removed)", e.key));
        }
    }
    lines
}

/// `od -An -tx1` text without spaces, back to bytes (pure).
pub fn from_hex(hex: &str) -> Result<Vec<u8>> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) {
        bail!("odd length");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| anyhow!("{e}")))
        .collect()
}

/// One host's env file as the server has it.
struct Remote {
    host: String,
    path: String,
    entries: Vec<Entry>,
    backups: Vec<String>,
}

fn read_remote(cfg: &Config, kind: EnvKind) -> Result<Vec<Remote>> {
    let sessions = server::connect_all(cfg)?;
    let mut out = Vec::new();
    for (h, session) in cfg.hosts.iter().zip(&sessions) {
        let call = Call::deploy(
            "envread",
            &[("root", cfg.root.clone()), ("env", kind.name().to_string())],
        );
        let reply = server::read(session, &call)?;
        let name = h.dest.rsplit('@').next().unwrap_or(&h.dest).to_string();
        if let Some(e) = reply.get("env.error") {
            bail!("{name}: {e}");
        }
        let path = reply.get("env.path").unwrap_or("?").to_string();
        let bytes = from_hex(reply.get("env.hex").unwrap_or(""))
            .with_context(|| format!("reading {path} on {name}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let entries = envfile::parse(&text).map_err(|e| {
            anyhow!("{path} on {name} is not in the env-file format ({e}): replace it with 'cargo xtask env push {} FILE'", kind.name())
        })?;
        let backups = reply
            .all("env.backup")
            .iter()
            .map(|b| b.to_string())
            .collect();
        out.push(Remote {
            host: name,
            path,
            entries,
            backups,
        });
    }
    Ok(out)
}

fn show_all(cfg: &Config, kind: EnvKind, reveal: bool) -> Result<()> {
    for r in read_remote(cfg, kind)? {
        show!(
            "{}: {} ({} keys; {} backup(s){})",
            r.host,
            r.path,
            r.entries.len(),
            r.backups.len(),
            r.backups
                .last()
                .map(|b| format!(", newest {b}"))
                .unwrap_or_default()
        );
        for e in &r.entries {
            show!("  {}={}", e.key, shown_value(&e.value, reveal));
        }
    }
    Ok(())
}

fn diff_all(cfg: &Config, kind: EnvKind, file: &str, local: &[Entry]) -> Result<()> {
    for r in read_remote(cfg, kind)? {
        let lines = diff(&r.entries, local);
        if lines.is_empty() {
            show!(
                "{}: {file} is what {} holds (values compared, not shown)",
                r.host,
                r.path
            );
            continue;
        }
        show!("{}: {file} against {} (values masked):", r.host, r.path);
        for l in lines {
            show!("  {l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<Entry> {
        envfile::parse(text).unwrap()
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line() {
        let e = check_bytes("f", b"A=1\r\nB=2\r\n").unwrap_err().to_string();
        assert!(
            e.starts_with("f is not in the env-file format: line 1: the line ends in CR")
                && e.contains("nothing was changed"),
            "{e}"
        );
        let e = check_bytes("f", b"A=1\nA=2\n").unwrap_err().to_string();
        assert!(e.contains("line 2: A is set twice"), "{e}");
        let e = check_bytes("f", &vec![b'#'; ENV_MAX_BYTES + 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the 65536"), "{e}");
        assert!(check_bytes("f", b"\xff=1\n").is_err());
        let e = read_local("/nonexistent/.env").unwrap_err().to_string();
        assert_eq!(e, "/nonexistent/.env does not exist: nothing was changed");
    }

    #[test]
    fn values_are_masked_unless_revealed() {
        assert_eq!(shown_value("s3cret", false), "********");
        assert_eq!(shown_value("s3cret", true), "s3cret");
        assert_eq!(shown_value("", false), "(empty)");
    }

    #[test]
    fn diff_names_keys_never_values() {
        let old = entries("A=1\nB=2\nC=3\n");
        let new = entries("B=2\nC=changed\nD=4\n");
        let d = diff(&old, &new);
        assert_eq!(d, ["~ C (changed)", "+ D (added)", "- A (removed)"]);
        assert!(!d.concat().contains('4'));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex("413d310a\n").unwrap(), b"A=1\n");
        assert!(from_hex("4").is_err() && from_hex("zz").is_err());
        assert_eq!(from_hex("").unwrap(), b"");
    }
}
