//! What the frontend build produced, and whether it is all still there.
//!
//! When the build passes, the check cache records every file under `frontend/build/` with its
//! SHA-256: a [`Manifest`] beside the cache marker, in `sha256sum`'s format (so
//! `sha256sum -c target/checks/build-*.manifest` checks it by hand from the repository root). A
//! cached build is trusted only while the files on disk are exactly those ([`compare`]: none
//! missing, none added, none changed). Whatever the cache says, [`lacking`] names what a
//! release's frontend cannot go without: the server's entry point and the client files (every
//! file of `frontend/static/`, and `_app/version.json`, which every SvelteKit build writes).
//!
//! Hashing runs one `sha256sum` over the whole build (2 MB, 140 files: a few milliseconds),
//! and only when a marker says the build passed before.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;

/// The build's output directory, from the repository root.
pub const BUILD_DIR: &str = "frontend/build";
/// The Node.js server the `innercontext-node` unit runs.
pub const ENTRY: &str = "frontend/build/index.js";
/// What nginx serves as static files.
pub const CLIENT_DIR: &str = "frontend/build/client";
/// Files copied into the client directory as they are.
pub const STATIC_DIR: &str = "frontend/static";

/// Every file of a build: its path from the repository root and its SHA-256 (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    files: BTreeMap<String, String>,
}

