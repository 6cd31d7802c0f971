//! The pure half of `verify`: what the checker is told (its facts, from the contract and this
//! checkout's hashes), the program sent to the server, and its output read back.

use crate::contract::layout;
use crate::quote;

/// The checker, sent over ssh's stdin and run by `/usr/bin/python3 -I -` as root.
pub const CHECKER: &str = include_str!("checker.py");

/// What a run of the checker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only name current's release and its commits.
    Meta,
    /// Compare the release, its virtualenv and the uv cache.
    Check,
}

/// The checker's last step: a run that did not print it did not finish.
pub const LAST_STEP: &str = "the uv cache";

/// The parts of a release, as the job and the seal walk them.
pub const PARTS: [&str; 5] = ["backend", "frontend", "scripts", "systemd", "nginx"];

/// The files uv builds the reference virtualenv from (inside a release).
pub const PROJECT: [&str; 2] = ["backend/uv.lock", "backend/pyproject.toml"];

/// The checker's facts (see `checker.py`): the mode, the deploy root, the layout the job makes
/// (from the contract), and `hashes` (sha256sum lines of the files this checkout ships).
pub fn facts(mode: Mode, root: &str, hashes: &str) -> String {
    let mut out = vec![
        format!(
            "mode\t{}",
            match mode {
                Mode::Meta => "meta",
                Mode::Check => "check",
            }
        ),
        format!("root\t{root}"),
        format!("meta\t{}", layout::META_FILE),
        format!("venvlink\t{}\t{}", layout::VENV_LINK, layout::VENVS),
        format!("venvmarker\t{}", layout::VENV_MARKER),
        format!("cache\t{}", layout::UV_CACHE),
    ];
    out.extend(PARTS.iter().map(|p| format!("part\t{p}")));
    out.extend(
        [layout::STATE_FILE, layout::META_FILE, layout::SEAL_FILE]
            .iter()
            .map(|r| format!("record\t{r}")),
    );
    out.extend(
        layout::ENV_LINKS
            .iter()
            .map(|(p, t)| format!("envlink\t{p}\t{t}")),
    );
    out.extend(PROJECT.iter().map(|p| format!("project\t{p}")));
    if mode == Mode::Check {
        for line in hashes.lines() {
            if let Some((hash, path)) = line.split_once("  ") {
                out.push(format!("want\t{hash}\t{path}"));
            }
        }
    }
    out.join("\n") + "\n"
}

/// The program the server runs: the checker, its facts (base64: any byte of a file name stays
/// data) and the call of its `main`.
pub fn program(facts: &str) -> String {
    format!(
        "{CHECKER}\nimport base64\nDATA = base64.b64decode(\"{}\").decode()\nsys.exit(main())\n",
        crate::remote::base64(facts.as_bytes())
    )
}

/// The remote command line: the system's Python as root (the admin login is root, or a user
/// with passwordless sudo), reading the program from stdin, isolated (`-I`: no environment, no
/// user site, not the current directory on the path).
pub fn remote_line() -> String {
    let py = "/usr/bin/python3 -I -";
    format!("if [ \"$(id -u)\" = 0 ]; then exec {py}; else exec sudo -n {py}; fi")
}

/// A line of the checker's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// current's release and what it records of its commits.
    Release(Release),
    /// A step done on the server: its name, seconds, a detail.
    Step(String, f64, String),
    /// A file that is not as shipped, and why.
    Finding(String, String),
    /// Why the checker could not check.
    Error(String),
    /// Anything else (noise on stdout), kept for an error message.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub commit: String,
    pub backend: String,
    pub frontend: String,
}

/// One line of the checker's output; server-written text loses its control characters.
pub fn parse(line: &str) -> Line {
    let f: Vec<String> = line.split('\t').map(quote::printable).collect();
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    match (f[0].as_str(), f.len()) {
        ("release", 5) => Line::Release(Release {
            name: get(1),
            commit: get(2),
            backend: get(3),
            frontend: get(4),
        }),
        ("took", 4) => match get(2).parse() {
            Ok(secs) => Line::Step(get(1), secs, get(3)),
            Err(_) => Line::Other(quote::printable(line)),
        },
        ("finding", 3) => Line::Finding(get(1), get(2)),
        ("error", 2) => Line::Error(get(1)),
        _ => Line::Other(quote::printable(line)),
    }
}

/// Why current on `host` cannot be compared with this checkout (`here`: its commit as releases
/// record it, `+dirty` for uncommitted changes): each half names the commit it was deployed
/// from, and both must be this checkout's. None when they are.
pub fn mismatch(host: &str, here: &str, r: &Release) -> Option<String> {
    if r.backend == here && r.frontend == here {
        return None;
    }
    let halves = if r.backend == r.frontend {
        format!("was deployed from {}", r.backend)
    } else {
        format!(
            "has the backend of {} and the frontend of {}",
            r.backend, r.frontend
        )
    };
    let want = if r.backend.trim_end_matches("+dirty") == here.trim_end_matches("+dirty") {
        r.frontend.trim_end_matches("+dirty")
    } else {
        r.backend.trim_end_matches("+dirty")
    };
    let how = if r.backend != r.frontend {
        "deploy all from one commit, or check out each half's commit in turn"
    } else if want.ends_with("+dirty") || r.backend.ends_with("+dirty") {
        "check out that commit with the same uncommitted changes"
    } else {
        "check out that commit"
    };
    Some(format!(
        "current on {host} ({}) {halves}, this checkout is at {here}: verify compares with what this checkout ships; {how} (git checkout {want}) and run verify again",
        r.name
    ))
}

