//! The deploy pipeline as values: every remote call and the rsync command are built here by
//! pure functions, so `--dry-run` prints exactly what a real run executes and tests can assert
//! on the rendered text. Running them is `deploy`'s job.

use camino::Utf8Path;

use crate::flags::Scope;
use crate::lock::{clean, LockInfo};
use crate::quote;

/// Free space the server must have before a deploy starts.
pub const MIN_FREE_MB: u64 = 300;

/// One call of `scripts/deploy.sh` on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCall {
    pub sub: &'static str,
    pub args: Vec<String>,
}

impl RemoteCall {
    fn new(sub: &'static str, args: impl IntoIterator<Item = String>) -> RemoteCall {
        RemoteCall {
            sub,
            args: args.into_iter().collect(),
        }
    }

    /// The argument vector after the script name.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![self.sub.to_string()];
        v.extend(self.args.iter().cloned());
        v
    }

    /// How the call reads in a plan: exactly the words the remote shell receives.
    pub fn render(&self) -> String {
        format!("scripts/deploy.sh {}", quote::join(self.argv()))
    }
}

fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

pub fn probe(root: &str) -> RemoteCall {
    RemoteCall::new("probe", [root.to_string()])
}

pub fn begin(root: &str, release: &str, scope: &str, lock: &LockInfo) -> RemoteCall {
    let mut args = vec![
        root.to_string(),
        release.to_string(),
        scope.to_string(),
        MIN_FREE_MB.to_string(),
    ];
    args.extend(lock.lines());
    RemoteCall::new("begin", args)
}

pub struct Origin<'a> {
    pub commit: &'a str,
    pub dirty: bool,
    pub deployer: &'a str,
}

pub fn prepare(
    root: &str,
    release: &str,
    scope: Scope,
    current: Option<&str>,
    origin: &Origin,
) -> RemoteCall {
    RemoteCall::new(
        "prepare",
        [
            root.to_string(),
            release.to_string(),
            scope.name().to_string(),
            opt(current),
            clean(origin.commit),
            if origin.dirty { "yes" } else { "no" }.to_string(),
            clean(origin.deployer),
        ],
    )
}

/// What deploy.log records about a deploy or rollback, and which lock it holds.
pub struct Record<'a> {
    pub root: &'a str,
    pub release: &'a str,
    pub token: &'a str,
    /// Start time, `2026-11-28T10:15:30Z`, and as Unix seconds (for the duration).
    pub started: &'a str,
    pub started_epoch: f64,
    pub deployer: &'a str,
    /// Commit, with `+dirty` when the tree had changes.
    pub commit: &'a str,
    pub scope: &'a str,
    pub revision: &'a str,
}

impl Record<'_> {
    fn args(&self) -> Vec<String> {
        vec![
            format!("root={}", self.root),
            format!("release={}", self.release),
            format!("token={}", self.token),
            format!("started={}", clean(self.started)),
            format!("started_epoch={:.3}", self.started_epoch),
            format!("deployer={}", clean(self.deployer).replace(' ', "_")),
            format!("commit={}", clean(self.commit).replace(' ', "_")),
            format!("scope={}", self.scope),
            format!("revision={}", clean(self.revision).replace(' ', "_")),
        ]
    }
}

/// A deploy that never switched: mark the release failed (unless it is a rollback target),
/// log `result`, release the lock.
pub fn fail(rec: &Record, result: &str, mark: bool) -> RemoteCall {
    let mut args = rec.args();
    args.push(format!("result={result}"));
    args.push(format!("mark={}", if mark { "yes" } else { "no" }));
    RemoteCall::new("fail", args)
}

/// Switch, restart, check health, then finish or put `previous` back: run on the server as a
/// job that completes even if this client dies.
pub fn activate(
    rec: &Record,
    previous: Option<&str>,
    restart: &[&str],
    timeout_secs: u64,
    prune: &[String],
    mark: bool,
) -> RemoteCall {
    let mut args = rec.args();
    args.extend([
        format!("previous={}", opt(previous)),
        format!("restart={}", restart.join(",")),
        format!("check={}", crate::health::ALL_UNITS.join(",")),
        format!("probe={}", crate::health::PROBES.join(",")),
        format!("timeout={timeout_secs}"),
        format!("stable={}", crate::health::STABLE_POLLS),
        format!("prune={}", prune.join(",")),
        format!("mark={}", if mark { "yes" } else { "no" }),
    ]);
    RemoteCall::new("activate", args)
}