impl Manifest {
    pub fn from_pairs<P: Into<String>, H: Into<String>>(
        pairs: impl IntoIterator<Item = (P, H)>,
    ) -> Manifest {
        Manifest {
            files: pairs
                .into_iter()
                .map(|(p, h)| (p.into(), h.into()))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// `HASH  PATH` lines, sorted by path (`sha256sum`'s own format).
    pub fn render(&self) -> String {
        self.files
            .iter()
            .map(|(p, h)| format!("{h}  {p}\n"))
            .collect()
    }

    /// What [`Manifest::render`] wrote; anything else is an error (the cache then rebuilds).
    pub fn parse(text: &str) -> Result<Manifest> {
        let mut files = BTreeMap::new();
        for line in text.lines() {
            let (hash, path) =
                split_record(line).with_context(|| format!("not a manifest line: {line:?}"))?;
            files.insert(path.to_string(), hash.to_string());
        }
        Ok(Manifest { files })
    }

    /// The build as it is on disk under `root` (empty when there is no build).
    pub fn of_disk(root: &Utf8Path) -> Result<Manifest> {
        let paths = files_under(root, BUILD_DIR)?;
        if paths.is_empty() {
            return Ok(Manifest::default());
        }
        let out = Command::new("sha256sum")
            .arg("--zero")
            .arg("--")
            .args(&paths)
            .current_dir(root)
            .output()
            .context("running sha256sum over the frontend build")?;
        if !out.status.success() {
            bail!(
                "sha256sum over {BUILD_DIR} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8(out.stdout).context("sha256sum printed non-UTF-8")?;
        let mut files = BTreeMap::new();
        for record in text.split('\0').filter(|r| !r.is_empty()) {
            let (hash, path) = split_record(record)
                .with_context(|| format!("unexpected sha256sum output: {record:?}"))?;
            files.insert(path.to_string(), hash.to_string());
        }
        if files.len() != paths.len() {
            bail!(
                "sha256sum hashed {} of the {} files under {BUILD_DIR}",
                files.len(),
                paths.len()
            );
        }
        Ok(Manifest { files })
    }
}

/// `HASH  PATH` (or `HASH *PATH`, binary mode): 64 hex digits, a space, a mode character.
fn split_record(line: &str) -> Option<(&str, &str)> {
    let hash = line.get(..64)?;
    let rest = line.get(64..)?;
    let path = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    let hex = hash
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    (hex && !path.is_empty()).then_some((hash, path))
}

/// Why the build on disk is not the recorded one, in a few words for a step line
/// (`frontend/build/client/ is missing (133 files)`), or None when it is exactly the same.
pub fn compare(recorded: &Manifest, disk: &Manifest) -> Option<String> {
    let missing: Vec<&String> = recorded
        .files
        .keys()
        .filter(|p| !disk.files.contains_key(*p))
        .collect();
    let changed: Vec<&String> = recorded
        .files
        .iter()
        .filter(|(p, h)| disk.files.get(*p).is_some_and(|d| d != *h))
        .map(|(p, _)| p)
        .collect();
    let new: Vec<&String> = disk
        .files
        .keys()
        .filter(|p| !recorded.files.contains_key(*p))
        .collect();
    let total = missing.len() + changed.len() + new.len();
    let (first, counted) = if let Some(p) = missing.first() {
        // The highest directory of which nothing is left says more than its first file.
        match gone_dir(p, disk) {
            Some(dir) => {
                let n = missing
                    .iter()
                    .filter(|m| m.starts_with(dir.as_str()))
                    .count();
                (format!("{dir} is missing ({n} files)"), n)
            }
            None => (format!("{p} is missing"), 1),
        }
    } else if let Some(p) = changed.first() {
        (format!("{p} changed"), 1)
    } else if let Some(p) = new.first() {
        (format!("{p} was not in that build"), 1)
    } else {
        return None;
    };
    Some(match total - counted {
        0 => first,
        more => format!("{first}, and {more} more difference(s)"),
    })
}

/// The highest directory above `path` (below the build directory itself, or the build
/// directory when nothing of it is left) of which the disk has no file: `dir/`.
fn gone_dir(path: &str, disk: &Manifest) -> Option<String> {
    let mut found = None;
    let mut end = path.len();
    while let Some(slash) = path[..end].rfind('/') {
        let dir = &path[..=slash];
        if dir.len() <= BUILD_DIR.len() && dir != format!("{BUILD_DIR}/") {
            break;
        }
        if disk.files.keys().any(|p| p.starts_with(dir)) {
            break;
        }
        found = Some(dir.to_string());
        end = slash;
    }
    found
}

/// What a release's frontend lacks, given the candidate paths of the release (the build's
/// files and the repository's, `frontend/static/` included): its entry point, the client's
/// `_app/version.json` and a copy of every static file. Empty when nothing is missing.
pub fn lacking(paths: &[String]) -> Vec<String> {
    let mut need = vec![ENTRY.to_string(), format!("{CLIENT_DIR}/_app/version.json")];
    need.extend(
        paths
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{STATIC_DIR}/")))
            .map(|rel| format!("{CLIENT_DIR}/{rel}")),
    );
    need.sort();
    need.dedup();
    need.retain(|n| !paths.contains(n));
    need
}

/// The regular files under `root/rel`, as paths from `root`, sorted; none when it is missing.
pub fn files_under(root: &Utf8Path, rel: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if root.join(rel).is_dir() {
        walk(root, rel, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Utf8Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in fs_err::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("non-UTF-8 file name {n:?} under {rel}"))?;
        if name.contains('\n') {
            bail!("a file name with a newline under {rel}: {name:?}");
        }
        let path = format!("{rel}/{name}");
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use camino::Utf8PathBuf;

    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn built() -> Manifest {
        Manifest::from_pairs([
            ("frontend/build/index.js", H1),
            ("frontend/build/handler.js", H1),
            ("frontend/build/client/favicon.svg", H1),
            ("frontend/build/client/robots.txt", H1),
            ("frontend/build/client/_app/version.json", H1),
            ("frontend/build/client/_app/immutable/a.js", H1),
        ])
    }

    fn without(m: &Manifest, gone: &str) -> Manifest {
        Manifest::from_pairs(
            m.files
                .iter()
                .filter(|(p, _)| !p.starts_with(gone))
                .map(|(p, h)| (p.clone(), h.clone())),
        )
    }

    #[test]
    fn the_same_build_matches() {
        assert_eq!(compare(&built(), &built()), None);
        assert_eq!(compare(&Manifest::default(), &Manifest::default()), None);
    }

    #[test]
    fn a_missing_file_or_directory_is_named() {
        let b = built();
        assert_eq!(
            compare(&b, &without(&b, "frontend/build/client/favicon.svg")).as_deref(),
            Some("frontend/build/client/favicon.svg is missing")
        );
        // client/ deleted, index.js kept (issue 22).
        assert_eq!(
            compare(&b, &without(&b, "frontend/build/client")).as_deref(),
            Some("frontend/build/client/ is missing (4 files)")
        );
        assert_eq!(
            compare(&b, &without(&b, "frontend/build/client/_app")).as_deref(),
            Some("frontend/build/client/_app/ is missing (2 files)")
        );
        assert_eq!(
            compare(&b, &Manifest::default()).as_deref(),
            Some("frontend/build/ is missing (6 files)")
        );
    }

    #[test]
    fn changed_and_new_files_are_named_and_counted() {
        let b = built();
        let mut changed = b.clone();
        changed
            .files
            .insert("frontend/build/index.js".into(), H2.into());
        assert_eq!(
            compare(&b, &changed).as_deref(),
            Some("frontend/build/index.js changed")
        );
        let mut more = changed.clone();
        more.files
            .insert("frontend/build/stray.js".into(), H1.into());
        more.files.remove("frontend/build/client/robots.txt");
        assert_eq!(
            compare(&b, &more).as_deref(),
            Some("frontend/build/client/robots.txt is missing, and 2 more difference(s)")
        );
        let mut new = b.clone();
        new.files
            .insert("frontend/build/stray.js".into(), H1.into());
        assert_eq!(
            compare(&b, &new).as_deref(),
            Some("frontend/build/stray.js was not in that build")
        );
    }

    #[test]
    fn the_manifest_reads_back_and_refuses_anything_else() {
        let b = built();
        let text = b.render();
        assert!(text.starts_with(&format!("{H1}  frontend/build/client/_app/")));
        assert_eq!(Manifest::parse(&text).unwrap(), b);
        assert!(Manifest::parse("not a manifest\n").is_err());
        assert!(Manifest::parse(&format!("{}  x\n", &H1[..63])).is_err());
        assert!(Manifest::parse(&format!("{}  x\n", "A".repeat(64))).is_err());
        assert!(Manifest::parse(&format!("{}  x\n", "a".repeat(64))).is_ok());
        assert_eq!(Manifest::parse("").unwrap(), Manifest::default());
    }

    #[test]
    fn a_release_needs_the_entry_point_and_the_client_files() {
        let mut paths: Vec<String> = [
            "frontend/static/favicon.svg",
            "frontend/static/robots.txt",
            "frontend/build/index.js",
            "frontend/build/client/favicon.svg",
            "frontend/build/client/robots.txt",
            "frontend/build/client/_app/version.json",
        ]
        .map(String::from)
        .to_vec();
        assert!(lacking(&paths).is_empty());
        // client/ deleted, index.js kept: everything nginx serves is named.
        paths.retain(|p| !p.starts_with("frontend/build/client/"));
        assert_eq!(
            lacking(&paths),
            [
                "frontend/build/client/_app/version.json",
                "frontend/build/client/favicon.svg",
                "frontend/build/client/robots.txt",
            ]
        );
        assert_eq!(
            lacking(&["frontend/static/robots.txt".to_string()]),
            [
                "frontend/build/client/_app/version.json",
                "frontend/build/client/robots.txt",
                "frontend/build/index.js",
            ]
        );
    }

    #[test]
    fn the_disk_is_hashed_as_sha256sum_does() {
        let root = Utf8PathBuf::from_path_buf(
            std::env::temp_dir().join(format!("build-output-{}", std::process::id())),
        )
        .unwrap();
        let _ = fs_err::remove_dir_all(&root);
        assert!(Manifest::of_disk(&root).unwrap().is_empty());
        fs_err::create_dir_all(root.join("frontend/build/client/a dir")).unwrap();
        fs_err::write(root.join("frontend/build/index.js"), "").unwrap();
        fs_err::write(root.join("frontend/build/client/a dir/x y.txt"), "abc").unwrap();
        let m = Manifest::of_disk(&root).unwrap();
        assert_eq!(
            m,
            Manifest::from_pairs([
                (
                    "frontend/build/client/a dir/x y.txt",
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                ),
                (
                    "frontend/build/index.js",
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                ),
            ])
        );
        fs_err::write(root.join("frontend/build/index.js"), "changed").unwrap();
        assert_eq!(
            compare(&m, &Manifest::of_disk(&root).unwrap()).as_deref(),
            Some("frontend/build/index.js changed")
        );
        fs_err::remove_dir_all(&root).unwrap();
    }
}
