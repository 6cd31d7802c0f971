//! The grammar's unit tests (the help texts and usage errors byte for byte: `golden.rs`).

use super::*;

fn p(args: &[&str]) -> Result<Parsed, UsageError> {
    parse(args.iter().map(|s| s.to_string()))
}
fn run(args: &[&str]) -> Command {
    match p(args) {
        Ok(Parsed::Run(c)) => c,
        other => panic!("{args:?} gave {other:?}"),
    }
}
/// The help of a command, rendered from its table (the texts were constants before).
fn help_of(cmd: &str) -> String {
    let cmd = commands::COMMANDS.iter().find(|c| c.name == cmd);
    cmd.expect("a command").help()
}
fn err(args: &[&str]) -> String {
    match p(args) {
        Err(e) => e.0,
        other => panic!("{args:?} should fail, gave {other:?}"),
    }
}

#[test]
fn no_args_and_help_print_top_help() {
    let top = table::top_help(&commands::COMMANDS);
    assert_eq!(p(&[]), Ok(Parsed::Help(top.clone())));
    assert_eq!(p(&["--help"]), Ok(Parsed::Help(top.clone())));
    assert_eq!(p(&["-h"]), Ok(Parsed::Help(top)));
}

#[test]
fn every_command_has_its_own_help() {
    for cmd in [
        "ci",
        "check",
        "testhost",
        "setup-server",
        "deploy",
        "demo",
        "bench",
        "logs",
    ] {
        let help = help_of(cmd);
        assert_eq!(p(&[cmd, "--help"]), Ok(Parsed::Help(help.clone())), "{cmd}");
        assert!(
            table::top_help(&commands::COMMANDS).contains(&format!("  {cmd} ")),
            "{cmd} missing from top help"
        );
        assert!(help.contains(&format!("cargo xtask {cmd}")));
    }
    // Help anywhere among the flags wins, even after a subcommand.
    assert_eq!(
        p(&["deploy", "rollback", "-h"]),
        Ok(Parsed::Help(help_of("deploy")))
    );
}

#[test]
fn unknown_command_names_the_choices() {
    let e = err(&["deplyo"]);
    assert!(e.contains("'deplyo'") && e.contains("deploy") && e.contains("setup-server"));
    assert!(!e.contains('\n'));
}

#[test]
fn deploy_defaults_to_all() {
    assert_eq!(
        run(&["deploy"]),
        Command::Deploy(Deploy::Release {
            scope: Scope::All,
            dry_run: false,
            skip_local_checks: false,
            redeploy: false,
            clean: false,
            recheck: false,
            batch: Some(1),
            allow_unsafe_migration: false,
            maintenance: false,
        })
    );
    assert_eq!(
        run(&["deploy", "--dry-run"]),
        Command::Deploy(Deploy::Release {
            scope: Scope::All,
            dry_run: true,
            skip_local_checks: false,
            redeploy: false,
            clean: false,
            recheck: false,
            batch: Some(1),
            allow_unsafe_migration: false,
            maintenance: false,
        })
    );
    assert_eq!(
        run(&["deploy", "--dry-run", "backend"]),
        Command::Deploy(Deploy::Release {
            scope: Scope::Backend,
            dry_run: true,
            skip_local_checks: false,
            redeploy: false,
            clean: false,
            recheck: false,
            batch: Some(1),
            allow_unsafe_migration: false,
            maintenance: false,
        })
    );
}

