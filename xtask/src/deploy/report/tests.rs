use super::*;
use crate::deploy::entry::Entry;

fn reading(o: Option<Outcome>, current: &str, lock: LockNow, after: &[&str]) -> Reading {
    Reading {
        outcome: o,
        current: current.into(),
        before: "releases/20261128T101530Z".into(),
        lock,
        after: after.iter().map(|l| Entry::parse(l)).collect(),
    }
}

#[test]
fn a_fleet_row_is_what_the_job_said_or_what_the_server_says_now() {
    let o = outcome("success", "");
    let (line, ok, cur) = fleet_row("app1", Seen::Reported(Some(&o)));
    assert_eq!(
        (line.as_str(), ok, cur.as_str()),
        (
            "    app1             success          current 20261128T101530Z",
            true,
            "20261128T101530Z"
        )
    );
    // Lost sight of: the reading's result, and current as it is now.
    let r = reading(
        Some(outcome("rolled-back", "the fleet went back")),
        "releases/20261128T101530Z",
        LockNow::Free,
        &[],
    );
    let (line, ok, cur) = fleet_row("app2", Seen::Read(&r));
    assert!(!ok);
    assert_eq!(cur, "20261128T101530Z");
    assert!(
        line.contains("rolled-back")
            && line.contains(
                "(the fleet went back; read from the server after the deployer lost sight of it)"
            ),
        "{line}"
    );
    let r = reading(
        None,
        "releases/20261128T101600Z",
        LockNow::Ours {
            alive: true,
            phase: "awaiting-verdict".into(),
            rebooted: false,
        },
        &[],
    );
    let (line, ok, _) = fleet_row("app3", Seen::Read(&r));
    assert!(!ok && line.contains("not over") && line.contains("its job still runs"));
    let (line, ok, cur) = fleet_row("app3", Seen::Unreadable("connection refused"));
    assert!(!ok && cur == "?" && line.contains("could not read it again: connection refused"));
    let (line, ok, _) = fleet_row("app3", Seen::Reported(None));
    assert!(!ok && line.contains("unknown (lost)"));
}

#[test]
fn the_last_line_after_a_reconnect_is_the_reading() {
    // The job rolled back while we were away: its words, and current as it is now.
    let (line, ok) = reading_line(
        "deploy of X",
        "app",
        &reading(
            Some(outcome("rolled-back", "not healthy after 25s")),
            "releases/20261128T101530Z",
            LockNow::Free,
            &[],
        ),
    );
    assert!(!ok);
    assert_eq!(
        line,
        final_line(
            "deploy of X",
            "app",
            &outcome("rolled-back", "not healthy after 25s")
        )
    );
    assert!(!line.contains("by itself"), "{line}");
    // A success whose release the boot check later replaced is not a success.
    let mut won = outcome("success", "");
    won.current = "releases/20261128T101600Z".into();
    let (line, ok) = reading_line(
        "deploy of 20261128T101600Z",
        "app",
        &reading(
            Some(won),
            "releases/20261128T101530Z",
            LockNow::Free,
            &["2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current_was_20261128T101600Z,_not_a_succeeded_intact_release,_at_boot"],
        ),
    );
    assert!(!ok, "current moved: {line}");
    assert!(
        line.contains("success in 3.1s")
            && line.contains("current is 20261128T101600Z; current is now 20261128T101530Z again, restored at boot at 2026-11-28T10:20:00Z (current was 20261128T101600Z, not a succeeded intact release, at boot)")
            && !line.contains("then deploy.log says"),
        "{line}"
    );
    // Stopped by the server because we fell silent: its reason says so.
    let (line, ok) = reading_line(
        "deploy of X",
        "app",
        &reading(
            Some(outcome(
                "interrupted",
                "the deployer fell silent for 10s (killed, or its connection lost); stopped while waiting for the upload; current was not touched",
            )),
            "releases/20261128T101530Z",
            LockNow::Free,
            &[],
        ),
    );
    assert!(!ok);
    assert!(
        line.starts_with("deploy of X on app: interrupted: the deployer fell silent")
            && line.ends_with("current is 20261128T101530Z"),
        "{line}"
    );
}

