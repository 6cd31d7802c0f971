//! The README and `docs/` stay a manual a newcomer can start from (tests only).
//!
//! README.md stays under [`README_MAX_LINES`] lines (what a newcomer needs; the rest lives in
//! `docs/`), every `docs/*.md` page has a line in its table of contents, and every relative link
//! in README.md and `docs/*.md` points at a file that exists and, when it names a heading
//! (`docs/architecture.md#the-lock`), at a heading that exists there (GitHub's and Forgejo's
//! anchors: the heading in lower case, punctuation dropped, spaces as `-`).

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};

/// README.md must have fewer lines than this.
const README_MAX_LINES: usize = 300;

fn repo_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// The lines of `text` outside fenced code blocks, with their (1-based) numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// `line` without its inline code spans (`` `a](b)` `` is not a link).
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the inline links of `text` (`[text](target)`), with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// A heading's anchor as GitHub and Forgejo make it: lower case, every character but letters,
/// digits, `_`, `-` and spaces dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of the headings of `text` (a repeated heading gets `-1`, `-2`, … as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[hashes..]);
        let mut name = base.clone();
        let mut k = 1;
        while out.contains(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        out.insert(name);
    }
    out
}

/// Whether a link leaves the repository (a URL or a mail address): not checked here.
fn external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// What is wrong with the relative links of `file` (its text `text`): one line per link whose
/// file or heading does not exist. `read` gives the text of another Markdown file, or None.
fn broken_links(
    file: &Utf8Path,
    text: &str,
    exists: impl Fn(&Utf8Path) -> bool,
    read: impl Fn(&Utf8Path) -> Option<String>,
) -> Vec<String> {
    let dir = file.parent().unwrap_or(Utf8Path::new(""));
    let mut wrong = Vec::new();
    for (n, target) in links(text) {
        if external(&target) {
            continue;
        }
        let (path, heading) = match target.split_once('#') {
            Some((p, h)) => (p, Some(h)),
            None => (target.as_str(), None),
        };
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !path.is_empty() && !exists(&linked) {
            wrong.push(format!(
                "{file}:{n}: link to {target}: {linked} does not exist"
            ));
            continue;
        }
        let Some(heading) = heading else { continue };
        if linked.extension() != Some("md") {
            continue;
        }
        let known = if path.is_empty() {
            anchors(text)
        } else {
            read(&linked).map(|t| anchors(&t)).unwrap_or_default()
        };
        if !known.contains(heading) {
            wrong.push(format!(
                "{file}:{n}: link to {target}: {linked} has no heading with the anchor #{heading}"
            ));
        }
    }
    wrong
}

/// The Markdown files the rules apply to: README.md and every `docs/*.md`, relative to the root.
fn manual_files(root: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut files = vec![Utf8PathBuf::from("README.md")];
    files.extend(docs_pages(root));
    files
}

/// Every `docs/*.md`, relative to the root, sorted.
fn docs_pages(root: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut pages: Vec<Utf8PathBuf> = fs_err::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| Utf8PathBuf::from_path_buf(e.unwrap().path()).unwrap())
        .filter(|p| p.extension() == Some("md"))
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    pages.sort();
    pages
}

