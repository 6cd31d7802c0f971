//! Golden files for what the grammar prints: every command's and subcommand's help, and each
//! usage error the parser has, as `main` would print them (stdout or `error: …` on stderr, and
//! the exit status), plus a few parses that run. One file per command in `golden/`;
//! `UPDATE_GOLDEN=1 cargo test -p xtask flags` rewrites them (that run fails once, saying so).

use super::*;

/// (golden file, arguments after `cargo xtask`), in the order the file lists them.
const CASES: &[(&str, &[&str])] = &[
    ("top", &[]),
    ("top", &["--help"]),
    ("top", &["-h"]),
    ("top", &["help"]),
    ("top", &["help", "deploy"]),
    ("top", &["--help", "deploy"]),
    ("top", &["deplyo"]),
    ("top", &["--frobnicate"]),
    ("top", &[""]),
    ("deploy", &["deploy", "list", "--to", "staging"]),
    // ci
    ("ci", &["ci", "--help"]),
    ("ci", &["ci", "-h"]),
    ("ci", &["ci", "--only", "-h"]),
    ("ci", &["ci", "help"]),
    ("ci", &["ci", "extra"]),
    ("ci", &["ci", "--frobnicate"]),
    ("ci", &["ci", "--", "--help"]),
    ("ci", &["ci", "--only", "java"]),
    ("ci", &["ci", "--skip", "java"]),
    ("ci", &["ci", "--only", ""]),
    ("ci", &["ci", "--only", "rust,,e2e"]),
    ("ci", &["ci", "--only"]),
    ("ci", &["ci", "--only", "--skip", "e2e"]),
    ("ci", &["ci", "--filter"]),
    ("ci", &["ci", "--only", "e2e", "--skip", "e2e"]),
    ("ci", &["ci", "--only", "rust", "--filter", "deploy::"]),
    ("ci", &["ci"]),
    (
        "ci",
        &[
            "ci", "--only", "e2e,rust", "--filter", "lock", "--filter", "x",
        ],
    ),
    ("ci", &["ci", "--only", "e2e", "--only", "rust"]),
    ("ci", &["ci", "--skip", "e2e", "--skip", "tools"]),
    ("ci", &["ci", "--only", "e2e,rust,tools", "--skip", "tools"]),
    // check
    ("check", &["check", "--help"]),
    ("check", &["check", "-h"]),
    ("check", &["check", "lint"]),
    ("check", &["check", "backend", "--frobnicate"]),
    ("check", &["check", "-"]),
    ("check", &["check", "--"]),
    ("check", &["check", "backend", "--stop-db"]),
    ("check", &["check", "--stop-db", "all"]),
    ("check", &["check"]),
    ("check", &["check", "build", "backend", "--recheck"]),
    ("check", &["check", "backend", "backend"]),
    ("check", &["check", "all", "backend"]),
    ("check", &["check", "backend", "all", "build"]),
    ("check", &["check", "--stop-db"]),
    // testhost
    ("testhost", &["testhost", "--help"]),
    ("testhost", &["testhost", "-h"]),
    ("testhost", &["testhost", "up", "app", "-h"]),
    ("testhost", &["testhost", "ssh", "app", "ls", "--help"]),
    ("testhost", &["testhost"]),
    ("testhost", &["testhost", "fly"]),
    ("testhost", &["testhost", "--rebuild"]),
    ("testhost", &["testhost", "build", "--frobnicate"]),
    ("testhost", &["testhost", "build", "extra"]),
    ("testhost", &["testhost", "build", "--rebuild"]),
    ("testhost", &["testhost", "up"]),
    ("testhost", &["testhost", "up", "App"]),
    ("testhost", &["testhost", "up", "thirteenchars"]),
    ("testhost", &["testhost", "up", "--role", "db"]),
    ("testhost", &["testhost", "up", "--role", "db", "app"]),
    ("testhost", &["testhost", "up", "app", "--role", "web"]),
    ("testhost", &["testhost", "up", "app", "--role"]),
    ("testhost", &["testhost", "up", "app", "extra"]),
    ("testhost", &["testhost", "up", "app", "--hard"]),
    ("testhost", &["testhost", "up", "app"]),
    (
        "testhost",
        &["testhost", "up", "e2edemoapp12", "--role", "db"],
    ),
    ("testhost", &["testhost", "start"]),
    ("testhost", &["testhost", "start", "1app"]),
    ("testhost", &["testhost", "start", "app", "now"]),
    ("testhost", &["testhost", "start", "app", "--now"]),
    ("testhost", &["testhost", "start", "app"]),
    ("testhost", &["testhost", "reboot"]),
    ("testhost", &["testhost", "reboot", "app", "now"]),
    ("testhost", &["testhost", "reboot", "app"]),
    ("testhost", &["testhost", "poweroff"]),
    ("testhost", &["testhost", "poweroff", "--hard"]),
    ("testhost", &["testhost", "poweroff", "--soft", "app"]),
    ("testhost", &["testhost", "poweroff", "app", "db"]),
    ("testhost", &["testhost", "poweroff", "App"]),
    ("testhost", &["testhost", "poweroff", "--hard", "app"]),
    ("testhost", &["testhost", "poweroff", "app"]),
    ("testhost", &["testhost", "down"]),
    ("testhost", &["testhost", "down", "--all", "extra"]),
    ("testhost", &["testhost", "down", "-x"]),
    ("testhost", &["testhost", "down", "app", "extra"]),
    ("testhost", &["testhost", "down", "--all"]),
    ("testhost", &["testhost", "down", "app"]),
    ("testhost", &["testhost", "status", "extra"]),
    ("testhost", &["testhost", "status"]),
    ("testhost", &["testhost", "ssh"]),
    ("testhost", &["testhost", "ssh", "a/b"]),
    ("testhost", &["testhost", "ssh", "-x"]),
    ("testhost", &["testhost", "ssh", "app"]),
    (
        "testhost",
        &["testhost", "ssh", "app", "systemctl", "is-system-running"],
    ),
    (
        "testhost",
        &["testhost", "ssh", "app", "--", "ls", "--help"],
    ),
    ("testhost", &["testhost", "exec", "app"]),
    ("testhost", &["testhost", "exec", "app", "true"]),
    ("testhost", &["testhost", "delay", "app"]),
    ("testhost", &["testhost", "delay", "app", "-5"]),
    ("testhost", &["testhost", "delay", "app", "10001"]),
    ("testhost", &["testhost", "delay", "app", "5", "extra"]),
    ("testhost", &["testhost", "delay", "app", "10000"]),
    ("testhost", &["testhost", "proxy", "--listen", "x"]),
    ("testhost", &["testhost", "proxy", "--listen"]),
    ("testhost", &["testhost", "proxy", "--delay", "x"]),
    ("testhost", &["testhost", "proxy", "--frobnicate"]),
    ("testhost", &["testhost", "proxy", "extra"]),
    (
        "testhost",
        &[
            "testhost",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "10.213.1.2:22",
            "--delay",
            "25",
            "--port-file",
            "/tmp/p",
        ],
    ),
    // setup-server
    ("setup-server", &["setup-server", "--help"]),
    ("setup-server", &["setup-server", "-h"]),
    ("setup-server", &["setup-server", "--frobnicate"]),
    ("setup-server", &["setup-server", "extra"]),
    ("setup-server", &["setup-server", "--toolchain", "nvm"]),
    ("setup-server", &["setup-server", "--toolchain"]),
    ("setup-server", &["setup-server", "--admin", "--dry-run"]),
    ("setup-server", &["setup-server", "--deploy-key"]),
    ("setup-server", &["setup-server", "--backend-env"]),
    ("setup-server", &["setup-server", "--frontend-env"]),
    ("setup-server", &["setup-server", "--tls-cert"]),
    ("setup-server", &["setup-server", "--tls-key"]),
    ("setup-server", &["setup-server", "--tls-cert", "c.pem"]),
    ("setup-server", &["setup-server", "--tls-key", "k.pem"]),
    ("setup-server", &["setup-server", "--tls-redirect"]),
    ("setup-server", &["setup-server"]),
    (
        "setup-server",
        &[
            "setup-server",
            "--admin",
            "root@10.0.0.2",
            "--deploy-key",
            "id.pub",
            "--backend-env",
            "b.env",
            "--frontend-env",
            "f.env",
            "--force-env",
            "--toolchain",
            "upstream",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-redirect",
            "--dry-run",
        ],
    ),
    // deploy
    ("deploy", &["deploy", "--help"]),
    ("deploy", &["deploy", "-h"]),
    ("deploy", &["deploy", "rollback", "-h"]),
    ("deploy", &["deploy", "--batch", "-h"]),
    ("deploy", &["deploy", "everything"]),
    ("deploy", &["deploy", "help"]),
    ("deploy", &["deploy", "--frobnicate"]),
    ("deploy", &["deploy", "rollback", "-rf"]),
    ("deploy", &["deploy", "rollback", "a", "b"]),
    ("deploy", &["deploy", "list", "extra"]),
    ("deploy", &["deploy", "--", "backend"]),
    ("deploy", &["deploy", "--dry-run", "--", "backend"]),
    ("deploy", &["deploy", "--batch", "0"]),
    ("deploy", &["deploy", "--batch", "x"]),
    ("deploy", &["deploy", "--batch", "1001"]),
    ("deploy", &["deploy", "--batch"]),
    ("deploy", &["deploy", "--batch", "--parallel"]),
    ("deploy", &["deploy", "--batch", "2", "--parallel"]),
    ("deploy", &["deploy", "list", "--parallel"]),
    ("deploy", &["deploy", "rollback", "--clean"]),
    ("deploy", &["deploy", "list", "--clean"]),
    ("deploy", &["deploy", "backend", "--clean", "--dry-run"]),
    ("deploy", &["deploy", "list", "--force"]),
    ("deploy", &["deploy", "all", "--force"]),
    ("deploy", &["deploy", "unlock", "--dry-run"]),
    ("deploy", &["deploy", "status", "-n", "5"]),
    ("deploy", &["deploy", "log", "--follow"]),
    ("deploy", &["deploy", "--lines", "5"]),
    ("deploy", &["deploy", "-n", "5", "rollback"]),
    ("deploy", &["deploy", "log", "-n", "0"]),
    ("deploy", &["deploy", "log", "-n", "10001"]),
    ("deploy", &["deploy", "log", "--lines", "x"]),
    ("deploy", &["deploy", "log", "-n"]),
    ("deploy", &["deploy"]),
    ("deploy", &["deploy", "--dry-run", "backend"]),
    (
        "deploy",
        &[
            "deploy",
            "frontend",
            "--skip-local-checks",
            "--redeploy",
            "--recheck",
        ],
    ),
    ("deploy", &["deploy", "list"]),
    (
        "deploy",
        &[
            "deploy",
            "--batch",
            "2",
            "rollback",
            "20261128T101500Z",
            "--force",
        ],
    ),
    ("deploy", &["deploy", "rollback", "--parallel", "--dry-run"]),
    ("deploy", &["deploy", "rollback", "--", "-rf"]),
    ("deploy", &["deploy", "rollback", "--", "--force"]),
    ("deploy", &["deploy", "unlock", "--force", "--yes"]),
    ("deploy", &["deploy", "status", "--follow"]),
    ("deploy", &["deploy", "-n", "5", "log"]),
    ("deploy", &["deploy", "log", "--lines", "10000"]),
    // env
    ("env", &["env", "--help"]),
    ("env", &["env"]),
    ("env", &["env", "show"]),
    ("env", &["env", "show", "staging"]),
    ("env", &["env", "show", "backend", "x"]),
    ("env", &["env", "rollback", "frontend", "--reveal"]),
    ("env", &["env", "diff", "backend"]),
    ("env", &["env", "push", "prod.env"]),
    ("env", &["env", "push", "a/.env", "b"]),
    ("env", &["env", "push", "frontend", "prod.env", "x"]),
    ("env", &["env", "push", "a/.env"]),
    ("env", &["env", "diff", "web/.env.production"]),
    ("env", &["env", "push", "frontend", "prod.env"]),
    ("env", &["env", "show", "backend", "--reveal"]),
    // db
    ("db", &["db", "--help"]),
    ("db", &["db"]),
    ("db", &["db", "restore", "--help"]),
    ("db", &["db", "dump"]),
    ("db", &["db", "restore"]),
    ("db", &["db", "restore", "a", "b"]),
    ("db", &["db", "psql", "-c", "select 1"]),
    ("db", &["db", "psql"]),
    // exec
    ("exec", &["exec", "--help"]),
    ("exec", &["exec"]),
    ("exec", &["exec", "--"]),
    ("exec", &["exec", "ls", "-l"]),
    ("exec", &["exec", "--frobnicate", "--", "true"]),
    ("exec", &["exec", "--host"]),
    (
        "exec",
        &["exec", "--host", "app2", "--", "alembic", "current"],
    ),
    (
        "exec",
        &["exec", "--", "sh", "-c", "echo \"$(id)\"\n", "--help", "--"],
    ),
    ("db", &["db", "snapshots", "x"]),
    ("db", &["db", "snapshots", "--yes"]),
    ("db", &["db", "snapshots"]),
    (
        "db",
        &["db", "restore", "20261128T101530Z-0002_price_history"],
    ),
    (
        "db",
        &[
            "db",
            "restore",
            "20261128T101530Z-0002_price_history",
            "--yes",
            "--dry-run",
        ],
    ),
    // maintenance
    ("maintenance", &["maintenance", "--help"]),
    ("maintenance", &["maintenance"]),
    ("maintenance", &["maintenance", "pause"]),
    ("maintenance", &["maintenance", "on"]),
    (
        "maintenance",
        &["maintenance", "on", "--message", "back at 5 <b>&</b>"],
    ),
    (
        "maintenance",
        &["maintenance", "on", "--message", "two\nlines"],
    ),
    (
        "maintenance",
        &["maintenance", "on", "--message", "tab\there"],
    ),
    ("maintenance", &["maintenance", "off", "--message", "x"]),
    ("maintenance", &["maintenance", "off", "now"]),
    ("maintenance", &["maintenance", "status"]),
    ("deploy", &["deploy", "--maintenance"]),
    ("deploy", &["deploy", "rollback", "--maintenance"]),
    // verify
    ("verify", &["verify", "--help"]),
    ("verify", &["verify", "extra"]),
    ("verify", &["verify", "--host"]),
    ("verify", &["verify"]),
    ("verify", &["verify", "--host", "app2"]),
    // logs
    ("logs", &["logs", "--help"]),
    ("logs", &["logs", "-h"]),
    ("logs", &["logs", "nginx"]),
    ("logs", &["logs", "--tail"]),
    ("logs", &["logs", "--", "-f"]),
    ("logs", &["logs", "--", "-h"]),
    ("logs", &["logs", "-n", "100001"]),
    ("logs", &["logs", "-n", "-5"]),
    ("logs", &["logs", "-n", "x"]),
    ("logs", &["logs", "--lines", "100001"]),
    ("logs", &["logs", "-n"]),
    ("logs", &["logs", "-n", "--follow"]),
    ("logs", &["logs", "--since", "$(id)"]),
    ("logs", &["logs", "--since", "x\ny"]),
    ("logs", &["logs", "--since", ""]),
    (
        "logs",
        &[
            "logs",
            "--since",
            "11111111111111111111111111111111111111111111111111111111111111111",
        ],
    ),
    ("logs", &["logs", "--since"]),
    ("logs", &["logs", "--host"]),
    ("logs", &["logs"]),
    ("logs", &["logs", "worker", "api", "api"]),
    ("logs", &["logs", "innercontext-node.service", "all"]),
    (
        "logs",
        &[
            "logs", "api", "-f", "-n", "0", "--since", "-1h", "--host", "app2",
        ],
    ),
    (
        "logs",
        &[
            "logs",
            "--follow",
            "--lines",
            "100000",
            "--since",
            "2026-11-28 10:15:00",
        ],
    ),
    // demo
    ("demo", &["demo", "--help"]),
    ("demo", &["demo", "-h"]),
    ("demo", &["demo", "--up"]),
    ("demo", &["demo", "extra"]),
    ("demo", &["demo"]),
    ("demo", &["demo", "--down"]),
    // bench
    ("bench", &["bench", "--help"]),
    ("bench", &["bench", "-h"]),
    ("bench", &["bench", "--lan-only"]),
    ("bench", &["bench", "extra"]),
    ("bench", &["bench", "--runs", "0"]),
    ("bench", &["bench", "--runs", "51"]),
    ("bench", &["bench", "--runs", "x"]),
    ("bench", &["bench", "--runs"]),
    ("bench", &["bench", "--only", "lan"]),
    ("bench", &["bench", "--only", "deploys,"]),
    ("bench", &["bench", "--only"]),
    ("bench", &["bench", "--hosts", "2,4"]),
    ("bench", &["bench", "--hosts", "1,2,2"]),
    ("bench", &["bench", "--hosts", "1,0"]),
    ("bench", &["bench", "--hosts", "1,9"]),
    ("bench", &["bench", "--hosts", "1, 2"]),
    ("bench", &["bench", "--hosts", ""]),
    ("bench", &["bench", "--hosts", "1;id"]),
    ("bench", &["bench", "--hosts", "1,2,4,8"]),
    ("bench", &["bench", "--hosts", "1,2", "--only", "deploys"]),
    ("bench", &["bench", "--hosts"]),
    ("bench", &["bench"]),
    ("bench", &["bench", "--runs", "3", "--only", "load,files"]),
    (
        "bench",
        &["bench", "--only", "files", "--only", "load,files"],
    ),
    ("bench", &["bench", "--hosts", "4,1,2"]),
    (
        "bench",
        &[
            "bench",
            "--hosts",
            "1,3",
            "--only",
            "deploys,hosts",
            "--runs",
            "50",
        ],
    ),
];

