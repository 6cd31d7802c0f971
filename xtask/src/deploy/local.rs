//! The deploying machine's side of a release: who deploys which commit, which files a release
//! is made of (never an env file), and which of them must travel.

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use xshell::{cmd, Shell};

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

pub fn origin(sh: &Shell, cfg: &Config) -> Result<Local> {
    let commit = cmd!(sh, "git rev-parse --short=12 HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("reading the commit: is this a git checkout with at least one commit?")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()?;
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
    (crate::lock::clean(&user), crate::lock::clean(&host))
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

/// The files of a release of `scope`: the manifest the server makes the release match.
pub fn manifest(sh: &Shell, scope: Scope) -> Result<Vec<String>> {
    let root = crate::project_root();
    let listed = cmd!(
        sh,
        "git ls-files -z --cached --others --exclude-standard -- backend scripts systemd nginx frontend/package.json"
    )
    .quiet()
    .read()?;
    let mut paths: Vec<String> = listed
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter(|p| root.join(p).is_file())
        .map(str::to_string)
        .collect();
    if scope.frontend() {
        walk(&root, "frontend/build", &mut paths)?;
    }
    Ok(select(&paths, scope))
}

fn walk(root: &Utf8Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in fs_err::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("non-UTF-8 file name {n:?} under {rel}"))?;
        let path = format!("{rel}/{name}");
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// How the server's copy of a release is made to match the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// The server seeded the release from a release made of `base`, verified against its seal:
    /// only backend files that differ from `base` (and drifted files) travel.
    Diff { base: String },
    /// Every file of the manifest is compared by checksum (no usable base).
    Full,
}

/// The files to hand to rsync: under [`Transfer::Diff`], the backend files changed since the
/// base (committed or not), the files the server found drifted, and everything outside the
/// backend (small: scripts, units, nginx, the frontend build, compared by checksum).
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

/// Backend paths that differ between `base` and the working tree (committed, staged, unstaged
/// or untracked); None when `base` is not a commit this checkout knows.
pub fn changed_backend(sh: &Shell, base: &str) -> Result<Option<Vec<String>>> {
    let base = base.trim_end_matches("+dirty");
    if base == "-" || base.is_empty() || base.contains(|c: char| !c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let spec = format!("{base}^{{commit}}");
    if cmd!(sh, "git cat-file -e {spec}")
        .quiet()
        .ignore_stderr()
        .run()
        .is_err()
    {
        return Ok(None);
    }
    let diff = cmd!(sh, "git diff -z --name-only --no-renames {base} -- backend")
        .quiet()
        .read()?;
    let untracked = cmd!(sh, "git ls-files -z --others --exclude-standard -- backend")
        .quiet()
        .read()?;
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
