use super::shell::{render_shell, shell_vars};
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
    let known = |word: &str, words: &[&str], what: &str| {
        assert!(words.contains(&word), "{what} '{word}' not in the contract");
    };
    let events: Vec<&str> = EventKind::ALL.iter().map(|w| w.name()).collect();
    for e in words_after(&script, "emit ") {
        known(&e, &events, "event");
    }
    let steps: Vec<&str> = Step::ALL.iter().map(|w| w.name()).collect();
    for st in words_after(&script, "run_step ") {
        known(&st, &steps, "step");
    }
    let marks: Vec<&str> = StepStatus::ALL.iter().map(|w| w.name()).collect();
    let marked = words_after(&script, "emit step \"$name\" ");
    assert_eq!(marked.len(), marks.len(), "{marked:?}");
    for m in marked {
        known(&m, &marks, "step status");
    }
    let phases: Vec<&str> = Phase::ALL.iter().map(|w| w.name()).collect();
    for p in words_after(&script, "emit phase ") {
        known(&p, &phases, "phase");
    }
    let messages: Vec<&str> = Message::ALL.iter().map(|w| w.name()).collect();
    for m in words_after(&script, "await_msg ") {
        known(&m, &messages, "message");
    }
    let results: Vec<&str> = JobResult::ALL.iter().map(|w| w.name()).collect();
    for r in words_after(&script, "finish_with ") {
        known(&r, &results, "result");
    }
    let notes: Vec<&str> = Note::ALL.iter().map(|w| w.name()).collect();
    let noted = words_after(&script, "emit note ");
    assert_eq!(noted.len(), notes.len(), "every note is emitted: {noted:?}");
    for n in noted {
        known(&n, &notes, "note");
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
    // From a file: together the scripts are over the kernel's 128 KiB for one argument (a
    // call packs them, remote.rs).
    let script = [CONTRACT_SH, LIB_SH, LOCK_SH, JOB_SH, RECORD_SH, test].concat();
    std::fs::write(dir.join("t.sh"), script).unwrap();
    let out = std::process::Command::new("bash")
        .args(["t.sh", "t"])
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

/// A shutdown's SIGTERM while the job waits for a message: its trap (put current back,
/// then the record, seconds of command substitutions) runs to its end. Inside bash's own
/// `read -t` it did not: the read's timer fired at the trap's next command substitution and
/// jumped back into the read, leaving the job waiting with its record half made.
#[test]
fn a_trap_that_takes_seconds_runs_to_its_end_while_the_job_waits() {
    let out = with_helpers(
        "term",
        r#"set -euo pipefail
        lock=$PWD/l; mkdir -p "$lock/msg"; mkfifo "$lock/fifo"
        # A deployer that never falls silent, without the look at the heartbeat's file (a
        # command substitution): what sleeps below is the wait itself.
        stop_asked() { return 1; }
        handled() {
            trap '' TERM
            local i x
            for i in 1 2 3 4 5 6 7 8 9 10; do x=$(sleep 0.2; echo "$i"); done
            echo "handled to $x" >out
            exit 3
        }
        ( exec 6<>"$lock/fifo"; trap handled TERM; await_msg never ) &
        pid=$!
        # Waiting (asleep in the kernel), then the signal.
        until [ "$(cut -d' ' -f3 "/proc/$pid/stat")" = S ] && [ "$(cat "/proc/$pid/wchan")" != 0 ]; do :; done
        kill -TERM "$pid"
        end=$((SECONDS + 6))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then echo "still waiting after its trap"; kill -KILL "$pid"; fi
        wait "$pid" || echo "exit $?"
        cat out 2>/dev/null || echo "no out"
        "#,
    );
    assert_eq!(out, "exit 3\nhandled to 10\n");
}

/// Following a job of an earlier boot of the server (`deploy status --follow`, a deployer
/// that reconnects after a reboot) gives its events and ends, even though another process
/// now runs under the pid the job had: that pid says nothing of the job any more.
#[test]
fn following_a_job_of_an_earlier_boot_ends() {
    let dir = std::env::temp_dir().join(format!("contract-follow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let job = dir.join("jobs/t1");
    std::fs::create_dir_all(dir.join("releases")).unwrap();
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(job.join("events"), "1\tstarted\tdeploy\tX\tapp\n").unwrap();
    // A live process under the job's pid: this test.
    std::fs::write(job.join("pid"), format!("{}\n", std::process::id())).unwrap();
    std::fs::write(job.join("boot"), "an-earlier-boot\n").unwrap();
    // From a file: the whole script is past what one argument may hold (128 KiB; calls carry
    // it packed, see remote::bootstrap).
    let script = dir.join("deploy.sh");
    std::fs::write(&script, deploy_script()).unwrap();
    let out = std::process::Command::new("timeout")
        .args(["20", "bash"])
        .arg(&script)
        .arg("follow")
        .arg(format!("root={}", dir.display()))
        .args(["token=t1", "offset=0", "role=observer"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), "1\tstarted\tdeploy\tX\tapp\neof=yes\n".to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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

/// Quoted literals of a Rust source outside `#[cfg(test)]` items: (line, text). A small lexer:
/// comments, strings (raw too), byte strings and char literals are told apart so that braces
/// and quotes inside them do not count.
fn literals_outside_tests(src: &str) -> Vec<(usize, String)> {
    let b = src.as_bytes();
    let (mut i, mut line) = (0, 1);
    let mut found = Vec::new();
    // Brace depth, and the depth at which a `#[cfg(test)]` item's braces opened (skipped).
    let mut depth = 0usize;
    let mut skip_from: Option<usize> = None;
    let mut test_item_pending = false;
    while i < b.len() {
        let rest = &src[i..];
        if b[i] == b'\n' {
            line += 1;
            i += 1;
        } else if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            line += rest[..end].matches('\n').count();
            i += end;
        } else if rest.starts_with("#[cfg(test)]") {
            test_item_pending = true;
            i += "#[cfg(test)]".len();
        } else if b[i] == b'"'
            || ((b[i] == b'r' || b[i] == b'b')
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
                && (rest[1..].starts_with('"')
                    || rest[1..].starts_with("#\"")
                    || rest[1..].starts_with("r\"")
                    || rest[1..].starts_with("r#")))
        {
            let byte = b[i] == b'b';
            let mut j = i + usize::from(b[i] != b'"');
            if b[j] == b'r' {
                j += 1;
            }
            let raw = j > i && src[i..j].ends_with('r');
            let hashes = src[j..].bytes().take_while(|&c| c == b'#').count();
            j += hashes + 1; // past the opening quote
            let start = j;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = if raw {
                start + src[start..].find(&close).expect("a raw string ends")
            } else {
                let mut k = start;
                while b[k] != b'"' {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                k
            };
            let text = &src[start..end];
            if skip_from.is_none() && !byte {
                found.push((line, text.to_string()));
            }
            line += text.matches('\n').count();
            i = end + close.len();
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a).
            let lit = rest[1..]
                .find('\'')
                .filter(|&e| e <= 10 && (e == 1 || rest[1..].starts_with('\\')));
            i += lit.map_or(1, |e| e + 2);
        } else if b[i] == b'{' {
            if test_item_pending && skip_from.is_none() {
                skip_from = Some(depth);
            }
            test_item_pending = false;
            depth += 1;
            i += 1;
        } else if b[i] == b'}' {
            depth = depth.saturating_sub(1);
            if skip_from == Some(depth) {
                skip_from = None;
            }
            i += 1;
        } else if b[i] == b';' {
            // `#[cfg(test)] mod tests;` or `use ...;`: the item ends here.
            test_item_pending = false;
            i += 1;
        } else {
            i += 1;
        }
    }
    found
}

/// Files of a module declared `#[cfg(test)] mod NAME;` in `src` (a file of `dir`).
fn test_module_files(
    dir: &camino::Utf8Path,
    file: &camino::Utf8Path,
    src: &str,
) -> Vec<camino::Utf8PathBuf> {
    let base = match file.file_name() {
        Some("mod.rs" | "lib.rs" | "main.rs") => dir.to_path_buf(),
        _ => dir.join(file.file_stem().unwrap_or_default()),
    };
    let mut out = Vec::new();
    let mut lines = src.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "#[cfg(test)]" {
            continue;
        }
        let Some(next) = lines.next() else { break };
        let decl = next.trim();
        let decl = decl.strip_prefix("pub(crate) ").unwrap_or(decl);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
            out.push(base.join(format!("{name}.rs")));
            out.push(base.join(name).join("mod.rs"));
        }
    }
    out
}

/// Places where a word of the protocol is spelled for something else, each with why: a line
/// that holds the fragment may hold the word.
const NOT_THE_PROTOCOL: &[(&str, &str, &str)] = &[
    (
        "deploy/migration.rs",
        "\"warn\" => l.warnings",
        "the migration lint's own output key",
    ),
    (
        "deploy/migration.rs",
        "\"result\" => l.result",
        "the migration lint's own output key",
    ),
    (
        "deploy/migration.rs",
        "end(\"refused\"",
        "the local lint step's line",
    ),
    (
        "deploy/migration.rs",
        "lint.result == \"refused\"",
        "the migration lint's own verdict",
    ),
    (
        "deploy/migration.rs",
        "{ \"refused\" } else",
        "the local lint step's line",
    ),
    (
        "deploy/migration.rs",
        "[\"sync\", \"--locked\"",
        "uv's subcommand",
    ),
    (
        "deploy/entry.rs",
        "self.get(\"result\")",
        "deploy.log's key result=",
    ),
    (
        "deploy/log.rs",
        "self.get(\"commit\")",
        "deploy.log's key commit=",
    ),
    ("deploy/lock.rs", "get(\"started\")", "the lock's info key"),
    ("deploy/lock.rs", "get(\"commit\")", "the lock's info key"),
    (
        "deploy/plan.rs",
        "(\"commit\", ",
        "the run call's key (PLAN_KEYS)",
    ),
    (
        "deploy/plan.rs",
        "(\"restart\", ",
        "the run call's key (PLAN_KEYS)",
    ),
    (
        "deploy/plan.rs",
        "(\"begin\", ",
        "the run call's key (PLAN_KEYS)",
    ),
    (
        "deploy/unlock.rs",
        "reply.get(\"unlocked\")",
        "the unlock call's reply key",
    ),
    (
        "check.rs",
        "with_extension(\"manifest\")",
        "the build marker's manifest file",
    ),
    ("scratch.rs", "self.git(&[\"commit\"", "git's subcommand"),
    (
        "setup_server/target.rs",
        "reply.get(\"detail\")",
        "setup-server.sh's reply key",
    ),
    (
        "testhost/lifecycle.rs",
        "join(\"info\")",
        "a machine's info file",
    ),
    (
        "testhost/machine.rs",
        "join(\"info\")",
        "a machine's info file",
    ),
    ("tools.rs", "\"-m\", \"venv\"", "python -m venv"),
    (
        "flags/commands.rs",
        "sub(\"restore\",",
        "the db command's subcommand (`cargo xtask db restore`)",
    ),
    (
        "bench/side.rs",
        "vec![\"db\", \"restore\",",
        "the bench runs `cargo xtask db restore`",
    ),
];

#[test]
fn no_protocol_word_is_spelled_outside_the_contract() {
    let words: BTreeSet<&str> = State::ALL
        .iter()
        .map(|w| w.name())
        .chain(JobResult::ALL.iter().map(|w| w.name()))
        .chain(Step::ALL.iter().map(|w| w.name()))
        .chain(Phase::ALL.iter().map(|w| w.name()))
        .chain(Message::ALL.iter().map(|w| w.name()))
        .chain(EventKind::ALL.iter().map(|w| w.name()))
        .chain(Note::ALL.iter().map(|w| w.name()))
        .collect();
    let src_dir = crate::project_root().join("xtask/src");
    let mut files = Vec::new();
    let mut dirs = vec![src_dir.clone()];
    while let Some(d) = dirs.pop() {
        for entry in d.read_dir_utf8().unwrap() {
            let path = entry.unwrap().path().to_path_buf();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension() == Some("rs") {
                files.push(path);
            }
        }
    }
    let mut test_files = BTreeSet::new();
    for f in &files {
        let src = fs_err::read_to_string(f).unwrap();
        test_files.extend(test_module_files(f.parent().unwrap(), f, &src));
    }
    let mut found = Vec::new();
    let mut used = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src_dir).unwrap().as_str().to_string();
        if rel == "contract.rs" || f.file_name() == Some("tests.rs") || test_files.contains(f) {
            continue;
        }
        let src = fs_err::read_to_string(f).unwrap();
        let lines: Vec<&str> = src.lines().collect();
        for (n, text) in literals_outside_tests(&src) {
            if !words.contains(text.as_str()) {
                continue;
            }
            let line = lines[n - 1];
            let excused = NOT_THE_PROTOCOL
                .iter()
                .position(|(file, frag, _)| rel == *file && line.contains(frag));
            match excused {
                Some(k) => {
                    used.insert(k);
                }
                None => found.push(format!("xtask/src/{rel}:{n}: \"{text}\"")),
            }
        }
    }
    assert!(
        found.is_empty(),
        "the protocol's words are spelled outside contract.rs (use its enums: State, JobResult, Step, Phase, Message, EventKind, Note):\n{}",
        found.join("\n")
    );
    let stale: Vec<&str> = (0..NOT_THE_PROTOCOL.len())
        .filter(|k| !used.contains(k))
        .map(|k| NOT_THE_PROTOCOL[k].1)
        .collect();
    assert!(
        stale.is_empty(),
        "exceptions that excuse nothing: {stale:?}"
    );
}

