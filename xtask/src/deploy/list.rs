//! `cargo xtask deploy list`: the releases, newest first: state (a `preparing` release no live
//! job prepares is marked dead; one named in the future is marked so), commit, age on the
//! server's clock, what each adds on disk (hard links counted once), the database revision it
//! migrated to, the snapshot of the database it ran on (taken before the next migration), and
//! which is current. A fleet: a host × release matrix of the hosts that
//! answered, what drifted, and the hosts that could not be read (a non-zero exit).

use anyhow::Result;

use crate::config::{Config, Host};
use crate::contract::JobResult;
use crate::deploy::drift;
use crate::deploy::release;
use crate::deploy::server::{self, Look};
use crate::deploy::snapshot::Snapshot;
use crate::show;

pub fn run(cfg: &Config) -> Result<()> {
    if cfg.hosts.len() > 1 {
        let reads = server::probe_each(cfg, Look::default());
        for line in matrix(&reads.ok) {
            show!("{line}");
        }
        return reads.finish();
    }
    let session = server::connect(cfg)?;
    let snap = server::probe(
        &session,
        cfg,
        Look {
            status: false,
            sizes: true,
        },
    )?;
    let mut releases = snap.releases.clone();
    releases.sort_by(|a, b| b.name.cmp(&a.name));
    show!(
        "{:<2}{:<18}{:<21}{:<18}{:<9}{:>10}  {:<22}SNAPSHOT",
        "",
        "RELEASE",
        "STATE",
        "COMMIT",
        "AGE",
        "ADDS",
        "ALEMBIC"
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
            format!("{} (FUTURE)", release::state_name(r.state))
        } else if let Some((result, _)) = snap.unrecorded(&r.name) {
            let state = if JobResult::parse(result) == Some(JobResult::Success) {
                release::State::Succeeded
            } else {
                release::State::Failed
            };
            format!("{} (pending)", state.name())
        } else if snap.dead_preparing(&r.name) {
            "preparing (dead)".to_string()
        } else {
            release::state_name(r.state).to_string()
        };
        let size = snap
            .sizes
            .iter()
            .find(|(n, _)| n == &r.name)
            .map(|(_, kb)| format!("{:.1} MB", *kb as f64 / 1024.0))
            .unwrap_or_else(|| "?".to_string());
        let dump = crate::deploy::dbsnap::of_release(&snap.dumps, &r.name)
            .map(|d| format!("{} at {}", crate::deploy::dbsnap::bytes(d.size), d.revision))
            .unwrap_or_default();
        show!(
            "{}",
            format!(
                "{:<2}{:<18}{:<21}{:<18}{:<9}{:>10}  {:<22}{dump}",
                mark, r.name, state, r.commit, age, size, r.revision
            )
            .trim_end()
        );
    }
    if releases.is_empty() {
        show!("(no releases in {}/releases on {})", cfg.root, snap.host);
    }
    show!("* = current: {}", snap.current.describe());
    show!("ADDS = what a release adds on disk beyond older releases (shared files counted once)");
    if !snap.dumps.is_empty() {
        show!(
            "SNAPSHOT = the database as this release ran on it, taken before the next migration ({}/{}/, pruned with the release)",
            cfg.root,
            crate::contract::layout::DB_SNAPSHOTS
        );
    }
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
    if let Err(e) = drift::roles(&[(cfg.hosts[0].clone(), snap)]) {
        show!("ROLES: {e}");
    }
    Ok(())
}

