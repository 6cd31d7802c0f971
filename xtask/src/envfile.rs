//! The env-file format, defined once: what the server's env files (`shared/backend/.env`,
//! `shared/frontend/.env.production`), the repository's `.env.example` files and the
//! destination files (`deploy/<name>.env`) may hold.
//!
//! A line is blank, a comment (`#` first), or `KEY=value`: KEY a letter or `_` then letters,
//! digits and `_`; the value everything after the first `=`, which may be empty. The format is
//! the part every reader takes the same way: the backend's pydantic-settings (python-dotenv),
//! node's `--env-file`, and a plain `KEY=value` split (the deployer's own readers). So a value
//! must not start with a quote (both strip it), hold `#` (node cuts the value there), `${`
//! (python-dotenv expands it) or a control character, or begin or end with a space (both trim
//! it); a key appears once; lines end in `\n` only (a `\r` is refused, with what to do).
//! A file that passes is read as the same pairs by all of them.

use std::fmt;

/// One `KEY=value` of a file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// Why a file is not in the format: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub line: usize,
    pub why: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for FormatError {}

/// Whether `key` is a variable name of the format.
pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What is wrong with `value` as a value of the format, if anything.
pub fn value_problem(value: &str) -> Option<&'static str> {
    if value.chars().any(|c| c.is_control()) {
        Some("the value holds a control character")
    } else if value.starts_with(['"', '\'', '`']) {
        Some("the value starts with a quote, which the readers strip: write it without quotes")
    } else if value.contains('#') {
        Some("the value holds '#', where node's reader cuts it: the format has no way to hold '#'")
    } else if value.contains("${") {
        Some("the value holds '${', which the backend's reader expands")
    } else if value.starts_with(' ') || value.ends_with(' ') {
        Some("the value begins or ends with a space, which the readers trim")
    } else {
        None
    }
}

/// The entries of `text`, in order, or the first line that is not in the format.
pub fn parse(text: &str) -> Result<Vec<Entry>, FormatError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let bad = |why: String| Err(FormatError { line, why });
        if raw.ends_with('\r') {
            return bad(
                "the line ends in CR (a Windows line end): save the file with LF line \
                 ends (dos2unix FILE)"
                    .into(),
            );
        }
        if raw.trim().is_empty() || raw.starts_with('#') {
            if raw.chars().any(|c| c.is_control() && c != '\t') {
                return bad("a control character".into());
            }
            continue;
        }
        let Some((key, value)) = raw.split_once('=') else {
            return bad(format!(
                "'{}' is neither KEY=value, a # comment nor blank",
                shown(raw)
            ));
        };
        if !valid_key(key) {
            return bad(format!(
                "'{}' is not a variable name (a letter or _, then letters, digits, _; no \
                 spaces around =)",
                shown(key)
            ));
        }
        if let Some(why) = value_problem(value) {
            return bad(format!("{key}: {why}"));
        }
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return bad(format!(
                "{key} is set twice (first on line {}): keep one",
                first.line
            ));
        }
        entries.push(Entry {
            line,
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(entries)
}

/// `text` for an error message: at most 40 characters, control characters escaped.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{}{more}", cut.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn pairs_comments_and_blank_lines() {
        let e = parse("# a comment\n\nA=1\n  \nB_2=x=y\nEMPTY=\n").unwrap();
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.line, e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(got, [(3, "A", "1"), (5, "B_2", "x=y"), (6, "EMPTY", "")]);
    }

    #[test]
    fn the_repositorys_examples_pass() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        for f in ["backend/.env.example", "frontend/.env.example"] {
            let text = fs_err::read_to_string(format!("{root}/{f}")).unwrap();
            let entries = parse(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!entries.is_empty(), "{f} has no entries");
        }
    }

    #[test]
    fn each_bad_line_is_named() {
        assert_eq!(
            err("A=1\r\n"),
            "line 1: the line ends in CR (a Windows line end): save the file with LF line ends \
             (dos2unix FILE)"
        );
        assert_eq!(
            err("A=1\nexport B\n"),
            "line 2: 'export B' is neither KEY=value, a # comment nor blank"
        );
        assert!(err("export A=1").contains("'export A' is not a variable name"));
        assert!(err("A =1").contains("'A ' is not a variable name"));
        assert!(err("1A=1").contains("not a variable name"));
        assert_eq!(
            err("A=1\nB=2\nA=3\n"),
            "line 3: A is set twice (first on line 1): keep one"
        );
        assert!(err("A=\"x\"").contains("A: the value starts with a quote"));
        assert!(err("A=x #note").contains("holds '#'"));
        assert!(err("A=${HOME}").contains("holds '${'"));
        assert!(err("A= x").contains("begins or ends with a space"));
        assert!(err("A=x\u{1b}[2J").contains("control character"));
    }

    #[test]
    fn values_keep_what_every_reader_keeps() {
        let e = parse("URL=postgresql+psycopg://u:p@h:5432/db?x=1&y=$z\n").unwrap();
        assert_eq!(e[0].value, "postgresql+psycopg://u:p@h:5432/db?x=1&y=$z");
        assert!(valid_key("_A1") && !valid_key("") && !valid_key("A-B"));
    }
}