#[test]
fn deploy_rollback_takes_an_optional_release_and_force() {
    assert_eq!(
        run(&["deploy", "rollback"]),
        Command::Deploy(Deploy::Rollback {
            release: None,
            force: false,
            migrate_down: false,
            yes: false,
            dry_run: false,
            batch: Some(1)
        })
    );
    assert_eq!(
        run(&["deploy", "rollback", "20261128T101500Z", "--force"]),
        Command::Deploy(Deploy::Rollback {
            release: Some("20261128T101500Z".into()),
            force: true,
            migrate_down: false,
            yes: false,
            dry_run: false,
            batch: Some(1)
        })
    );
    assert!(err(&["deploy", "rollback", "a", "b"]).contains("unexpected argument 'b'"));
    // `--` ends the flags: what follows is the release (and is then checked as a name).
    assert_eq!(
        run(&["deploy", "rollback", "--", "-rf"]),
        Command::Deploy(Deploy::Rollback {
            release: Some("-rf".into()),
            force: false,
            migrate_down: false,
            yes: false,
            dry_run: false,
            batch: Some(1)
        })
    );
    let e = err(&["deploy", "rollback", "-rf"]);
    assert_eq!(
        e,
        "unknown flag '-rf' for 'deploy rollback' (see 'cargo xtask deploy --help')"
    );
    // The workflow passes its `release` input after `--`: `--force` there is a (bad) release
    // name, never the flag; flags before `--` still count.
    let rollback = |release: &str, force| {
        Command::Deploy(Deploy::Rollback {
            release: Some(release.into()),
            force,
            migrate_down: false,
            yes: false,
            dry_run: false,
            batch: Some(1),
        })
    };
    assert_eq!(
        run(&["deploy", "rollback", "--", "--force"]),
        rollback("--force", false)
    );
    assert_eq!(
        run(&["deploy", "rollback", "--", "20261128T101500Z"]),
        rollback("20261128T101500Z", false)
    );
    assert_eq!(
        run(&["deploy", "rollback", "--force", "--", "20261128T101500Z"]),
        rollback("20261128T101500Z", true)
    );
    assert_eq!(
        run(&["deploy", "rollback", "--", "--help"]),
        rollback("--help", false)
    );
    assert!(err(&["deploy", "rollback", "--", "a", "--force"])
        .contains("unexpected argument '--force'"));
}

#[test]
fn status_follow_and_unlock_force() {
    assert_eq!(
        run(&["deploy", "status", "--follow"]),
        Command::Deploy(Deploy::Status { follow: true })
    );
    assert_eq!(
        run(&["deploy", "unlock", "--force", "--yes"]),
        Command::Deploy(Deploy::Unlock {
            yes: true,
            force: true
        })
    );
    assert!(err(&["deploy", "list", "--follow"]).contains("does not apply to 'deploy list'"));
}

#[test]
fn fleet_batches() {
    let Command::Deploy(Deploy::Release { batch, .. }) = run(&["deploy", "--batch", "2"]) else {
        panic!()
    };
    assert_eq!(batch, Some(2));
    let Command::Deploy(Deploy::Rollback { batch, .. }) =
        run(&["deploy", "rollback", "--parallel"])
    else {
        panic!()
    };
    assert_eq!(batch, None);
    assert!(err(&["deploy", "--batch", "0"]).contains("invalid --batch"));
    assert!(err(&["deploy", "--batch", "2", "--parallel"]).contains("exclude each other"));
    assert!(err(&["deploy", "list", "--parallel"]).contains("does not apply"));
}

#[test]
fn deploy_log_lines() {
    assert_eq!(
        run(&["deploy", "log"]),
        Command::Deploy(Deploy::Log { lines: 20 })
    );
    assert_eq!(
        run(&["deploy", "log", "-n", "5"]),
        Command::Deploy(Deploy::Log { lines: 5 })
    );
    assert!(err(&["deploy", "log", "-n", "0"]).contains("invalid -n"));
    assert!(err(&["deploy", "status", "-n", "5"]).contains("does not apply"));
}

#[test]
fn check_parts() {
    assert_eq!(
        run(&["check"]),
        Command::Check(Check {
            parts: CheckPart::ALL.to_vec(),
            recheck: false,
            stop_db: false
        })
    );
    assert_eq!(
        run(&["check", "backend", "--recheck"]),
        Command::Check(Check {
            parts: vec![CheckPart::Backend],
            recheck: true,
            stop_db: false
        })
    );
    assert!(err(&["check", "lint"]).contains("unknown check part 'lint'"));
    assert!(err(&["check", "backend", "--stop-db"]).contains("takes no parts"));
}

#[test]
fn deploy_rejects_flags_that_do_not_apply() {
    assert!(err(&["deploy", "list", "--force"]).contains("does not apply"));
    assert!(err(&["deploy", "all", "--force"]).contains("does not apply"));
    assert!(err(&["deploy", "unlock", "--dry-run"]).contains("does not apply"));
    assert!(err(&["deploy", "--frobnicate"]).contains("unknown flag '--frobnicate'"));
    let e = err(&["deploy", "everything"]);
    assert!(e.contains("'everything'") && e.contains("rollback"), "{e}");
}

