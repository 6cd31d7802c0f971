//! What an end-to-end run adds up to: each scenario's result, each group process's exit and
//! the machines left behind, turned into the run's last lines and its pass or fail. Pure, and
//! in the library so that the rust stage's unit tests reach it (the e2e binary itself only
//! runs against the test machines).

/// How one scenario ended: its label (`[group] name`) and its error, if it failed.
pub struct ScenarioEnd<'a> {
    pub label: &'a str,
    pub error: Option<&'a str>,
}

/// How one group's process ended: its exit status when not a success, how many of its
/// scenarios failed, and where its whole output is.
pub struct GroupEnd<'a> {
    pub name: &'a str,
    pub exit: Option<&'a str>,
    pub failed_scenarios: usize,
    pub log: &'a str,
}

/// The run's last lines (each failure with the first and last lines of its error, each group that
/// failed with no failed scenario to say why, what was left behind, then `N passed, N
/// failed`) and whether the run passed: no scenario failed, every group's process ended
/// well, nothing was left behind.
pub fn verdict(
    scenarios: &[ScenarioEnd],
    groups: &[GroupEnd],
    left: &[String],
) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    for s in scenarios {
        if let Some(e) = s.error {
            // Its first line (what failed) and its last two (where a command's output ends
            // with its error).
            let all: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
            let mut shown: Vec<&str> = all.iter().take(1).copied().collect();
            if all.len() > 3 {
                shown.push("…");
            }
            shown.extend(all.iter().skip(1.max(all.len().saturating_sub(2))));
            lines.push(format!("FAIL {}: {}", s.label, shown.join(" | ")));
        }
    }
    // A group whose scenarios all passed but whose process failed: a teardown that failed, a
    // machine it had to take down itself, a crash after its last scenario.
    let mut groups_failed = 0;
    for g in groups {
        if let (Some(status), 0) = (g.exit, g.failed_scenarios) {
            groups_failed += 1;
            lines.push(format!(
                "FAIL the {} group's process ended with {status} although its scenarios passed (its teardown or the process failed): see {}",
                g.name, g.log
            ));
        }
    }
    if !left.is_empty() {
        lines.push(format!("FAIL this run left behind: {}", left.join(", ")));
    }
    let failed = scenarios.iter().filter(|s| s.error.is_some()).count();
    let passed = scenarios.len() - failed;
    lines.push(format!("{passed} passed, {failed} failed"));
    (lines, failed == 0 && groups_failed == 0 && left.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group<'a>(exit: Option<&'a str>, failed: usize) -> GroupEnd<'a> {
        GroupEnd {
            name: "state",
            exit,
            failed_scenarios: failed,
            log: "target/e2e/x/state.log",
        }
    }

    #[test]
    fn a_run_passes_only_when_everything_did() {
        let ok = [ScenarioEnd {
            label: "[state] state::a",
            error: None,
        }];
        let (lines, pass) = verdict(&ok, &[group(None, 0)], &[]);
        assert!(pass);
        assert_eq!(lines, ["1 passed, 0 failed"]);
        let (lines, pass) = verdict(&ok, &[group(None, 0)], &["xs1".to_string()]);
        assert!(!pass);
        assert_eq!(lines[0], "FAIL this run left behind: xs1");
    }

    #[test]
    fn a_group_that_ends_badly_after_its_scenarios_passed_fails_the_run() {
        let ok = [ScenarioEnd {
            label: "[state] state::a",
            error: None,
        }];
        let (lines, pass) = verdict(&ok, &[group(Some("exit status: 1"), 0)], &[]);
        assert!(!pass, "{lines:?}");
        assert_eq!(
            lines,
            [
                "FAIL the state group's process ended with exit status: 1 although its scenarios passed (its teardown or the process failed): see target/e2e/x/state.log",
                "1 passed, 0 failed"
            ]
        );
    }

    #[test]
    fn a_failed_scenario_is_named_with_its_first_lines() {
        let s = [
            ScenarioEnd {
                label: "[state] state::a",
                error: Some("one\n\ntwo\nthree\nfour"),
            },
            ScenarioEnd {
                label: "[state] state::b",
                error: None,
            },
        ];
        // Its group's non-zero exit is the failure's, said once.
        let (lines, pass) = verdict(&s, &[group(Some("exit status: 1"), 1)], &[]);
        assert!(!pass);
        assert_eq!(
            lines,
            [
                "FAIL [state] state::a: one | … | three | four",
                "1 passed, 1 failed"
            ]
        );
    }
}
