//! What the hosts of a command must agree on, decided from their snapshots (pure): their roles
//! with DEPLOY_SERVER (setup-server records each host's role on it, and DEPLOY_SERVER's marks
//! must say the same), and, in a fleet, their current release (one name, made of the same
//! commits: a half deploy carries the other half over from each host's own current).

use anyhow::{bail, Result};

use crate::config::{Host, HostRole};
use crate::contract::ROLE_FILE;
use crate::deploy::snapshot::{Current, Recorded, Snapshot};

/// The role each host works with: the one recorded on it, which must be what DEPLOY_SERVER
/// says (a lone host without a mark takes its record). Refuses, in one line naming the hosts,
/// when a record is missing or unreadable, or disagrees with DEPLOY_SERVER.
pub fn roles(hosts: &[(Host, Snapshot)]) -> Result<Vec<HostRole>> {
    let mut roles = Vec::new();
    let mut unknown = Vec::new();
    let mut disagree = Vec::new();
    for (h, s) in hosts {
        match &s.role {
            Recorded::Role(r) => {
                if h.stated && h.role != *r {
                    disagree.push((h.name(), *r, h.role));
                }
                roles.push(*r);
            }
            Recorded::Missing => unknown.push(format!("{} has none", h.name())),
            Recorded::Invalid(why) => unknown.push(format!("{}'s is unusable ({why})", h.name())),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "no role recorded in {ROLE_FILE} ({}: set up before roles were recorded?): run 'cargo xtask setup-server' with DEPLOY_SERVER naming every host of the fleet and its primary marked #primary (a lone host without a mark is recorded as the primary); it records each host's role",
            unknown.join("; ")
        );
    }
    if !disagree.is_empty() {
        let each: Vec<String> = disagree
            .iter()
            .map(|(name, recorded, said)| {
                format!(
                    "{name} is recorded {}, DEPLOY_SERVER says {}",
                    recorded.name(),
                    said.name()
                )
            })
            .collect();
        let recorded_primary: Vec<&str> = hosts
            .iter()
            .filter(|(_, s)| s.role == Recorded::Role(HostRole::Primary))
            .map(|(h, _)| h.name())
            .collect();
        let keep = match recorded_primary.as_slice() {
            [p] => format!("mark {p} #primary in DEPLOY_SERVER"),
            _ => format!(
                "mark {} #secondary in DEPLOY_SERVER",
                disagree
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        bail!(
            "DEPLOY_SERVER's roles disagree with the ones recorded on the hosts in {ROLE_FILE} ({}): to move the primary, run 'cargo xtask setup-server' with these marks (it records the roles, stops and disables the worker on the old primary, enables and starts it on the new one); to keep the recorded roles, {keep}",
            each.join("; ")
        );
    }
    Ok(roles)
}

/// How a fleet's current releases differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// `current` names different releases (or none) on different hosts: each host's.
    Releases(Vec<(String, String)>),
    /// One release name, made of different commits on different hosts (a half deploy to a
    /// fleet that had drifted): each host's backend and frontend commit.
    Halves {
        release: String,
        made: Vec<(String, String, String)>,
    },
}

impl Drift {
    /// One clause for a refusal or a `DRIFT:` line.
    pub fn describe(&self) -> String {
        match self {
            Drift::Releases(each) => format!(
                "the hosts run different releases ({})",
                each.iter()
                    .map(|(h, r)| format!("{h} on {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Drift::Halves { release, made } => format!(
                "the hosts' current release {release} is not the same build everywhere ({})",
                made.iter()
                    .map(|(h, b, f)| format!("{h}: backend {b}, frontend {f}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Whether the hosts run one release, made of the same commits; `None` for a single host.
pub fn current(snaps: &[&Snapshot]) -> Option<Drift> {
    let first = snaps.first()?;
    let made = |s: &Snapshot| {
        (
            s.current_made.backend_commit.clone(),
            s.current_made.frontend_commit.clone(),
        )
    };
    if snaps
        .iter()
        .any(|s| running(&s.current) != running(&first.current))
    {
        return Some(Drift::Releases(
            snaps
                .iter()
                .map(|s| (s.host.clone(), running(&s.current)))
                .collect(),
        ));
    }
    if snaps.iter().any(|s| made(s) != made(first)) {
        return Some(Drift::Halves {
            release: running(&first.current),
            made: snaps
                .iter()
                .map(|s| {
                    let (b, f) = made(s);
                    (s.host.clone(), b, f)
                })
                .collect(),
        });
    }
    None
}

/// What a host's `current` runs, in a few words.
fn running(c: &Current) -> String {
    match c {
        Current::Release(n) => n.clone(),
        Current::Missing => "none".to_string(),
        Current::Dangling(l) => format!("a dangling current ({l})"),
        Current::Foreign(l) => format!("a current that is not a release ({l})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Reply;

    fn snap(host: &str, role: &str, current: &str, backend: &str, frontend: &str) -> Snapshot {
        Snapshot::from_reply(&Reply::parse(&format!(
            "host={host}\nrole={role}\ncurrent.status=ok\ncurrent.link=releases/{current}\ncurrent={current}\ncurrent.backend_commit={backend}\ncurrent.frontend_commit={frontend}\n"
        )))
    }

    fn hosts(server: &str, snaps: &[Snapshot]) -> Vec<(Host, Snapshot)> {
        crate::config::parse_hosts(server)
            .unwrap()
            .into_iter()
            .zip(snaps.iter().cloned())
            .collect()
    }

    const R1: &str = "20261128T100000Z";
    const R2: &str = "20261128T110000Z";

    #[test]
    fn the_recorded_roles_must_be_what_deploy_server_says() {
        let a = snap("app1", "primary", R1, "c1", "c1");
        let b = snap("app2", "secondary", R1, "c1", "c1");
        let both = [a.clone(), b.clone()];
        assert_eq!(
            roles(&hosts("app1,app2", &both)).unwrap(),
            vec![HostRole::Primary, HostRole::Secondary]
        );
        assert!(roles(&hosts("app2,app1#primary", &[b.clone(), a.clone()])).is_ok());
        // The mark moved, the records did not: refused, naming both and how to move it.
        let e = roles(&hosts("app1,app2#primary", &both))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("app1 is recorded primary, DEPLOY_SERVER says secondary; app2 is recorded secondary, DEPLOY_SERVER says primary"),
            "{e}"
        );
        assert!(
            e.contains("run 'cargo xtask setup-server' with these marks"),
            "{e}"
        );
        assert!(e.contains("mark app1 #primary"), "{e}");
        assert!(!e.contains('\n'));
        // Without a mark the first host is the primary: the same disagreement.
        assert!(roles(&hosts("app2,app1", &[b.clone(), a.clone()])).is_err());
    }

    #[test]
    fn a_lone_host_takes_its_record_and_a_mark_must_agree() {
        let b = snap("app2", "secondary", R1, "c1", "c1");
        assert_eq!(
            roles(&hosts("app2", std::slice::from_ref(&b))).unwrap(),
            vec![HostRole::Secondary]
        );
        assert_eq!(
            roles(&hosts("app2#secondary", std::slice::from_ref(&b))).unwrap(),
            vec![HostRole::Secondary]
        );
        let e = roles(&hosts("app2#primary", &[b])).unwrap_err().to_string();
        assert!(
            e.contains("app2 is recorded secondary, DEPLOY_SERVER says primary")
                && e.contains("mark app2 #secondary"),
            "{e}"
        );
    }

    #[test]
    fn a_host_without_a_record_needs_setup_server() {
        let a = snap("app1", "primary", R1, "c1", "c1");
        let old = snap("app2", "missing", R1, "c1", "c1");
        let e = roles(&hosts("app1,app2", &[a, old.clone()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("(app2 has none"), "{e}");
        assert!(e.contains("run 'cargo xtask setup-server'"), "{e}");
        // A lone one too, mark or not.
        assert!(roles(&hosts("app2", &[old])).is_err());
        let odd = snap("app3", "invalid: not root's", R1, "c1", "c1");
        let e = roles(&hosts("app3", &[odd])).unwrap_err().to_string();
        assert!(
            e.contains("app3's is unusable (invalid: not root's)"),
            "{e}"
        );
    }

    #[test]
    fn drift_is_different_releases_or_one_name_built_differently() {
        let a = snap("app1", "primary", R2, "c2", "c2");
        let b = snap("app2", "secondary", R1, "c1", "c1");
        assert_eq!(current(&[&a]), None, "one host never drifts");
        assert_eq!(current(&[&a, &a.clone()]), None);
        let d = current(&[&a, &b]).unwrap();
        assert_eq!(
            d.describe(),
            format!("the hosts run different releases (app1 on {R2}, app2 on {R1})")
        );
        // What a half deploy made of a drifted fleet: one name, two frontends.
        let b2 = snap("app2", "secondary", R2, "c2", "c1");
        let d = current(&[&a, &b2]).unwrap();
        assert!(matches!(d, Drift::Halves { .. }));
        assert_eq!(
            d.describe(),
            format!("the hosts' current release {R2} is not the same build everywhere (app1: backend c2, frontend c2; app2: backend c2, frontend c1)")
        );
        // No release anywhere is no drift; no release on one host is.
        let none = Snapshot::from_reply(&Reply::parse("host=app3\ncurrent.status=missing\n"));
        assert_eq!(current(&[&none, &none.clone()]), None);
        assert!(current(&[&a, &none])
            .unwrap()
            .describe()
            .contains("app3 on none"));
    }
}
