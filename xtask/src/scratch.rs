//! A scratch copy of the repository: the working tree as it is, committed in a fresh git
//! repository, for the end-to-end tests and the benchmark to change and deploy without
//! touching the real checkout (deploy it with `XTASK_PROJECT_ROOT` set to its directory).
//!
//! Scratch copies live in a private directory like a home directory ([`home`]: 0700, the
//! user's own), as a user's clone in `~` does: whatever the deploy or its checks run as another
//! user must work without entering the checkout.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::process::Command;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// Run a command; its stdout, or an error with everything it printed.
pub fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn repo() -> Utf8PathBuf {
    camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// The home-like parent of the scratch copies of user `uid`: `/tmp/innercontext-home-UID`.
pub fn home_of(uid: u32) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("/tmp/innercontext-home-{uid}"))
}

/// This user's home-like parent of scratch copies, made if missing (see [`private_dir`]).
pub fn home() -> Result<Utf8PathBuf> {
    let uid = fs_err::metadata("/proc/self")?.uid();
    let dir = home_of(uid);
    private_dir(&dir, uid)?;
    Ok(dir)
}

/// Make `dir` (or take it as it is) a directory, not a link, of user `uid` with mode 0700, like
/// a home directory (root's is 0700 on Debian); one of someone else's is refused.
pub fn private_dir(dir: &Utf8Path, uid: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {dir}")),
    }
    let meta = fs_err::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != uid {
        bail!(
            "{dir} is not a directory of yours ({}, uid {}): remove it, it is where scratch copies go",
            if meta.is_dir() { "a directory" } else { "not a directory" },
            meta.uid()
        );
    }
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

pub struct Scratch {
    pub dir: Utf8PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch> {
        let dir = home()?.join(format!("innercontext-scratch-{name}"));
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&dir)?;
        let files = run_ok(
            Command::new("git")
                .args([
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ])
                .current_dir(repo()),
            "git ls-files",
        )?;
        for f in files.split('\0').filter(|f| !f.is_empty()) {
            let src = repo().join(f);
            if !src.is_file() {
                continue;
            }
            let dst = dir.join(f);
            fs_err::create_dir_all(dst.parent().unwrap())?;
            fs_err::copy(&src, &dst)?;
        }
        let s = Scratch { dir };
        s.git(&["init", "-q", "-b", "main"])?;
        s.git(&["add", "-A"])?;
        s.commit("scratch copy")?;
        Ok(s)
    }

    /// A path beside the checkout for files that must not be in it (logs, configs):
    /// `<dir>.<what>`, so concurrent scratch copies never share one.
    pub fn sidecar(&self, what: &str) -> Utf8PathBuf {
        Utf8PathBuf::from(format!("{}.{what}", self.dir))
    }

    pub fn git(&self, args: &[&str]) -> Result<String> {
        run_ok(
            Command::new("git")
                .args(["-c", "user.name=e2e", "-c", "user.email=e2e@localhost"])
                .args(args)
                .current_dir(&self.dir),
            &format!("git {}", args.join(" ")),
        )
    }

    pub fn write(&self, path: &str, contents: &str) -> Result<()> {
        let p = self.dir.join(path);
        fs_err::create_dir_all(p.parent().unwrap())?;
        fs_err::write(p, contents)?;
        Ok(())
    }

    pub fn read(&self, path: &str) -> Result<String> {
        Ok(fs_err::read_to_string(self.dir.join(path))?)
    }

    pub fn commit(&self, msg: &str) -> Result<()> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", msg])?;
        Ok(())
    }

    /// Undo the last commit (files included).
    pub fn undo(&self) -> Result<()> {
        self.git(&["reset", "-q", "--hard", "HEAD~1"])?;
        self.git(&["clean", "-qfd", "--", "backend", "frontend/src"])?;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The checks' PostgreSQL of this copy goes with it (as root it lives outside).
        let root = self
            .dir
            .canonicalize_utf8()
            .unwrap_or_else(|_| self.dir.clone());
        let _ = crate::pg::stop_warm(&root);
        let _ = fs_err::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_of_scratch_copies_is_private() {
        let me = fs_err::metadata("/proc/self").unwrap().uid();
        let base = Utf8PathBuf::from(format!("/tmp/scratch-home-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        fs_err::create_dir_all(&base).unwrap();
        let home = base.join("home");
        private_dir(&home, me).unwrap();
        let mode = |p: &Utf8Path| fs_err::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&home), 0o700);
        // One left wider is narrowed again; a link or a file is refused, as is someone else's.
        fs_err::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&home, me).unwrap();
        assert_eq!(mode(&home), 0o700);
        let link = base.join("link");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        assert!(private_dir(&link, me).is_err());
        let file = base.join("file");
        fs_err::write(&file, "").unwrap();
        assert!(private_dir(&file, me).is_err());
        assert!(private_dir(&home, me + 1).is_err());
        assert_eq!(home_of(0), "/tmp/innercontext-home-0");
        fs_err::remove_dir_all(&base).unwrap();
    }
}