/// An argument as the golden shows it: plain when it reads plainly, else quoted and escaped.
fn shown(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("{arg:?}")
    }
}

/// One case as `main` would end it: help on stdout (exit 0), `error: …` on stderr (exit 2), or
/// the command it would run.
fn render(args: &[&str]) -> String {
    let line: String = args.iter().map(|a| format!(" {}", shown(a))).collect();
    let outcome = match parse(args.iter().map(|a| a.to_string())) {
        Ok(Parsed::Help(text)) => format!("exit 0, stdout:\n{text}"),
        Err(e) => format!("exit 2, stderr:\nerror: {e}\n"),
        Ok(Parsed::Run(cmd)) => format!("runs {cmd:?}\n"),
    };
    format!("$ cargo xtask{line}\n{outcome}")
}

#[test]
fn every_help_and_usage_error_is_its_golden_byte_for_byte() {
    // Every command's help is among the cases.
    for cmd in [
        "ci",
        "check",
        "testhost",
        "setup-server",
        "deploy",
        "logs",
        "exec",
        "demo",
        "bench",
    ] {
        assert!(
            CASES.contains(&(cmd, &[cmd, "--help"])),
            "no golden for 'cargo xtask {cmd} --help'"
        );
    }
    let dir = crate::project_root().join("xtask/src/flags/golden");
    let mut files: Vec<&str> = CASES.iter().map(|(f, _)| *f).collect();
    files.dedup();
    let mut stale = Vec::new();
    for file in files {
        let want: Vec<String> = CASES
            .iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, args)| render(args))
            .collect();
        let want = want.join("\n");
        let path = dir.join(format!("{file}.txt"));
        let have = fs_err::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs_err::write(&path, &want).unwrap();
            stale.push(format!("rewrote {path}"));
            continue;
        }
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(h, w)| h != w)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        stale.push(format!(
            "{path} differs at line {}:\n  golden: {:?}\n  parser: {:?}",
            line + 1,
            have.lines().nth(line).unwrap_or("(end of file)"),
            want.lines().nth(line).unwrap_or("(end of output)"),
        ));
    }
    assert!(
        stale.is_empty(),
        "{}\n(UPDATE_GOLDEN=1 cargo test -p xtask flags rewrites the goldens: review the diff)",
        stale.join("\n")
    );
}
