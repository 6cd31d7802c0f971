//! The cached images: a bookworm rootfs that looks like a fresh LXC container (systemd, sshd,
//! sudo, curl, ca-certificates, python3; no app user, nginx, uv, node or app directories, which
//! are setup-server's job), and overlay layers on top of it: PostgreSQL for the `db` role, and
//! setup-server's Debian packages and uv (installed by setup-server's own `packages` options
//! and `uv` step) for the `primed` role, so the app image stays clean and the tests that are
//! not about a fresh host skip the slowest part of provisioning.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use super::layout::{key_path, state, CGROUP_DIR, DB_NAME, DB_PASSWORD, SUBNET};
use super::{machine, render, sys};
use crate::flags::Role;
use crate::setup_server::PACKAGES;
use crate::ui;

/// Bump when the image contents change: `build` then rebuilds, `up` asks for a build.
const IMAGE_VERSION: &str = "1";

/// What the host needs to run machines: (a file the package installs, the package).
pub const HOST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/systemd-nspawn", "systemd-container"),
    ("/usr/sbin/debootstrap", "debootstrap"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/bin/rsync", "rsync"),
    ("/usr/bin/ssh", "openssh-client"),
    ("/bin/ip", "iproute2"),
];

fn images_dir() -> Utf8PathBuf {
    state().join("images")
}

pub fn base_dir() -> Utf8PathBuf {
    images_dir().join("base")
}

pub fn db_layer_dir() -> Utf8PathBuf {
    images_dir().join("db")
}

pub fn primed_layer_dir() -> Utf8PathBuf {
    images_dir().join("primed")
}

/// The layer a machine of `role` boots from over the base image (none for a fresh app host).
pub fn layer_of(role: Role) -> Option<Utf8PathBuf> {
    match role {
        Role::App => None,
        Role::Db => Some(db_layer_dir()),
        Role::Primed => Some(primed_layer_dir()),
    }
}

fn stamp(dir: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{dir}.done"))
}

fn build_log() -> Utf8PathBuf {
    images_dir().join("build.log")
}

/// What a part's stamp must say for the part to be current: the image version, and for the
/// primed layer what it holds (setup-server's packages and uv version), so that a change of
/// either builds the layer again.
fn recipe(dir: &Utf8Path) -> String {
    if dir == primed_layer_dir() {
        format!(
            "{IMAGE_VERSION} packages={} uv={}",
            PACKAGES.join(","),
            crate::tools::UV_VERSION
        )
    } else {
        IMAGE_VERSION.to_string()
    }
}

fn is_built(dir: &Utf8Path) -> bool {
    dir.is_dir() && std::fs::read_to_string(stamp(dir)).is_ok_and(|s| s.trim() == recipe(dir))
}

/// Fail unless the images a machine of `role` boots from are built and current.
pub fn require(role: Role) -> Result<()> {
    let ok =
        is_built(&base_dir()) && layer_of(role).is_none_or(|l| is_built(&l)) && key_path().exists();
    if !ok {
        bail!(
            "the test host image is not built or out of date: run 'cargo xtask testhost build' (about 2 minutes the first time)"
        );
    }
    Ok(())
}