#[test]
fn ci_stages() {
    assert_eq!(
        run(&["ci"]),
        Command::Ci(Ci {
            stages: Stage::ALL.to_vec(),
            filter: vec![]
        })
    );
    assert_eq!(
        run(&["ci", "--only", "e2e,rust", "--filter", "lock"]),
        Command::Ci(Ci {
            stages: vec![Stage::Rust, Stage::E2e],
            filter: vec!["lock".into()]
        })
    );
    assert_eq!(
        run(&["ci", "--skip", "e2e"]),
        Command::Ci(Ci {
            stages: Stage::ALL[..5].to_vec(),
            filter: vec![]
        })
    );
    assert!(err(&["ci", "--only", "java"]).contains("valid: tools, rust"));
    assert!(err(&["ci", "--only"]).contains("needs a value"));
    assert!(err(&["ci", "--only", "e2e", "--skip", "e2e"]).contains("no stage left"));
    assert!(err(&["ci", "--only", "rust", "--filter", "deploy::"])
        .contains("the e2e stage is not selected"));
}

#[test]
fn testhost_power_commands() {
    let th = |a: &[&str]| run(&[&["testhost"], a].concat());
    assert_eq!(
        th(&["start", "app"]),
        Command::Testhost(Testhost::Start { name: "app".into() })
    );
    assert_eq!(
        th(&["reboot", "app"]),
        Command::Testhost(Testhost::Reboot { name: "app".into() })
    );
    let hard = Command::Testhost(Testhost::Poweroff {
        name: "app".into(),
        hard: true,
    });
    assert_eq!(th(&["poweroff", "app", "--hard"]), hard);
    assert_eq!(th(&["poweroff", "--hard", "app"]), hard);
    assert_eq!(
        th(&["poweroff", "app"]),
        Command::Testhost(Testhost::Poweroff {
            name: "app".into(),
            hard: false
        })
    );
    let err_of = |a: &[&str]| err(&[&["testhost"], a].concat());
    assert!(err_of(&["poweroff"]).contains("needs a machine NAME"));
    assert!(err_of(&["poweroff", "--soft", "app"]).contains("unknown flag '--soft'"));
    assert!(err_of(&["poweroff", "app", "db"]).contains("unexpected argument 'db'"));
    assert!(err_of(&["poweroff", "App"]).contains("invalid machine name"));
    assert!(err_of(&["reboot", "app", "now"]).contains("unexpected argument 'now'"));
    assert!(err_of(&["start"]).contains("needs a machine NAME"));
}

#[test]
fn testhost_names_are_validated() {
    assert_eq!(
        run(&["testhost", "up", "app", "--role", "db"]),
        Command::Testhost(Testhost::Up {
            name: "app".into(),
            role: Role::Db
        })
    );
    // 12 characters: the host side of the veth, ve-NAME, fills Linux's 15.
    assert!(matches!(
        run(&["testhost", "up", "e2edemoapp12"]),
        Command::Testhost(Testhost::Up { .. })
    ));
    for bad in ["", "App", "1app", "app-1", "thirteenchars", "a/b", "../x"] {
        assert!(
            err(&["testhost", "up", bad]).contains("invalid machine name"),
            "{bad}"
        );
    }
    assert!(err(&["testhost", "up", "app", "--role", "web"]).contains("valid: app, db"));
    assert_eq!(
        run(&["testhost", "ssh", "app", "systemctl", "is-system-running"]),
        Command::Testhost(Testhost::Ssh {
            name: "app".into(),
            command: vec!["systemctl".into(), "is-system-running".into()]
        })
    );
    assert!(err(&["testhost", "exec", "app"]).contains("needs a command"));
    assert!(err(&["testhost", "delay", "app", "-5"]).contains("invalid delay"));
    assert_eq!(
        run(&["testhost", "down", "--all"]),
        Command::Testhost(Testhost::Down { name: None })
    );
    assert!(err(&["testhost", "fly"]).contains("valid: build, up, start, reboot, poweroff"));
    // The proxy is internal: parsed, but not offered among the choices.
    assert!(!err(&["testhost", "fly"]).contains("proxy"));
    assert_eq!(
        run(&[
            "testhost",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "10.213.1.2:22",
            "--delay",
            "25",
            "--port-file",
            "/tmp/p"
        ]),
        Command::Testhost(Testhost::Proxy {
            listen: "127.0.0.1:0".into(),
            to: "10.213.1.2:22".into(),
            millis: 25,
            port_file: "/tmp/p".into()
        })
    );
    assert!(err(&["testhost", "proxy", "--listen", "x"]).contains("needs --listen"));
}

