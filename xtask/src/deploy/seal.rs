//! What a new release takes over from the server, checked against what this machine knows:
//! the server seeded it from current with hard links, and before the upload the seeded files
//! are compared with the SHA-256 of the files we ship (`deploy.sh compare`, which takes out
//! those that differ). The app user can forge sizes, times and any record on the server, so
//! only our own hashes decide what is kept; what differs is sent again, and what differs
//! although this checkout did not change it since current's commit is named.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use camino::Utf8Path;

use crate::remote::{Call, Reply};
use crate::ssh::Session;

/// `SHA256  PATH` lines (sha256sum's format) for `paths` (relative to `root`, the checkout), by
/// one `xargs sha256sum`. A name sha256sum must escape (a backslash or a newline in it) is left
/// out: the server cannot match it, so it is sent whatever the seed holds.
pub fn hashes(root: &Utf8Path, paths: &[String]) -> Result<String> {
    let mut child = Command::new("xargs")
        .args(["-0", "-r", "sha256sum", "--"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running xargs sha256sum (coreutils) to hash the release's files")?;
    let list: Vec<u8> = paths
        .iter()
        .filter(|p| !p.contains(['\\', '\n']))
        .flat_map(|p| p.bytes().chain([0]))
        .collect();
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&list));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "hashing the release's files failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// The `compare` call: the seeded release `release` under `root`, for the job `token`.
pub fn compare_call(root: &str, token: &str, release: &str) -> Call {
    Call::deploy(
        "compare",
        &[
            ("root", root.to_string()),
            ("token", token.to_string()),
            ("release", release.to_string()),
        ],
    )
}

/// Compare the seeded release with `hashes` (a file of [`hashes`]' lines): the paths the server
/// took out because they differ, or why it could not say.
pub fn compare(session: &Session, call: &Call, hashes: &Utf8Path) -> Result<Vec<String>> {
    let out = session.run_captured(call, Some(hashes))?;
    let reply = Reply::parse(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() || reply.get("compared").is_none() {
        let why = reply.get("error").map(str::to_string).unwrap_or_else(|| {
            let err = String::from_utf8_lossy(&out.stderr);
            err.lines().last().unwrap_or("no reply").to_string()
        });
        bail!("comparing the seeded release with this checkout failed: {why}");
    }
    Ok(reply.all("differs").into_iter().map(String::from).collect())
}

/// Of the files that differed on the server, those this checkout did not change since the
/// release the seed came from (`changed`: a diff against its commit): someone changed them on
/// the server. Frontend builds differ from one build to the next, and without a diff (None)
/// nothing is known: neither is named.
pub fn unexpected(differs: &[String], changed: Option<&[String]>) -> Vec<String> {
    let Some(changed) = changed else {
        return Vec::new();
    };
    differs
        .iter()
        .filter(|p| !p.starts_with("frontend/") && !changed.contains(p))
        .cloned()
        .collect()
}

/// `re-sent N files that differed on the server: a, b, c` (at most five named); None for none.
pub fn resent_line(names: &[String]) -> Option<String> {
    const SHOWN: usize = 5;
    let n = names.len();
    if n == 0 {
        return None;
    }
    let mut list = names[..n.min(SHOWN)].join(", ");
    if n > SHOWN {
        list.push_str(&format!(" and {} more", n - SHOWN));
    }
    let files = if n == 1 { "file" } else { "files" };
    Some(format!(
        "re-sent {n} {files} that differed on the server: {list}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_what_this_checkout_did_not_change_is_named() {
        let differs = v(&[
            "backend/a.py",
            "backend/changed.py",
            "frontend/build/index.js",
            "scripts/deploy.sh",
        ]);
        assert_eq!(
            unexpected(&differs, Some(&v(&["backend/changed.py"]))),
            v(&["backend/a.py", "scripts/deploy.sh"])
        );
        assert!(unexpected(&differs, None).is_empty());
    }

    #[test]
    fn the_resent_line_names_up_to_five() {
        assert_eq!(resent_line(&[]), None);
        assert_eq!(
            resent_line(&v(&["backend/a.py"])).unwrap(),
            "re-sent 1 file that differed on the server: backend/a.py"
        );
        let seven: Vec<String> = (1..=7).map(|i| format!("backend/{i}.py")).collect();
        assert_eq!(
            resent_line(&seven).unwrap(),
            "re-sent 7 files that differed on the server: backend/1.py, backend/2.py, backend/3.py, backend/4.py, backend/5.py and 2 more"
        );
    }

    /// The server's half: a file that differs, a link (even to the same text) and a missing
    /// file are named and taken out; a file that matches stays; a path outside is refused.
    #[test]
    fn the_server_takes_out_what_differs_from_the_hashes() {
        let test = format!(
            r#"{seal}
            mkdir -p rel/backend/a rel/scripts
            echo same >rel/backend/a/same.py; echo changed >rel/backend/a/changed.py
            echo same >same; ln -s "$PWD/same" rel/backend/a/link.py
            h=$(sha256sum <same | cut -c1-64)
            printf '%s  %s
' "$h" backend/a/same.py "$h" backend/a/changed.py "$h" backend/a/link.py                 "$h" 'backend/a/gone file.py' >"$PWD/want"
            [ -z "$(hashes_problem "$PWD/want")" ]
            seed_compare rel "$PWD/want" | LC_ALL=C sort | paste -sd,
            ls rel/backend/a | paste -sd,
            printf '%s  %s
' "$h" backend/../x >bad; hashes_problem bad
            printf '%s  %s
' "$h" etc/passwd >bad; hashes_problem bad
            "#,
            seal = crate::contract::SEAL_SH
        );
        let out = crate::contract::run_with_lib("seal-compare", &[], &test);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "backend/a/changed.py,backend/a/gone file.py,backend/a/link.py",
                "same.py"
            ]
        );
        assert!(lines[2].ends_with("  backend/../x") && lines[3].ends_with("  etc/passwd"));
    }

    /// venv-check.py on a made-up virtualenv: as installed, then with a changed file, a .pth
    /// and a .py no package installed, a link and a pyvenv.cfg pointing elsewhere.
    #[test]
    fn the_virtualenv_check_names_what_uv_did_not_install() {
        let dir = std::env::temp_dir().join(format!("venv-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (venv, reference) = (dir.join("venv"), dir.join("ref"));
        for root in [&venv, &reference] {
            let sp = root.join("lib/python3.11/site-packages");
            std::fs::create_dir_all(&sp).unwrap();
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::os::unix::fs::symlink("/usr/bin/python3", root.join("bin/python")).unwrap();
            std::fs::write(
                root.join("pyvenv.cfg"),
                "home = /usr/bin\ninclude-system-site-packages = false\n",
            )
            .unwrap();
            std::fs::write(sp.join("_virtualenv.pth"), "import _virtualenv\n").unwrap();
        }
        let sp = venv.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(sp.join("pkg-1.0.dist-info")).unwrap();
        std::fs::write(sp.join("pkg.py"), "X = 1\n").unwrap();
        // sha256("X = 1\n"), base64url without padding (a RECORD's spelling).
        let hash = "Crrh4K5yghbuRJk8Wjp1X4scOH2Uf8TE9yyrDkqEIUs";
        std::fs::write(
            sp.join("pkg-1.0.dist-info/RECORD"),
            format!("pkg.py,sha256={hash},6\npkg-1.0.dist-info/RECORD,,\n"),
        )
        .unwrap();
        let check = || {
            let out = Command::new("/usr/bin/python3")
                .arg("-I")
                .arg(crate::project_root().join("scripts/venv-check.py"))
                .args([&venv, &reference])
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert_eq!(check(), (Some(0), String::new()));
        std::fs::write(sp.join("pkg.py"), "X = 2\n").unwrap();
        std::fs::write(sp.join("zz.pth"), "import os\n").unwrap();
        std::fs::write(sp.join("sitecustomize.py"), "\n").unwrap();
        std::os::unix::fs::symlink("/tmp", sp.join("evil")).unwrap();
        std::fs::write(venv.join("pyvenv.cfg"), "home = /tmp\n").unwrap();
        let (code, out) = check();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(code, Some(1), "{out}");
        for want in [
            "lib/python3.11/site-packages/pkg.py: changed",
            "lib/python3.11/site-packages/zz.pth: installed by no package",
            "lib/python3.11/site-packages/sitecustomize.py: installed by no package",
            "lib/python3.11/site-packages/evil: a link",
            "pyvenv.cfg: home is /tmp, not /usr/bin",
        ] {
            assert!(out.lines().any(|l| l == want), "no '{want}' in:\n{out}");
        }
        assert!(!out.contains("_virtualenv.pth"), "{out}");
    }

    #[test]
    fn hashes_are_sha256sum_lines_without_escaped_names() {
        let root = crate::project_root();
        let out = hashes(&root, &v(&["xtask/Cargo.toml", "no\\such"])).unwrap();
        let line = out.lines().next().unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(line.len(), 64 + 2 + "xtask/Cargo.toml".len());
        assert!(line.ends_with("  xtask/Cargo.toml"));
        assert!(hashes(&root, &[]).unwrap().is_empty());
    }
}
