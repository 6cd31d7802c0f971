//! Quoting for everything that crosses ssh.
//!
//! The remote login shell re-parses the command line ssh sends, so xshell's and duct's argv
//! safety ends at the local exec. Every word that reaches a remote shell goes through [`sh`]
//! (or [`join`]), the only place in the project that builds remote command lines.
//!
//! And the way back: text the server wrote (deploy.log, a job's events, the probe's fields)
//! can hold what the app user put there, so it reaches a terminal or a CI log only through
//! [`printable`], which strips control characters and escape sequences.

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

/// [`sh`] for a word of any bytes (`exec`'s command: what the user typed may be no UTF-8):
/// the same rule, byte for byte.
pub fn sh_os(word: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    match word.to_str() {
        Some(text) => sh(text).into(),
        None => {
            let mut out = b"'".to_vec();
            for &b in word.as_bytes() {
                match b {
                    b'\'' => out.extend_from_slice(br"'\''"),
                    b => out.push(b),
                }
            }
            out.push(b'\'');
            std::ffi::OsString::from_vec(out)
        }
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

/// Server-written text made safe to print: escape sequences (CSI `ESC [ ... final`, OSC and
/// the other string sequences up to BEL or ST, two-character `ESC X`, and their C1 forms)
/// removed whole, then every other control character (C0 but tab, DEL, C1) dropped. Plain
/// text, tabs and non-ASCII letters pass as they are. Applied where server text enters the
/// deployer ([`crate::remote::Reply::parse`], [`crate::deploy::event::Event::parse`]), never
/// to a command's own output that the user asked for (`cargo xtask logs`).
pub fn printable(text: &str) -> String {
    if !text.chars().any(|c| c != '\t' && c.is_control()) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    // A CSI's parameters and intermediates, then its final byte (anything else ends it).
    fn csi(chars: &mut std::iter::Peekable<std::str::Chars>) {
        while chars
            .next_if(|c| ('\u{20}'..='\u{3f}').contains(c))
            .is_some()
        {}
        chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
    }
    // A control string's body, up to and with its terminator (BEL, ST, or ESC \\).
    fn string(chars: &mut std::iter::Peekable<std::str::Chars>) {
        while let Some(c) = chars.next() {
            match c {
                '\u{7}' | '\u{9c}' => return,
                '\u{1b}' => {
                    chars.next_if_eq(&'\\');
                    return;
                }
                _ => {}
            }
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push(c),
            '\u{1b}' => match chars.next() {
                Some('[') => csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => string(&mut chars),
                _ => {}
            },
            '\u{9b}' => csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => string(&mut chars),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn server_text_loses_its_escapes_and_control_characters() {
        for (raw, shown) in [
            ("plain text, é ü 日本", "plain text, é ü 日本"),
            ("a\tb", "a\tb"),
            ("why\u{1b}]0;pwned\u{7} it failed", "why it failed"),
            (
                "\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\",
                "link",
            ),
            ("\u{1b}[2Jcleared", "cleared"),
            ("\u{1b}[1;31mred\u{1b}[0m", "red"),
            ("\u{1b}[?1049h", ""),
            (
                "bell\u{7}, cr\r, bs\u{8}, del\u{7f}, nul\u{0}",
                "bell, cr, bs, del, nul",
            ),
            (
                "c1 csi \u{9b}2Jx and osc \u{9d}0;t\u{9c}y",
                "c1 csi x and osc y",
            ),
            ("esc c \u{1b}cafter", "esc c after"),
            ("an unterminated \u{1b}]0;title", "an unterminated "),
            ("trailing \u{1b}", "trailing "),
            ("line\nbreak", "linebreak"),
        ] {
            let got = printable(raw);
            assert_eq!(got, shown, "{raw:?}");
            assert!(!got.chars().any(|c| c != '\t' && c.is_control()), "{got:?}");
        }
    }

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
    fn any_bytes_survive_a_real_shell() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        for w in [&b"\xff\xfe it's"[..], b"a\x80\nb $(id)", b"plain", b"\xc3"] {
            let word = OsStr::from_bytes(w);
            let mut line = b"printf %s ".to_vec();
            line.extend_from_slice(sh_os(word).as_bytes());
            let out = Command::new("sh")
                .arg("-c")
                .arg(std::ffi::OsString::from_vec(line))
                .output()
                .expect("sh runs");
            assert_eq!(out.stdout, w, "{w:?}");
        }
        assert_eq!(sh_os(OsStr::new("a b")), "'a b'");
    }

    #[test]
    fn join_quotes_each_word() {
        assert_eq!(join(["ls", "-l", "/a b"]), "ls -l '/a b'");
    }
}
