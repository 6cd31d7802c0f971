//! `cargo xtask deploy list`: the releases, newest first: state (a `preparing` release no live
//! job prepares is marked dead; one named in the future is marked so), commit, age on the
//! server's clock, what each adds on disk (hard links counted once), the database revision it
//! migrated to, and which is current.

use anyhow::Result;

use crate::config::Config;
use crate::deploy::snapshot::Snapshot;
use crate::release;
use crate::show;

pub fn run(cfg: &Config) -> Result<()> {
    if cfg.hosts.len() > 1 {
        let sessions = super::fleet::connect_all(cfg)?;
        let snaps = super::fleet::probe_all(&sessions, cfg, false, false)?;
        for line in matrix(&snaps) {
            show!("{line}");
        }
        return Ok(());
    }
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
        } else if let Some((result, _)) = snap.unrecorded(&r.name) {
            let state = if result == "success" {
                release::State::Succeeded
            } else {
                release::State::Failed
            };
            format!("{} (pending)", state.name())
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
    for r in &releases {
        if let Some((result, why)) = snap.unrecorded(&r.name) {
            show!(
                "(pending) = its job ended {result} but could not record it ({why}): free space under {}; the next deploy or rollback records it",
                cfg.root
            );
        }
    }
    if let Some(lock) = &snap.lock {
        show!("locked: {}", lock.describe(snap.now));
    }
    Ok(())
}

/// A fleet's releases as a host × release matrix, newest first: each cell the state there
/// (`*` for current, `-` for absent), then what drifted: hosts on different releases, a
/// succeeded release missing on some host, and any lock.
pub fn matrix(snaps: &[Snapshot]) -> Vec<String> {
    let mut names: Vec<&str> = snaps
        .iter()
        .flat_map(|s| s.releases.iter().map(|r| r.name.as_str()))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    names.dedup();
    let width = snaps
        .iter()
        .map(|s| s.host.len())
        .max()
        .unwrap_or(4)
        .max(12)
        + 2;
    let mut lines = Vec::new();
    let mut head = format!("{:<18}", "RELEASE");
    for s in snaps {
        head.push_str(&format!("{:<width$}", s.host));
    }
    lines.push(head.trim_end().to_string());
    let mut missing = Vec::new();
    for name in &names {
        let mut row = format!("{name:<18}");
        let mut on = 0;
        for s in snaps {
            let cell = match s.releases.iter().find(|r| r.name == *name) {
                Some(r) => {
                    on += 1;
                    let cur = if s.current.name() == Some(*name) {
                        "*"
                    } else {
                        ""
                    };
                    format!("{cur}{}", r.state.name())
                }
                None => "-".to_string(),
            };
            row.push_str(&format!("{cell:<width$}"));
        }
        let succeeded_somewhere = snaps.iter().any(|s| {
            s.releases
                .iter()
                .any(|r| r.name == *name && r.state == release::State::Succeeded)
        });
        if on < snaps.len() && succeeded_somewhere {
            missing.push(name.to_string());
        }
        lines.push(row.trim_end().to_string());
    }
    let currents: Vec<String> = snaps
        .iter()
        .map(|s| s.current.name().unwrap_or("none").to_string())
        .collect();
    let mut distinct = currents.clone();
    distinct.sort();
    distinct.dedup();
    lines.push("* = current".to_string());
    if distinct.len() > 1 {
        let per: Vec<String> = snaps
            .iter()
            .zip(&currents)
            .map(|(s, c)| format!("{} on {c}", s.host))
            .collect();
        lines.push(format!(
            "DRIFT: the hosts run different releases ({}): 'cargo xtask deploy rollback RELEASE' or a deploy brings them together",
            per.join(", ")
        ));
    }
    for m in missing {
        lines.push(format!(
            "DRIFT: release {m} is missing on some host: it cannot be a fleet rollback target"
        ));
    }
    for s in snaps {
        if let Some(l) = &s.lock {
            lines.push(format!("locked on {}: {}", s.host, l.describe(s.now)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Reply;

    #[test]
    fn the_matrix_flags_drift() {
        let a = Snapshot::from_reply(&Reply::parse(
            "host=app1\ncurrent.status=ok\ncurrent=20261128T110000Z\nrelease=20261128T100000Z succeeded a -\nrelease=20261128T110000Z succeeded b -\n",
        ));
        let b = Snapshot::from_reply(&Reply::parse(
            "host=app2\ncurrent.status=ok\ncurrent=20261128T100000Z\nrelease=20261128T100000Z succeeded a -\n",
        ));
        let m = matrix(&[a.clone(), b]);
        assert_eq!(m[0], "RELEASE           app1          app2");
        assert_eq!(m[1], "20261128T110000Z  *succeeded    -");
        assert_eq!(m[2], "20261128T100000Z  succeeded     *succeeded");
        assert!(m.iter().any(|l| l.starts_with("DRIFT: the hosts run different releases (app1 on 20261128T110000Z, app2 on 20261128T100000Z)")), "{m:#?}");
        assert!(
            m.iter()
                .any(|l| l.contains("release 20261128T110000Z is missing")),
            "{m:#?}"
        );
        assert!(!matrix(&[a.clone(), a])
            .iter()
            .any(|l| l.starts_with("DRIFT")));
    }
}
