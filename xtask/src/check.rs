//! `cargo xtask check`: the local checks a deploy runs, on their own.
//!
//! Parts: `backend` (ruff, pytest against a local PostgreSQL), `frontend` (svelte-check, unit
//! tests) and `build` (the production build the server runs). A part that passed for exactly
//! this tree with exactly these tools is not run again (`target/checks/`; `--recheck` forces):
//! the key is the git tree of the part's directory, working-tree changes included, and the
//! versions of the tools. The backend tests use a PostgreSQL cluster that stays warm between
//! runs (a fresh database per run; where it lives: [`crate::pg`]); `--stop-db` stops it.
//!
//! A build that passed is trusted only while its output is what it produced: the manifest of
//! every file under `frontend/build/` with its SHA-256, written beside the marker when the
//! build passes ([`crate::build_output`]), must match the disk exactly; a missing, added or
//! changed file runs the build again and says why (`(rebuilt: WHY)`).
//!
//! The deploy runs each part as a child process of its own (so it can stop it on Ctrl-C and
//! run the parts beside the upload); this command is also how to run them by hand.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::ci::{self, Noise};
use crate::flags::{Check, CheckPart};
use crate::{build_output, pg, tools, ui};

pub fn run(c: Check, sh: &Shell) -> Result<()> {
    if c.stop_db {
        return ui::step("stop the checks' PostgreSQL", || {
            pg::stop_warm(&crate::project_root())
        });
    }
    for part in &c.parts {
        let label = format!("check {}", part.name());
        ui::step(&label, || run_part(sh, *part, c.recheck).map(|_| ()))?;
    }
    Ok(())
}

/// Whether the part ran (false: it passed before for this tree and these tools). Each part runs
/// once at a time per checkout (the parts of one deploy still run side by side): two deploys
/// from one checkout (staging and production at once) share its `frontend/build`, and vite
/// refuses a second build beside a running one; the second waits (saying so), then finds the
/// first's result in the cache.
pub fn run_part(sh: &Shell, part: CheckPart, recheck: bool) -> Result<bool> {
    let _turn = part_turn(part)?;
    let key = cache_key(sh, part)?;
    let marker = key
        .as_ref()
        .map(|k| cache_dir().join(format!("{}-{k}.ok", part.name())));
    if let Some(m) = marker.as_ref().filter(|m| !recheck && m.exists()) {
        // A build is trusted only while its output is what it produced.
        let differs = match part {
            CheckPart::Build => build_differs(&manifest_of(m)),
            CheckPart::Backend | CheckPart::Frontend => None,
        };
        match differs {
            None => {
                crate::say_part!("{CACHED} ");
                return Ok(false);
            }
            Some(why) => crate::say!("{REBUILT}{why})"),
        }
    }
    match part {
        CheckPart::Backend => {
            tools::ensure_backend(sh)?;
            let db = pg::WarmDb::database(&crate::project_root())?;
            let result = ci::backend_checks(sh, Noise::Show, &db.url);
            db.drop_database();
            result?;
        }
        CheckPart::Frontend => {
            ci::frontend_install(sh, Noise::Show)?;
            ci::frontend_checks(sh, Noise::Show)?;
        }
        CheckPart::Build => {
            ci::frontend_install(sh, Noise::Show)?;
            ci::frontend_build(sh, Noise::Show)?;
            if !build_entry().exists() {
                bail!("the frontend build did not produce {}", build_entry());
            }
        }
    }
    if let Some(m) = marker {
        fs_err::create_dir_all(cache_dir())?;
        // Keep the directory small: one marker (and manifest) per part.
        for entry in fs_err::read_dir(cache_dir())?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if is_cache_file(&name, part) {
                let _ = fs_err::remove_file(entry.path());
            }
        }
        if part == CheckPart::Build {
            // The manifest first: a marker never stands without what it vouches for.
            let manifest = build_output::Manifest::of_disk(&crate::project_root())?;
            let path = manifest_of(&m);
            let tmp = path.with_extension("manifest.tmp");
            fs_err::write(&tmp, manifest.render())?;
            fs_err::rename(&tmp, &path)?;
        }
        fs_err::write(&m, "")?;
    }
    Ok(true)
}

/// What a part that passed before prints (the deploy reads it from the part's output).
pub const CACHED: &str = "(passed for this tree before)";
/// How a build that passed before but no longer matches its manifest starts its output:
/// `(rebuilt: WHY)` on a line of its own (the deploy shows WHY on its step line).
pub const REBUILT: &str = "(rebuilt: ";

/// The WHY of a `(rebuilt: WHY)` line in a part's output.
pub fn rebuilt_because(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.split_once(REBUILT))
        .map(|(_, why)| why.strip_suffix(')').unwrap_or(why))
}

/// The manifest of the build a marker vouches for: the marker's name, `.manifest`.
fn manifest_of(marker: &Utf8Path) -> Utf8PathBuf {
    marker.with_extension("manifest")
}

/// Why the build on disk is not the one recorded in `manifest` (None: it is exactly that).
fn build_differs(manifest: &Utf8Path) -> Option<String> {
    let Ok(text) = fs_err::read_to_string(manifest) else {
        return Some("no record of the files it produced".to_string());
    };
    let Ok(recorded) = build_output::Manifest::parse(&text) else {
        return Some(format!("{manifest} is unreadable"));
    };
    match build_output::Manifest::of_disk(&crate::project_root()) {
        Ok(disk) => build_output::compare(&recorded, &disk),
        Err(e) => Some(format!("its files could not be hashed ({e:#})")),
    }
}

/// Whether `name` in the cache directory is a marker or a manifest of `part`.
fn is_cache_file(name: &str, part: CheckPart) -> bool {
    name.starts_with(&format!("{}-", part.name()))
        && (name.ends_with(".ok") || name.ends_with(".manifest"))
}