#[test]
fn setup_server_flags() {
    let Command::SetupServer(s) = run(&[
        "setup-server",
        "--admin",
        "root@10.0.0.2",
        "--toolchain",
        "upstream",
        "--force-env",
    ]) else {
        panic!()
    };
    assert_eq!(s.admin.as_deref(), Some("root@10.0.0.2"));
    assert_eq!(s.toolchain, ToolchainSource::Upstream);
    assert!(s.force_env && !s.dry_run);
    assert!(err(&["setup-server", "--toolchain", "nvm"]).contains("valid: registry, upstream"));
    assert!(err(&["setup-server", "--backend-env"]).contains("needs a value"));
    let Command::SetupServer(s) = run(&[
        "setup-server",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--tls-redirect",
    ]) else {
        panic!()
    };
    assert_eq!(
        (s.tls_cert.as_deref(), s.tls_key.as_deref(), s.tls_redirect),
        (Some("c.pem"), Some("k.pem"), true)
    );
    assert!(err(&["setup-server", "--tls-cert", "c.pem"]).contains("go together"));
    assert!(err(&["setup-server", "--tls-redirect"]).contains("needs --tls-cert"));
    let Command::SetupServer(s) = run(&[
        "setup-server",
        "--deploy-key",
        "a.pub",
        "--add-deploy-key",
        "c.pub",
        "--deploy-key",
        "b.pub",
    ]) else {
        panic!()
    };
    assert_eq!(s.deploy_keys, ["a.pub", "b.pub"]);
    assert_eq!(s.add_deploy_keys, ["c.pub"]);
}

#[test]
fn logs_units_lines_and_since() {
    let logs = |args: &[&str]| match run(&[&["logs"], args].concat()) {
        Command::Logs(l) => l,
        other => panic!("{other:?}"),
    };
    let all = logs(&[]);
    assert_eq!(
        all.units,
        vec![
            "innercontext",
            "innercontext-node",
            "innercontext-pricing-worker"
        ]
    );
    assert_eq!(
        (all.follow, all.lines, all.since, all.host),
        (false, 100, None, None)
    );
    assert_eq!(logs(&["all"]).units, all.units);
    // Contract order whatever the order given; duplicates once.
    assert_eq!(
        logs(&["worker", "api", "api"]).units,
        vec!["innercontext", "innercontext-pricing-worker"]
    );
    assert_eq!(
        logs(&["innercontext-node.service"]).units,
        vec!["innercontext-node"]
    );
    let l = logs(&["api", "-f", "-n", "0", "--since", "-1h", "--host", "app2"]);
    assert!(l.follow);
    assert_eq!(l.lines, 0);
    assert_eq!(l.since.as_deref(), Some("-1h"));
    assert_eq!(l.host.as_deref(), Some("app2"));
    assert_eq!(
        logs(&["--since", "2026-11-28 10:15:00"]).since.as_deref(),
        Some("2026-11-28 10:15:00")
    );
    assert!(err(&["logs", "nginx"]).contains("unknown unit 'nginx' (valid: api, web, worker, all)"));
    assert!(err(&["logs", "-n", "100001"]).contains("invalid -n"));
    assert!(err(&["logs", "-n", "-5"]).contains("invalid -n"));
    assert!(err(&["logs", "-n", "x"]).contains("invalid -n"));
    assert!(err(&["logs", "-n"]).contains("needs a value"));
    for bad in [
        "$(id)",
        "1h;id",
        "a'b",
        "x\ny",
        "`id`",
        &"1".repeat(65),
        "",
        "a/b",
    ] {
        let e = err(&["logs", "--since", bad]);
        assert!(
            e.contains("invalid --since") && !e.contains('\n'),
            "{bad:?}: {e}"
        );
    }
    assert!(err(&["logs", "--tail"]).contains("unknown flag '--tail' for 'logs'"));
    // `--` ends the flags; what follows is still checked as a unit.
    assert!(err(&["logs", "--", "-f"]).contains("unknown unit '-f'"));
}

