//! The unit files setup-server installed in [`OLD_UNIT_DIR`] before the units moved to
//! [`UNIT_DIR`] (up to cafb523): the sha256 of every version of each unit in the repository's
//! history up to then, as the repository has it (rendered for [`crate::contract::DEFAULT_ROOT`]). The units
//! step removes a copy in the old place only when its text is one of these (or the one it
//! installs now), so a file an admin put there by other means is never removed.
//!
//! [`OLD_UNIT_DIR`]: crate::contract::OLD_UNIT_DIR
//! [`UNIT_DIR`]: crate::contract::UNIT_DIR

/// The last commit whose setup-server installed the units in the old place.
pub const LAST_COMMIT: &str = "cafb523";

/// (unit file name, sha256 of a text of it that setup-server installed).
pub const UNITS: &[(&str, &str)] = &[
    (
        "innercontext-node.service",
        "15552415159ee75a6c275fec4b9a987618dd21ac69cea22b159ad71a0169ca40",
    ),
    (
        "innercontext-node.service",
        "7d23bac3a2d1f00045dcac3d12ca295ffb1936d2aee6456442c1c4cc001ced21",
    ),
    (
        "innercontext-node.service",
        "7dd8947f8d739fa61eaeb84a99c3aede02e711da206469b2b30c15ab00205d86",
    ),
    (
        "innercontext-node.service",
        "cef5da62741a5a5e2bce14d0c50bf82239a0571e5ccad1b307f9b8ac9979cce6",
    ),
    (
        "innercontext-node.socket",
        "659e2101b307045c34a416283559aefeccb44e9f86fe6dc0028024b38b736091",
    ),
    (
        "innercontext-pricing-worker.service",
        "68e58aaefeb62081f5a20e0c100ac398f455dcd1157bfdeed4c2bcdc9ea2832a",
    ),
    (
        "innercontext-pricing-worker.service",
        "769c35ba0c2977ea019d9d271dbff651adbf85bb810341131c1b52c70f76090a",
    ),
    (
        "innercontext-pricing-worker.service",
        "fe7dc5284f1686be798dad3b2bd3eb3d7319b5137184ecdca71fc9b7e1f8ae9a",
    ),
    (
        "innercontext-release-check.service",
        "301a9e2d18f6a4a33cb0a06de03d9912743ef7c5fe81ae4c86919228e685f2ae",
    ),
    (
        "innercontext.service",
        "29f282af19c528222d6d96e761f41a056f0d8fe9c71f830da0dd1d53053726b6",
    ),
    (
        "innercontext.service",
        "67e783d879fbe4e44b7a3f671804e3073b4b763d67048236a2b9816644bcf3d1",
    ),
    (
        "innercontext.service",
        "68c0f8d93b811eccc2c277ab427539aacdd286d86e010267923cd869c193951e",
    ),
    (
        "innercontext.socket",
        "cf9e5109642abc0cadc91f5b57ab6ce8dcf8450ffb29a136f1143b7a87d6ede3",
    ),
];

/// The list as the units step takes it: one `NAME SHA256` line each.
pub fn lines() -> String {
    UNITS
        .iter()
        .map(|(n, s)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::process::Command;

    fn git(args: &[&str]) -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(crate::project_root())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The list is exactly the history's versions of the units (checked where the history is
    /// there: a shallow clone skips it and says so).
    #[test]
    fn the_list_is_the_history_of_the_units() {
        let Some(names) = git(&["ls-tree", "--name-only", LAST_COMMIT, "systemd/"]) else {
            eprintln!("no {LAST_COMMIT} in this clone: the list of earlier units is not checked");
            return;
        };
        let mut want = BTreeSet::new();
        for path in names.lines() {
            let name = path.trim_start_matches("systemd/");
            if !super::super::is_unit_file(name) {
                continue;
            }
            let commits = git(&["log", "--format=%H", LAST_COMMIT, "--", path]).unwrap();
            for c in commits.lines() {
                let text = git(&["show", &format!("{c}:{path}")]).unwrap();
                let out = Command::new("sha256sum")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        use std::io::Write;
                        child.stdin.take().unwrap().write_all(text.as_bytes())?;
                        child.wait_with_output()
                    })
                    .unwrap();
                let sum = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                want.insert((name.to_string(), sum));
            }
        }
        let got: BTreeSet<(String, String)> = UNITS
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(lines().lines().count(), UNITS.len());
    }
}