#[test]
fn without_a_result_the_reading_says_what_is_there() {
    let r = |lock| reading(None, "releases/20261128T101530Z", lock, &[]);
    let (line, ok) = reading_line(
        "rollback to A",
        "app",
        &r(LockNow::Ours {
            alive: true,
            phase: "health".into(),
            rebooted: false,
        }),
    );
    assert!(
        !ok && line.contains("still running on the server (health)"),
        "{line}"
    );
    let (line, _) = reading_line(
        "rollback to A",
        "app",
        &r(LockNow::Ours {
            alive: false,
            phase: String::new(),
            rebooted: false,
        }),
    );
    assert_eq!(
        line,
        "rollback to A on app: its job died at its start without recording a result (no process holds its lock); current is 20261128T101530Z: the next deploy or rollback takes its lock over and records it as interrupted"
    );
    // A power cut in prepare: the server booted since; current never moved.
    let (line, ok) = reading_line(
        "deploy of X",
        "app",
        &r(LockNow::Ours {
            alive: false,
            phase: "prepare".into(),
            rebooted: true,
        }),
    );
    assert!(
        !ok && line.starts_with("deploy of X on app: its job died at prepare without recording a result (the server rebooted since it started: no process holds its lock); current is 20261128T101530Z: the next deploy"),
        "{line}"
    );
    // A power cut after the switch: the boot check put the release before back.
    let (line, ok) = reading_line(
        "deploy of 20261128T101600Z",
        "app",
        &reading(
            None,
            "releases/20261128T101530Z",
            LockNow::Ours {
                alive: false,
                phase: "health".into(),
                rebooted: true,
            },
            &["2026-11-28T10:20:00Z deployer=boot-check commit=- scope=boot release=20261128T101530Z result=restored-at-boot duration=0.0s alembic=- reason=current was 20261128T101600Z, not a succeeded intact release, at boot"],
        ),
    );
    assert!(
        !ok && line.contains("its job died at health without recording a result (the server rebooted since it started: no process holds its lock); current is 20261128T101530Z again, restored at boot at 2026-11-28T10:20:00Z (current was 20261128T101600Z, not a succeeded intact release, at boot): the next deploy")
            && !line.contains("then deploy.log says"),
        "{line}"
    );
    let (line, _) = reading_line("rollback to A", "app", &r(LockNow::Free));
    assert_eq!(
        line,
        "rollback to A on app: its job recorded no result; current is 20261128T101530Z"
    );
    // The result from deploy.log's line (no result file): current as read now.
    let mut logged = outcome("failed", "the upload is incomplete");
    logged.current = String::new();
    let (line, ok) = reading_line(
        "deploy of X",
        "app",
        &reading(Some(logged), "", LockNow::Free, &[]),
    );
    assert!(!ok && line.ends_with("current is none"), "{line}");
    let u = unreachable_line("deploy of X", "app", "connection refused");
    assert!(
        u.contains("unknown here") && !u.contains("by itself"),
        "{u}"
    );
}

fn outcome(result: &str, reason: &str) -> Outcome {
    Outcome {
        result: result.into(),
        reason: reason.into(),
        duration: "3.1".into(),
        revision: "0002_price_history".into(),
        current: "releases/20261128T101530Z".into(),
        logged: String::new(),
    }
}

#[test]
fn the_last_line_says_what_the_server_ended_with() {
    assert_eq!(
        final_line("deploy of 20261128T101600Z", "app", &outcome("success", "")),
        "deploy of 20261128T101600Z on app: success in 3.1s (alembic 0002_price_history); current is 20261128T101530Z"
    );
    let rb = final_line(
        "deploy of X",
        "app",
        &outcome(
            "rolled-back",
            "not healthy after 60s: unit innercontext is failed",
        ),
    );
    assert!(
        rb.contains("rolled-back (")
            && rb.contains("is healthy): not healthy")
            && rb.ends_with("current is 20261128T101530Z again"),
        "{rb}"
    );
    let mut none = outcome("failed", "the upload failed");
    none.current = String::new();
    assert!(final_line("deploy of X", "app", &none).ends_with("current is none"));
}

#[test]
fn notes_read_well() {
    let n = |f: &[&str]| {
        note_text(&Event::parse(&format!("1\tnote\t{}", f.join("\t"))).expect("a note event"))
    };
    assert_eq!(
        n(&["venv", "abc", "reused"]).unwrap(),
        "virtualenv abc reused"
    );
    assert_eq!(
        n(&["migrate", "none", "0002"]).unwrap(),
        "nothing to migrate, at 0002"
    );
    assert_eq!(
        n(&["seed", "20261128T101530Z", "linked"]).unwrap(),
        "from 20261128T101530Z"
    );
    assert_eq!(
        n(&["venv", "abc.20261128T101530Z", "rebuilt", "2"]).unwrap(),
        "virtualenv abc.20261128T101530Z rebuilt: 2 file(s) of the last one changed on the server"
    );
    assert_eq!(
        n(&["seed", "none", "clean", "20261128T101530Z"]).unwrap(),
        "clean: nothing taken over from 20261128T101530Z"
    );
    assert_eq!(
        n(&["seed", "none", "clean", "20261128T101530Z", "frontend"]).unwrap(),
        "clean: only the frontend taken over from 20261128T101530Z (not shipped)"
    );
    assert_eq!(
        n(&["venv", "abc.20261128T101530Z", "clean"]).unwrap(),
        "virtualenv abc.20261128T101530Z built from a fresh uv cache, which replaced shared/uv-cache"
    );
    assert_eq!(n(&["pruned", "1", "A", "A"]).unwrap(), "pruned A");
    assert_eq!(
        n(&["pruned", "50", "A", "B"]).unwrap(),
        "pruned 50 releases, A to B"
    );
    assert_eq!(
        n(&["snapshot", "taken", "8123456", "A-0002.dump"]).unwrap(),
        "7.7 MB, A-0002.dump"
    );
    assert_eq!(
        n(&["snapshot", "off"]).unwrap(),
        "no snapshot before it: DEPLOY_DB_SNAPSHOT=off"
    );
    assert_eq!(step_word(StepStatus::parse("stopped")), "stopped");
    assert_eq!(step_word(StepStatus::parse("failed")), "FAILED");
}
