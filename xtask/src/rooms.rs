//! Tests only: the rooms of `xtask/src` import each other without a circle (a lower room never
//! imports a higher one), and no room is over 700 lines. A room's imports are read from its
//! non-test code: `crate::…` and `super::…` paths (in `use` trees too), and a module file's
//! own children named as `child::…`.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};

/// Circles allowed for now, each a set of modules: `flags/` is shaped by its own work (its
/// tables and its types refer to each other).
const ALLOWED: &[&[&str]] = &[&["flags", "flags::commands", "flags::operate", "flags::table"]];

/// Every `.rs` file under `dir`.
fn files(dir: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in d.read_dir_utf8().unwrap() {
            let p = e.unwrap().path().to_path_buf();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension() == Some("rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `deploy/job.rs` -> `deploy::job`; `deploy/mod.rs` -> `deploy`; `lib.rs`, `main.rs` -> `crate`.
fn module_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<&str> = rel.split('/').collect();
    if matches!(parts.last(), Some(&("mod" | "lib" | "main"))) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_string()
    } else {
        parts.join("::")
    }
}

/// The code without comments, string and char literals (each literal becomes `""`), and
/// without a trailing `#[cfg(test)] mod tests { … }`.
fn code(src: &str) -> String {
    let src = match src.find("\n#[cfg(test)]\nmod tests {") {
        Some(i) => &src[..i],
        None => src,
    };
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if b[i] == b'"' || raw_string_at(src, i) {
            let raw = b[i] == b'r';
            let hashes = if raw {
                rest[1..].bytes().take_while(|&c| c == b'#').count()
            } else {
                0
            };
            let start = i + usize::from(raw) + hashes + 1;
            let end = if raw {
                start
                    + src[start..]
                        .find(&format!("\"{}", "#".repeat(hashes)))
                        .unwrap()
            } else {
                let mut k = start;
                while b[k] != b'"' {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                k
            };
            out.push_str("\"\"");
            i = end + 1 + if raw { hashes } else { 0 };
        } else if b[i] == b'\'' {
            let lit = rest[1..]
                .find('\'')
                .filter(|&e| e <= 10 && (e == 1 || rest[1..].starts_with('\\')));
            match lit {
                Some(e) => i += e + 2,
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether a raw string (`r"…"`, `r#"…"#`) starts at `i` (not an identifier ending in r).
fn raw_string_at(src: &str, i: usize) -> bool {
    let b = src.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    b[i] == b'r'
        && (i == 0 || !ident(b[i - 1]) || b[i - 1] == b'b')
        && src[i + 1..].trim_start_matches('#').starts_with('"')
}

/// The paths a `use` tree names: `crate::{a, b::{c, d}}` -> `crate::a`, `crate::b::c`, ….
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (head, body) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{head}{p}")))
        .collect()
}

/// The longest prefix of `path` (segments) that is a module.
fn resolve(path: &[&str], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Module -> the modules it imports.
fn graph(src_dir: &Utf8Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut texts = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    let sources: Vec<(String, String)> = files(src_dir)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(src_dir).unwrap().as_str().to_string();
            (module_of(&rel), fs_err::read_to_string(&f).unwrap())
        })
        .collect();
    for (me, text) in &sources {
        // `#[cfg(test)] mod NAME;`: NAME is test code.
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.trim() == "#[cfg(test)]" {
                if let Some(name) = lines.next().and_then(|n| {
                    let n = n.trim();
                    let n = n.strip_prefix("pub(crate) ").unwrap_or(n);
                    n.strip_prefix("mod ")?.strip_suffix(';')
                }) {
                    test_only.insert(if *me == "crate" {
                        name.to_string()
                    } else {
                        format!("{me}::{name}")
                    });
                }
            }
        }
    }
    for (me, text) in &sources {
        if !test_only.contains(me) {
            let entry: &mut String = texts.entry(me.clone()).or_default();
            entry.push_str(&code(text));
        }
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (me, text) in &texts {
        let own: Vec<&str> = if me == "crate" {
            Vec::new()
        } else {
            me.split("::").collect()
        };
        let parent = &own[..own.len().saturating_sub(1)];
        let absolute = |path: &str| -> Option<Vec<String>> {
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let (base, rest): (Vec<&str>, &[&str]) = match *segs.first()? {
                "crate" => (Vec::new(), &segs[1..]),
                "super" => (parent.to_vec(), &segs[1..]),
                "self" => (own.clone(), &segs[1..]),
                _ => return None,
            };
            Some(base.iter().chain(rest).map(|s| s.to_string()).collect())
        };
        let mut deps = BTreeSet::new();
        let mut add = |segs: Vec<String>| {
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            if let Some(m) = resolve(&segs, &modules) {
                if m != *me {
                    deps.insert(m);
                }
            }
        };
        for (i, _) in text.match_indices("use ") {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let Some(end) = text[i..].find(';') else {
                continue;
            };
            for path in expand(&text[i + 4..i + end]) {
                if let Some(segs) = absolute(&path) {
                    add(segs);
                }
            }
        }
        for start in ["crate::", "super::"] {
            for (i, _) in text.match_indices(start) {
                let path: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                // `super::{a, b}` names its items in the `use` tree (read above), not `super`.
                let path = path.trim_end_matches(':');
                if path.len() < start.len() {
                    continue;
                }
                if let Some(segs) = absolute(path) {
                    add(segs);
                }
            }
        }
        // A module file naming its own children (`lifecycle::up(…)`).
        let prefix = if me == "crate" {
            String::new()
        } else {
            format!("{me}::")
        };
        for child in modules.iter().filter_map(|m| m.strip_prefix(&prefix)) {
            if child.contains("::") || prefix.is_empty() && child == "crate" {
                continue;
            }
            let needle = format!("{child}::");
            let named = text.match_indices(&needle).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if named {
                add(vec![format!("{prefix}{child}")]);
            }
        }
        g.insert(me.clone(), deps);
    }
    g
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_room_imports_a_room_that_imports_it_back() {
    let g = graph(&crate::project_root().join("xtask/src"));
    assert!(g["deploy::job"].contains("deploy::follower"), "{g:#?}");
    assert!(g["testhost"].contains("testhost::lifecycle"), "{g:#?}");
    let allowed: Vec<BTreeSet<String>> = ALLOWED
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let found: Vec<BTreeSet<String>> = circles(&g)
        .into_iter()
        .filter(|c| !allowed.contains(c))
        .collect();
    assert!(
        found.is_empty(),
        "import circles (a lower room imports a higher one; move what both need into a room of its own): {found:?}"
    );
}

#[test]
fn the_reading_of_imports_sees_circles() {
    let dir = Utf8PathBuf::from_path_buf(
        std::env::temp_dir().join(format!("rooms-{}", std::process::id())),
    )
    .unwrap();
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(dir.join("a")).unwrap();
    let write = |p: &str, t: &str| fs_err::write(dir.join(p), t).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\n#[cfg(test)]\nmod t;\n");
    write(
        "a/mod.rs",
        "pub mod c;\npub mod d;\npub fn f() { c::g() }\n",
    );
    write(
        "a/c.rs",
        "use crate::{b::{self, X}, a};\n// use crate::t;\npub fn g() { let s = \"crate::t\"; }\n",
    );
    write("b.rs", "pub struct X;\nfn h() { super::a::f() }\n");
    write("t.rs", "use crate::a;\n");
    write("a/d.rs", "use super::{c};\nfn k() { c::g() }\n");
    let g = graph(&dir);
    fs_err::remove_dir_all(&dir).unwrap();
    assert_eq!(g["a"], BTreeSet::from(["a::c".to_string()]));
    assert_eq!(
        g["a::c"],
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    assert!(!g.contains_key("t"), "test modules are not rooms");
    assert_eq!(
        g["a::d"],
        BTreeSet::from(["a::c".to_string()]),
        "`use super::{{c}}` names c, not a"
    );
    let c = circles(&g);
    assert_eq!(
        c,
        [BTreeSet::from([
            "a".to_string(),
            "a::c".to_string(),
            "b".to_string()
        ])]
    );
}

#[test]
fn no_room_is_over_700_lines() {
    let src = crate::project_root().join("xtask/src");
    let long: Vec<String> = files(&src)
        .into_iter()
        .filter(|f| f.file_name() != Some("tests.rs"))
        .filter_map(|f| {
            let n = fs_err::read_to_string(&f).unwrap().lines().count();
            (n > 700).then(|| format!("{f}: {n} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "rooms over 700 lines (split by concern; unit tests go in a tests.rs beside it): {long:?}"
    );
}