#[test]
fn bench_flags() {
    assert_eq!(
        run(&["bench", "--runs", "3", "--only", "load,files"]),
        Command::Bench(Bench {
            runs: 3,
            phases: vec![BenchPhase::Load, BenchPhase::Files],
            hosts: vec![1, 2, 4],
        })
    );
    match run(&["bench"]) {
        Command::Bench(b) => {
            assert_eq!(b.runs, 5);
            assert!(BenchPhase::ALL.iter().all(|p| b.wants(*p)));
            assert_eq!(b.hosts, BENCH_HOSTS);
        }
        other => panic!("{other:?}"),
    }
    assert!(err(&["bench", "--runs", "0"]).contains("invalid --runs"));
    assert!(err(&["bench", "--only", "lan"]).contains("valid: deploys, load, checks"));
    assert!(err(&["bench", "--only", "lan"]).contains("files, crash, database, exec, hooks, hosts"));
    assert!(err(&["bench", "--lan-only"]).contains("--lan-only"));
}

#[test]
fn bench_hosts() {
    let bench = |args: &[&str]| match run(args) {
        Command::Bench(b) => b,
        other => panic!("{other:?}"),
    };
    // --hosts alone runs the hosts phase alone, sizes ascending.
    let b = bench(&["bench", "--hosts", "4,1,2"]);
    assert_eq!(
        (b.phases, b.hosts),
        (vec![BenchPhase::Hosts], vec![1, 2, 4])
    );
    // With --only, in either order, the phases are what --only says.
    for args in [
        ["bench", "--only", "deploys,hosts", "--hosts", "1,3"],
        ["bench", "--hosts", "1,3", "--only", "deploys,hosts"],
    ] {
        let b = bench(&args);
        assert_eq!(
            (b.phases, b.hosts),
            (vec![BenchPhase::Deploys, BenchPhase::Hosts], vec![1, 3])
        );
    }
    let b = bench(&["bench", "--only", "hosts", "--runs", "2"]);
    assert_eq!((b.runs, b.hosts), (2, vec![1, 2, 4]));
    assert_eq!(bench(&["bench", "--hosts", "1"]).hosts, vec![1]);
    assert_eq!(bench(&["bench", "--hosts", "1,8"]).hosts, vec![1, 8]);
    let e = err(&["bench", "--hosts", "1,2", "--only", "deploys"]);
    assert!(e.contains("add hosts to --only"), "{e}");
    for (bad, why) in [
        ("2,4", "1 must be one of the sizes"),
        ("1,2,2", "2 is given twice"),
        ("1,0", "from 1 to 8"),
        ("1,9", "from 1 to 8"),
        ("1,,2", "from 1 to 8"),
        ("1, 2", "from 1 to 8"),
        ("", "from 1 to 8"),
        ("1,+2", "from 1 to 8"),
        ("1,2,4,8", "need 15 app machines at once; at most 12"),
        ("1;id", "from 1 to 8"),
    ] {
        let e = err(&["bench", "--hosts", bad]);
        assert!(
            e.starts_with("invalid --hosts") && e.contains(why) && !e.contains('\n'),
            "{bad:?}: {e}"
        );
    }
    assert!(err(&["bench", "--hosts"]).contains("--hosts needs a value"));
}

#[test]
fn the_tables_hold_together() {
    for cmd in &commands::COMMANDS {
        // Each spelling belongs to one flag; every flag a subcommand names is in the table.
        let mut spellings: Vec<&str> = cmd.flags.iter().flat_map(|f| f.names.split(", ")).collect();
        let n = spellings.len();
        spellings.sort_unstable();
        spellings.dedup();
        assert_eq!(spellings.len(), n, "{}: a spelling twice", cmd.name);
        for sub in cmd.subs {
            sub.flags
                .iter()
                .for_each(|f| assert_eq!(cmd.flag(f).long(), *f, "{} {}", cmd.name, sub.name));
        }
        if let Some(default) = cmd.default {
            assert!(cmd.visible().any(|s| s.name == default), "{}", cmd.name);
        }
    }
    // The positional words a usage line lists are the ones the parser takes.
    let help = help_of("check");
    assert!(
        help.contains(&format!(" [{}]... ", CheckPart::NAMES.join("|"))),
        "{help}"
    );
    let help = help_of("logs");
    let words: Vec<&str> = commands::LOG_UNITS.iter().map(|(w, _)| *w).collect();
    assert!(
        help.contains(&format!(" [{}]... ", words.join("|"))),
        "{help}"
    );
    for w in words {
        assert!(matches!(run(&["logs", w]), Command::Logs(_)), "{w}");
    }
}

