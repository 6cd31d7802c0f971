//! The deploying machine's side of a release: who deploys which commit, which files a release
//! is made of (never an env file), and which of them must travel.

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::build_output;
use crate::config::Config;
use crate::flags::Scope;

/// Who deploys what: commit, dirty flag, user@host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub commit: String,
    pub dirty: bool,
    pub deployer: String,
    pub host: String,
}

impl Local {
    /// The commit as releases record it (`+dirty` for a tree with uncommitted changes).
    pub fn made(&self) -> String {
        format!("{}{}", self.commit, if self.dirty { "+dirty" } else { "" })
    }
}

/// `git ARGS` in the shell's directory, in a process group of its own ([`crate::proc::read`]:
/// a terminal's Ctrl-C or hang-up is the deployer's to handle, not git's); its stdout.
fn git(sh: &Shell, args: &[&str]) -> Result<String> {
    let dir = camino::Utf8PathBuf::try_from(sh.current_dir())?;
    crate::proc::read(&dir, "git", args)
}

pub fn origin(sh: &Shell, cfg: &Config) -> Result<Local> {
    let commit = git(sh, &["rev-parse", "--short=12", "HEAD"])
        .context("reading the commit: is this a git checkout with at least one commit?")?
        .trim()
        .to_string();
    let status = git(sh, &["status", "--porcelain", "--untracked-files=normal"])?;
    let dirty = !status.trim().is_empty();
    if dirty && !cfg.allow_dirty {
        let n = status.lines().count();
        bail!(
            "the working tree has {n} uncommitted change(s): commit or stash them, or set DEPLOY_ALLOW_DIRTY=1 to deploy them anyway"
        );
    }
    let (user, host) = deployer();
    Ok(Local {
        commit,
        dirty,
        deployer: format!("{user}@{host}"),
        host,
    })
}

/// (user, host) of whoever runs the deploy.
pub fn deployer() -> (String, String) {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".to_string());
    let host = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    (
        crate::deploy::lock::clean(&user),
        crate::deploy::lock::clean(&host),
    )
}

/// The login name of our uid, from /etc/passwd (CI runners often set no USER).
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = fs_err::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = fs_err::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

/// Files that never belong in a release, whatever git says: env files (`.env`, `.env.local`,
/// `.env.production`, ...; `*.example` ones are documentation and stay), virtualenvs, caches,
/// node_modules.
pub fn excluded(path: &str) -> bool {
    path.split('/').any(|part| {
        (part.starts_with(".env") && !part.ends_with(".example"))
            || matches!(
                part,
                ".venv" | "__pycache__" | ".pytest_cache" | ".ruff_cache" | "node_modules"
            )
    })
}

/// Which repository paths a release of `scope` is made of, given every candidate path (tracked
/// and untracked-but-not-ignored files, plus the frontend build output).
pub fn select(paths: &[String], scope: Scope) -> Vec<String> {
    let always = ["scripts/", "systemd/", "nginx/"];
    let mut out: Vec<String> = paths
        .iter()
        .filter(|p| !excluded(p))
        .filter(|p| {
            always.iter().any(|a| p.starts_with(a))
                || (scope.backend() && p.starts_with("backend/"))
                || (scope.frontend()
                    && (p.starts_with("frontend/build/") || p.as_str() == "frontend/package.json"))
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The files of a release of `scope`: the manifest the server makes the release match. A
/// frontend whose build lacks its entry point or its client files is never shipped, whatever
/// the check cache said (see [`build_output::lacking`]).
pub fn manifest(sh: &Shell, scope: Scope) -> Result<Vec<String>> {
    let root = crate::project_root();
    let mut paths = listed(sh)?;
    if scope.frontend() {
        paths.extend(build_output::files_under(&root, build_output::BUILD_DIR)?);
        if let Some(refusal) = unsafe_names(&paths) {
            bail!("{refusal}");
        }
        if let Some(refusal) = incomplete_build(&build_output::lacking(&paths)) {
            bail!("{refusal}");
        }
    }
    Ok(select(&paths, scope))
}

/// The repository's files a release can be made of (tracked, and untracked but not ignored),
/// refused whole when one has a name the upload will not carry (see [`unsafe_names`]). The
/// deploy asks this before it takes the lock.
pub fn listed(sh: &Shell) -> Result<Vec<String>> {
    let root = crate::project_root();
    let listed = git(
        sh,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "backend",
            "scripts",
            "systemd",
            "nginx",
            "frontend/package.json",
            "frontend/static",
        ],
    )?;
    let paths: Vec<String> = listed
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter(|p| root.join(p).is_file())
        .map(str::to_string)
        .collect();
    if let Some(refusal) = unsafe_names(&paths) {
        bail!("{refusal}");
    }
    Ok(paths)
}

/// The one-line refusal of file names with a control character (a newline, a tab, an escape,
/// DEL, C1), shown escaped: a newline in a name would start a line of its own in the job's
/// input and in the file lists, an escape would rewrite the terminal that prints it. None when
/// every name is plain.
pub fn unsafe_names(paths: &[String]) -> Option<String> {
    let bad: Vec<String> = paths
        .iter()
        .filter(|p| p.chars().any(char::is_control))
        .map(|p| p.escape_debug().to_string())
        .collect();
    let first = bad.first()?;
    let more = match bad.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(format!(
        "the file name {first}{more} has a control character, which the upload does not carry: rename it (git mv) and deploy again; nothing was sent"
    ))
}

/// The one-line refusal of a build that lacks `lacking` (None when it lacks nothing).
fn incomplete_build(lacking: &[String]) -> Option<String> {
    if lacking.is_empty() {
        return None;
    }
    let named = lacking[..lacking.len().min(3)].join(", ");
    let more = match lacking.len().saturating_sub(3) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(format!(
        "the frontend build lacks {named}{more}: build it again with 'cargo xtask check build --recheck', then deploy"
    ))
}

/// How the server's copy of a release is made to match the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// The server seeded the release from a release made of `base`: only backend files that
    /// differ from `base` (or from this checkout's hashes, on the server) travel.
    Diff { base: String },
    /// Every file of the manifest is compared by checksum (no usable base).
    Full,
}

/// The files to hand to rsync: under [`Transfer::Diff`], the backend files changed since the
/// base (committed or not), the files that differed from our hashes on the server (`drift`,
/// see [`crate::deploy::seal`]), and everything outside the backend (small: scripts, units,
/// nginx, the frontend build, compared by checksum).
pub fn to_send(
    manifest: &[String],
    transfer: &Transfer,
    changed_backend: &[String],
    drift: &[String],
) -> Vec<String> {
    match transfer {
        Transfer::Full => manifest.to_vec(),
        Transfer::Diff { .. } => manifest
            .iter()
            .filter(|p| {
                !p.starts_with("backend/")
                    || changed_backend.contains(p)
                    || drift.iter().any(|d| d == *p)
            })
            .cloned()
            .collect(),
    }
}

/// How the files of an upload travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// rsync compares each file by checksum and sends only what differs (with progress).
    Rsync,
    /// One tar stream into the server's `deploy.sh receive`: one round trip, every file whole.
    Tar,
}

