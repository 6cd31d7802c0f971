//! The local checks alone, as a deploy runs them (the bench's "checks alone" row and the
//! warm-up before the checks rows), on a scratch checkout.

use anyhow::{bail, Context, Result};
use camino::Utf8Path;

use crate::flags::CheckPart;

/// The local checks alone, as `cargo xtask deploy all` runs them and waits for them, on the
/// checkout `dir`: each part of `cargo xtask check` as a child process, the backend beside the
/// frontend build and the frontend checks once the build is done (the order of
/// `deploy::checks`), each with `--recheck` (a tree checked for the first time). They record
/// the tree as checked: [`crate::check::forget`] before a deploy that must check it again.
pub fn local_checks(dir: &Utf8Path) -> Result<()> {
    std::thread::scope(|s| {
        let backend = s.spawn(|| check_part(dir, CheckPart::Backend));
        let frontend =
            check_part(dir, CheckPart::Build).and_then(|()| check_part(dir, CheckPart::Frontend));
        let backend = backend
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the backend checks panicked")));
        backend.and(frontend)
    })
}

/// `cargo xtask check PART --recheck` on the checkout `dir`, as the deploy starts it.
fn check_part(dir: &Utf8Path, part: CheckPart) -> Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["check", part.name(), "--recheck"])
        .current_dir(dir)
        .env("XTASK_PROJECT_ROOT", dir)
        .env("CI", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("starting the {} checks", part.name()))?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bail!(
            "the {} checks failed on {dir} ({}), ending with:\n{}",
            part.name(),
            out.status,
            last_lines(&text, 30)
        );
    }
    Ok(())
}

/// Stop the checks' PostgreSQL of the checkout `dir` (it stays warm between checks).
pub fn stop_checks_db(dir: &Utf8Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap_or_default())
        .args(["check", "--stop-db"])
        .current_dir(dir)
        .env("XTASK_PROJECT_ROOT", dir)
        .stdin(std::process::Stdio::null())
        .output();
    if !matches!(&out, Ok(o) if o.status.success()) {
        eprintln!(
            "warning: the checks' PostgreSQL of {dir} may still run: cd {dir} && cargo xtask check --stop-db"
        );
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_the_end_of_its_output() {
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(&text, 30);
        assert!(
            tail.starts_with("line 11\n") && tail.ends_with("line 40"),
            "{tail}"
        );
        assert_eq!(last_lines("only\n", 30), "only");
        assert_eq!(last_lines("", 30), "");
    }
}
