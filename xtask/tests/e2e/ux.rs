//! What a user sees (issue 16): the step lines of a deploy, a refused deploy, a rollback and
//! `logs` as golden files, in plain mode and on a terminal; `logs -f` across a restart; and the
//! papercuts a new user hits (a database outage, `list` after a failed prepare, sizes, `--`).
//!
//! Golden files live in `xtask/tests/e2e/golden/`; `UPDATE_GOLDEN=1` rewrites them. The
//! variable parts (durations, release names, commits, hosts, addresses, sizes, counts) are
//! masked by [`mask`]. Terminal mode runs the xtask under `script -qec … /dev/null`, so stdout
//! and stderr are a terminal; the golden is the screen's final lines after carriage returns and
//! erase codes are applied ([`render`]), and every escape sequence must be one the xtask means
//! to send (colour, erase to the end of the line).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use camino::Utf8PathBuf;

use crate::support::{self, Background, Run, Scratch, Site, ROOT};
use crate::Ctx;

/// `xtask/tests/e2e/golden/NAME`.
fn golden_path(name: &str) -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/e2e/golden/{name}"))
}

/// Compare `text` with the golden file `name`. With UPDATE_GOLDEN=1 a file that differs is
/// rewritten, and the check still fails (saying so): a run with the variable set never passes
/// a text it did not compare.
fn golden(name: &str, text: &str) -> Result<()> {
    let path = golden_path(name);
    let want = fs_err::read_to_string(&path).ok();
    if want.as_deref() == Some(text) {
        return Ok(());
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs_err::create_dir_all(path.parent().unwrap())?;
        fs_err::write(&path, text)?;
        bail!("rewrote {path} (UPDATE_GOLDEN is set): review the diff, then run again without it");
    }
    let want =
        want.with_context(|| format!("no golden file {path}: run with UPDATE_GOLDEN=1 once"))?;
    let mut diff = String::new();
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), text.lines().collect());
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i).copied(), g.get(i).copied());
        if a != b {
            diff += &format!(
                "  line {}:\n    want: {}\n    got:  {}\n",
                i + 1,
                a.unwrap_or("(none)"),
                b.unwrap_or("(none)")
            );
        }
    }
    bail!("{name} differs from {path} (UPDATE_GOLDEN=1 rewrites it):\n{diff}--- got:\n{text}")
}

/// Replace every occurrence of the literal `what` by `with`.
fn replace_all(text: &str, what: &str, with: &str) -> String {
    if what.is_empty() {
        text.to_string()
    } else {
        text.replace(what, with)
    }
}

/// Mask what changes from run to run: release names, durations, commits and other hex ids,
/// IPv4 addresses, the machines' and this machine's names, ages, pids, file counts and sizes.
pub fn mask(text: &str, names: &[(&str, &str)]) -> String {
    let mut t = text.to_string();
    for (what, with) in names {
        t = replace_all(&t, what, with);
    }
    let mut out = String::with_capacity(t.len());
    for line in t.lines() {
        // Step lines are padded to a column: how much depends on the names just masked (a
        // machine's name has the run's id in it), so runs of spaces count as one.
        let masked = mask_line(line);
        let mut last_space = false;
        for ch in masked.chars() {
            if ch == ' ' && last_space {
                continue;
            }
            last_space = ch == ' ';
            out.push(ch);
        }
        out.push('\n');
    }
    out
}

