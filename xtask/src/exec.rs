//! `cargo xtask exec [--host H] -- CMD ARG...` and `cargo xtask db psql [ARG...]`: a command on
//! the server in the current release, as the app user, the way the app runs (in
//! `current/backend`, the release's virtualenv first on PATH, the backend's env file in the
//! environment), or psql to the app's database through the primary.
//!
//! One ssh process, one connection, one round trip: no probe, no lock, no master connection.
//! Its remote command line is `scripts/exec.sh` sent with the call (like every server script,
//! see [`crate::remote`]) and the command's words quoted by [`quote::sh_os`], whatever bytes
//! they hold. With a terminal on both ends ssh allocates one (`-t`: a REPL works, a Ctrl-C
//! reaches the remote command); without, none (`-T`): stdin, stdout and stderr pass through byte
//! for byte, and the remote command's exit code is the xtask's. ssh's own failure (255, with
//! no exit status in its log) is said as such, with the host. The server's wrapper writes the
//! deploy.log line after the command ends (docs/exec.md).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitStatus;

use anyhow::{bail, Context, Result};

use crate::config::{Config, Host, HostRole};
use crate::flags::Exec;
use crate::remote::{bootstrap, EXEC};
use crate::{interrupt, quote, ssh};

/// What the server's wrapper runs: the command as given, or psql to the app's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exec,
    Psql,
}

impl Mode {
    /// The wrapper's first word, and the scope of its deploy.log line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exec => "exec",
            Mode::Psql => "psql",
        }
    }
}

/// The remote command line: `bash -c BOOTSTRAP exec.sh MODE root=ROOT deployer=WHO -- WORDS`,
/// every word quoted (the words byte for byte).
pub fn remote_line(mode: Mode, root: &str, deployer: &str, words: &[OsString]) -> Result<OsString> {
    let mut head = vec![
        "bash".to_string(),
        "-c".to_string(),
        bootstrap(EXEC.packed()?),
        EXEC.name.to_string(),
        mode.name().to_string(),
        format!("root={root}"),
        format!("deployer={deployer}"),
    ];
    if let Some(name) = crate::destination::name() {
        head.push(format!("destination={name}"));
    }
    head.push("--".to_string());
    let mut line = OsString::from(quote::join(&head));
    for w in words {
        line.push(" ");
        line.push(quote::sh_os(w));
    }
    Ok(line)
}

/// How an ssh for one command ended, from its exit status and its DEBUG1 log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The remote command's exit code (255 too, when the log shows it came from the server).
    Exit(i32),
    /// ssh never logged in: the one-line diagnosis of [`ssh::diagnose`].
    NoConnection(String),
    /// Logged in, but the exit status never came: the connection dropped (ssh's last words).
    Lost(String),
    /// ssh itself ended by a signal.
    Killed,
}

/// Read how ssh ended: any code but 255 is the remote command's; 255 is the command's only
/// when the log holds `Exit status 255` (ssh logs the status it got, `-1` when none came).
pub fn ended(dest: &str, code: Option<i32>, log: &str) -> Ended {
    let Some(code) = code else {
        return Ended::Killed;
    };
    if code != 255
        || log
            .lines()
            .any(|l| l.trim_end() == "debug1: Exit status 255")
    {
        return Ended::Exit(code);
    }
    // ssh's own words: the lines that are not debug output.
    let words: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("debug"))
        .collect();
    if !log.contains("debug1: Authenticated to ") {
        return Ended::NoConnection(ssh::diagnose(dest, &words.join("\n")));
    }
    Ended::Lost(words.last().copied().unwrap_or("").to_string())
}

/// The host to run on: `--host` as `logs --host` takes it, else the primary.
fn pick(cfg: &Config, wanted: Option<&str>) -> Result<Host> {
    let hosts = crate::logs::pick_hosts(cfg, wanted)?;
    let primary = hosts.iter().find(|h| h.role == HostRole::Primary);
    Ok(primary.unwrap_or(&hosts[0]).clone())
}

pub fn run(e: &Exec) -> Result<()> {
    let cfg = Config::from_env()?;
    let host = pick(&cfg, e.host.as_deref())?;
    let code = session(&cfg, &host, Mode::Exec, &e.command)?;
    // The remote command's exit code is this command's (nothing is left to drop).
    std::process::exit(code)
}

pub fn psql(args: &[String]) -> Result<()> {
    let cfg = Config::from_env()?;
    let host = pick(&cfg, None)?;
    let words: Vec<OsString> = args.iter().map(OsString::from).collect();
    let code = session(&cfg, &host, Mode::Psql, &words)?;
    std::process::exit(code)
}

