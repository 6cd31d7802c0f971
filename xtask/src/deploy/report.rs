//! What the deployer prints: the job's events as step lines (one per step, with the duration
//! the server measured), and a final line that says what the server ended with.

use crate::deploy::job::{Event, Outcome, Watcher};
use crate::{say, say_part, ui};

/// Renders job events as step lines: `==> LABEL ... ok (1.2s) [notes]`.
#[derive(Default)]
pub struct Printer {
    /// Prefix every line with the host (fleets).
    pub prefix_host: bool,
    open: bool,
    notes: Vec<String>,
}

impl Printer {
    pub fn new(prefix_host: bool) -> Printer {
        Printer {
            prefix_host,
            ..Printer::default()
        }
    }

    fn prefix(&self, host: &str) -> String {
        if self.prefix_host {
            format!("[{host}] ")
        } else {
            String::new()
        }
    }

    /// End a step line left open by a step start.
    pub fn close_line(&mut self) {
        if self.open {
            say!("");
            self.open = false;
        }
    }

    fn line(&mut self, host: &str, text: &str) {
        self.close_line();
        say!("{}{text}", self.prefix(host));
    }
}

impl Watcher for Printer {
    fn event(&mut self, host: &str, e: &Event) {
        match e.kind.as_str() {
            "step" => match e.field(1) {
                "start" => {
                    self.close_line();
                    self.notes.clear();
                    let p = self.prefix(host);
                    say_part!("{p}");
                    ui::step_start(e.field(2));
                    self.open = true;
                }
                status => {
                    let secs = e.field(2);
                    let notes = if self.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", self.notes.join(", "))
                    };
                    let word = if status == "ok" { "ok" } else { "FAILED" };
                    if self.open {
                        say!("{word} ({secs}s){notes}");
                        self.open = false;
                    } else {
                        self.line(host, &format!("    {} {word} ({secs}s){notes}", e.field(0)));
                    }
                    if status != "ok" && !e.field(3).is_empty() {
                        self.line(host, &format!("    {}", e.field(3)));
                    }
                    self.notes.clear();
                }
            },
            "info" => self.line(host, &format!("    {}", e.field(0))),
            "warn" => self.line(host, &format!("warning: {}", e.field(0))),
            "detail" => self.line(host, &format!("    | {}", e.field(0))),
            "note" => {
                if let Some(n) = note_text(&e.fields) {
                    self.notes.push(n);
                }
                if e.field(0) == "drift" {
                    self.line(
                        host,
                        &format!(
                            "warning: {} on the server differs from the release it came from (edited by hand?): sent again",
                            e.field(1)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// A short note for the step line, from a `note` event.
fn note_text(f: &[String]) -> Option<String> {
    let g = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    match g(0) {
        "seed" if g(1) == "none" => Some(format!("nothing to seed from: current is {}", g(2))),
        "seed" if g(2) == "verified" && g(3) != "0" => {
            Some(format!("from {}, {} drifted file(s) left out", g(1), g(3)))
        }
        "seed" => Some(format!("from {}", g(1))),
        "venv" => Some(format!("virtualenv {} {}", g(1), g(2))),
        "migrate" if g(1) == "none" => Some(format!("nothing to migrate, at {}", g(2))),
        "migrate" => Some(format!("{} to {}", g(1), g(2))),
        "removed" => Some(format!("{} file(s) removed", g(1))),
        _ => None,
    }
}

/// The one line that ends a deploy or rollback: what the server ended with (the job's result
/// word, as deploy.log has it, then what it means and what current is now).
pub fn final_line(what: &str, host: &str, o: &Outcome) -> String {
    let current = o
        .current
        .rsplit('/')
        .next()
        .filter(|c| !c.is_empty())
        .unwrap_or("none");
    let reason = if o.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", o.reason)
    };
    match o.result.as_str() {
        "success" => format!(
            "{what} on {host}: success in {}s (alembic {}); current is {current}",
            o.duration, o.revision
        ),
        "rolled-back" => format!(
            "{what} on {host}: rolled-back (it failed after the switch; the previous release was restored and is healthy){reason}; current is {current} again"
        ),
        "rollback-failed" => format!(
            "{what} on {host}: rollback-failed (it failed, and so did restoring the previous release){reason}; current is {current}: check 'cargo xtask deploy status'"
        ),
        other => format!("{what} on {host}: {other}{reason}; current is {current}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: &str, reason: &str) -> Outcome {
        Outcome {
            result: result.into(),
            reason: reason.into(),
            duration: "3.1".into(),
            revision: "0002_price_history".into(),
            current: "releases/20261128T101530Z".into(),
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
        let n = |f: &[&str]| note_text(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            n(&["venv", "abc", "reused"]).unwrap(),
            "virtualenv abc reused"
        );
        assert_eq!(
            n(&["migrate", "none", "0002"]).unwrap(),
            "nothing to migrate, at 0002"
        );
        assert_eq!(
            n(&["seed", "20261128T101530Z", "verified", "2"]).unwrap(),
            "from 20261128T101530Z, 2 drifted file(s) left out"
        );
        assert_eq!(n(&["drift", "backend/x.py"]), None);
    }
}