pub fn unlock(root: &str, token: &str) -> RemoteCall {
    RemoteCall::new("unlock", [root.to_string(), token.to_string()])
}

pub fn sizes(root: &str, names: &[String]) -> RemoteCall {
    let mut args = vec![root.to_string()];
    args.extend(names.iter().cloned());
    RemoteCall::new("sizes", args)
}

pub fn dbcheck(root: &str, target: &str) -> RemoteCall {
    RemoteCall::new("dbcheck", [root.to_string(), target.to_string()])
}

pub fn status(root: &str) -> RemoteCall {
    RemoteCall::new("status", [root.to_string()])
}

/// Which repository paths a release of `scope` uploads, given every candidate path (tracked
/// and untracked-but-not-ignored files, plus the frontend build output).
pub fn upload_selection(paths: &[String], scope: Scope) -> Vec<String> {
    let always = ["scripts/", "systemd/", "nginx/"];
    paths
        .iter()
        .filter(|p| {
            always.iter().any(|a| p.starts_with(a))
                || (scope.backend() && p.starts_with("backend/") && !junk(p))
                || (scope.frontend()
                    && (p.starts_with("frontend/build/") || p.as_str() == "frontend/package.json"))
        })
        .cloned()
        .collect()
}

/// Files under backend/ that never belong in a release even if untracked and not ignored.
fn junk(path: &str) -> bool {
    path.split('/').any(|part| {
        matches!(
            part,
            ".venv" | "__pycache__" | ".pytest_cache" | ".ruff_cache" | ".env"
        )
    })
}

/// The rsync command (argv without the program name). Unchanged files are hard-linked from
/// the current release on the server (`--link-dest` + `--checksum`), so only changed bytes
/// travel. Permissions are kept minus group/other write; times are not (a rebuilt but identical
/// file must still match).
pub fn rsync_args(
    rsh: &str,
    dest: &str,
    root: &str,
    release: &str,
    current: Option<&str>,
    progress: bool,
    file_list: &Utf8Path,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--from0",
        "--checksum",
        "--links",
        "--perms",
        "--chmod=go-w",
        "--omit-dir-times",
        "--stats",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--files-from={file_list}"));
    if progress {
        args.push("--info=progress2".to_string());
    }
    if let Some(cur) = current {
        args.push(format!("--link-dest={root}/releases/{cur}"));
    }
    args.push("-e".to_string());
    args.push(rsh.to_string());
    args.push("./".to_string());
    args.push(format!("{dest}:{root}/releases/{release}/"));
    args
}