#[test]
fn helpers_say_what_is_valid() {
    assert_eq!(table::pick("role", "db", Role::NAMES), Ok(1));
    assert_eq!(
        table::pick("role", "web", Role::NAMES),
        Err(UsageError(
            "unknown role 'web' (valid: app, db, primed)".into()
        ))
    );
    assert_eq!(table::number("-n", "7", (1, 9, "lines")), Ok(7));
    for bad in ["0", "10", "x", "", "-1", " 7"] {
        let e = table::number("-n", bad, (1, 9, "lines")).unwrap_err();
        assert_eq!(e.0, format!("invalid -n '{bad}': use 1-9 lines"));
    }
}

#[test]
fn check_runs_each_part_once_in_the_order_first_named() {
    use CheckPart::*;
    let parts = |args: &[&str]| match run(&[&["check"], args].concat()) {
        Command::Check(c) => c.parts,
        other => panic!("{other:?}"),
    };
    // `all` names the three: backend is not run twice.
    assert_eq!(parts(&["all", "backend"]), vec![Backend, Frontend, Build]);
    assert_eq!(parts(&["build", "all"]), vec![Build, Backend, Frontend]);
    assert_eq!(parts(&["build", "backend", "build"]), vec![Build, Backend]);
    assert_eq!(parts(&["backend", "backend"]), vec![Backend]);
}

#[test]
fn testhost_asks_for_the_name_a_flag_took_the_place_of() {
    assert_eq!(
        err(&["testhost", "up", "--role", "db"]),
        "testhost up needs a machine NAME"
    );
    assert_eq!(
        run(&["testhost", "up", "--role", "db", "app"]),
        Command::Testhost(Testhost::Up {
            name: "app".into(),
            role: Role::Db
        })
    );
    assert_eq!(
        err(&["testhost", "poweroff", "--hard"]),
        "testhost poweroff needs a machine NAME"
    );
    // A flag of another subcommand is named as such, as deploy does.
    assert_eq!(
        err(&["testhost", "up", "app", "--hard"]),
        "flag '--hard' does not apply to 'testhost up': it applies to 'testhost poweroff' (see 'cargo xtask testhost --help')"
    );
}

#[test]
fn list_flags_add_up_when_repeated() {
    let stages = |args: &[&str]| match run(&[&["ci"], args].concat()) {
        Command::Ci(ci) => ci.stages,
        other => panic!("{other:?}"),
    };
    use Stage::*;
    assert_eq!(
        stages(&["--only", "e2e", "--only", "rust"]),
        vec![Rust, E2e]
    );
    assert_eq!(
        stages(&["--skip", "e2e", "--skip", "tools,rust"]),
        vec![Backend, Frontend, Config]
    );
    assert_eq!(
        stages(&["--only", "e2e,rust,tools", "--skip", "tools"]),
        vec![Rust, E2e]
    );
    let Command::Bench(b) = run(&["bench", "--only", "files", "--only", "load,files"]) else {
        panic!()
    };
    assert_eq!(b.phases, vec![BenchPhase::Load, BenchPhase::Files]);
}

#[test]
fn deploy_lines_is_the_long_form_of_n_and_in_the_help() {
    assert!(help_of("deploy").contains("\n  -n, --lines N "));
    for n in ["-n", "--lines"] {
        assert_eq!(
            run(&["deploy", "log", n, "7"]),
            Command::Deploy(Deploy::Log { lines: 7 })
        );
    }
}

