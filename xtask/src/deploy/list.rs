//! `cargo xtask deploy list`: the releases, newest first: state (a `preparing` release no live
//! job prepares is marked dead; one named in the future is marked so), commit, age on the
//! server's clock, what each adds on disk (hard links counted once), the database revision it
//! migrated to, and which is current.

use anyhow::Result;

use crate::config::Config;
use crate::release;
use crate::show;

pub fn run(cfg: &Config) -> Result<()> {
    let session = super::connect(cfg)?;
    let snap = super::probe_with(&session, cfg, false, true)?;
    let mut releases = snap.releases.clone();
    releases.sort_by(|a, b| b.name.cmp(&a.name));
    show!(
        "{:<2}{:<18}{:<21}{:<18}{:<9}{:>10}  ALEMBIC",
        "",
        "RELEASE",
        "STATE",
        "COMMIT",
        "AGE",
        "ADDS"
    );
    for r in &releases {
        let age = release::parse_name(&r.name)
            .map(|t| release::age(snap.now - t.unix_timestamp()))
            .unwrap_or_default();
        let mark = if snap.current.name() == Some(r.name.as_str()) {
            "*"
        } else {
            ""
        };
        let state = if release::is_future(&r.name, snap.now) {
            format!("{} (FUTURE)", r.state.name())
        } else if snap.dead_preparing(&r.name) {
            "preparing (dead)".to_string()
        } else {
            r.state.name().to_string()
        };
        let size = snap
            .sizes
            .iter()
            .find(|(n, _)| n == &r.name)
            .map(|(_, kb)| format!("{:.1} MB", *kb as f64 / 1024.0))
            .unwrap_or_else(|| "?".to_string());
        show!(
            "{:<2}{:<18}{:<21}{:<18}{:<9}{:>10}  {}",
            mark,
            r.name,
            state,
            r.commit,
            age,
            size,
            r.revision
        );
    }
    if releases.is_empty() {
        show!("(no releases in {}/releases on {})", cfg.root, snap.host);
    }
    show!("* = current: {}", snap.current.describe());
    show!("ADDS = what a release adds on disk beyond older releases (shared files counted once)");
    if let Some(lock) = &snap.lock {
        show!("locked: {}", lock.describe(snap.now));
    }
    Ok(())
}
