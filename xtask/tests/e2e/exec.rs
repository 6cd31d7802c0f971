//! `cargo xtask exec` and `cargo xtask db psql` against the group's deployed app machine: the
//! words, stdin, stdout and the exit code byte for byte; the command's environment (the env
//! file, the release's virtualenv, current/backend); a deploy.log line per command; no lock; a
//! terminal's Ctrl-C (util-linux `script` gives the xtask a pty); psql with its password
//! nowhere in a process list.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::support::{repo, Background, LiveLock, Site, ROOT};
use crate::Ctx;

/// The group's site with a current release (deployed once, by the first scenario that needs it).
fn deployed(ctx: &mut Ctx) -> Result<Site> {
    let site = ctx.site()?;
    if site.current_opt()?.is_none() {
        let s = crate::support::scratch("exec")?;
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()?;
    }
    Ok(site)
}

/// `cargo xtask exec -- WORDS` with `stdin`; stdout as bytes, stderr as text.
fn exec(site: &Site, words: &[OsString], stdin: &[u8]) -> Result<(Option<i32>, Vec<u8>, String)> {
    let mut cmd = site.command(&repo(), &["exec", "--"]);
    cmd.args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the xtask binary")?;
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("writer")?;
    Ok((
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn words(ws: &[&[u8]]) -> Vec<OsString> {
    ws.iter().map(|w| OsString::from_vec(w.to_vec())).collect()
}

/// deploy.log's lines from line `from` (1-based) on.
fn log_from(site: &Site, from: usize) -> Result<Vec<String>> {
    let text = site.sh(&format!("tail -n +{from} {ROOT}/deploy.log"))?;
    Ok(text.lines().map(str::to_string).collect())
}

fn log_len(site: &Site) -> Result<usize> {
    Ok(site
        .sh(&format!("wc -l < {ROOT}/deploy.log"))?
        .trim()
        .parse()?)
}

/// A file removed when dropped (a scenario's log, whether it passes or not).
struct Removed(camino::Utf8PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.0);
    }
}

/// `cargo xtask exec -- WORDS` on a pty (util-linux `script`), its keyboard script's stdin, its
/// output in `log`.
fn on_a_terminal(
    site: &Site,
    words: &[&str],
    log: &camino::Utf8Path,
) -> Result<(Background, std::process::ChildStdin)> {
    let mut args = vec!["exec", "--"];
    args.extend_from_slice(words);
    let xtask = site.command(&repo(), &args);
    let mut line = xtask::quote::sh(xtask.get_program().to_str().context("program")?);
    for a in xtask.get_args() {
        line += &format!(" {}", xtask::quote::sh(a.to_str().context("argument")?));
    }
    // `script` runs it on a pty whose keyboard is script's stdin, with the site's environment.
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .current_dir(repo())
        .stdin(Stdio::piped());
    for (k, v) in xtask.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut bg = Background::start(cmd, log)?;
    let keyboard = bg.child.stdin.take().expect("piped");
    Ok((bg, keyboard))
}

pub fn exec_passes_words_stdin_and_exit_codes_byte_for_byte(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let before = log_len(&site)?;
    // Quotes, spaces, $(), a newline and bytes that are no UTF-8, each word back as it went.
    let hostile: &[&[u8]] = &[
        b"it's \"quoted\"",
        b"  two  spaces ",
        b"$(touch /tmp/pwned) `id` $HOME",
        b"line one\nline two",
        b"\xff\xfe latin-1 \xe9",
        b"",
    ];
    let mut argv: Vec<&[u8]> = vec![b"printf", b"<%s>\\0"];
    argv.extend_from_slice(hostile);
    let (code, out, err) = exec(&site, &words(&argv), b"")?;
    ensure!(code == Some(0), "exec printf ended {code:?}: {err}");
    let mut want = Vec::new();
    for w in hostile {
        want.extend_from_slice(b"<");
        want.extend_from_slice(w);
        want.extend_from_slice(b">\0");
    }
    ensure!(
        out == want,
        "the words came back changed:\n got {:?}\nwant {:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
    ensure!(
        site.sh("test -e /tmp/pwned && echo yes || echo no")?.trim() == "no",
        "a word was run as a command"
    );
    // The exit code passes through, and stderr.
    let (code, _, err) = exec(
        &site,
        &words(&[b"sh", b"-c", b"echo to-stderr >&2; exit 3"]),
        b"",
    )?;
    ensure!(code == Some(3), "exit 3 came back as {code:?}: {err}");
    ensure!(
        err == "to-stderr\n",
        "stderr was not the command's alone: {err:?}"
    );
    // Binary stdin, every byte value, through sha256sum and cat.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (code, out, err) = exec(&site, &words(&[b"cat"]), &data)?;
    ensure!(
        code == Some(0) && out == data,
        "cat gave back {} of {} bytes ({code:?}): {err}",
        out.len(),
        data.len()
    );
    let (_, sum, _) = exec(&site, &words(&[b"sha256sum"]), &data)?;
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sha.stdin.take().expect("piped").write_all(&data)?;
    let want = sha.wait_with_output()?.stdout;
    ensure!(
        sum == want,
        "sha256 on the server {:?}, here {:?}",
        String::from_utf8_lossy(&sum),
        String::from_utf8_lossy(&want)
    );
    // A deploy.log line per exec: who, the command (printable), the exit code.
    let lines = log_from(&site, before + 1)?;
    ensure!(
        lines.len() == 4,
        "{} deploy.log lines for 4 execs:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let who = |l: &str| l.contains(" scope=exec ") && l.contains(" result=ran ");
    ensure!(
        lines.iter().all(|l| who(l)),
        "not exec lines:\n{}",
        lines.join("\n")
    );
    ensure!(
        lines[0].contains(" exit=0 reason=printf ")
            && lines[0].contains("$'line one\\nline two'")
            && lines[0].is_ascii(),
        "the printf line: {}",
        lines[0]
    );
    ensure!(
        lines[1].contains(" exit=3 reason=sh -c "),
        "the exit-3 line: {}",
        lines[1]
    );
    // No command: a one-line usage error, nothing run, no line.
    let run = site.xtask(&repo(), &["exec"])?.failed()?;
    ensure!(
        run.status.code() == Some(2) && run.stderr.lines().count() == 1,
        "{}",
        run.all()
    );
    ensure!(
        log_len(&site)? == before + 4,
        "a line for an exec that did not run"
    );
    Ok(())
}

pub fn exec_runs_as_the_app_in_current_with_its_env_and_venv(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let current = site.current()?;
    let script = b"printf '%s\\n' \"$(id -un)\" \"$PWD\" \"$VIRTUAL_ENV\" \"$(command -v python)\" \"$(command -v alembic)\"; env";
    let (code, out, err) = exec(&site, &words(&[b"sh", b"-c", script]), b"")?;
    ensure!(code == Some(0), "{err}");
    let out = String::from_utf8(out)?;
    let lines: Vec<&str> = out.lines().collect();
    let backend = format!("{ROOT}/releases/{current}/backend");
    let venv = format!("{backend}/.venv");
    ensure!(lines[0] == "innercontext", "ran as {}", lines[0]);
    ensure!(lines[1] == backend, "ran in {} (want {backend})", lines[1]);
    ensure!(lines[2] == venv, "VIRTUAL_ENV {}", lines[2]);
    ensure!(
        lines[3] == format!("{venv}/bin/python") && lines[4] == format!("{venv}/bin/alembic"),
        "python {}, alembic {}",
        lines[3],
        lines[4]
    );
    // Every KEY=value of the env file this site was provisioned with, as written.
    let file = fs_err::read_to_string(&site.env.backend_env)?;
    let entries = xtask::envfile::parse(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(!entries.is_empty());
    for e in &entries {
        let want = format!("{}={}", e.key, e.value);
        ensure!(
            lines.contains(&want.as_str()),
            "{} is not in the command's environment",
            e.key
        );
    }
    // alembic current: alembic.ini is here, the database is reached with the env file's URL.
    let (code, out, err) = exec(&site, &words(&[b"alembic", b"current"]), b"")?;
    let out = String::from_utf8_lossy(&out);
    ensure!(
        code == Some(0) && out.contains("(head)"),
        "alembic current ({code:?}): {out}{err}"
    );
    Ok(())
}

pub fn exec_takes_no_lock_and_runs_while_a_deploy_holds_it(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let lock = LiveLock::hold(&site.app, "token=e2e\\ndeployer=someone@else\\n")?;
    let result = exec(&site, &words(&[b"sh", b"-c", b"echo ran; exit 5"]), b"");
    let still = site.locked();
    lock.release()?;
    let (code, out, err) = result?;
    ensure!(
        code == Some(5) && out == b"ran\n",
        "exec under a held lock ({code:?}): {err}"
    );
    ensure!(still?, "the lock was gone after the exec");
    Ok(())
}

pub fn exec_with_a_terminal_passes_ctrl_c_to_the_command(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let before = log_len(&site)?;
    // The command says whether it has a terminal, then waits for a SIGINT.
    let remote = "test -t 0 && test -t 1 && echo has-a-tty; trap 'echo got-INT; exit 7' INT; echo ready; while :; do sleep 0.1; done";
    let log = camino::Utf8PathBuf::from(format!("/tmp/{}-exec-tty.log", crate::run_id()));
    let _removed = Removed(log.clone());
    let (mut bg, mut keyboard) = on_a_terminal(&site, &["sh", "-c", remote], &log)?;
    bg.wait_for("ready", Duration::from_secs(60))?;
    keyboard.write_all(b"\x03")?;
    keyboard.flush()?;
    let (status, out) = bg.wait(Duration::from_secs(60))?;
    drop(keyboard);
    ensure!(
        out.contains("has-a-tty"),
        "the command had no terminal:\n{out}"
    );
    ensure!(
        out.contains("got-INT"),
        "the Ctrl-C did not reach the command:\n{out}"
    );
    ensure!(
        status.code() == Some(7),
        "exit {status} (want the command's 7):\n{out}"
    );
    let lines = log_from(&site, before + 1)?;
    ensure!(
        lines.len() == 1 && lines[0].contains(" result=ran ") && lines[0].contains(" exit=7 "),
        "deploy.log after the Ctrl-C:\n{}",
        lines.join("\n")
    );
    Ok(())
}

pub fn db_psql_runs_sql_with_the_password_in_no_process_list(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let run = site
        .xtask(&repo(), &["db", "psql", "-tA", "-c", "select 40 + 2"])?
        .ok()?;
    ensure!(run.stdout.trim() == "42", "db psql -c: {}", run.all());
    let url = xtask::envfile::parse(&fs_err::read_to_string(&site.env.backend_env)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(|e| e.key == "DATABASE_URL")
        .context("no DATABASE_URL in the site's env file")?
        .value;
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, p)| p.to_string())
        .context("no password in DATABASE_URL")?;
    ensure!(
        password.len() >= 8,
        "a password too short to look for: {password:?}"
    );
    // A session on stdin that stays open while the server's processes are read.
    let mut psql = site.command(&repo(), &["db", "psql", "-tA"]);
    psql.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = psql.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(b"select 'session-' || 7;\n")?;
    stdin.flush()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let procs = site.sh("pgrep -u innercontext -x psql || true")?;
        if !procs.trim().is_empty() {
            // The password travels base64'd and is compared by bash itself: no process of this
            // search has it on its own command line.
            break site.sh(&format!(
                "p=$(printf %s {b64} | base64 -d); for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do \
                 c=$(tr '\\0' ' ' <\"$f\" 2>/dev/null) || continue; \
                 [[ $c == *\"$p\"* ]] && echo \"$f: $(tr '\\0' ' ' <\"${{f%/*}}/cmdline\")\"; done; true",
                b64 = xtask::remote::base64(password.as_bytes())
            ))?;
        }
        if Instant::now() > deadline {
            bail!("no psql process on the server within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stdin.write_all(b"\\q\n")?;
    drop(stdin);
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("session-7"),
        "the psql session: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        seen.trim().is_empty(),
        "the password is in a process's command line or environment during db psql:\n{seen}"
    );
    let left = site.sh("find /tmp /var/tmp -name pgpass 2>/dev/null; true")?;
    ensure!(
        left.trim().is_empty(),
        "the password file was left behind: {left}"
    );
    let last = site.last_log()?;
    ensure!(
        last.contains(" scope=psql ") && last.contains(" result=ran ") && last.contains(" exit=0 "),
        "deploy.log: {last}"
    );
    Ok(())
}

/// The connection of an exec with a terminal drops (its ssh is killed): the server's session
/// ends with a hang-up, the wrapper passes it on, the command ends, and its deploy.log line is
/// still written (exit=129, SIGHUP); nothing is left running.
pub fn exec_whose_connection_drops_still_leaves_its_line(ctx: &mut Ctx) -> Result<()> {
    let site = deployed(ctx)?;
    let before = log_len(&site)?;
    let log = camino::Utf8PathBuf::from(format!("/tmp/{}-exec-drop.log", crate::run_id()));
    let _removed = Removed(log.clone());
    let (mut bg, keyboard) = on_a_terminal(&site, &["sleep", "317"], &log)?;
    let running = "pgrep -u innercontext -x sleep -a | grep -c ' 317$' || true";
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.sh(running)?.trim() != "1" {
        if let Some(status) = bg.child.try_wait()? {
            bail!(
                "the exec ended ({status}) before its command ran:\n{}",
                bg.output()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "no remote sleep within 60 s:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection drops: this exec's ssh (a child of the xtask under script) is killed.
    let ssh = Command::new("pgrep")
        .args(["-f", "ssh .*ControlPath=none.* -t .* sleep 317"])
        .output()?;
    let pids = String::from_utf8_lossy(&ssh.stdout).trim().to_string();
    ensure!(
        !pids.is_empty() && !pids.contains('\n'),
        "this exec's ssh: {pids:?}"
    );
    crate::support::run_ok(Command::new("kill").args(["-KILL", &pids]), "kill")?;
    let (status, out) = bg.wait(Duration::from_secs(60))?;
    drop(keyboard);
    ensure!(
        !status.success(),
        "the exec succeeded with its connection gone:\n{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = log_from(&site, before + 1)?;
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        lines.len() == 1
            && lines[0].contains(" result=ran ")
            && lines[0].contains(" exit=129 reason=sleep 317"),
        "deploy.log after the connection dropped:\n{}",
        lines.join("\n")
    );
    ensure!(
        site.sh(running)?.trim() == "0",
        "the command still runs on the server"
    );
    Ok(())
}

/// Without a terminal a Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends
/// the local side: exit 130 and one line that says the connection was closed. The remote
/// command is not signalled (as with a plain ssh): the scenario ends it as root, and its
/// deploy.log line comes then.
pub fn exec_without_a_terminal_stops_on_ctrl_c_and_says_so(ctx: &mut Ctx) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let site = deployed(ctx)?;
    let before = log_len(&site)?;
    let log = camino::Utf8PathBuf::from(format!("/tmp/{}-exec-int.log", crate::run_id()));
    let _removed = Removed(log.clone());
    let mut cmd = site.command(&repo(), &["exec", "--", "sleep", "318"]);
    cmd.stdin(Stdio::null()).process_group(0);
    let mut bg = Background::start(cmd, &log)?;
    let running = "pgrep -u innercontext -x sleep -a | grep -c ' 318$' || true";
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.sh(running)?.trim() != "1" {
        if let Some(status) = bg.child.try_wait()? {
            bail!(
                "the exec ended ({status}) before its command ran:\n{}",
                bg.output()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "no remote sleep within 60 s:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let group = format!("-{}", bg.child.id());
    crate::support::run_ok(Command::new("kill").args(["-INT", "--", &group]), "kill")?;
    let (status, out) = bg.wait(Duration::from_secs(60))?;
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    ensure!(
        status.code() == Some(130),
        "exit {status} after a Ctrl-C (want 130):\n{out}"
    );
    ensure!(
        last.contains("interrupted by")
            && last.contains("the ssh connection to")
            && last.contains("was closed"),
        "the last line after a Ctrl-C: {last}"
    );
    // Ended by its pid, as root.
    let pid = site.sh("pgrep -u innercontext -x sleep -a | awk '$3 == 318 { print $1 }'")?;
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("the remote sleep's pid: {pid:?}"))?;
    site.sh(&format!("kill -TERM {pid}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = log_from(&site, before + 1)?;
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        lines.len() == 1 && lines[0].contains(" exit=143 reason=sleep 318"),
        "deploy.log once the command was ended:\n{}",
        lines.join("\n")
    );
    Ok(())
}