/// `HOST: PATH: WHY`, one line per file.
pub fn finding_line(host: &str, path: &str, why: &str) -> String {
    format!("{host}: {path}: {why}")
}

/// The last line: every host as shipped, or how many files differ where.
pub fn verdict(found: &[(String, usize)], hosts: usize) -> Result<String, String> {
    let n: usize = found.iter().map(|(_, n)| n).sum();
    if n == 0 {
        let hosts = if hosts == 1 {
            "current, its virtualenv and the uv cache are".to_string()
        } else {
            format!("on all {hosts} hosts current, its virtualenv and the uv cache are")
        };
        return Ok(format!("verify: {hosts} as this checkout ships them"));
    }
    let files = if n == 1 { "file" } else { "files" };
    let wheres: Vec<String> = found
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(h, n)| format!("{n} on {h}"))
        .collect();
    Err(format!(
        "verify found {n} {files} that are not as shipped ({}): 'cargo xtask deploy --clean' puts back a known state",
        wheres.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(backend: &str, frontend: &str) -> Release {
        Release {
            name: "20261206T120000Z".into(),
            commit: backend.into(),
            backend: backend.into(),
            frontend: frontend.into(),
        }
    }

    #[test]
    fn the_checkers_lines_are_read_back() {
        assert_eq!(
            parse("release\t20261206T120000Z\tabc\tabc\tdef"),
            Line::Release(Release {
                name: "20261206T120000Z".into(),
                commit: "abc".into(),
                backend: "abc".into(),
                frontend: "def".into()
            })
        );
        assert_eq!(
            parse("took\tthe uv cache\t1.25\t3 wheels compared"),
            Line::Step("the uv cache".into(), 1.25, "3 wheels compared".into())
        );
        assert_eq!(
            parse("finding\t/opt/x/a.pth\tinstalled by no package"),
            Line::Finding("/opt/x/a.pth".into(), "installed by no package".into())
        );
        assert_eq!(parse("error\tno current"), Line::Error("no current".into()));
        // A name with an escape sequence is printed without it.
        assert_eq!(
            parse("finding\t/opt/x/\u{1b}[2Ja.py\tdiffers"),
            Line::Finding("/opt/x/a.py".into(), "differs".into())
        );
        assert!(matches!(parse("took\tx\tsoon\t"), Line::Other(_)));
        assert!(matches!(parse("finding\tonly a path"), Line::Other(_)));
        assert!(matches!(parse("hello"), Line::Other(_)));
    }

    #[test]
    fn the_facts_come_from_the_contract_and_the_hashes() {
        let hashes = format!(
            "{}  backend/a.py\n{}  scripts/deploy.sh\n",
            "a".repeat(64),
            "b".repeat(64)
        );
        let f = facts(Mode::Check, "/opt/innercontext", &hashes);
        for want in [
            "mode\tcheck",
            "root\t/opt/innercontext",
            "envlink\tbackend/.env\t../../../shared/backend/.env",
            "venvlink\tbackend/.venv\tshared/venvs",
            "venvmarker\t.complete",
            "cache\tshared/uv-cache",
            "record\t.seal",
            "part\tnginx",
            "project\tbackend/uv.lock",
            &format!("want\t{}\tbackend/a.py", "a".repeat(64)),
        ] {
            assert!(f.lines().any(|l| l == want), "no '{want}' in:\n{f}");
        }
        let meta = facts(Mode::Meta, "/opt/innercontext", &hashes);
        assert!(meta.starts_with("mode\tmeta\n") && !meta.contains("want\t"));
        let p = program(&f);
        assert!(p.starts_with(CHECKER) && p.ends_with("sys.exit(main())\n"));
    }

    #[test]
    fn a_checkout_at_another_commit_is_told_which_to_check_out() {
        assert_eq!(mismatch("app1", "abc", &rel("abc", "abc")), None);
        let e = mismatch("app1", "def", &rel("abc", "abc")).unwrap();
        assert_eq!(
            e,
            "current on app1 (20261206T120000Z) was deployed from abc, this checkout is at def: verify compares with what this checkout ships; check out that commit (git checkout abc) and run verify again"
        );
        let e = mismatch("app1", "abc", &rel("abc", "f00")).unwrap();
        assert!(
            e.contains("has the backend of abc and the frontend of f00"),
            "{e}"
        );
        assert!(e.contains("(git checkout f00)"), "{e}");
        assert!(mismatch("app1", "abc", &rel("abc+dirty", "abc+dirty")).is_some());
        assert_eq!(
            mismatch("app1", "abc+dirty", &rel("abc+dirty", "abc+dirty")),
            None
        );
    }

    #[test]
    fn the_verdict_counts_files_per_host() {
        assert_eq!(
            verdict(&[("app1".into(), 0)], 1).unwrap(),
            "verify: current, its virtualenv and the uv cache are as this checkout ships them"
        );
        let e = verdict(
            &[("app1".into(), 3), ("app2".into(), 0), ("app3".into(), 1)],
            3,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "verify found 4 files that are not as shipped (3 on app1, 1 on app3): 'cargo xtask deploy --clean' puts back a known state"
        );
        assert_eq!(
            finding_line("app1", "/opt/x", "a link"),
            "app1: /opt/x: a link"
        );
    }

    /// The checker itself, on a made-up deploy root (as whoever runs the tests: the root check
    /// is the only part that needs root, and meta mode stops before it matters).
    #[test]
    fn the_checker_reads_current_without_following_links() {
        let dir = std::env::temp_dir().join(format!("verify-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rel = dir.join("releases/20261206T120000Z");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(
            rel.join(".release"),
            "commit=abc\nbackend_commit=abc\nfrontend_commit=def\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("releases/20261206T120000Z", dir.join("current")).unwrap();
        let run = |root: &std::path::Path| {
            let facts = facts(Mode::Meta, root.to_str().unwrap(), "");
            let prog = program(&facts).replace("if os.geteuid() != 0:", "if False:");
            let mut child = std::process::Command::new("/usr/bin/python3")
                .args(["-I", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(prog.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (code, out) = run(&dir);
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(out, "release\t20261206T120000Z\tabc\tabc\tdef\n");
        // A deploy root that is a link is not followed.
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let (code, out) = run(&link);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&link);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.starts_with("error\treading "), "{out}");
    }

    /// The checker's release and bytecode rules on a made-up release (the functions called
    /// directly: no root, no uv): a changed, a missing, an unshipped file, a link and a FIFO
    /// are named; the job's links are not; of the bytecode, the one holding another source's
    /// code under a header that matches is named, a true one and a stale one are not.
    #[test]
    fn the_checker_names_what_differs_in_a_release() {
        let test = r#"
import importlib.util, py_compile
d = tempfile.mkdtemp()
rel = os.path.join(d, "releases", "20261206T120000Z")
pkg = rel + "/backend/pkg"
os.makedirs(pkg)
for name, text in [("a.py", "X = 1\n"), ("b.py", "Y = 2\n"), ("c.py", "W = 4\n"), ("changed.py", "Z = 3\n"), ("../extra.py", "")]:
    with open(pkg + "/" + name, "w") as fh:
        fh.write(text)
os.symlink("../../../shared/backend/.env", rel + "/backend/.env")
os.symlink("../../../shared/venvs/0123abcd", rel + "/backend/.venv")
os.symlink("/etc/passwd", pkg + "/link.py")
os.mkfifo(pkg + "/fifo")
with open(rel + "/.state", "w") as fh:
    fh.write("succeeded\n")
def pyc(src, text=None):
    st = os.stat(src)
    if text is not None:
        with open(src) as fh:
            good = fh.read()
        with open(src, "w") as fh:
            fh.write(text)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    py_compile.compile(src, cfile=importlib.util.cache_from_source(src))
    if text is not None:
        with open(src, "w") as fh:
            fh.write(good)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
pyc(pkg + "/a.py")
pyc(pkg + "/b.py", "Y = 9\n")  # another code, same size and time: Python would load it
pyc(pkg + "/c.py", "W = 99\n")  # another size: stale, never loaded
h = lambda t: hashlib.sha256(t.encode()).hexdigest()
want = [("a.py", "X = 1\n"), ("b.py", "Y = 2\n"), ("c.py", "W = 4\n"), ("changed.py", "Z = 0\n"), ("missing.py", "")]
f = facts(DATA.splitlines() + [f"want\t{h(t)}\tbackend/pkg/{n}" for n, t in want])
f["root"] = d
bc = Bytecode()
rootfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
relfd = opendir(opendir(rootfd, "releases"), "20261206T120000Z")
print("venv", check_release(f, rootfd, "20261206T120000Z", relfd, bc))
bc.check()
for path, why in sorted(FOUND):
    print(path[len(d) + 1:] + ": " + why)
shutil.rmtree(d)
"#;
        let facts = facts(Mode::Check, "/unused", "");
        let prog = program(&facts).replace("sys.exit(main())\n", test);
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-I", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(prog.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let r = "releases/20261206T120000Z/backend";
        let want = [
            "venv 0123abcd".to_string(),
            format!("{r}/extra.py: not shipped by this checkout"),
            format!("{r}/pkg/__pycache__/b.cpython-311.pyc: bytecode that is not its source's"),
            format!("{r}/pkg/changed.py: differs from this checkout"),
            format!(
                "{r}/pkg/fifo: not a regular file, not shipped (a release ships regular files)"
            ),
            format!("{r}/pkg/link.py: a link, not shipped (a release ships regular files)"),
            format!("{r}/pkg/missing.py: missing (this checkout ships it)"),
        ];
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            want,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
