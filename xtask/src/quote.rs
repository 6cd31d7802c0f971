//! Quoting for everything that crosses ssh.
//!
//! The remote login shell re-parses the command line ssh sends, so xshell's and duct's argv
//! safety ends at the local exec. Every word that reaches a remote shell goes through [`sh`]
//! (or [`join`]), the only place in the project that builds remote command lines.

/// Quote one word for a POSIX shell. Words made only of safe characters are left alone so
/// rendered plans stay readable; anything else is single-quoted.
pub fn sh(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quote each word and join them with spaces: one remote command line.
pub fn join<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| sh(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What a real POSIX shell makes of the quoted word must be the word itself.
    fn roundtrip(word: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh(word)))
            .output()
            .expect("sh runs");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn safe_words_stay_readable() {
        assert_eq!(sh("/opt/innercontext"), "/opt/innercontext");
        assert_eq!(sh("innercontext@10.0.0.2"), "innercontext@10.0.0.2");
        assert_eq!(sh(""), "''");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }

    #[test]
    fn hostile_words_survive_a_real_shell() {
        for w in [
            "$(touch /tmp/pwned)",
            "`id`",
            "a;b",
            "x\ny",
            "'",
            "''",
            "\"$HOME\"",
            "*",
            "~root",
            "a b  c",
            "-n",
            "\\",
            "!event",
            "é ü",
        ] {
            assert_eq!(roundtrip(w), w, "{w:?}");
        }
    }

    #[test]
    fn join_quotes_each_word() {
        assert_eq!(join(["ls", "-l", "/a b"]), "ls -l '/a b'");
    }
}
