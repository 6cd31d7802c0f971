//! What the seal costs a deploy (issue 26): the deployer hashes every file it ships (SHA-256,
//! here, what its record `target/seal.hashes` does not already hold), the server hashes the
//! seeded copies (`deploy.sh compare`), and the job checks the
//! virtualenv it reuses against uv's `RECORD`s (`scripts/venv-check.py`, which makes a fresh
//! `uv venv` only to compare uv's own files with, if it finds any). Measured as those three parts on the xtask side's
//! current release: the scratch checkout's files here, current's files and virtualenv there,
//! timed on the server by the server's clock (no ssh in the figure).

use anyhow::Result;
use std::time::Instant;

use super::side::Side;
use crate::contract::{layout, APP_USER, DEFAULT_ROOT};
use crate::deploy::{local, seal};
use crate::flags::Scope;
use crate::{build_output, quote};

/// The three parts, in seconds.
pub struct Cost {
    pub here: f64,
    pub there: f64,
    pub venv: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.here + self.there + self.venv
    }

    pub fn parts(&self) -> String {
        format!(
            "hashing here {:.2} s, on the server {:.2} s, the virtualenv's check {:.2} s",
            self.here, self.there, self.venv
        )
    }
}

pub fn cost(side: &Side) -> Result<Cost> {
    let dir = &side.scratch.dir;
    let listed = crate::scratch::run_ok(
        std::process::Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                "--",
            ])
            .args([
                "backend",
                "scripts",
                "systemd",
                "nginx",
                "frontend/package.json",
            ])
            .current_dir(dir),
        "git ls-files",
    )?;
    let mut paths: Vec<String> = listed
        .split('\0')
        .filter(|p| !p.is_empty() && dir.join(p).is_file())
        .map(str::to_string)
        .collect();
    paths.extend(build_output::files_under(dir, build_output::BUILD_DIR)?);
    let paths = local::select(&paths, Scope::All);
    let start = Instant::now();
    seal::hashes(dir, &paths)?;
    let here = start.elapsed().as_secs_f64();
    // The server's part as compare runs it (deploy-seal.sh's hash_files).
    let script = format!(
        "{contract}{seal}
        set -e; cd {DEFAULT_ROOT}/current
        t0=$(date +%s%N)
        find backend frontend scripts systemd nginx \\( -name .venv -o -name __pycache__ \\) -prune -o -type f -print |
            hash_files >/dev/null
        t1=$(date +%s%N)
        ref=$(mktemp -d {DEFAULT_ROOT}/{jobs}/bench-seal.XXXXXX)
        /usr/bin/python3 -I scripts/venv-check.py backend/.venv \"$ref/v\"
        t2=$(date +%s%N)
        rm -rf \"$ref\"
        echo $(((t1 - t0) / 1000000)) $(((t2 - t1) / 1000000))",
        jobs = layout::JOBS,
        contract = crate::contract::CONTRACT_SH,
        seal = crate::contract::SEAL_SH,
    );
    let out = side.exec(&format!(
        "runuser -u {APP_USER} -- bash -c {}",
        quote::sh(&script)
    ))?;
    let ms: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [there, venv] = ms[..] else {
        anyhow::bail!("the seal's timing on the server printed '{}'", out.trim());
    };
    Ok(Cost {
        here,
        there: there / 1000.0,
        venv: venv / 1000.0,
    })
}
