//! One deploy.log line (`WHEN key=value ... reason=TEXT`, written by `log_line` in
//! scripts/deploy-lib.sh), split into its fields: what `deploy log` shows, what a reading
//! finds after a job, what the probe says the boot check did. Pure parsing.

use crate::contract::JobResult;

/// One deploy.log line, split into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub when: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// `WHEN key=value ... [reason=TEXT]`: the fields before `reason=` are single words; the
    /// reason, always last, is everything after `reason=`, spaces and underscores as written
    /// (`log_line` in scripts/deploy-lib.sh). Lines written before the reason was kept whole
    /// carry it with `_` for every space and cut at 300 characters: they show as written,
    /// since which of their underscores were spaces cannot be told.
    pub fn parse(line: &str) -> Entry {
        let (head, reason) = match line.split_once(" reason=") {
            Some((head, reason)) => (head, Some(reason)),
            None => (line, None),
        };
        let mut words = head.split(' ');
        let when = words.next().unwrap_or("").to_string();
        let mut fields: Vec<(String, String)> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(r) = reason {
            fields.push(("reason".to_string(), r.to_string()));
        }
        Entry { when, fields }
    }

    /// The line's `result=`, as written (`-` when missing).
    pub fn result_word(&self) -> &str {
        self.get("result")
    }

    /// The line's result as the contract knows it.
    pub fn result(&self) -> Option<JobResult> {
        JobResult::parse(self.result_word())
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("-")
    }
}
