//! The innercontext xtask: tests, a local test host, provisioning and deployment.
//!
//! The library root: the module list and [`project_root`]. `main` parses the command line
//! (`flags`) and dispatches to the command's module; the end-to-end harness (`tests/e2e/`)
//! imports the same modules (the test host, the contract).

pub mod bench;
pub mod build_output;
pub mod check;
pub mod ci;
pub mod config;
pub mod contract;
pub mod demo;
pub mod deploy;
pub mod destination;
#[cfg(test)]
mod docs;
pub mod e2e_verdict;
pub mod envcmd;
pub mod envfile;
pub mod exec;
pub mod flags;
pub mod hooks;
pub mod interrupt;
pub mod logs;
pub mod pg;
pub mod proc;
pub mod quote;
pub mod remote;
#[cfg(test)]
mod rooms;
pub mod scratch;
pub mod setup_server;
pub mod ssh;
pub mod testhost;
pub mod tools;
pub mod ui;
pub mod verify;
pub mod wait;

use camino::{Utf8Path, Utf8PathBuf};

/// The repository root: the parent of the xtask crate, or `XTASK_PROJECT_ROOT` when set (the
/// end-to-end tests deploy scratch copies of the repository with the already built binary).
pub fn project_root() -> Utf8PathBuf {
    if let Some(root) = std::env::var_os("XTASK_PROJECT_ROOT") {
        // Absolute and without `..` (every path printed from it reads as a plain path).
        let root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.into());
        if let Ok(root) = Utf8PathBuf::from_path_buf(root) {
            return root;
        }
    }
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}