impl Carrier {
    pub fn name(self) -> &'static str {
        match self {
            Carrier::Rsync => "rsync",
            Carrier::Tar => "tar",
        }
    }
}

/// Uploads up to this size may go as one tar stream.
pub const TAR_MAX_BYTES: u64 = 1 << 20;

/// rsync's handful of round trips buy nothing when the files are known to have changed: under
/// [`Transfer::Diff`] with nothing of the frontend (whose build output is only compared, not
/// known changed) and at most [`TAR_MAX_BYTES`], the files go whole as one tar stream.
pub fn carrier(transfer: &Transfer, send: &[String], bytes: u64) -> Carrier {
    let known_changed = matches!(transfer, Transfer::Diff { .. })
        && !send.iter().any(|p| p.starts_with("frontend/"));
    if known_changed && bytes <= TAR_MAX_BYTES {
        Carrier::Tar
    } else {
        Carrier::Rsync
    }
}

/// Paths of the backend, scripts, units and nginx site that differ between `base` and the
/// working tree (committed, staged, unstaged or untracked); None when `base` is not a commit
/// this checkout knows.
pub fn changed_since(sh: &Shell, base: &str) -> Result<Option<Vec<String>>> {
    let base = base.trim_end_matches("+dirty");
    if base == "-" || base.is_empty() || base.contains(|c: char| !c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let spec = format!("{base}^{{commit}}");
    if git(sh, &["cat-file", "-e", &spec]).is_err() {
        return Ok(None);
    }
    let parts = ["backend", "scripts", "systemd", "nginx"];
    let mut args = vec!["diff", "-z", "--name-only", "--no-renames", base, "--"];
    args.extend(parts);
    let diff = git(sh, &args)?;
    let mut args = vec!["ls-files", "-z", "--others", "--exclude-standard", "--"];
    args.extend(parts);
    let untracked = git(sh, &args)?;
    let mut paths: Vec<String> = diff
        .split('\0')
        .chain(untracked.split('\0'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    paths.sort();
    paths.dedup();
    Ok(Some(paths))
}

/// Bytes of the files in `paths` (for the free-space check).
pub fn size_of(paths: &[String]) -> u64 {
    let root = crate::project_root();
    paths
        .iter()
        .filter_map(|p| fs_err::metadata(root.join(p)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_known_changes_go_as_tar_the_rest_by_rsync() {
        let diff = Transfer::Diff {
            base: "abc".to_string(),
        };
        let backend = vec![
            "backend/innercontext/api.py".to_string(),
            "scripts/deploy.sh".to_string(),
        ];
        assert_eq!(carrier(&diff, &backend, 10_000), Carrier::Tar);
        assert_eq!(carrier(&diff, &[], 0), Carrier::Tar);
        // Too big to send whole.
        assert_eq!(carrier(&diff, &backend, TAR_MAX_BYTES + 1), Carrier::Rsync);
        // The frontend's build output is compared, not known changed.
        let mut with_front = backend.clone();
        with_front.push("frontend/build/index.js".to_string());
        assert_eq!(carrier(&diff, &with_front, 10_000), Carrier::Rsync);
        // No base: everything is compared.
        assert_eq!(carrier(&Transfer::Full, &backend, 10), Carrier::Rsync);
    }

    #[test]
    fn names_with_control_characters_are_refused_escaped() {
        let plain = vec!["backend/a b/ü.py".to_string(), "scripts/x.sh".to_string()];
        assert_eq!(unsafe_names(&plain), None);
        for (name, shown) in [
            ("backend/evil\nchecked.py", "backend/evil\\nchecked.py"),
            ("backend/a\tb.py", "backend/a\\tb.py"),
            (
                "backend/\u{1b}]0;pwned\u{7}.py",
                "backend/\\u{1b}]0;pwned\\u{7}.py",
            ),
            ("backend/del\u{7f}.py", "backend/del\\u{7f}.py"),
            ("backend/c1\u{9b}2J.py", "backend/c1\\u{9b}2J.py"),
        ] {
            let mut paths = plain.clone();
            paths.push(name.to_string());
            let e = unsafe_names(&paths).expect(name);
            assert!(e.contains(&format!("the file name {shown} has")), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
        let two = vec!["a\n".to_string(), "b\r".to_string()];
        assert!(unsafe_names(&two).unwrap().contains("a\\n (and 1 more)"));
    }

    #[test]
    fn env_files_never_travel() {
        for p in [
            "backend/.env",
            "backend/.env.local",
            "backend/.env.production",
            "frontend/build/.env",
            "backend/config/.envrc",
            "backend/.venv/bin/python",
            "backend/innercontext/__pycache__/x.pyc",
            "frontend/build/node_modules/x.js",
        ] {
            assert!(excluded(p), "{p}");
        }
        for p in [
            "backend/.env.example",
            "backend/innercontext/environment.py",
            "backend/envs.txt",
            "scripts/deploy.sh",
        ] {
            assert!(!excluded(p), "{p}");
        }
    }

    #[test]
    fn selection_follows_scope() {
        let paths: Vec<String> = [
            "backend/pyproject.toml",
            "backend/innercontext/main.py",
            "backend/.venv/bin/python",
            "backend/.env",
            "backend/.env.local",
            "frontend/package.json",
            "frontend/src/routes/+page.svelte",
            "frontend/build/index.js",
            "scripts/deploy.sh",
            "systemd/innercontext.service",
            "nginx/innercontext.conf",
            "README.md",
            "xtask/src/main.rs",
        ]
        .map(String::from)
        .to_vec();
        let all = select(&paths, Scope::All);
        assert_eq!(
            all,
            vec![
                "backend/innercontext/main.py",
                "backend/pyproject.toml",
                "frontend/build/index.js",
                "frontend/package.json",
                "nginx/innercontext.conf",
                "scripts/deploy.sh",
                "systemd/innercontext.service",
            ]
        );
        let be = select(&paths, Scope::Backend);
        assert!(be.iter().all(|p| !p.starts_with("frontend/")));
        assert!(be.contains(&"scripts/deploy.sh".to_string()));
        let fe = select(&paths, Scope::Frontend);
        assert!(fe.iter().all(|p| !p.starts_with("backend/")));
        assert!(!fe.contains(&"frontend/src/routes/+page.svelte".to_string()));
    }

    #[test]
    fn an_incomplete_build_is_refused_in_one_line() {
        assert_eq!(incomplete_build(&[]), None);
        let lacking: Vec<String> = [
            "frontend/build/client/_app/version.json",
            "frontend/build/client/favicon.svg",
            "frontend/build/client/robots.txt",
            "frontend/build/index.js",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            incomplete_build(&lacking[3..]).unwrap(),
            "the frontend build lacks frontend/build/index.js: build it again with 'cargo xtask check build --recheck', then deploy"
        );
        assert_eq!(
            incomplete_build(&lacking).unwrap(),
            "the frontend build lacks frontend/build/client/_app/version.json, frontend/build/client/favicon.svg, frontend/build/client/robots.txt and 1 more: build it again with 'cargo xtask check build --recheck', then deploy"
        );
    }

    #[test]
    fn a_diff_sends_what_changed_and_what_drifted() {
        let manifest: Vec<String> = [
            "backend/a.py",
            "backend/b.py",
            "backend/c.py",
            "frontend/build/index.js",
            "scripts/deploy.sh",
        ]
        .map(String::from)
        .to_vec();
        let diff = Transfer::Diff { base: "abc".into() };
        let sent = to_send(
            &manifest,
            &diff,
            &["backend/b.py".into(), "backend/gone.py".into()],
            &["backend/c.py".into()],
        );
        assert_eq!(
            sent,
            vec![
                "backend/b.py",
                "backend/c.py",
                "frontend/build/index.js",
                "scripts/deploy.sh"
            ]
        );
        assert_eq!(to_send(&manifest, &Transfer::Full, &[], &[]), manifest);
    }
}
