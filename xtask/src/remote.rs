//! Remote calls as values (the shape of Kamal's `Commands`): a [`Call`] names a server script,
//! a subcommand and its words; it renders for `--dry-run` and runs over a
//! [`crate::ssh::Session`] as exactly the command line [`Call::line`] builds. `deploy` and
//! `setup-server` both call the server this way, and the script travels with every call, so
//! nothing is installed on (or cached by) the server first: the app user could change a copy.
//!
//! The script's text (the contract and the deploy scripts: about 110 KB) is packed once per
//! process (`gzip -9n`, then base64: about 30 KB) into a small fixed [`bootstrap`] that unpacks
//! it on the server (`base64 -d | gzip -dc`, both in Debian's base system) and runs it in the
//! same bash with `eval`: `$0`, the arguments, and `BASH_EXECUTION_STRING` (the bootstrap,
//! payload included: how the deploy script starts itself again as the detached job, and
//! setup-server re-runs itself through sudo) are what `bash -c TEXT` gave. The line stays far
//! below the kernel's 128 KiB limit on one argument (sshd hands the whole line to the login
//! shell as one); a unit test keeps it under half of that.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

use crate::quote;

/// A script the server runs: its name (`$0` there) and its text.
pub struct Script {
    pub name: &'static str,
    pub text: fn() -> String,
    /// The text packed for the line (gzip, then base64), made on first use.
    packed: OnceLock<std::result::Result<String, String>>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Script({})", self.name)
    }
}

impl Script {
    /// The text as it travels: `gzip -9n` (the local one; no name, no time: the same bytes
    /// every time), then base64. Made once per process.
    pub fn packed(&self) -> Result<&str> {
        self.packed
            .get_or_init(|| {
                gzip(&(self.text)())
                    .map(|z| base64(&z))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_deref()
            .map_err(|e| anyhow!("packing {} for the server: {e}", self.name))
    }
}

/// `scripts/deploy.sh` with the contract and its parts in front.
pub static DEPLOY: Script = Script {
    name: "deploy.sh",
    text: crate::contract::deploy_script,
    packed: OnceLock::new(),
};

/// `scripts/exec.sh` with the contract and the helpers in front (`exec`, `db psql`).
pub static EXEC: Script = Script {
    name: "exec.sh",
    text: crate::contract::exec_script,
    packed: OnceLock::new(),
};

/// `scripts/setup-server.sh` with the contract in front (run as root, or re-run through sudo
/// by itself).
pub static SETUP: Script = Script {
    name: "setup-server.sh",
    text: crate::contract::setup_script,
    packed: OnceLock::new(),
};

/// The program `bash -c` runs on the server for every call: unpack `payload` whole (gzip
/// checks it) or say why not, then run it in this same shell.
pub fn bootstrap(payload: &str) -> String {
    format!(
        "ic_script__=$(printf %s '{payload}' | base64 -d | gzip -dc) || {{ echo 'error=the script sent with the call did not unpack on this host (base64 -d | gzip -dc)'; exit 1; }}; eval \"$ic_script__\""
    )
}

/// `gzip -9n` of `text`, by the local gzip.
fn gzip(text: &str) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running gzip (the scripts travel compressed: install gzip)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = text.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut out)
        .context("reading gzip's output")?;
    let status = child.wait()?;
    writer
        .join()
        .map_err(|_| anyhow!("writing to gzip panicked"))?
        .context("writing to gzip")?;
    if !status.success() {
        anyhow::bail!("gzip -9n failed ({status})");
    }
    Ok(out)
}

/// Standard base64 (RFC 4648, padded, one line).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One call of a server script.
#[derive(Debug, Clone)]
pub struct Call {
    pub script: &'static Script,
    pub sub: &'static str,
    pub args: Vec<String>,
}

impl Call {
    pub fn new(
        script: &'static Script,
        sub: &'static str,
        args: impl IntoIterator<Item = String>,
    ) -> Call {
        Call {
            script,
            sub,
            args: args.into_iter().collect(),
        }
    }

    /// A `scripts/deploy.sh` call with `key=value` options; the keys must be the contract's.
    pub fn deploy(sub: &'static str, opts: &[(&str, String)]) -> Call {
        let allowed = crate::contract::keys(sub);
        for (k, _) in opts {
            assert!(
                allowed.contains(k),
                "deploy.sh {sub} takes no option '{k}' (see contract.rs)"
            );
        }
        Call::new(&DEPLOY, sub, opts.iter().map(|(k, v)| format!("{k}={v}")))
    }

    /// What the call does, in the words of the step that makes it (for errors: never the
    /// script's internal subcommand names).
    pub fn what(&self) -> String {
        if !std::ptr::eq(self.script, &DEPLOY) {
            return format!("the '{}' step", self.sub);
        }
        match self.sub {
            "probe" => "reading the server's state",
            "run" => "starting the server job",
            "follow" => "following the server job",
            "unlock" => "removing the deploy lock",
            "log" => "reading deploy.log",
            "db" => "reading the database's revision",
            "maintenance" => "reading or changing maintenance mode",
            _ => "the server job",
        }
        .to_string()
    }

    /// The argument vector after the script name.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![self.sub.to_string()];
        v.extend(self.args.iter().cloned());
        v
    }

    /// How the call reads in a plan: exactly the words the remote shell receives.
    pub fn render(&self) -> String {
        format!("scripts/{} {}", self.script.name, quote::join(self.argv()))
    }

    /// The remote command line: `bash -c BOOTSTRAP NAME ARGS...`, every word quoted (the
    /// bootstrap carries the packed script: see the module's doc).
    pub fn try_line(&self) -> Result<String> {
        let mut words = vec![
            "bash".to_string(),
            "-c".to_string(),
            bootstrap(self.script.packed()?),
            self.script.name.to_string(),
        ];
        words.extend(self.argv());
        Ok(quote::join(&words))
    }

    /// The same; panics when the script cannot be packed (no gzip here: tests).
    pub fn line(&self) -> String {
        self.try_line().unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// The parsed result of a remote call: `key=value` lines on stdout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub pairs: Vec<(String, String)>,
}

impl Reply {
    /// The `key=value` lines of `stdout` (a key is letters, digits, `_`, `.` and `-`; a value
    /// is the rest of the line, tabs included); anything else (an event line, noise) is skipped.
    /// A value is server-written text: its control characters are stripped
    /// ([`crate::quote::printable`]) before anything prints it.
    pub fn parse(stdout: &str) -> Reply {
        let pairs = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| is_key(k))
            .map(|(k, v)| (k.to_string(), crate::quote::printable(v)))
            .collect();
        Reply { pairs }
    }
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The lines `PREFIX.KEY=VALUE` as (KEY, VALUE).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.pairs.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('.'))
                .map(|k| (k, v.as_str()))
        })
    }
    pub fn push(&mut self, line: &str) {
        if let Some((k, v)) = line.split_once('=') {
            self.pairs.push((k.to_string(), v.to_string()));
        }
    }
}

/// Whether `k` is a reply key.
fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests;
