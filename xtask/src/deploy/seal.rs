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

/// `SHA256  PATH` lines (sha256sum's format) for `paths` (relative to `root`, the checkout).
/// A name sha256sum must escape (a backslash or a newline in it) is left out: the server cannot
/// match it, so it is sent whatever the seed holds. What this checkout hashed before is taken
/// from `target/seal.hashes` while the file is the same one, unchanged (device, inode, size,
/// modification and change times: an edit moves the change time, whatever it does to the
/// rest); the rest goes through one `xargs sha256sum`, and the record is written again.
pub fn hashes(root: &Utf8Path, paths: &[String]) -> Result<String> {
    let record = root.join("target/seal.hashes");
    let before = fs_err::read_to_string(&record).unwrap_or_default();
    let paths: Vec<(&String, String)> = paths
        .iter()
        .filter(|p| !p.contains(['\\', '\n']))
        .map(|p| (p, identity(&root.join(p.as_str()))))
        .collect();
    let known = recorded(&before);
    let new: Vec<&String> = paths
        .iter()
        .filter(|(p, id)| known.get(p.as_str()).is_none_or(|(i, _)| i != id))
        .map(|(p, _)| *p)
        .collect();
    let fresh = sha256sum(root, &new)?;
    let fresh = recorded(&fresh);
    let (mut out, mut keep) = (String::new(), String::new());
    for (p, id) in &paths {
        let Some((_, hash)) = fresh.get(p.as_str()).or_else(|| known.get(p.as_str())) else {
            continue;
        };
        out.push_str(&format!("{hash}  {p}\n"));
        keep.push_str(&format!("{id} {hash}  {p}\n"));
    }
    let tmp = root.join(format!("target/seal.hashes.{}", std::process::id()));
    if fs_err::create_dir_all(root.join("target")).is_ok() && fs_err::write(&tmp, keep).is_ok() {
        let _ = fs_err::rename(&tmp, &record);
    }
    Ok(out)
}

/// What identifies a file's content without reading it: `DEV:INO:SIZE:MTIME:CTIME` (ns), or
/// `-` when it cannot be read (never matches a record).
fn identity(path: &Utf8Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => format!(
            "{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
        Err(_) => "-".to_string(),
    }
}

/// `[IDENTITY ]HASH  PATH` lines by path: (identity, or '' for sha256sum's own lines; hash).
fn recorded(text: &str) -> std::collections::HashMap<&str, (&str, &str)> {
    text.lines()
        .filter_map(|l| {
            let (front, path) = l.split_once("  ")?;
            let (id, hash) = front.rsplit_once(' ').unwrap_or(("", front));
            (hash.len() == 64).then_some((path, (id, hash)))
        })
        .collect()
}

/// sha256sum's lines for `paths` (relative to `root`), by one `xargs sha256sum`.
fn sha256sum(root: &Utf8Path, paths: &[&String]) -> Result<String> {
    let mut cmd = Command::new("xargs");
    cmd.args(["-0", "-r", "sha256sum", "--"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: a terminal's Ctrl-C reaches the xtask, which decides.
    let mut child = crate::proc::isolate(&mut cmd)
        .spawn()
        .context("running xargs sha256sum (coreutils) to hash the release's files")?;
    let list: Vec<u8> = paths.iter().flat_map(|p| p.bytes().chain([0])).collect();
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    /// sha256sum's lines, without names it would escape; the record is reused only for a file
    /// that is still the same (an edit that keeps size and mtime is hashed again).
    #[test]
    fn hashes_are_sha256sum_lines_and_the_record_follows_edits() {
        let root = camino::Utf8PathBuf::from(format!(
            "{}/seal-hashes-{}",
            std::env::temp_dir().display(),
            std::process::id()
        ));
        let _ = fs_err::remove_dir_all(&root);
        fs_err::create_dir_all(root.join("backend")).unwrap();
        fs_err::write(root.join("backend/a.py"), "a\n").unwrap();
        let sum = |text: &str| {
            let out = Command::new("sh")
                .args(["-c", &format!("printf '{text}' | sha256sum | cut -c1-64")])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let list = v(&["backend/a.py", "back\\slash"]);
        let first = hashes(&root, &list).unwrap();
        assert_eq!(first, format!("{}  backend/a.py\n", sum("a\\n")));
        assert_eq!(hashes(&root, &list).unwrap(), first, "from the record");
        // Same size, same mtime (touch -r): the change time tells.
        let p = root.join("backend/a.py");
        let mtime = fs_err::metadata(&p).unwrap().modified().unwrap();
        fs_err::write(&p, "b\n").unwrap();
        fs_err::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = hashes(&root, &list).unwrap();
        let _ = fs_err::remove_dir_all(&root);
        assert_eq!(second, format!("{}  backend/a.py\n", sum("b\\n")));
    }
}