#[test]
fn the_literal_scan_sees_what_the_compiler_sees() {
    let src = r##"
fn a() { let s = "seed"; let c = '"'; let l: &'static str = "go"; }
// "commit" in a comment
/* "revert" in a block comment */
const R: &str = r#"x "quoted" y"#;
const B: &[u8] = b"abort";
#[cfg(test)]
mod tests {
    fn t() { let s = "health"; let f = format!("{}", "x"); }
}
#[cfg(test)]
mod more;
fn b() { let t = "done"; }
"##;
    let lits: Vec<(usize, String)> = literals_outside_tests(src);
    assert_eq!(
        lits,
        [
            (2, "seed".to_string()),
            (2, "go".to_string()),
            (5, "x \"quoted\" y".to_string()),
            (13, "done".to_string()),
        ]
    );
}

/// The contract's facts that a text could spell itself, each with how to find it: a value
/// with `/` or `.` (a path, a file name, a URL) anywhere; the app's own names (the app user,
/// the units, their prefix) as whole words; a plain name of the layout (`releases`, `current`)
/// after a `/`. Lists, numbers and formats are not spelled that way.
fn spelled_facts(text: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let whole = |needle: &str, before: &dyn Fn(char) -> bool| {
        text.match_indices(needle).any(|(i, _)| {
            let prev = text[..i].chars().next_back();
            let next = text[i + needle.len()..].chars().next();
            prev.is_none_or(before) && next.is_none_or(|c| !word(c))
        })
    };
    let mut found = Vec::new();
    for (name, value) in shell_vars() {
        let listed = value.contains(' ') || value.parse::<i64>().is_ok() || value.is_empty();
        if listed || name == "C_NAME_DATE_FORMAT" {
            continue;
        }
        let spelled = if value.contains(['/', '.']) {
            text.contains(&value)
        } else if value.starts_with(UNIT_PREFIX) {
            whole(&value, &|c| !word(c))
        } else {
            whole(&format!("/{value}"), &|_| true)
        };
        if spelled {
            found.push(format!("{name} ({value})"));
        }
    }
    for u in UNITS {
        if whole(u.name, &|c| !word(c)) {
            found.push(format!("unit {}", u.name));
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn setup_server_spells_none_of_the_contracts_facts() {
    // contract.sh goes ahead of it with every call.
    assert!(setup_script().starts_with(CONTRACT_SH));
    assert!(setup_script().ends_with(SETUP_SH));
    let found = spelled_facts(&code(SETUP_SH));
    assert!(
        found.is_empty(),
        "scripts/setup-server.sh spells the contract's facts itself (use contract.sh's C_* names): {found:?}"
    );
    // The check sees a fact spelled each way.
    for (spelled, fact) in [
        ("APP_USER=innercontext\n", "C_APP_USER (innercontext)"),
        (
            "cat /etc/nginx/sites-available/innercontext",
            "C_NGINX_SITE",
        ),
        ("x=\"$root/shared/backend/.env\"", "C_ENV_BACKEND"),
        ("ls \"$root\"/releases/", "C_RELEASES (releases)"),
        (
            "systemctl restart innercontext-node",
            "unit innercontext-node",
        ),
    ] {
        let found = spelled_facts(spelled);
        assert!(
            found.iter().any(|f| f.starts_with(fact)),
            "{spelled}: {found:?}"
        );
    }
    assert_eq!(
        spelled_facts("local current; nvm which current; say failed"),
        Vec::<String>::new()
    );
}

/// Setup-server's and the bench's Rust rooms and config.rs take the contract's paths from
/// contract.rs too (earlier.rs is the history of older versions' unit files, as they were).
#[test]
fn the_rust_rooms_take_the_contracts_paths_from_it() {
    let src = crate::project_root().join("xtask/src");
    let mut files = vec![src.join("config.rs")];
    for dir in ["setup_server", "bench"] {
        for e in src.join(dir).read_dir_utf8().unwrap() {
            let p = e.unwrap().path().to_path_buf();
            let skip = ["tests.rs", "test_support.rs", "earlier.rs"];
            if p.extension() == Some("rs") && !skip.contains(&p.file_name().unwrap_or_default()) {
                files.push(p);
            }
        }
    }
    let mut found = Vec::new();
    for f in &files {
        let text = fs_err::read_to_string(f).unwrap();
        for (line, lit) in literals_outside_tests(&text) {
            for (name, value) in shell_vars() {
                if value.contains('/') && !value.contains(' ') && lit.contains(&value) {
                    found.push(format!("{f}:{line}: {name} ({value})"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "spelled instead of taken from contract.rs:\n{}",
        found.join("\n")
    );
}

/// The deploy script travels without its comment lines: no here-document (where such a line
/// would be text), and bash defines every function exactly as from the files themselves.
#[test]
fn dropping_comment_lines_changes_no_function() {
    let full = [
        CONTRACT_SH,
        LIB_SH,
        LOCK_SH,
        SEAL_SH,
        JOB_SH,
        RECORD_SH,
        DEPLOY_SH,
    ]
    .concat();
    assert!(
        !full.replace("<<<", "").contains("<<"),
        "a here-document in the deploy scripts: its '#' lines would be dropped"
    );
    let functions = |text: &str| {
        // Everything up to `main "$@"`: the definitions, without running a subcommand.
        let defs = &text[..text
            .rfind("\nmain \"$@\"")
            .expect("deploy.sh ends with main")];
        let mut child = std::process::Command::new("bash")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = format!("{defs}\ndeclare -f\n");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(input.as_bytes())
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stripped = deploy_script();
    assert!(stripped.len() < full.len() * 9 / 10);
    assert_eq!(functions(&full), functions(&stripped));
}

#[test]
fn a_clean_deploy_seeds_only_the_half_it_does_not_ship_and_swaps_the_uv_cache_whole() {
    let out = with_helpers(
        "clean",
        r#"set -euo pipefail
            root=$PWD/root token=t1 jobdir=$PWD/job lock=$PWD/lock
            events=$jobdir/events
            mkdir -p "$jobdir" "$lock" root/releases/B/backend root/releases/B/frontend root/releases/B/scripts
            echo b >root/releases/B/backend/a.py
            echo f >root/releases/B/frontend/x.js
            echo s >root/releases/B/scripts/s.sh
            opt_clean=yes opt_release=N opt_scope=backend base=B rel=$root/releases/N
            (step_seed)
            (cd "$rel" && find . -type f ! -name '.*' | sort | paste -sd ' ' -)
            cut -f2- "$events" | grep seed | tr '\t' ' '
            cache=$root/$C_UV_CACHE fresh=$root/$C_UV_CACHE_FRESH old=$root/$C_UV_CACHE_OLD
            mkdir -p "$cache" && echo old >"$cache/entry"
            build_venv() { echo new >"$2/entry"; [ "${BUILD:-ok}" = ok ] || exit 1; }
            if (BUILD=fails clean_venv "$root/venv"); then echo "built?"; fi
            echo "failed build: cache=$(cat "$cache/entry") fresh=$([ -e "$fresh" ] && echo left || echo gone)"
            (clean_venv "$root/venv")
            echo "built: cache=$(cat "$cache/entry") old=$([ -e "$old" ] && echo left || echo gone) trash=$(cat "$root/$C_TRASH/uv-cache.t1/entry")"
            # A job that died between the two renames, after the first: the fresh cache goes in.
            mv -T "$cache" "$old"; mkdir "$fresh"; echo fresh >"$fresh/entry"
            settle_uv_cache; echo "died after the first rename: cache=$(cat "$cache/entry") $(ls "$root/shared" | paste -sd ' ' -)"
            # A job that died during the build: the fresh one goes, the cache stays.
            mkdir "$fresh"; settle_uv_cache; echo "died in the build: cache=$(cat "$cache/entry") $(ls "$root/shared" | paste -sd ' ' -)"
            # Only the old one there (no fresh one): it comes back.
            mv -T "$cache" "$old"; settle_uv_cache; echo "only the old one: cache=$(cat "$cache/entry")"
            "#,
    );
    assert_eq!(
        out,
        "./frontend/x.js\n\
         note seed none clean B frontend\n\
         failed build: cache=old fresh=gone\n\
         built: cache=new old=gone trash=old\n\
         died after the first rename: cache=fresh uv-cache\n\
         died in the build: cache=fresh uv-cache\n\
         only the old one: cache=fresh\n"
    );
}
