//! The local PostgreSQL of the backend checks: a warm cluster kept between runs, a fresh
//! database per run ([`WarmDb`]: `cargo xtask check`, the deploy's checks), and a throwaway
//! one removed on drop ([`Throwaway`]: `cargo xtask ci`'s backend stage, the benchmark).
//!
//! Run as root, the server runs as `postgres` (initdb refuses root), which may not enter the
//! checkout (a clone in root's 0700 home). So its files live outside the checkout, in a
//! directory of its own that `postgres` owns (0700) under [`RUN_DIR`] (root's, 0755: nobody
//! else can make a name there), named after the checkout so two checkouts never share a
//! cluster; root keeps its own record (the port) beside it, never inside. Run as anyone else,
//! everything is that user's: the warm cluster lives in the checkout (`target/checks/pg`), a
//! throwaway one in a fresh private directory under the temporary directory. Every PostgreSQL
//! program runs with its working directory at `/`, and the server listens on 127.0.0.1 only,
//! its Unix socket in its own directory.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::tools;

/// Where the PostgreSQL server binaries live (Debian 12).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Root's directory of clusters run as `postgres`.
pub const RUN_DIR: &str = "/run/innercontext-pg";

/// Who runs the server and owns its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// We are root: the `postgres` user, through `runuser`.
    Postgres,
    /// This user, directly.
    Me,
}

impl Owner {
    pub fn current() -> Owner {
        if tools::is_root() {
            Owner::Postgres
        } else {
            Owner::Me
        }
    }
}

/// A short, stable name for the checkout at `root` (absolute): its last component, cut to
/// letters, digits and dashes, and a hash of the whole path (two checkouts never share it).
pub fn checkout_key(root: &Utf8Path) -> String {
    let base: String = root
        .file_name()
        .unwrap_or("root")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    format!("{base}-{}", &fnv(root.as_str())[..12])
}

/// The directory of the warm cluster of the checkout at `root`.
pub fn warm_dir(root: &Utf8Path, owner: Owner) -> Utf8PathBuf {
    match owner {
        Owner::Me => root.join("target/checks/pg"),
        Owner::Postgres => Utf8Path::new(RUN_DIR).join(format!("checks-{}", checkout_key(root))),
    }
}

/// Where the port of the cluster in `dir` is recorded: beside it, in its parent (root's own
/// directory when the cluster is `postgres`'s).
pub fn port_file(dir: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{dir}.port"))
}

/// Where root records which checkout a warm cluster in [`RUN_DIR`] belongs to (beside it).
fn checkout_file(dir: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{dir}.checkout"))
}

/// FNV-1a of `s`, 16 hex digits.
fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A cluster in `dir` (`data/`, `log`, the socket), run by `owner`.
struct Cluster {
    dir: Utf8PathBuf,
    owner: Owner,
}