pub fn build(sh: &Shell, rebuild: bool) -> Result<()> {
    let base_ok = !rebuild && is_built(&base_dir());
    let db_ok = base_ok && is_built(&db_layer_dir());
    let primed_ok = base_ok && is_built(&primed_layer_dir());
    if !(base_ok && db_ok && primed_ok) {
        // Running machines and stopped ones (their disk is a layer over this image), or over
        // the primed layer when only that one is built again.
        let names: Vec<String> = machine::uses()
            .into_iter()
            .filter(|(_, u)| {
                matches!(
                    u,
                    super::machine::Use::Running | super::machine::Use::Stopped
                )
            })
            .map(|(n, _)| n)
            .filter(|n| {
                !(base_ok && db_ok) || machine::info(n).is_none_or(|(role, _)| role == Role::Primed)
            })
            .collect();
        if !names.is_empty() {
            bail!(
                "machines {} run on or keep a disk over the current image: take them down before rebuilding it (cargo xtask testhost down --all)",
                names.join(", ")
            );
        }
    }
    // Flat step lines (callers do not wrap this in a step of their own): an install line only
    // when a host package is missing, a line per image part only when it is built.
    ensure_host_packages(sh)?;
    ensure_key(sh)?;
    fs_err::create_dir_all(images_dir())?;
    if !base_ok {
        fs_err::write(build_log(), "")?;
        ui::step("test host image: debootstrap bookworm", || build_base(sh))?;
    }
    if !db_ok {
        ui::step("test host image: PostgreSQL layer", build_db_layer)?;
    }
    if !primed_ok {
        ui::step(
            "test host image: setup-server's packages layer",
            build_primed_layer,
        )?;
    }
    let size = |d: Utf8PathBuf| {
        cmd!(sh, "du -sm {d}")
            .quiet()
            .read()
            .ok()
            .and_then(|o| o.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    };
    eprintln!(
        "test host image {} in {} (base {} MB, db layer {} MB, primed layer {} MB)",
        if base_ok && db_ok && primed_ok {
            "cached"
        } else {
            "built"
        },
        images_dir(),
        size(base_dir()),
        size(db_layer_dir()),
        size(primed_layer_dir())
    );
    Ok(())
}

/// The missing host packages, installed as one step whose apt output goes to the tools log.
fn ensure_host_packages(sh: &Shell) -> Result<()> {
    crate::tools::ensure_packages(sh, HOST_PACKAGES)
}

/// The throwaway ed25519 key authorized for root on every machine.
fn ensure_key(sh: &Shell) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let key = key_path();
    if key.exists() && Utf8PathBuf::from(format!("{key}.pub")).exists() {
        return Ok(());
    }
    let dir = key.parent().expect("key has a directory");
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(format!("{key}.pub"));
    cmd!(
        sh,
        "ssh-keygen -q -t ed25519 -N '' -C innercontext-testhost -f {key}"
    )
    .quiet()
    .run()
    .context("generating the test host's ssh key")?;
    fs_err::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The host's apt sources, for the mirror to debootstrap from and to give the machines.
fn host_mirrors() -> render::Mirrors {
    let mut text = String::new();
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        text.push('\n');
    }
    render::parse_mirrors(&text)
}

fn build_base(sh: &Shell) -> Result<()> {
    let new = images_dir().join("base.new");
    remove_tree(&new)?;
    let mirrors = host_mirrors();
    let args = render::debootstrap_args(&new, &mirrors.debian);
    run_logged(duct::cmd("debootstrap", &args), "debootstrap")?;

    // Trust what the host trusts (TLS-inspecting proxies are common), use its mirror.
    let cas = Utf8Path::new("/usr/local/share/ca-certificates");
    if cas.is_dir() {
        let dest = new.join("usr/local/share/ca-certificates");
        fs_err::create_dir_all(&dest)?;
        let src = format!("{cas}/.");
        cmd!(sh, "cp -a {src} {dest}")
            .quiet()
            .run()
            .context("copying the host's CA certificates into the image")?;
    }
    fs_err::create_dir_all(new.join("etc/apt/sources.list.d"))?;
    fs_err::write(
        new.join("etc/apt/sources.list.d/debian.sources"),
        render::apt_sources(&mirrors),
    )?;
    run_in_image(
        &new,
        None,
        &["bash".into(), "-c".into(), render::CUSTOMIZE_BASE.into()],
    )?;

    let _ = std::fs::remove_file(stamp(&db_layer_dir()));
    remove_tree(&db_layer_dir())?;
    let _ = std::fs::remove_file(stamp(&base_dir()));
    remove_tree(&base_dir())?;
    fs_err::rename(&new, base_dir())?;
    fs_err::write(stamp(&base_dir()), format!("{IMAGE_VERSION}\n"))?;
    Ok(())
}

fn build_db_layer() -> Result<()> {
    build_layer(
        &db_layer_dir(),
        &[
            "bash".into(),
            "-c".into(),
            render::BUILD_DB_LAYER.into(),
            "build-db-layer".into(),
            SUBNET.into(),
            DB_NAME.into(),
            DB_PASSWORD.into(),
        ],
    )
}

