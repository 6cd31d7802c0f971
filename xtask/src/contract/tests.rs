use super::*;
use std::collections::BTreeSet;

#[test]
fn contract_sh_is_the_rendering_of_this_module() {
    let want = render_shell();
    if CONTRACT_SH != want {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let path = crate::project_root().join("scripts/contract.sh");
            fs_err::write(&path, &want).unwrap();
            panic!("rewrote {path}: rerun the tests");
        }
        panic!(
            "scripts/contract.sh is stale: run `UPDATE_GOLDEN=1 cargo test -p xtask contract` and commit it"
        );
    }
}

#[test]
fn the_name_format_is_the_one_release_rs_parses() {
    // What the server's `date` makes of an instant is what the client calls it.
    let t = time::macros::datetime!(2026-11-28 10:15:30 UTC);
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", t.unix_timestamp()),
            &format!("+{NAME_DATE_FORMAT}"),
        ])
        .output()
        .unwrap();
    let made = String::from_utf8(out.stdout).unwrap();
    assert_eq!(made.trim(), crate::deploy::release::name_for(t));
    // And the shell pattern accepts exactly the names release.rs accepts.
    for name in [
        "20261128T101530Z",
        "20261128T10153Z",
        "x20261128T101530Z",
        "20261128t101530Z",
    ] {
        let status = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("{}c_is_release \"$1\"", render_shell()),
                "t",
                name,
            ])
            .status()
            .unwrap();
        assert_eq!(
            status.success(),
            name.len() == 16 && crate::deploy::release::parse_name(name).is_some(),
            "{name}"
        );
    }
}

