//! A scratch copy of the repository: the working tree as it is, committed in a fresh git
//! repository, for the end-to-end tests and the benchmark to change and deploy without
//! touching the real checkout (deploy it with `XTASK_PROJECT_ROOT` set to its directory).

use std::process::Command;

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;

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

pub struct Scratch {
    pub dir: Utf8PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch> {
        let dir = Utf8PathBuf::from(format!("/tmp/innercontext-scratch-{name}"));
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
