//! `deploy rollback --migrate-down`: taking the database down to the target release's
//! migrations, in the order that keeps the site serving.
//!
//! Before the lock the deployer reads what the downgrade will do (the `db` call with
//! `down=TARGET`: the deploy tool's `downgrade-plan`, run on the primary with the migration
//! scripts of the kept release that wrote the database's revision), shows it, and asks before
//! it drops rows that hold data. Under the lock the job checks it again and tries it (the `trial`
//! step: the downgrade in a transaction that is rolled back) before it switches anything; after
//! the switch and the health checks (in a fleet: once every host switched) the primary takes a
//! snapshot, downgrades in one transaction and checks health again. This module is the pure
//! part: the plan as the server said it, its lines, whether it needs consent.

use anyhow::{bail, Result};

use crate::remote::{Call, Reply};

/// A table or column the downgrade drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub revision: String,
    /// Rows holding data in it now (None: it does not exist now).
    pub rows: Option<u64>,
    /// `table` or `column`.
    pub kind: String,
    pub name: String,
}

/// One revision on the way down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub revision: String,
    pub file: String,
    /// `yes` (its SQL changes something), `empty`, or `online` (its SQL needs a live
    /// connection: it cannot be shown, nor its drops counted, before it runs).
    pub downgrade: String,
}

/// What a rollback to a release does to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The target's migrations know the database's revision: nothing to take down (why).
    Nothing(String),
    Down(Down),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The kept release whose migration scripts take the database down.
    pub writer: String,
    pub from: String,
    /// The target release's head (`-`: the empty database).
    pub to: String,
    pub steps: Vec<Step>,
    pub drops: Vec<Drop>,
    /// Rows holding data in what it drops, in all.
    pub rows: u64,
}

impl Plan {
    /// The plan from the `db` call's `down.*` lines; an error when the server said the database
    /// cannot be taken down (the line says why).
    pub fn from_reply(r: &Reply, host: &str, target: &str) -> Result<Plan> {
        if let Some(why) = r.get("down.error") {
            bail!(
                "cannot take the database on {host} down to release {target}'s migrations: {why}; nothing was changed ('deploy rollback --force' runs {target} on the database as it is)"
            );
        }
        if let Some(why) = r.get("down.none") {
            return Ok(Plan::Nothing(why.to_string()));
        }
        let (Some(writer), Some(to)) = (r.get("down.writer"), r.get("down.to")) else {
            bail!("{host} did not say what taking the database down to {target}'s migrations would do (an older server script?): run the command again");
        };
        let steps = r
            .all("down.step")
            .into_iter()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some(Step {
                    revision: w.next()?.to_string(),
                    file: w.next()?.to_string(),
                    downgrade: w.next()?.to_string(),
                })
            })
            .collect();
        let drops = r
            .all("down.drop")
            .into_iter()
            .filter_map(|l| {
                let mut w = l.splitn(4, ' ');
                Some(Drop {
                    revision: w.next()?.to_string(),
                    rows: w.next()?.parse().ok(),
                    kind: w.next()?.to_string(),
                    name: w.next()?.to_string(),
                })
            })
            .collect();
        Ok(Plan::Down(Down {
            writer: writer.to_string(),
            from: r.get("down.db_revision").unwrap_or("?").to_string(),
            to: to.to_string(),
            steps,
            drops,
            rows: r.get("down.rows").and_then(|n| n.parse().ok()).unwrap_or(0),
        }))
    }

    /// Whether the downgrade drops rows that hold data (it then needs `--yes` or a yes).
    pub fn drops_data(&self) -> bool {
        matches!(self, Plan::Down(d) if d.rows > 0)
    }

    /// What the deployer prints before it starts: the way down, each revision, what it drops.
    pub fn lines(&self, host: &str) -> Vec<String> {
        let d = match self {
            Plan::Nothing(why) => return vec![format!("  database on {host}: {why}")],
            Plan::Down(d) => d,
        };
        let mut lines = vec![format!(
            "  database on {host}: after the switch, a snapshot, then down from {} to {} with the migrations of {} ({} revision(s), one transaction), then health checks:",
            d.from,
            d.to,
            d.writer,
            d.steps.len()
        )];
        for s in &d.steps {
            let what = match s.downgrade.as_str() {
                "empty" => " (changes nothing)",
                "online" => " (its SQL needs a live connection: not shown, its drops not counted)",
                _ => "",
            };
            lines.push(format!("    {} {}{what}", s.revision, s.file));
            for dr in d.drops.iter().filter(|dr| dr.revision == s.revision) {
                let rows = match dr.rows {
                    None => "it does not exist now".to_string(),
                    Some(0) => "no rows hold data".to_string(),
                    Some(n) => format!("{n} row(s) hold data"),
                };
                lines.push(format!("      drops {} {}: {rows}", dr.kind, dr.name));
            }
        }
        lines
    }

    /// The refusal when the downgrade drops data and no one said yes.
    pub fn consent_refusal(&self, host: &str) -> String {
        let Plan::Down(d) = self else {
            return String::new();
        };
        let what: Vec<String> = d
            .drops
            .iter()
            .filter(|dr| dr.rows.unwrap_or(0) > 0)
            .map(|dr| format!("{} {} ({} rows)", dr.kind, dr.name, dr.rows.unwrap_or(0)))
            .collect();
        format!(
            "the downgrade to {} on {host} drops {} row(s) that hold data ({}): rerun with --yes to drop them (the snapshot taken before the downgrade keeps them); nothing was changed",
            d.to,
            d.rows,
            what.join(", ")
        )
    }
}