/// The script without its comment lines.
fn code(script: &str) -> String {
    script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `word` after `marker` in the script's code (e.g. `emit step` -> event kinds).
fn words_after(script: &str, marker: &str) -> BTreeSet<String> {
    let script = code(script);
    let mut found = BTreeSet::new();
    for (i, _) in script.match_indices(marker) {
        let rest = &script[i + marker.len()..];
        let word: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if !word.is_empty() {
            found.insert(word);
        }
    }
    found
}

#[test]
fn the_script_uses_only_what_the_contract_defines() {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let script = [LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, DEPLOY_SH, BOOT_CHECK_SH].concat();
    // Subcommands: `sub_NAME()` functions, and each reads only its own keys.
    let subs = words_after(&script, "\nsub_");
    assert_eq!(subs, set(&SUBS.iter().map(|s| s.name).collect::<Vec<_>>()));
    for e in words_after(&script, "emit ") {
        assert!(
            EVENTS.contains(&e.as_str()),
            "event '{e}' not in the contract"
        );
    }
    for st in words_after(&script, "run_step ") {
        assert!(
            STEPS.contains(&st.as_str()),
            "step '{st}' not in the contract"
        );
    }
    for p in words_after(&script, "emit phase ") {
        assert!(
            PHASES.contains(&p.as_str()),
            "phase '{p}' not in the contract"
        );
    }
    for m in words_after(&script, "await_msg ") {
        assert!(
            MESSAGES.contains(&m.as_str()),
            "message '{m}' not in the contract"
        );
    }
    for r in words_after(&script, "finish_with ") {
        assert!(
            RESULTS.contains(&r.as_str()) || r == "success",
            "result '{r}' not in the contract"
        );
    }
    for k in words_after(&script, "$opt_")
        .into_iter()
        .chain(words_after(&script, "${opt_"))
    {
        assert!(
            SUBS.iter().any(|s| s.keys.contains(&k.as_str()))
                || PLAN_SERVER_KEYS.contains(&k.as_str()),
            "option '{k}' is read but no call has it"
        );
    }
    // No unit, state or layout literal in the code: they come from contract.sh.
    let code = code(&script);
    for u in UNITS {
        assert!(
            !code.contains(&format!("{} ", u.name)) && !code.contains(u.probe.unwrap_or("\u{0}")),
            "the deploy scripts name unit {} themselves",
            u.name
        );
    }
    for lit in [
        ".deploy.lock",
        "deploy.log",
        "shared/backend/.env",
        "succeeded",
        "preparing",
        "sites-available",
        "systemd/system",
    ] {
        assert!(
            !code.contains(lit),
            "the deploy scripts spell '{lit}' themselves instead of using contract.sh"
        );
    }
}

/// Run `test` (bash) after the server's helpers, in a fresh directory; its stdout.
fn with_helpers(name: &str, test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("contract-sh-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root/releases")).unwrap();
    let script = [CONTRACT_SH, LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, test].concat();
    let out = std::process::Command::new("bash")
        .args(["-c", &script, "t"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_lock_is_visible_only_with_its_holder_and_taken_over_once_dead() {
    let out = with_helpers(
        "lock",
        r#"set -euo pipefail
            r=$PWD/root
            take_lock "$r" t1 "$(out token t1)"; echo "took=$?"
            job_alive "$r/.deploy.lock" && echo alive
            (take_lock "$r" t2 "$(out token t2)") && echo "second took" || echo "second=$?"
            ls -d "$r"/.deploy.lock.* 2>/dev/null || echo "nothing half-built left"
            exec 8>&-
            job_alive "$r/.deploy.lock" || echo dead
            take_lock "$r" t3 "$(out token t3)"; echo "took=$? token=$(meta "$r/.deploy.lock/info" token) aside=$(meta "$r/.deploy.lock.dead.t3/info" token)"
            "#,
    );
    assert_eq!(
        out,
        "took=0\nalive\nsecond=1\nnothing half-built left\ndead\ntook=0 token=t3 aside=t1\n"
    );
}

#[test]
fn a_file_is_written_whole_or_left_as_it_was() {
    let out = with_helpers(
        "put",
        r#"set -euo pipefail
            put f "one"; put f "two"; echo "f=$(cat f)"
            : >blocker
            put blocker/x "y" || echo "failed: $put_error"
            ls | grep -c '\.tmp\.' || true
            append_line log "a"; append_line blocker/log "b" || echo "append failed"; cat log
            printf 'x=1\nalembic_revision=-\n' >m; set_meta m alembic_revision 0002_b; cat m
            "#,
    );
    assert_eq!(
        out,
        "f=two\nfailed: writing blocker/x: Not a directory\n0\nappend failed\na\nx=1\nalembic_revision=0002_b\n"
    );
}

#[test]
fn an_unrecorded_result_reads_back_from_its_name() {
    let out = with_helpers(
        "marker",
        r#"set -euo pipefail
            lock=$PWD/l; mkdir "$lock"; : >"$lock/pending"
            mark_unrecorded rolled-back 12.5 0002_price_history "No space left on device" "not healthy after 8s: unit x is failed"
            m=$(unrecorded_marker "$lock")
            for k in result duration alembic why reason nope; do echo "$k=$(marker_field "$m" "$k")"; done
            "#,
    );
    assert_eq!(
        out,
        "result=rolled-back\nduration=12.5\nalembic=0002_price_history\nwhy=No space left on device\nreason=not healthy after 8s: unit x is failed\nnope=-\n"
    );
}

#[test]
fn the_roles_are_the_ones_the_client_names() {
    use crate::config::HostRole;
    for word in ROLES {
        assert_eq!(HostRole::parse(word).map(HostRole::name), Some(word));
    }
    assert_eq!(HostRole::Primary.name(), ROLES[0]);
    assert_eq!(HostRole::Secondary.name(), ROLES[1]);
}

#[test]
fn the_scripts_reset_what_the_contract_says() {
    // What deploy-lib.sh clears before a restart is what the sudoers lines allow.
    for u in UNITS {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("{}{LIB_SH}reset_targets \"$1\"", render_shell()),
                "t",
                u.name,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), u.reset_targets());
    }
    assert_eq!(API.reset_targets(), "innercontext innercontext.socket");
    assert_eq!(WORKER.reset_targets(), "innercontext-pricing-worker");
}

#[test]
fn keys_of_each_call_are_unique_and_known() {
    for sub in SUBS {
        let mut seen = BTreeSet::new();
        for k in sub.keys {
            assert!(seen.insert(k), "{}: key {k} twice", sub.name);
            assert!(k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
    assert_eq!(keys("probe"), &["root", "db", "sizes"]);
}