/// A fleet's releases as a host × release matrix, newest first: each host's recorded role,
/// each cell the state there (`*` for current, `-` for absent), then what drifted: hosts on
/// different releases or one release built differently, a succeeded release missing on some
/// host, roles that disagree with DEPLOY_SERVER, and any lock.
pub fn matrix(hosts: &[(Host, Snapshot)]) -> Vec<String> {
    let snaps: Vec<&Snapshot> = hosts.iter().map(|(_, s)| s).collect();
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
    let mut roles = format!("{:<18}", "(role)");
    for s in &snaps {
        head.push_str(&format!("{:<width$}", s.host));
        roles.push_str(&format!("{:<width$}", s.role.describe()));
    }
    lines.push(head.trim_end().to_string());
    lines.push(roles.trim_end().to_string());
    let mut missing = Vec::new();
    for name in &names {
        let mut row = format!("{name:<18}");
        let mut on = 0;
        for s in &snaps {
            let cell = match s.releases.iter().find(|r| r.name == *name) {
                Some(r) => {
                    on += 1;
                    let cur = if s.current.name() == Some(*name) {
                        "*"
                    } else {
                        ""
                    };
                    format!("{cur}{}", release::state_name(r.state))
                }
                None => "-".to_string(),
            };
            row.push_str(&format!("{cell:<width$}"));
        }
        let succeeded_somewhere = snaps.iter().any(|s| {
            s.releases
                .iter()
                .any(|r| r.name == *name && r.state == Some(release::State::Succeeded))
        });
        if on < snaps.len() && succeeded_somewhere {
            missing.push(name.to_string());
        }
        lines.push(row.trim_end().to_string());
    }
    lines.push("* = current".to_string());
    if let Some(d) = drift::current(&snaps) {
        lines.push(format!(
            "DRIFT: {}: 'cargo xtask deploy all' gives every host the same release (a backend or frontend deploy is refused until then), or 'cargo xtask deploy rollback RELEASE' to one every host has",
            d.describe()
        ));
    }
    for m in missing {
        lines.push(format!(
            "DRIFT: release {m} is missing on some host: it cannot be a fleet rollback target"
        ));
    }
    if let Err(e) = drift::roles(hosts) {
        lines.push(format!("ROLES: {e}"));
    }
    for s in &snaps {
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

    fn fleet(snaps: &[Snapshot]) -> Vec<(Host, Snapshot)> {
        crate::config::parse_hosts("app1,app2")
            .unwrap()
            .into_iter()
            .zip(snaps.iter().cloned())
            .collect()
    }

    #[test]
    fn the_matrix_flags_drift() {
        let a = Snapshot::from_reply(&Reply::parse(
            "host=app1\nrole=primary\ncurrent.status=ok\ncurrent=20261128T110000Z\nrelease=20261128T100000Z succeeded a -\nrelease=20261128T110000Z succeeded b -\n",
        ));
        let b = Snapshot::from_reply(&Reply::parse(
            "host=app2\nrole=secondary\ncurrent.status=ok\ncurrent=20261128T100000Z\nrelease=20261128T100000Z succeeded a -\n",
        ));
        let m = matrix(&fleet(&[a.clone(), b.clone()]));
        assert_eq!(m[0], "RELEASE           app1          app2");
        assert_eq!(m[1], "(role)            primary       secondary");
        assert_eq!(m[2], "20261128T110000Z  *succeeded    -");
        assert_eq!(m[3], "20261128T100000Z  succeeded     *succeeded");
        assert!(m.iter().any(|l| l.starts_with("DRIFT: the hosts run different releases (app1 on 20261128T110000Z, app2 on 20261128T100000Z)")), "{m:#?}");
        assert!(
            m.iter()
                .any(|l| l.contains("release 20261128T110000Z is missing")),
            "{m:#?}"
        );
        assert!(!m.iter().any(|l| l.starts_with("ROLES")), "{m:#?}");
        let mut a2 = a.clone();
        a2.role = b.role.clone();
        assert!(!matrix(&fleet(&[a.clone(), a2]))
            .iter()
            .any(|l| l.starts_with("DRIFT") || l.starts_with("ROLES")));
        // One release name, two builds: drift too.
        let mut b2 = a.clone();
        b2.role = b.role.clone();
        b2.current_made.frontend_commit = "old".into();
        let m = matrix(&fleet(&[a.clone(), b2]));
        assert!(
            m.iter()
                .any(|l| l.starts_with("DRIFT: the hosts' current release 20261128T110000Z is not the same build everywhere")),
            "{m:#?}"
        );
        // Roles that disagree with DEPLOY_SERVER are shown, not refused.
        let m = matrix(&fleet(&[b.clone(), a]));
        assert!(
            m.iter()
                .any(|l| l.starts_with("ROLES: DEPLOY_SERVER's roles disagree")),
            "{m:#?}"
        );
    }
}