/// Run the one ssh and read how it ended: the remote exit code, or an error that says what
/// happened to the connection.
fn session(cfg: &Config, host: &Host, mode: Mode, words: &[OsString]) -> Result<i32> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (user, me) = crate::deploy::local::deployer();
    let line = remote_line(mode, &cfg.root, &format!("{user}@{me}"), words)?;
    let dir = ssh::private_dir()?;
    let log = dir.join("ssh.log");
    // A terminal's Ctrl-C without a terminal for the command ends ssh (in this group); the
    // xtask stays to say so.
    interrupt::install();
    let status: std::io::Result<ExitStatus> =
        ssh::direct_command(&host.dest, cfg.ssh_config.as_deref(), tty, &log, line).status();
    let text = fs_err::read_to_string(&log).unwrap_or_default();
    let _ = fs_err::remove_dir_all(&dir);
    let status = status.context("running ssh (is openssh-client installed?)")?;
    let name = host.name();
    if interrupt::requested() && status.code() != Some(0) {
        bail!(
            "interrupted by {}: the ssh connection to {name} was closed; the command there gets end of input and a closed output (deploy.log on {name} says how it ended: cargo xtask deploy log)",
            interrupt::describe()
        );
    }
    match ended(&host.dest, status.code(), &text) {
        Ended::Exit(code) => Ok(code),
        Ended::NoConnection(why) => bail!("{why}; nothing ran on {name}"),
        Ended::Lost(last) => bail!(
            "lost the ssh connection to {name} before the command's exit status came{}: whether it ran to its end is in deploy.log there (cargo xtask deploy log)",
            if last.is_empty() { String::new() } else { format!(" ({last})") }
        ),
        Ended::Killed => bail!("ssh to {name} was ended by a signal before the command's exit status came"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    #[test]
    fn the_line_carries_the_words_byte_for_byte() {
        let words: Vec<OsString> = [&b"printf"[..], b"%s", b"it's a \"$(id)\"\nline \xff"]
            .map(|w| OsString::from_vec(w.to_vec()))
            .to_vec();
        let line = remote_line(Mode::Exec, "/opt/ic", "alice@laptop", &words).unwrap();
        let text = line.as_bytes();
        let tail = b" exec.sh exec root=/opt/ic deployer=alice@laptop -- printf %s 'it'\\''s a \"$(id)\"\nline \xff'";
        assert!(text.ends_with(tail), "{}", String::from_utf8_lossy(text));
        assert!(text.starts_with(b"bash -c 'ic_script__="));
    }

    /// What the server's loader (`env_pairs` in scripts/exec.sh) makes of `text`: its pairs, or
    /// the line it refuses.
    fn loader(text: &[u8]) -> Result<Vec<(String, String)>, usize> {
        let dir = std::env::temp_dir().join(format!("ic-env-pairs-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        fs_err::write(&file, text).unwrap();
        let (functions, _) = crate::contract::EXEC_SH
            .rsplit_once("\nmain \"$@\"")
            .expect("exec.sh ends by calling main");
        let script = [
            crate::contract::CONTRACT_SH,
            crate::contract::LIB_SH,
            functions,
            "\nenv_pairs \"$1\"\n",
        ]
        .concat();
        let out = std::process::Command::new("bash")
            .args(["-c", &script, "t"])
            .arg(&file)
            .output()
            .unwrap();
        let _ = fs_err::remove_dir_all(&dir);
        let stdout = String::from_utf8(out.stdout).unwrap();
        if !out.status.success() {
            let line = stdout
                .strip_prefix("line ")
                .and_then(|r| r.split(':').next());
            return Err(line
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{stdout:?}")));
        }
        Ok(stdout
            .lines()
            .map(|l| l.split_once('=').unwrap())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn the_servers_env_loader_reads_the_format_as_envfile_does() {
        let cases: &[&str] = &[
            "",
            "A=1",
            "# a comment\n\nA=1\n  \nB_2=x=y\nEMPTY=\n",
            "URL=postgresql+psycopg://u:p@h:5432/db?x=1&y=$z;`id`\n",
            "A=é ü 日本\n\t\n#\tcomment with a tab\n",
            "\u{2003}\u{a0}\nA=1\n",
            "A=1\r\n",
            "A=1\nexport B\n",
            "export A=1",
            "A =1",
            "1A=1",
            "A-B=1",
            "\u{a0}A=1",
            "A=1\nB=2\nA=3\n",
            "A=\"x\"",
            "A='x'",
            "A=`x`",
            "A=x #note",
            "A=${HOME}",
            "A= x",
            "A=x ",
            "A=x\u{1b}[2J",
            "A=x\ty",
            "A=x\u{85}y",
            "A=1\n# \u{7}bell\n",
            "A=1\n\u{b}\n",
            "A=\u{0}\n",
            " # indented comment\n",
        ];
        for text in cases {
            let want = match crate::envfile::parse(text) {
                Ok(entries) => Ok(entries.into_iter().map(|e| (e.key, e.value)).collect()),
                Err(e) => Err(e.line),
            };
            assert_eq!(loader(text.as_bytes()), want, "{text:?}");
        }
        // Not UTF-8: not text, so not in the format (envfile's readers cannot read it either).
        assert!(loader(b"A=\xff\n").is_err());
    }

    #[test]
    fn the_deploy_log_line_says_who_what_and_the_exit_code_printably_and_cut() {
        let dir = std::env::temp_dir().join(format!("ic-exec-log-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let (functions, _) = crate::contract::EXEC_SH
            .rsplit_once("\nmain \"$@\"")
            .unwrap();
        let test = "\nopt_deployer=alice@laptop\n\
            exec_log \"$1\" 2026-12-06T10:00:00Z \"${EPOCHREALTIME/./}\" exec 20261206T095900Z 3 \
            printf $'it\\'s a\\nline \\xff\\x1b[2J' \"$(printf 'x%.0s' {1..300})\"\n";
        let script = [
            crate::contract::CONTRACT_SH,
            crate::contract::LIB_SH,
            functions,
            test,
        ]
        .concat();
        let out = std::process::Command::new("bash")
            .args(["-c", &script, "t"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = fs_err::read_to_string(dir.join("deploy.log")).unwrap();
        let _ = fs_err::remove_dir_all(&dir);
        let line = log.strip_suffix('\n').unwrap();
        assert!(
            !line.contains('\n') && line.is_ascii() && !line.contains('\u{1b}'),
            "{line:?}"
        );
        let head = "2026-12-06T10:00:00Z deployer=alice@laptop commit=- scope=exec \
            release=20261206T095900Z result=ran duration=0.0s alembic=- exit=3 reason=";
        let reason = line.strip_prefix(head).unwrap_or_else(|| panic!("{line}"));
        assert!(
            reason.starts_with("printf $'it\\'s a\\nline \\377\\E[2J' xxx"),
            "{reason}"
        );
        assert_eq!(reason.len(), 200, "{reason}");
        assert!(reason.ends_with("x..."), "{reason}");
    }

    /// exec.sh travels without its comment lines: bash defines every function as from the files.
    #[test]
    fn dropping_comment_lines_changes_no_function_of_exec_sh() {
        use crate::contract::{exec_script, CONTRACT_SH, EXEC_SH, LIB_SH};
        let full = [CONTRACT_SH, LIB_SH, EXEC_SH].concat();
        assert!(!full.replace("<<<", "").contains("<<"), "a here-document");
        let functions = |text: &str| {
            let (defs, _) = text.rsplit_once("\nmain \"$@\"").expect("ends with main");
            let out = std::process::Command::new("bash")
                .args(["-c", &format!("{defs}\ndeclare -f"), "t"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        assert!(String::from_utf8_lossy(&functions(&full)).contains("env_pairs ()"));
        assert_eq!(functions(&full), functions(&exec_script()));
    }

    #[test]
    fn a_255_is_the_commands_only_when_ssh_logged_it() {
        let log = "debug1: Authenticated to h ([10.0.0.2]:22) using \"publickey\".\n";
        assert_eq!(ended("h", Some(3), ""), Ended::Exit(3));
        assert_eq!(
            ended("h", Some(255), &format!("{log}debug1: Exit status 255\n")),
            Ended::Exit(255)
        );
        assert_eq!(
            ended(
                "h",
                Some(255),
                &format!("{log}Timeout, server h not responding.\ndebug1: Exit status -1\n")
            ),
            Ended::Lost("Timeout, server h not responding.".into())
        );
        let Ended::NoConnection(why) = ended(
            "u@h",
            Some(255),
            "ssh: Could not resolve hostname h: Name or service not known\n",
        ) else {
            panic!("not a connection failure")
        };
        assert!(
            why.starts_with("cannot connect to u@h: the host name does not resolve"),
            "{why}"
        );
        assert_eq!(ended("h", None, ""), Ended::Killed);
    }
}