/// The `db` call that reads the plan of a rollback to `target` on the primary.
pub fn call(root: &str, target: &str) -> Call {
    Call::deploy(
        "db",
        &[
            ("root", root.to_string()),
            ("size", "no".to_string()),
            ("down", target.to_string()),
        ],
    )
}

/// The job's plan keys: `migrate_down` and `yes` (rows that hold data may be dropped).
pub fn plan_args(call: &mut Call, migrate_down: bool, yes: bool) {
    let keys = crate::contract::keys("run");
    for (k, v) in [("migrate_down", migrate_down), ("yes", yes)] {
        assert!(keys.contains(&k), "the run call takes no '{k}'");
        call.args
            .push(format!("{k}={}", if v { "yes" } else { "no" }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        Reply::parse(text)
    }

    const DOWN: &str = "db.revision=0004_note\n\
        down.writer=20261206T090000Z\n\
        down.to=0003_rating\n\
        down.db_revision=0004_note\n\
        down.target=0003_rating\n\
        down.step=0004_note alembic/versions/0004_note.py yes\n\
        down.drop=0004_note 3 column products.note\n\
        down.rows=3\n\
        down.steps=1\n";

    #[test]
    fn a_plan_reads_back_with_its_steps_and_drops() {
        let p = Plan::from_reply(&reply(DOWN), "app", "20261205T080000Z").unwrap();
        let Plan::Down(d) = &p else { panic!("{p:?}") };
        assert_eq!(
            (d.writer.as_str(), d.from.as_str(), d.to.as_str(), d.rows),
            ("20261206T090000Z", "0004_note", "0003_rating", 3)
        );
        assert_eq!(d.steps[0].file, "alembic/versions/0004_note.py");
        assert_eq!(d.drops[0].name, "products.note");
        assert!(p.drops_data());
        let lines = p.lines("app");
        assert!(lines[0].contains("down from 0004_note to 0003_rating with the migrations of 20261206T090000Z (1 revision(s)"), "{lines:?}");
        assert_eq!(
            lines[2],
            "      drops column products.note: 3 row(s) hold data"
        );
        assert_eq!(
            p.consent_refusal("app"),
            "the downgrade to 0003_rating on app drops 3 row(s) that hold data (column products.note (3 rows)): rerun with --yes to drop them (the snapshot taken before the downgrade keeps them); nothing was changed"
        );
    }

    #[test]
    fn no_data_dropped_needs_no_consent() {
        let text = DOWN
            .replace("0004_note 3 column", "0004_note - column")
            .replace("down.rows=3", "down.rows=0");
        let p = Plan::from_reply(&reply(&text), "app", "r").unwrap();
        assert!(!p.drops_data());
        assert!(p.lines("app")[2].ends_with("it does not exist now"));
    }

    #[test]
    fn nothing_and_errors_read_back() {
        let p = Plan::from_reply(
            &reply("down.none=release r knows revision 0003\n"),
            "app",
            "r",
        )
        .unwrap();
        assert_eq!(p, Plan::Nothing("release r knows revision 0003".into()));
        assert!(!p.drops_data());
        let e = Plan::from_reply(
            &reply("down.error=downgrade-plan refused: 0004 is declared irreversible\n"),
            "app",
            "r",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "cannot take the database on app down to release r's migrations: downgrade-plan refused: 0004 is declared irreversible; nothing was changed ('deploy rollback --force' runs r on the database as it is)");
        assert!(Plan::from_reply(&reply("db.revision=x\n"), "app", "r").is_err());
    }

    #[test]
    fn plan_args_are_run_keys() {
        let mut c = call("/opt/ic", "r");
        plan_args(&mut c, true, false);
        assert!(c
            .args
            .ends_with(&["migrate_down=yes".to_string(), "yes=no".to_string()]));
    }

    /// The server's side of the plan (scripts/deploy-lib.sh, `down_facts`), on release
    /// directories made here: which release's scripts take the database down, and to where.
    #[test]
    fn the_server_finds_the_release_that_wrote_the_revision() {
        let test = r#"
            set -euo pipefail
            r=$PWD/root
            rev() { # RELEASE ID DOWN
                local d=$r/releases/$1/backend
                mkdir -p "$d/alembic/versions" "$d/.venv/bin"
                printf 'revision = "%s"\ndown_revision = %s\n' "$2" "$3" >"$d/alembic/versions/$2.py"
                : >"$d/.venv/bin/python"; chmod +x "$d/.venv/bin/python"
            }
            rev 20261201T000000Z 0001_a None; rev 20261201T000000Z 0002_b '"0001_a"'
            for n in 0001_a:None 0002_b:'"0001_a"' 0003_c:'"0002_b"'; do rev 20261202T000000Z "${n%%:*}" "${n#*:}"; done
            for n in 0001_a:None 0002_b:'"0001_a"' 0003_c:'"0002_b"' 0004_d:'"0003_c"'; do rev 20261203T000000Z "${n%%:*}" "${n#*:}"; done
            rm "$r/releases/20261203T000000Z/backend/.venv/bin/python"
            for at in 0003_c 0002_b - 0004_d 0009_z; do
                down_facts "$r" 20261201T000000Z "$at"
                echo "$at: $down_state ${down_writer:-.} ${down_to:-.}"
            done
            for v in 13.16 15.10 16.1 9.6.24 ''; do
                major_at_least "$v" 15 && echo "$v: dumps 15" || echo "$v: refused for 15"
            done
            major_at_least 9.6.24 9.6 && echo "9.6.24: dumps 9.6"
            "#;
        let out = crate::contract::run_with_lib("ic-down", &[], test);
        assert_eq!(
            out,
            "0003_c: down 20261202T000000Z 0002_b\n\
             0002_b: none . .\n\
             -: none . .\n\
             0004_d: error . 0002_b\n\
             0009_z: error . 0002_b\n\
             13.16: refused for 15\n\
             15.10: dumps 15\n\
             16.1: dumps 15\n\
             9.6.24: refused for 15\n\
             : refused for 15\n\
             9.6.24: dumps 9.6\n"
        );
    }
}