/// `Total bytes sent: 1,234` and friends from rsync --stats.
pub fn rsync_stat(output: &str, label: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?.strip_prefix(':')?;
        let digits: String = rest
            .split_whitespace()
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> LockInfo {
        LockInfo {
            user: "alice".into(),
            host: "laptop".into(),
            pid: 7,
            started: "2026-11-28T10:15:30Z".into(),
            started_epoch: 1,
            command: "deploy all".into(),
            commit: "abc".into(),
            token: "7-1".into(),
        }
    }

    #[test]
    fn remote_calls_render_quoted() {
        let b = begin("/opt/innercontext", "20261128T101530Z", "all", &lock());
        assert_eq!(
            b.render(),
            "scripts/deploy.sh begin /opt/innercontext 20261128T101530Z all 300 user=alice host=laptop pid=7 started=2026-11-28T10:15:30Z started_epoch=1 'command=deploy all' commit=abc token=7-1"
        );
    }

    #[test]
    fn prepare_carries_origin() {
        let o = Origin {
            commit: "abc1234",
            dirty: true,
            deployer: "alice@laptop",
        };
        let p = prepare(
            "/opt/ic",
            "20261128T101530Z",
            Scope::Backend,
            Some("20261128T000000Z"),
            &o,
        );
        assert_eq!(
            p.argv(),
            vec![
                "prepare",
                "/opt/ic",
                "20261128T101530Z",
                "backend",
                "20261128T000000Z",
                "abc1234",
                "yes",
                "alice@laptop"
            ]
        );
    }

    #[test]
    fn upload_selection_follows_scope() {
        let paths: Vec<String> = [
            "backend/pyproject.toml",
            "backend/innercontext/main.py",
            "backend/.venv/bin/python",
            "backend/innercontext/__pycache__/main.cpython-311.pyc",
            "backend/.env",
            "frontend/package.json",
            "frontend/src/routes/+page.svelte",
            "frontend/build/index.js",
            "scripts/deploy.sh",
            "systemd/innercontext.service",
            "nginx/innercontext.conf",
            "README.md",
            "xtask/src/main.rs",
        ]
        .map(String::from)
        .to_vec();
        let all = upload_selection(&paths, Scope::All);
        assert_eq!(
            all,
            vec![
                "backend/pyproject.toml",
                "backend/innercontext/main.py",
                "frontend/package.json",
                "frontend/build/index.js",
                "scripts/deploy.sh",
                "systemd/innercontext.service",
                "nginx/innercontext.conf"
            ]
        );
        let be = upload_selection(&paths, Scope::Backend);
        assert!(be.iter().all(|p| !p.starts_with("frontend/")));
        assert!(be.contains(&"scripts/deploy.sh".to_string()));
        let fe = upload_selection(&paths, Scope::Frontend);
        assert!(fe.iter().all(|p| !p.starts_with("backend/")));
        assert!(!fe.contains(&"frontend/src/routes/+page.svelte".to_string()));
    }

    #[test]
    fn rsync_links_against_current() {
        let a = rsync_args(
            "ssh -o ControlPath=/tmp/c",
            "innercontext@app",
            "/opt/ic",
            "20261128T101530Z",
            Some("20261128T000000Z"),
            false,
            Utf8Path::new("/tmp/list"),
        );
        assert!(a.contains(&"--link-dest=/opt/ic/releases/20261128T000000Z".to_string()));
        assert!(a.contains(&"--checksum".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--info=progress")));
        assert_eq!(
            a.last().unwrap(),
            "innercontext@app:/opt/ic/releases/20261128T101530Z/"
        );
        let first = rsync_args(
            "ssh",
            "h",
            "/r",
            "20261128T101530Z",
            None,
            true,
            Utf8Path::new("/l"),
        );
        assert!(!first.iter().any(|x| x.starts_with("--link-dest")));
        assert!(first.contains(&"--info=progress2".to_string()));
    }

    #[test]
    fn rsync_stats_parse() {
        let out = "Number of files: 120 (reg: 100, dir: 20)\nTotal file size: 1,234,567 bytes\nTotal bytes sent: 4,321\nTotal bytes received: 99\n";
        assert_eq!(rsync_stat(out, "Total bytes sent"), Some(4321));
        assert_eq!(rsync_stat(out, "Total file size"), Some(1_234_567));
        assert_eq!(rsync_stat(out, "Missing"), None);
    }

    #[test]
    fn activation_carries_everything_the_server_needs_to_finish_alone() {
        let rec = Record {
            root: "/opt/ic",
            release: "20261128T101530Z",
            token: "7-1",
            started: "2026-11-28T10:15:30Z",
            started_epoch: 1795860930.25,
            deployer: "eve\nforged line",
            commit: "abc1234+dirty",
            scope: "backend",
            revision: "0002_price_history",
        };
        let a = activate(
            &rec,
            Some("20261128T000000Z"),
            &["innercontext", "innercontext-pricing-worker"],
            60,
            &["20261101T000000Z".into(), "20261102T000000Z".into()],
            true,
        );
        assert_eq!(
            a.render(),
            "scripts/deploy.sh activate root=/opt/ic release=20261128T101530Z token=7-1 started=2026-11-28T10:15:30Z started_epoch=1795860930.250 deployer=eve_forged_line commit=abc1234+dirty scope=backend revision=0002_price_history previous=20261128T000000Z restart=innercontext,innercontext-pricing-worker check=innercontext,innercontext-node,innercontext-pricing-worker probe=http://127.0.0.1:8000/health-check,http://127.0.0.1:3000/ timeout=60 stable=4 prune=20261101T000000Z,20261102T000000Z mark=yes"
        );
        let f = fail(&rec, "interrupted", false);
        assert!(
            f.render().ends_with("result=interrupted mark=no"),
            "{}",
            f.render()
        );
    }
}