impl Cluster {
    fn data(&self) -> Utf8PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL program as the owner, working directory `/` (the owner may not be able to
    /// enter ours), stdin from /dev/null.
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = format!("{PG_BIN}/{tool}");
        let mut c = match self.owner {
            Owner::Postgres => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", &exe]);
                c
            }
            Owner::Me => Command::new(&exe),
        };
        c.args(args).current_dir("/").stdin(Stdio::null());
        c
    }

    /// Run a program quietly; on failure, what failed and its stderr.
    fn run(&self, what: &str, tool: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(tool, args)
            .output()
            .with_context(|| format!("running {what} ({PG_BIN}/{tool})"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Make the cluster's directory, new and private to its owner.
    fn make_dir(&self) -> Result<()> {
        if self.owner == Owner::Postgres {
            ensure_run_dir()?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} already exists: remove it (a cluster directory is always made new)",
                self.dir
            ),
            Err(e) => return Err(e).with_context(|| format!("creating {}", self.dir)),
        }
        if self.owner == Owner::Postgres {
            // Made a moment ago by root in root's directory: nobody can have swapped it.
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::lchown(&self.dir, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to postgres", self.dir))?;
        }
        Ok(())
    }

    fn init(&self) -> Result<()> {
        self.make_dir()?;
        let data = self.data();
        self.run(
            "initdb for the checks' database",
            "initdb",
            &[
                "-D",
                data.as_str(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                // Whatever the caller's locale: UTF-8, or drivers see SQL_ASCII bytes.
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        )
    }

    fn start(&self, port: u16) -> Result<()> {
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.dir
        );
        let data = self.data();
        let log = self.dir.join("log");
        self.run(
            &format!("starting the checks' PostgreSQL (log: {log})"),
            "pg_ctl",
            &[
                "-D",
                data.as_str(),
                "-o",
                &opts,
                "-l",
                log.as_str(),
                "-w",
                "start",
            ],
        )
    }

    fn running(&self) -> bool {
        let data = self.data();
        data.join("postmaster.pid").exists()
            && self
                .command("pg_ctl", &["-D", data.as_str(), "status"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    fn stop(&self, mode: &str) -> Result<()> {
        let data = self.data();
        self.run(
            "stopping the checks' PostgreSQL",
            "pg_ctl",
            &["-D", data.as_str(), "-m", mode, "-w", "stop"],
        )
    }

    fn createdb(&self, port: u16, name: &str) -> Result<()> {
        let port = port.to_string();
        self.run(
            &format!("createdb {name} for the checks"),
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        )
    }

    fn dropdb(&self, port: u16, name: &str) -> Result<()> {
        let port = port.to_string();
        self.run(
            &format!("dropdb {name}"),
            "dropdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        )
    }

    /// Remove the directory (never following a link inside it).
    fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir))
            }
            _ => Ok(()),
        }
    }
}

/// [`RUN_DIR`], root's and not writable by anyone else (made if missing).
fn ensure_run_dir() -> Result<()> {
    let dir = Utf8Path::new(RUN_DIR);
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {dir}")),
    }
    let meta = fs_err::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!(
            "{dir} is not a directory of root's that only root can write to (a {}, uid {}, mode {:o}): remove it and run again",
            if meta.file_type().is_symlink() { "symlink" } else if meta.is_dir() { "directory" } else { "file" },
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    // A umask may have taken bits away: others must be able to pass through it.
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .stdin(Stdio::null())
            .output()
            .context("running id")?;
        if !out.status.success() {
            bail!("there is no postgres user: apt-get install postgresql (or run 'cargo xtask ci --only tools')");
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("reading the postgres user's id")
    };
    Ok((id("-u")?, id("-g")?))
}

fn require_binaries() -> Result<()> {
    if !Utf8Path::new(PG_BIN).join("initdb").exists() {
        bail!("PostgreSQL 15 server binaries are missing: apt-get install postgresql (or run 'cargo xtask ci --only tools')");
    }
    Ok(())
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A fresh database in the warm cluster of a checkout; [`WarmDb::drop_database`] removes it.
pub struct WarmDb {
    pub url: String,
    name: String,
    port: u16,
    cluster: Cluster,
}

impl WarmDb {
    /// Start the checkout's cluster unless it runs, and make a fresh database for this run.
    pub fn database(root: &Utf8Path) -> Result<WarmDb> {
        require_binaries()?;
        let owner = Owner::current();
        if owner == Owner::Postgres {
            ensure_run_dir()?;
            stop_orphans();
        }
        let dir = warm_dir(root, owner);
        let cluster = Cluster {
            dir: dir.clone(),
            owner,
        };
        let port_file = port_file(&dir);
        if !cluster.running() {
            cluster.remove()?;
            if let Some(parent) = dir.parent().filter(|_| owner == Owner::Me) {
                fs_err::create_dir_all(parent)?;
            }
            if owner == Owner::Postgres {
                fs_err::write(checkout_file(&dir), root.as_str())?;
            }
            cluster.init()?;
            let port = free_port()?;
            cluster.start(port)?;
            fs_err::write(&port_file, port.to_string())?;
        }
        let port: u16 = fs_err::read_to_string(&port_file)?
            .trim()
            .parse()
            .context("reading the checks' PostgreSQL port")?;
        let name = format!("innercontext_test_{}", std::process::id());
        cluster.createdb(port, &name)?;
        Ok(WarmDb {
            url: format!("postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"),
            name,
            port,
            cluster,
        })
    }

    pub fn drop_database(&self) {
        let _ = self.cluster.dropdb(self.port, &self.name);
    }
}

/// Stop the warm cluster of the checkout at `root` and remove its files.
pub fn stop_warm(root: &Utf8Path) -> Result<()> {
    let owner = Owner::current();
    if owner == Owner::Postgres && !Utf8Path::new(RUN_DIR).exists() {
        return Ok(());
    }
    stop_and_remove(Cluster {
        dir: warm_dir(root, owner),
        owner,
    })
}

fn stop_and_remove(cluster: Cluster) -> Result<()> {
    if cluster.data().join("postmaster.pid").exists() {
        cluster.stop("fast")?;
    }
    cluster.remove()?;
    for f in [port_file(&cluster.dir), checkout_file(&cluster.dir)] {
        if f.exists() {
            fs_err::remove_file(f)?;
        }
    }
    Ok(())
}

/// Stop the warm clusters in [`RUN_DIR`] whose checkout is gone (a scratch copy removed by a
/// run that was killed): nothing else would.
fn stop_orphans() {
    let Ok(entries) = Utf8Path::new(RUN_DIR).read_dir_utf8() else {
        return;
    };
    for e in entries.flatten() {
        let Some(dir) = e.path().as_str().strip_suffix(".checkout") else {
            continue;
        };
        let gone = std::fs::read_to_string(e.path())
            .is_ok_and(|root| !Utf8Path::new(root.trim()).is_dir());
        if gone {
            let _ = stop_and_remove(Cluster {
                dir: dir.into(),
                owner: Owner::Postgres,
            });
        }
    }
}

/// A throwaway cluster on 127.0.0.1 with the database `innercontext_test`, stopped and removed
/// on drop.
pub struct Throwaway {
    cluster: Cluster,
    port: u16,
}

impl Throwaway {
    pub fn start() -> Result<Throwaway> {
        require_binaries()?;
        let owner = Owner::current();
        if owner == Owner::Postgres {
            ensure_run_dir()?;
        }
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let dir = match owner {
            Owner::Postgres => Utf8Path::new(RUN_DIR).join(format!("ci-{unique}")),
            Owner::Me => Utf8PathBuf::from_path_buf(std::env::temp_dir())
                .map_err(|p| anyhow::anyhow!("temporary directory {} is not UTF-8", p.display()))?
                .join(format!("innercontext-pg-{unique}")),
        };
        let cluster = Cluster { dir, owner };
        cluster.init()?;
        let pg = Throwaway {
            cluster,
            port: free_port()?,
        };
        pg.cluster.start(pg.port)?;
        pg.cluster.createdb(pg.port, "innercontext_test")?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql+psycopg://postgres@127.0.0.1:{}/innercontext_test",
            self.port
        )
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.cluster.stop("immediate");
        let _ = self.cluster.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_checkout_gets_a_cluster_of_its_own() {
        let a = checkout_key(Utf8Path::new("/root/innercontext"));
        let b = checkout_key(Utf8Path::new("/home/ann/innercontext"));
        assert!(a.starts_with("innercontext-") && b.starts_with("innercontext-"));
        assert_ne!(a, b);
        assert_eq!(a, checkout_key(Utf8Path::new("/root/innercontext")));
        // Only safe characters, and short: the socket path must stay under 108 bytes.
        let odd = checkout_key(Utf8Path::new(
            "/tmp/My Checkout (copy) with a very long name",
        ));
        assert!(odd.len() <= 24 + 1 + 12, "{odd}");
        assert!(odd
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(checkout_key(Utf8Path::new("/")).len(), "root-".len() + 12);
    }

    #[test]
    fn as_root_the_cluster_lives_outside_the_checkout() {
        let root = Utf8Path::new("/root/src/innercontext");
        let mine = warm_dir(root, Owner::Me);
        assert_eq!(mine, "/root/src/innercontext/target/checks/pg");
        let theirs = warm_dir(root, Owner::Postgres);
        assert!(!theirs.starts_with(root), "{theirs}");
        assert_eq!(theirs.parent(), Some(Utf8Path::new(RUN_DIR)));
        assert_eq!(
            theirs.file_name().unwrap(),
            format!("checks-{}", checkout_key(root))
        );
        // Root's record of the port is beside the cluster's directory, not inside it.
        assert_eq!(port_file(&theirs).parent(), Some(Utf8Path::new(RUN_DIR)));
        let socket = theirs.join(".s.PGSQL.65535");
        assert!(socket.as_str().len() < 108, "{socket}");
    }

    #[test]
    fn programs_run_from_the_root_directory() {
        for owner in [Owner::Me, Owner::Postgres] {
            let c = Cluster {
                dir: "/x".into(),
                owner,
            };
            let cmd = c.command("initdb", &["-D", "/x/data"]);
            assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/")));
            let argv: Vec<String> = std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let expected: Vec<String> = match owner {
                Owner::Postgres => ["runuser", "-u", "postgres", "--"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                Owner::Me => Vec::new(),
            }
            .into_iter()
            .chain([format!("{PG_BIN}/initdb"), "-D".into(), "/x/data".into()])
            .collect();
            assert_eq!(argv, expected);
        }
    }
}