/// setup-server's own package list, installed the way its `packages` step installs it, and uv
/// by setup-server's own `uv` step (its call, as setup-server sends it).
fn build_primed_layer() -> Result<()> {
    let uv = crate::setup_server::uv_call(crate::flags::ToolchainSource::Registry).try_line()?;
    let mut argv: Vec<String> = vec![
        "bash".into(),
        "-c".into(),
        render::BUILD_PRIMED_LAYER.into(),
        "build-primed-layer".into(),
        uv,
    ];
    argv.extend(PACKAGES.iter().map(|p| p.to_string()));
    build_layer(&primed_layer_dir(), &argv)
}

/// Run `argv` in an overlay over the base image and keep its upper layer as `dir`.
fn build_layer(dir: &Utf8Path, argv: &[String]) -> Result<()> {
    let new = Utf8PathBuf::from(format!("{dir}.new"));
    remove_tree(&new)?;
    let (upper, work, root) = (new.join("upper"), new.join("work"), new.join("root"));
    for d in [&upper, &work, &root] {
        fs_err::create_dir_all(d)?;
    }
    let lower = [base_dir()];
    run_in_image(&root, Some((&lower, &upper, &work)), argv)?;
    let _ = std::fs::remove_file(stamp(dir));
    remove_tree(dir)?;
    fs_err::rename(&upper, dir)?;
    remove_tree(&new)?;
    fs_err::write(stamp(dir), format!("{}\n", recipe(dir)))?;
    Ok(())
}

/// Run `argv` in the image tree `root` under systemd-nspawn (not booted, host network), in a
/// private mount namespace and its own cgroup; `overlay` = (lower layers, upper, work).
fn run_in_image(
    root: &Utf8Path,
    overlay: Option<(&[Utf8PathBuf], &Utf8Path, &Utf8Path)>,
    argv: &[String],
) -> Result<()> {
    let cgroups: Vec<Utf8PathBuf> = sys::cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP_DIR).join("_build"))
        .collect();
    for cg in &cgroups {
        fs_err::create_dir_all(cg)?;
    }
    let script = render::build_script(&cgroups, overlay, root, argv);
    let result = run_logged(
        duct::cmd(
            "unshare",
            ["--mount", "--propagation", "private", "bash", "-c", &script],
        ),
        "systemd-nspawn",
    );
    for cg in &cgroups {
        sys::remove_cgroup_tree(cg)?;
        if let Some(parent) = cg.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    let _ = std::fs::remove_dir_all("/run/systemd/nspawn/propagate/ictestbuild");
    result
}

/// Run a build command with its output appended to the build log; on failure, show its end.
fn run_logged(expr: duct::Expression, what: &str) -> Result<()> {
    let log = build_log();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {log}"))?;
    let out = expr
        .stdin_null()
        // duct applies the outermost redirection first: stderr joins stdout after it is the log.
        .stderr_to_stdout()
        .stdout_file(file)
        .unchecked()
        .run()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "{what} failed ({}); last lines of {log}:\n{}",
            out.status,
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    Ok(())
}

/// Remove a directory tree of ours, refusing if anything is mounted below it.
fn remove_tree(dir: &Utf8Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = sys::mounts_under(dir);
    if !mounts.is_empty() {
        bail!(
            "{dir} has mounts ({}): unmount them first",
            mounts.join(", ")
        );
    }
    fs_err::remove_dir_all(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_live_in_the_state_dir() {
        assert_eq!(base_dir(), "/var/lib/innercontext-testhost/images/base");
        assert_eq!(
            stamp(&db_layer_dir()),
            "/var/lib/innercontext-testhost/images/db.done"
        );
        for p in [
            "systemd-container",
            "debootstrap",
            "nftables",
            "rsync",
            "openssh-client",
            "iproute2",
        ] {
            assert!(HOST_PACKAGES.iter().any(|(_, pkg)| *pkg == p));
        }
    }
}