fn mask_line(line: &str) -> String {
    let c: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let boundary = |j: usize| j >= c.len() || !c[j].is_ascii_alphanumeric();
    while i < c.len() {
        let prev_ok = i == 0 || !c[i - 1].is_ascii_alphanumeric();
        if prev_ok {
            // A release name: 8 digits, T, 6 digits, Z.
            if i + 16 <= c.len()
                && c[i..i + 8].iter().all(char::is_ascii_digit)
                && c[i + 8] == 'T'
                && c[i + 9..i + 15].iter().all(char::is_ascii_digit)
                && c[i + 15] == 'Z'
                && boundary(i + 16)
            {
                out.push_str("<RELEASE>");
                i += 16;
                continue;
            }
            // An IPv4 address.
            let mut j = i;
            let mut dots = 0;
            while j < c.len() && (c[j].is_ascii_digit() || c[j] == '.') {
                if c[j] == '.' {
                    dots += 1;
                }
                j += 1;
            }
            if dots == 3 && c[i].is_ascii_digit() && c[j - 1].is_ascii_digit() && boundary(j) {
                out.push_str("<IP>");
                i = j;
                continue;
            }
            // A duration or size with a decimal point: 1.2s, 0.3 MB, 12.0.
            let mut j = i;
            while j < c.len() && c[j].is_ascii_digit() {
                j += 1;
            }
            if j > i && j + 1 < c.len() && c[j] == '.' && c[j + 1].is_ascii_digit() {
                let mut k = j + 1;
                while k < c.len() && c[k].is_ascii_digit() {
                    k += 1;
                }
                if boundary(k) || c[k] == 's' {
                    out.push_str("<N.N>");
                    i = k;
                    continue;
                }
            }
            // A hex id of 7 or more characters with a letter (commits, venv keys, tokens), or
            // of exactly the length of a short commit (12) or a virtualenv key (16) even with
            // none: one commit in about 280 is all digits (seen: 'backend N' in a full run).
            let mut j = i;
            while j < c.len() && c[j].is_ascii_hexdigit() && !c[j].is_ascii_uppercase() {
                j += 1;
            }
            if (j - i >= 7 && c[i..j].iter().any(char::is_ascii_alphabetic)
                || matches!(j - i, 12 | 16))
                && boundary(j)
            {
                out.push_str("<HEX>");
                i = j;
                continue;
            }
            // An age: 5s, 3m07s, 2h05m, 1d04h, before "ago".
            let mut j = i;
            while j < c.len() && (c[j].is_ascii_digit() || "dhms".contains(c[j])) {
                j += 1;
            }
            if j > i
                && c[i].is_ascii_digit()
                && "dhms".contains(c[j - 1])
                && c[j..].iter().collect::<String>().starts_with(" ago")
            {
                out.push_str("<AGE>");
                i = j;
                continue;
            }
            // Other numbers: counts, bytes (with thousands separators), pids, ages.
            let mut j = i;
            while j < c.len() && (c[j].is_ascii_digit() || (c[j] == ',' && j > i)) {
                j += 1;
            }
            if j > i && c[j - 1].is_ascii_digit() {
                let unit_ok = j >= c.len() || !(c[j].is_ascii_alphabetic() || c[j] == '_') || {
                    // 12s, 3m, 1h, 2d as ages; 5432 ports stay numbers (masked too).
                    matches!(c[j], 's' | 'm' | 'h' | 'd') && boundary(j + 1)
                };
                if unit_ok {
                    out.push('N');
                    i = j;
                    continue;
                }
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The escape sequences the xtask sends on a terminal: SGR colour (`ESC [ … m`) and erase to
/// the end of the line (`ESC [ K`). Anything else is an error.
fn check_escapes(raw: &str) -> Result<()> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1b {
            ensure!(
                b.get(i + 1) == Some(&b'['),
                "an escape that is not a CSI at byte {i}: {:?}",
                &raw[i..(i + 12).min(raw.len())]
            );
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';') {
                j += 1;
            }
            ensure!(
                matches!(b.get(j), Some(b'm') | Some(b'K')),
                "an unexpected escape sequence at byte {i}: {:?}",
                &raw[i..(j + 1).min(raw.len())]
            );
            i = j + 1;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The lines a terminal shows at the end: `\r` returns to the start of the line, `ESC [ K`
/// erases to its end, colour codes are dropped, later characters overwrite earlier ones.
pub fn render(raw: &str) -> String {
    let mut out = String::new();
    let mut line: Vec<char> = Vec::new();
    let mut col = 0;
    let c: Vec<char> = raw.chars().collect();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\r' => col = 0,
            '\n' => {
                out.push_str(line.iter().collect::<String>().trim_end());
                out.push('\n');
                line.clear();
                col = 0;
            }
            '\x1b' if c.get(i + 1) == Some(&'[') => {
                let mut j = i + 2;
                while j < c.len() && (c[j].is_ascii_digit() || c[j] == ';') {
                    j += 1;
                }
                if c.get(j) == Some(&'K') {
                    line.truncate(col);
                }
                i = j;
            }
            ch => {
                if col < line.len() {
                    line[col] = ch;
                } else {
                    line.push(ch);
                }
                col += 1;
            }
        }
        i += 1;
    }
    if !line.is_empty() {
        out.push_str(line.iter().collect::<String>().trim_end());
        out.push('\n');
    }
    out
}

/// Run `cmd` with stdout and stderr on a terminal (`script`), as a user at a terminal would
/// (`CI` unset, `TERM` set): its exit status and the raw bytes the terminal received.
fn on_terminal(cmd: &Command) -> Result<(std::process::ExitStatus, String)> {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let line = xtask::quote::join(&words);
    let mut t = Command::new("script");
    t.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        t.current_dir(dir);
    }
    t.env_remove("CI")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::null());
    let out = t.output().context("running script(1) (bsdutils)")?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// The names to mask on this site: the app machine, its address, this machine's host name.
fn names(site: &Site) -> Vec<(String, String)> {
    let local = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut v = vec![
        (site.app.name.clone(), "<APP>".to_string()),
        (site.db.name.clone(), "<DB>".to_string()),
    ];
    if !local.is_empty() {
        v.push((format!("{user}@{local}"), "<YOU>".to_string()));
        v.push((local, "<LOCAL>".to_string()));
    }
    v
}

fn masked(site: &Site, text: &str) -> String {
    let n = names(site);
    let refs: Vec<(&str, &str)> = n.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    mask(text, &refs)
}

/// rsync's own progress lines on a terminal (`--info=progress2`): one masked line for all.
fn without_progress(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        if l.contains("to-chk=") || l.contains("xfr#") || l.trim_start().starts_with("N ") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A deploy of the backend from `s` after a one-line change, as the golden scenarios make it.
fn change(s: &Scratch, what: &str) -> Result<()> {
    let path = "backend/innercontext/pricing.py";
    let text = s.read(path)?;
    s.write(path, &format!("{text}\n# {what}\n"))?;
    s.commit(what)
}

/// A current release on the site (a first deploy all from `s` if there is none yet).
fn ensure_current(site: &Site, s: &Scratch) -> Result<()> {
    if site.current_opt()?.is_none() {
        site.xtask(&s.dir, &["deploy", "all", "--skip-local-checks"])?
            .ok()?;
    }
    Ok(())
}

/// Plain output of a run as the golden shows it: stderr (step lines), then stdout if any.
fn plain(site: &Site, run: &Run) -> Result<String> {
    ensure!(
        !run.all().contains('\x1b'),
        "escape codes in plain output:\n{}",
        run.all()
    );
    let mut t = format!("exit: {}\n", if run.status.success() { 0 } else { 1 });
    t += &masked(site, &run.stderr);
    if !run.stdout.is_empty() {
        t += "--- stdout\n";
        t += &masked(site, &run.stdout);
    }
    Ok(t)
}

/// Terminal output of a run as the golden shows it: the screen's final lines.
fn tty(site: &Site, status: std::process::ExitStatus, raw: &str) -> Result<String> {
    check_escapes(raw)?;
    ensure!(
        raw.contains("\x1b["),
        "no colour or erase code on a terminal: is the terminal mode on?\n{raw}"
    );
    let screen = without_progress(&masked(site, &render(raw)));
    Ok(format!(
        "exit: {}\n{screen}",
        if status.success() { 0 } else { 1 }
    ))
}

/// The step lines of a deploy, a refused deploy (a held lock, then a preflight refusal), a
/// rollback and `logs`, plain and on a terminal, against golden files.
pub fn step_lines_are_golden(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-golden")?;
    ensure_current(&site, &s)?;
    change(&s, "warm up")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;

    // A deploy: plain, then on a terminal.
    change(&s, "golden plain")?;
    let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
    golden("deploy.plain.txt", &plain(&site, &run)?)?;
    run.ok()?;
    change(&s, "golden tty")?;
    let (status, raw) =
        on_terminal(&site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]))?;
    golden("deploy.tty.txt", &tty(&site, status, &raw)?)?;
    ensure!(status.success(), "the terminal deploy failed:\n{raw}");
    // Colour on a terminal: `ok` green.
    ensure!(raw.contains("\x1b[32mok\x1b[0m"), "no green ok:\n{raw}");

    // A rollback: plain, then on a terminal (each one further back).
    let run = site.xtask(&s.dir, &["deploy", "rollback"])?;
    golden("rollback.plain.txt", &plain(&site, &run)?)?;
    run.ok()?;
    let (status, raw) = on_terminal(&site.command(&s.dir, &["deploy", "rollback"]))?;
    golden("rollback.tty.txt", &tty(&site, status, &raw)?)?;
    ensure!(status.success(), "the terminal rollback failed:\n{raw}");

    // A refused deploy: a lock held by a running job (one whose job is gone would be taken
    // over). The lock line says refused, never ok, and nothing changes.
    let releases = site.releases()?;
    let lock = support::LiveLock::hold(
        &site.app,
        "user=alice\\nhost=laptop\\npid=4242\\nstarted=2026-11-28T10:15:30Z\\nstarted_epoch=1795860930\\ncommand=deploy all\\ncommit=3f2a9c1d0b7e\\nrelease=20261128T101530Z\\ntoken=1-2\\n",
    )?;
    let result = (|| -> Result<()> {
        change(&s, "refused plain")?;
        let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
        golden("refused.plain.txt", &plain(&site, &run)?)?;
        run.failed()?;
        let (status, raw) =
            on_terminal(&site.command(&s.dir, &["deploy", "backend", "--skip-local-checks"]))?;
        golden("refused.tty.txt", &tty(&site, status, &raw)?)?;
        ensure!(!status.success(), "a deploy under a held lock succeeded");
        Ok(())
    })();
    lock.release()?;
    result?;
    ensure!(
        site.releases()? == releases,
        "a refused deploy made a release"
    );

    // Refused in preflight (an env file readable by others): the same shape, no `ok`.
    site.sh(&format!("chmod 644 {ROOT}/shared/backend/.env"))?;
    let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"]);
    site.sh(&format!("chmod 600 {ROOT}/shared/backend/.env"))?;
    let run = run?;
    golden("refused-preflight.plain.txt", &plain(&site, &run)?)?;
    let run = run.failed()?;
    for l in run
        .stderr
        .lines()
        .filter(|l| l.contains("start the server job"))
    {
        ensure!(
            l.contains("refused") && !l.contains("ok ("),
            "the lock line of a refused deploy: {l}"
        );
    }

    // logs: the step line, and the journal lines' shape (their text is the units').
    let run = site.xtask(&s.dir, &["logs", "api", "-n", "3"])?;
    let shape = |stdout: &str| -> String {
        stdout
            .lines()
            .map(|l| {
                let unit = l
                    .split_whitespace()
                    .nth(2)
                    .map(|w| w.split('[').next().unwrap_or(w).trim_end_matches(':'))
                    .unwrap_or("?");
                format!("<TIME> <APP> {unit}[N]: <MESSAGE>")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut text = format!(
        "exit: {}\n{}",
        if run.status.success() { 0 } else { 1 },
        masked(&site, &run.stderr)
    );
    text += &format!("--- stdout (shape)\n{}\n", shape(&run.stdout));
    ensure!(
        run.stdout.lines().count() == 3,
        "logs -n 3 printed:\n{}",
        run.stdout
    );
    golden("logs.plain.txt", &text)?;
    run.ok()?;
    let (status, raw) = on_terminal(&site.command(&s.dir, &["logs", "api", "-n", "3"]))?;
    check_escapes(&raw)?;
    let screen = render(&raw);
    let (steps, journal): (Vec<&str>, Vec<&str>) =
        screen.lines().partition(|l| l.starts_with("==> "));
    let text = format!(
        "exit: {}\n{}--- stdout (shape)\n{}\n",
        if status.success() { 0 } else { 1 },
        masked(&site, &(steps.join("\n") + "\n")),
        shape(&journal.join("\n"))
    );
    golden("logs.tty.txt", &text)?;
    ensure!(status.success(), "logs on a terminal failed:\n{raw}");
    site.assert_serving()
}

/// `logs -f api` follows a restart: the new process's start lines arrive while it runs, and
/// nothing of it is left on the server once it is stopped.
pub fn logs_follow_a_restart(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-logs")?;
    ensure_current(&site, &s)?;
    let log = s.sidecar("logs-follow.log");
    let mut bg = Background::start(
        site.command(&s.dir, &["logs", "api", "-f", "-n", "0"]),
        &log,
    )?;
    // The follower is attached once its reader runs on the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    while site
        .sh("pgrep -f '[j]ournalctl.*innercontext' >/dev/null && echo yes || echo no")?
        .trim()
        != "yes"
    {
        ensure!(
            Instant::now() < deadline,
            "no journalctl on the server:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    site.sh("systemctl restart innercontext")?;
    let pid = site
        .sh("systemctl show -p MainPID --value innercontext")?
        .trim()
        .to_string();
    ensure!(pid != "0" && !pid.is_empty(), "no new API process");
    // uvicorn says "Started server process [PID]" when the new process starts.
    let result = bg.wait_for(&format!("[{pid}]"), Duration::from_secs(60));
    bg.signal("INT")?;
    let (status, out) = bg.wait(Duration::from_secs(20))?;
    let _ = fs_err::remove_file(&log);
    result?;
    ensure!(
        status.success(),
        "logs -f ended with {status} on Ctrl-C:\n{out}"
    );
    ensure!(
        out.contains("Started server process") || out.contains("Application startup complete"),
        "no start lines of the new process:\n{out}"
    );
    // The reader's journalctl ends with the connection.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = site.sh("pgrep -af '[j]ournalctl.*innercontext' || true")?;
        if left.trim().is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "journalctl still runs on the server after logs -f stopped:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The CLI answers before anything reaches a server: `--` in front of a release name, a unit
/// that is not one, a `--since` that could be shell, an `-n` out of range.
pub fn cli_refuses_bad_words_up_front(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-cli")?;
    // (arguments, the one error line, the exit status: 2 for a usage error, 1 for a value
    // the grammar allows but the command refuses)
    for (args, expect, code) in [
        (
            vec!["deploy", "rollback", "--", "-rf"],
            "not a release name",
            1,
        ),
        (
            vec!["deploy", "rollback", "-rf"],
            "unknown flag '-rf' for 'deploy rollback'",
            2,
        ),
        (vec!["logs", "nginx"], "unknown unit 'nginx'", 2),
        (vec!["logs", "--since", "$(id)"], "invalid --since", 2),
        (vec!["logs", "-n", "100001"], "invalid -n", 2),
        (
            vec!["logs", "--host", "elsewhere"],
            "is not a host of DEPLOY_SERVER",
            1,
        ),
    ] {
        let run = site.xtask(&s.dir, &args)?.failed()?;
        ensure!(
            run.status.code() == Some(code),
            "{args:?}: exit status {:?}, want {code}:\n{}",
            run.status.code(),
            run.all()
        );
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        ensure!(
            errors.len() == 1 && errors[0].contains(expect),
            "{args:?}: expected one error line with {expect:?}:\n{}",
            run.all()
        );
        ensure!(
            !run.stderr.contains("==> connect"),
            "{args:?} reached the server:\n{}",
            run.all()
        );
    }
    Ok(())
}

/// The API down (its service and its socket stopped, so nothing answers on its port): the page
/// is the error page that says the API is unreachable and what to check (503), never a bare
/// 500 or a hang; once the API is started again the page is the product list.
pub fn the_error_page_while_the_api_is_down(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-api")?;
    ensure_current(&site, &s)?;
    site.sh("systemctl stop innercontext.socket innercontext.service")?;
    let seen = (|| -> Result<(u16, String)> {
        let (status, html) = site.get("/")?;
        Ok((status, page_text(&html)))
    })();
    site.sh("systemctl start innercontext.socket innercontext.service")?;
    let (status, said) = seen?;
    ensure!(
        status == 503
            && said.contains("The innercontext API is unreachable right now")
            && said.contains("check the innercontext service on the server"),
        "with the API down / answered {status}: {said}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.get("/api/health-check")?.0 != 200 {
        ensure!(Instant::now() < deadline, "the API did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    site.assert_serving()
}

/// With PostgreSQL stopped on the db machine: a deploy fails in one line naming the host, the
/// port and the cause (no traceback); `status` says why the revision is unreadable; `rollback`
/// refuses, saying why and naming --force; `rollback --force` switches with a warning.
pub fn database_outage(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-db")?;
    ensure_current(&site, &s)?;
    change(&s, "before the outage")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    let before = site.current()?;
    site.db.ssh(&["systemctl", "stop", "postgresql"])?;
    let result = (|| -> Result<()> {
        let db = &site.db.ip;
        // `systemctl stop postgresql` returns before the cluster is down: the API's health
        // check says when it is gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = site.get("/api/health-check")?;
            if status == 503 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the API's health check still answers {status} a minute after PostgreSQL was stopped: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The API answers 503 with a body that says the database is unavailable (never a 500),
        // and the page says so to the visitor (never "HTTP 500").
        let (api, api_body) = site.get("/api/products")?;
        let (page, html) = site.get("/")?;
        let said = page_text(&html);
        ensure!(
            api == 503
                && api_body.contains("database_unavailable")
                && !api_body.contains(db.as_str())
                && page == 503
                && said.contains("database is unavailable"),
            "during the outage /api/products answered {api} ({}) and / answered {page} ({said})",
            api_body.trim()
        );
        change(&s, "during the outage")?;
        let run = site
            .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
            .failed()?;
        let all = run.all();
        ensure!(!all.contains("Traceback"), "a traceback:\n{all}");
        let last = run
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .context("no error line")?;
        ensure!(
            last.contains(&format!("{db}:5432")) && last.contains("refused"),
            "the error line does not name {db}:5432 and the cause:\n{all}"
        );
        ensure!(site.current()? == before, "current moved");
        s.undo()?;

        let run = site.xtask(&s.dir, &["deploy", "status"])?.ok()?;
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with("database:"))
            .context("no database line in status")?;
        ensure!(
            line.contains("unreadable")
                && line.contains(&format!("{db}:5432"))
                && line.contains("refused"),
            "status does not say why: {line}"
        );

        let run = site.xtask(&s.dir, &["deploy", "rollback"])?.failed()?;
        let all = run.all();
        ensure!(
            all.contains("cannot read the database revision") && all.contains("--force"),
            "a plain rollback must refuse, say why and name --force:\n{all}"
        );
        ensure!(
            site.current()? == before,
            "a refused rollback moved current"
        );

        let run = site.xtask(&s.dir, &["deploy", "rollback", "--force"])?;
        let all = run.all();
        ensure!(
            run.status.success(),
            "rollback --force during the outage failed:\n{all}"
        );
        ensure!(
            all.lines()
                .any(|l| l.starts_with("warning:") && l.contains("--force")),
            "no warning:\n{all}"
        );
        ensure!(site.current()? != before, "rollback --force did not switch");
        Ok(())
    })();
    site.db.ssh(&["systemctl", "start", "postgresql"])?;
    result?;
    // Once the database is back the site serves again, and a deploy works.
    change(&s, "after the outage")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    site.assert_serving()
}

/// The words of an HTML page as a visitor reads them: tags, scripts and styles dropped.
fn page_text(html: &str) -> String {
    let mut rest = html;
    let mut text = String::new();
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        let tag = &rest[open..];
        let skip_to = ["script", "style"]
            .iter()
            .find(|t| tag[1..].starts_with(*t))
            .and_then(|t| tag.find(&format!("</{t}>")));
        let after = match skip_to {
            Some(end) => end + 1,
            None => 0,
        };
        match tag[after..].find('>') {
            Some(close) => rest = &tag[after + close + 1..],
            None => rest = "",
        }
    }
    text.push_str(rest);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `list` after a release that failed in prepare shows its commit, and sizes are what each
/// release adds: a big file shared by hard links is counted in the release that brought it.
pub fn list_shows_commits_and_added_bytes(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-list")?;
    ensure_current(&site, &s)?;
    // 24 MB that does not compress, brought by one release and kept by the next.
    let mut blob = vec![0u8; 24 * 1024 * 1024];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for chunk in blob.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(s.dir.join("backend/blob.bin"), &blob)?;
    s.commit("a big file")?;
    let big = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?
        .release()
        .context("no release name")?;
    change(&s, "small change")?;
    let small = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?
        .release()
        .context("no release name")?;
    // A dependency the lock file does not have: `uv sync --locked` fails in prepare.
    let py = s.read("backend/pyproject.toml")?;
    s.write(
        "backend/pyproject.toml",
        &py.replacen(
            "dependencies = [",
            "dependencies = [\n    \"left-pad-e2e-not-locked\",",
            1,
        ),
    )?;
    s.commit("unlocked dependency")?;
    let commit = s
        .git(&["rev-parse", "--short=12", "HEAD"])?
        .trim()
        .to_string();
    let run = site
        .xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .failed()?;
    s.undo()?;
    let failed = run.release().context("no release name")?;
    ensure!(
        run.all().contains("prepare") && site.state(&failed)? == "failed",
        "expected a failure in prepare:\n{}",
        run.all()
    );
    let list = site.xtask(&s.dir, &["deploy", "list"])?.ok()?;
    let row = |name: &str| -> Result<String> {
        list.stdout
            .lines()
            .find(|l| l.contains(name))
            .map(str::to_string)
            .with_context(|| format!("{name} not in list:\n{}", list.stdout))
    };
    let f = row(&failed)?;
    ensure!(
        f.contains("failed") && f.contains(&commit),
        "the failed release's row lacks its commit {commit}: {f}\n{}",
        list.stdout
    );
    let mb = |r: &str| -> Result<f64> {
        let words: Vec<&str> = r.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == "MB")
            .with_context(|| format!("no size in {r}"))?;
        Ok(words[i - 1].parse()?)
    };
    let (b, sm) = (mb(&row(&big)?)?, mb(&row(&small)?)?);
    ensure!(
        b >= 24.0 && sm < 8.0,
        "sizes are not what each release adds ({big}: {b} MB, {small}: {sm} MB):\n{}",
        list.stdout
    );
    fs_err::remove_file(s.dir.join("backend/blob.bin"))?;
    s.commit("without the big file")?;
    site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?
        .ok()?;
    site.assert_serving()
}

/// The maskers and the terminal renderer, checked on known text (run as a scenario: the e2e
/// target has no libtest).
pub fn masks_and_render(_ctx: &mut Ctx) -> Result<()> {
    let m = mask(
        "==> seed release 20261128T101530Z                 ok (0.1s) [from 20261128T101500Z]\n\
         ==> upload 3 of 1,234 files (changed since 3f2a9c1d0b7e) ok (0.3s) [1 files changed, 12,985 bytes sent]\n\
         cannot use the database innercontext at 10.213.3.2:5432: refused; 5s ago; 0002_price_history\n\
         deploy of 20261128T101530Z (backend 405912033318) on x: success\n",
        &[],
    );
    let want = "==> seed release <RELEASE> ok (<N.N>s) [from <RELEASE>]\n\
                ==> upload N of N files (changed since <HEX>) ok (<N.N>s) [N files changed, N bytes sent]\n\
                cannot use the database innercontext at <IP>:N: refused; <AGE> ago; 0002_price_history\n\
                deploy of <RELEASE> (backend <HEX>) on x: success\n";
    ensure!(m == want, "mask:\n{m}\nwant:\n{want}");
    let r =
        render("==> x   \r\x1b[K==> x   ⠋ 0.4s\r\x1b[K==> x   \x1b[32mok\x1b[0m (1.0s)\nnext\r\n");
    ensure!(r == "==> x   ok (1.0s)\nnext\n", "render: {r:?}");
    ensure!(check_escapes("\x1b[1;31merror:\x1b[0m \x1b[K").is_ok());
    ensure!(check_escapes("\x1b]0;title\x07").is_err());
    ensure!(check_escapes("\x1b[2J").is_err());
    readme_transcript_is_the_golden()
}

/// The README's opening transcript (a real capture) says what the deploy golden says: the same
/// step lines once the run's names, times and counts are masked.
fn readme_transcript_is_the_golden() -> Result<()> {
    let readme =
        fs_err::read_to_string(Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let section = readme
        .split("## A deploy in 30 seconds")
        .nth(1)
        .context("README: no section 'A deploy in 30 seconds'")?;
    let block = section
        .split("```\n")
        .nth(1)
        .context("README: no transcript under 'A deploy in 30 seconds'")?;
    // The capture pruned a release at the end; the golden's run had none to prune.
    let shown = mask(block, &[("m1app", "<APP>")]).replace(" [pruned <RELEASE>]", "");
    let golden = fs_err::read_to_string(golden_path("deploy.plain.txt"))?;
    let want = golden.strip_prefix("exit: 0\n").unwrap_or(&golden);
    ensure!(
        shown == want,
        "README's transcript, masked:\n{shown}\nthe golden deploy.plain.txt:\n{want}"
    );
    Ok(())
}

/// Too little room for the upload: refused up front with a threshold that follows the upload's
/// size, and advice that helps now (the failed releases there, by name, and how to remove them).
pub fn free_space_refusal_says_what_helps(ctx: &mut Ctx) -> Result<()> {
    let site = ctx.site()?;
    let s = support::scratch("ux-space")?;
    ensure_current(&site, &s)?;
    let dead = "20200101T000000Z";
    site.sh(&format!(
        "set -e; install -d -o innercontext -g innercontext {ROOT}/releases/{dead}; \
         printf failed >{ROOT}/releases/{dead}/.state; chown innercontext: {ROOT}/releases/{dead}/.state"
    ))?;
    let used_kb: u64 = site
        .sh(&format!("du -sk {ROOT}/releases | cut -f1"))?
        .trim()
        .parse()?;
    // A small disk for the releases: what they use now and 40 MB more.
    let size_mb = used_kb / 1024 + 40;
    site.sh(&format!(
        "set -e; d=$(mktemp -d); cp -a {ROOT}/releases/. $d/; mount -t tmpfs -o size={size_mb}m,mode=755 tmpfs {ROOT}/releases; cp -a $d/. {ROOT}/releases/; rm -rf $d; chown innercontext: {ROOT}/releases"
    ))?;
    let result = (|| -> Result<()> {
        // 64 MB to upload: more than the 40 MB free once the virtualenv's room is added.
        fs_err::write(s.dir.join("backend/big.bin"), vec![3u8; 64 * 1024 * 1024])?;
        s.commit("too big for the disk")?;
        let run = site.xtask(&s.dir, &["deploy", "backend", "--skip-local-checks"])?;
        s.undo()?;
        let run = run.failed()?;
        let err = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .context("no error line")?
            .to_string();
        ensure!(
            err.contains("MB free under") && err.contains(dead) && err.contains("rm -rf"),
            "the refusal does not say what helps: {err}"
        );
        // The threshold follows the upload: its 64 MB and more.
        let need: u64 = err
            .split("needs about ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no threshold in: {err}"))?;
        ensure!(
            need >= 64 + 150,
            "a threshold of {need} MB for a 64 MB upload: {err}"
        );
        ensure!(!err.contains("DEPLOY_KEEP"), "{err}");
        ensure!(!site.locked()?, "lock left behind");
        Ok(())
    })();
    site.sh(&format!(
        "umount {ROOT}/releases; rm -rf {ROOT}/releases/{dead}"
    ))?;
    result?;
    site.assert_serving()
}