fn cache_dir() -> Utf8PathBuf {
    cache_dir_of(&crate::project_root())
}

/// This checkout's `part` to ourselves until the file is dropped (an exclusive lock on
/// `target/checks/PART.turn`, released by the kernel when the process ends, however it ends).
fn part_turn(part: CheckPart) -> Result<std::fs::File> {
    fs_err::create_dir_all(cache_dir())?;
    let path = cache_dir().join(format!("{}.turn", part.name()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            crate::say_part!(
                "(waiting for another run's {} check of this checkout) ",
                part.name()
            );
            file.lock().with_context(|| format!("locking {path}"))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {path}"));
        }
    }
    Ok(file)
}

/// Where the checks of the checkout `root` remember what passed.
pub fn cache_dir_of(root: &Utf8Path) -> Utf8PathBuf {
    root.join("target/checks")
}

/// Forget which trees of the checkout `root` passed which checks (markers and manifests): the
/// next deploy from it runs every check as for a tree never checked (the benchmark measures
/// that case).
pub fn forget(root: &Utf8Path) -> Result<()> {
    let dir = cache_dir_of(root);
    let Ok(entries) = fs_err::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if CheckPart::ALL.iter().any(|p| is_cache_file(&name, *p)) {
            fs_err::remove_file(entry.path())?;
        }
    }
    Ok(())
}

pub fn build_entry() -> Utf8PathBuf {
    crate::project_root().join(build_output::ENTRY)
}

/// The git tree of `dir` as it is in the working tree (changes and untracked files included,
/// ignored ones not). Cheap for a clean directory; a dirty one is hashed through a copy of
/// the index.
pub fn tree_of(sh: &Shell, dir: &str) -> Result<String> {
    let changes = cmd!(
        sh,
        "git status --porcelain --untracked-files=normal -- {dir}"
    )
    .quiet()
    .read()?;
    if changes.trim().is_empty() {
        let spec = format!("HEAD:{dir}");
        return Ok(cmd!(sh, "git rev-parse {spec}").quiet().read()?);
    }
    let index = cmd!(sh, "git rev-parse --git-path index").quiet().read()?;
    let tmp = cache_dir().join(format!("index-{}", std::process::id()));
    fs_err::create_dir_all(cache_dir())?;
    fs_err::copy(crate::project_root().join(index.trim()), &tmp)?;
    let result = (|| -> Result<String> {
        let _idx = sh.push_env("GIT_INDEX_FILE", &tmp);
        cmd!(sh, "git add -A -- {dir}").quiet().run()?;
        let tree = cmd!(sh, "git write-tree").quiet().read()?;
        let spec = format!("{tree}:{dir}");
        Ok(cmd!(sh, "git rev-parse {spec}").quiet().read()?)
    })();
    let _ = fs_err::remove_file(&tmp);
    result.with_context(|| format!("hashing the working tree of {dir}/"))
}

/// What a part's result depends on: its tree and its tools. None when that cannot be told
/// (not a git checkout): then it always runs.
fn cache_key(sh: &Shell, part: CheckPart) -> Result<Option<String>> {
    let dir = match part {
        CheckPart::Backend => "backend",
        CheckPart::Frontend | CheckPart::Build => "frontend",
    };
    let Ok(tree) = tree_of(sh, dir) else {
        return Ok(None);
    };
    let tools = match part {
        CheckPart::Backend => format!(
            "uv{}-{}",
            tools::UV_VERSION,
            cmd!(sh, "python3 --version")
                .quiet()
                .read()
                .unwrap_or_default()
        ),
        CheckPart::Frontend | CheckPart::Build => {
            format!("node{}-pnpm{}", tools::NODE_VERSION, tools::PNPM_VERSION)
        }
    };
    Ok(Some(format!(
        "{}-{}",
        &tree[..tree.len().min(16)],
        short_hash(&tools)
    )))
}

/// A short, stable hash of a string (FNV-1a), for file names.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_short() {
        assert_eq!(short_hash("uv0.13.8"), short_hash("uv0.13.8"));
        assert_ne!(short_hash("uv0.13.8"), short_hash("uv0.13.9"));
        assert_eq!(short_hash("").len(), 16);
    }

    #[test]
    fn a_rebuild_says_why_in_its_output() {
        let out = "==> check build                                  (rebuilt: frontend/build/client/ is missing (133 files))\n\
                   > vite build\n\
                   ==> check build                                  ok (9.6s)\n";
        assert_eq!(
            rebuilt_because(out),
            Some("frontend/build/client/ is missing (133 files)")
        );
        assert_eq!(
            rebuilt_because("==> check build (passed for this tree before) ok (0.1s)\n"),
            None
        );
    }

    #[test]
    fn forget_removes_only_the_markers() {
        let root = std::env::temp_dir().join(format!("forget-{}", std::process::id()));
        let root = Utf8PathBuf::from_path_buf(root).unwrap();
        let dir = cache_dir_of(&root);
        fs_err::create_dir_all(dir.join("pg")).unwrap();
        for f in [
            "backend-0123-abcd.ok",
            "frontend-0123-abcd.ok",
            "build-0123-abcd.ok",
            "build-0123-abcd.manifest",
            "backend.log",
            "port",
        ] {
            fs_err::write(dir.join(f), "").unwrap();
        }
        forget(&root).unwrap();
        let mut left: Vec<String> = fs_err::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["backend.log", "pg", "port"]);
        // A checkout that never ran a check has nothing to forget.
        forget(&root.join("none")).unwrap();
        fs_err::remove_dir_all(&root).unwrap();
    }
}