/// `path` (relative to the repository root, maybe with `..`) as a clean relative path.
fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.components().map(|c| c.as_str()) {
        match part {
            "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().collect()
}

/// The docs pages README.md does not link to.
fn unlinked_pages(readme: &str, pages: &[Utf8PathBuf]) -> Vec<Utf8PathBuf> {
    let linked: BTreeSet<Utf8PathBuf> = links(readme)
        .into_iter()
        .filter(|(_, t)| !external(t))
        .map(|(_, t)| normalize(Utf8Path::new(t.split('#').next().unwrap_or(""))))
        .collect();
    pages
        .iter()
        .filter(|p| !linked.contains(&normalize(p)))
        .cloned()
        .collect()
}

#[test]
fn the_readme_stays_short() {
    let readme = fs_err::read_to_string(repo_root().join("README.md")).unwrap();
    let n = readme.lines().count();
    assert!(
        n < README_MAX_LINES,
        "README.md has {n} lines, the bound is under {README_MAX_LINES}: move the detail into a page \
         of docs/ and give that page a line in the README's \"Where to read more\""
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let root = repo_root();
    let readme = fs_err::read_to_string(root.join("README.md")).unwrap();
    let pages = docs_pages(&root);
    assert!(!pages.is_empty(), "docs/ has no page");
    let missing = unlinked_pages(&readme, &pages);
    assert!(
        missing.is_empty(),
        "README.md does not link to {missing:?}: add a line for each to \"Where to read more\""
    );
}

#[test]
fn every_relative_link_of_the_manual_points_at_something() {
    let root = repo_root();
    let mut wrong = Vec::new();
    for file in manual_files(&root) {
        let text = fs_err::read_to_string(root.join(&file)).unwrap();
        wrong.extend(broken_links(
            &file,
            &text,
            |p| root.join(p).exists(),
            |p| std::fs::read_to_string(root.join(p)).ok(),
        ));
    }
    assert!(wrong.is_empty(), "broken links:\n{}", wrong.join("\n"));
}

#[test]
fn anchors_are_the_ones_github_makes() {
    assert_eq!(anchor("The lock"), "the-lock");
    assert_eq!(anchor("What happens when…"), "what-happens-when");
    assert_eq!(anchor("Fleets: `--hosts`"), "fleets---hosts");
    assert_eq!(
        anchor("Local checks: `cargo xtask check`"),
        "local-checks-cargo-xtask-check"
    );
    assert_eq!(
        anchor("Unit logs for the deploy user: `innercontext-journal`"),
        "unit-logs-for-the-deploy-user-innercontext-journal"
    );
    let text = "# Top\n## Part\n```\n## not a heading\n```\n## Part\n#nope\n";
    let got: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(got, ["part", "part-1", "top"]);
}

#[test]
fn links_are_found_outside_code_only() {
    let text = "see [a](docs/a.md#x) and [b](b.md), not `[c](c.md)`\n```\n[d](d.md)\n```\n[e](https://example.org)\n";
    let got: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["docs/a.md#x", "b.md", "https://example.org"]);
}

#[test]
fn a_broken_link_is_named_with_its_line() {
    let files = ["README.md", "docs/a.md"];
    let exists = |p: &Utf8Path| files.contains(&normalize(p).as_str());
    let read = |p: &Utf8Path| match normalize(p).as_str() {
        "docs/a.md" => Some("# A\n## The lock\n".to_string()),
        "README.md" => Some("# R\n".to_string()),
        _ => None,
    };
    let ok = "[a](a.md#the-lock) [r](../README.md) [self](#here) [web](https://x.org/y)\n## Here\n";
    assert!(broken_links(Utf8Path::new("docs/b.md"), ok, exists, read).is_empty());
    let bad = "[gone](gone.md)\n[no heading](a.md#the-key)\n[self](#nowhere)\n";
    let wrong = broken_links(Utf8Path::new("docs/b.md"), bad, exists, read);
    assert_eq!(wrong.len(), 3, "{wrong:?}");
    assert!(wrong[0].starts_with("docs/b.md:1: link to gone.md: docs/gone.md does not exist"));
    assert!(wrong[1].contains("docs/b.md:2:") && wrong[1].contains("#the-key"));
    assert!(wrong[2].contains("docs/b.md:3:") && wrong[2].contains("#nowhere"));
}

#[test]
fn a_page_missing_from_the_readme_is_named() {
    let pages = [
        Utf8PathBuf::from("docs/a.md"),
        Utf8PathBuf::from("docs/b.md"),
    ];
    let readme = "[A](docs/a.md#top) and [elsewhere](https://x.org/docs/b.md)\n`[B](docs/b.md)`\n";
    assert_eq!(
        unlinked_pages(readme, &pages),
        [Utf8PathBuf::from("docs/b.md")]
    );
    assert!(unlinked_pages("[A](./docs/a.md) [B](docs/../docs/b.md)", &pages).is_empty());
}