#[test]
fn every_help_has_the_one_layout() {
    for cmd in &commands::COMMANDS {
        let help = cmd.help();
        assert!(help.starts_with(&format!("cargo xtask {}: ", cmd.name)));
        assert!(
            help.contains("\nOptions:\n") && help.contains("\n  -h, --help               print"),
            "{help}"
        );
        for line in help.lines() {
            assert!(line.len() <= 100, "{}: {line:?}", cmd.name);
        }
        // A flag without a doc is one only hidden subcommands take.
        for f in cmd.flags.iter().filter(|f| f.doc.is_empty()) {
            let takes = |s: &table::Sub| s.flags.contains(&f.long());
            assert!(
                !cmd.visible().any(takes),
                "{}: {} has no doc",
                cmd.name,
                f.names
            );
            assert!(
                cmd.subs.iter().any(takes),
                "{}: {} is taken by none",
                cmd.name,
                f.names
            );
        }
    }
    // A value repeated in a list is spelled one way, in the usage and under Options alike.
    let help = help_of("ci");
    assert_eq!(help.matches("--only STAGE[,STAGE...]").count(), 2, "{help}");
}

#[test]
fn to_comes_before_the_command() {
    let g = |args: &[&str]| global(args.iter().map(|s| s.into()).collect());
    let (got, rest) = g(&["--to", "staging", "deploy", "list"]).unwrap();
    assert_eq!(got.to.as_deref(), Some("staging"));
    assert_eq!(rest, ["deploy", "list"]);
    let (got, rest) = g(&["--to=eu-2", "logs"]).unwrap();
    assert_eq!((got.to.as_deref(), rest.len()), (Some("eu-2"), 1));
    let (got, rest) = g(&["deploy", "--to", "x"]).unwrap();
    assert_eq!((got.to, rest.len()), (None, 3));
    assert_eq!(
        g(&["--to"]).unwrap_err().0,
        "--to needs a destination: cargo xtask --to NAME COMMAND"
    );
    assert_eq!(
        g(&["--to", "a", "--to", "b"]).unwrap_err().0,
        "--to is given twice"
    );
    assert!(g(&["--to", "../x", "deploy"])
        .unwrap_err()
        .0
        .starts_with("invalid --to '../x': a destination is named by"));
    assert_eq!(
        err(&["deploy", "list", "--to", "x"]),
        "--to goes before the command: cargo xtask --to NAME deploy ..."
    );
    assert!(run(&["deploy", "list"]).takes_destination());
    assert!(!run(&["ci"]).takes_destination());
}

#[test]
fn exec_takes_any_bytes_after_its_dashes_and_nothing_else_does() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let raw = |b: &[u8]| OsString::from_vec(b.to_vec());
    let args = ["exec", "--host", "app", "--", "printf", "%s"].map(OsString::from);
    let mut args = args.to_vec();
    args.push(raw(b"\xff\xfe it's"));
    let Ok(Parsed::Run(Command::Exec(e))) = parse_os(args) else {
        panic!("exec refused a word of any bytes")
    };
    assert_eq!(e.host.as_deref(), Some("app"));
    assert_eq!(e.command[2], raw(b"\xff\xfe it's"));
    let e = parse_os([OsString::from("exec"), raw(b"--h\xffost")]).unwrap_err();
    assert!(e.0.contains("is not UTF-8"), "{e}");
    let e = parse_os(
        ["testhost", "ssh", "app", "--"]
            .map(OsString::from)
            .into_iter()
            .chain([raw(b"\xff")]),
    );
    assert!(e.unwrap_err().0.contains("only exec's command"));
    // Plain words parse as parse does.
    let plain = ["db", "psql", "-c", "select 1"];
    assert_eq!(parse_os(plain.map(OsString::from)), p(&plain));
}

#[test]
fn a_maintenance_message_is_one_line_of_at_most_500_bytes() {
    let long = "é".repeat(251);
    assert_eq!(
        err(&["maintenance", "on", "--message", &long]),
        "the maintenance message is 502 bytes, more than 500: shorten it"
    );
    let fits = "x".repeat(500);
    assert_eq!(
        run(&["maintenance", "on", "--message", &fits]),
        Command::Maintenance(Maintenance::On {
            message: Some(fits.clone())
        })
    );
    assert!(err(&["maintenance", "on", "--message", "a\u{1b}[31m"]).contains("control character"));
    assert_eq!(
        run(&["maintenance", "status"]),
        Command::Maintenance(Maintenance::Status)
    );
    assert!(matches!(
        run(&["deploy", "--maintenance"]),
        Command::Deploy(Deploy::Release {
            maintenance: true,
            ..
        })
    ));
}
