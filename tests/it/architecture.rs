//! The source tree's shape, kept by a test: layers import only downwards, no two files import
//! each other (directly or through others), and no file grows past ~900 lines. The layers are
//! drawn in README, *Layout*; `crate::`, `super::` and `self::` paths (in `use` and inline) are the
//! edges, and so are a file's paths into its own child modules (`mod x;` … `x::f()`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers bottom to top: a file may import its own layer and the ones below. Longest prefix
/// wins (`console/msg` before `console`).
const LAYERS: &[(&str, usize)] = &[
    ("util", 0),
    ("config", 1),
    ("error", 1),
    ("store", 2),
    ("engine", 3),
    ("ops", 4),
    ("describe", 5),
    ("console/msg", 6),
    ("console/theme", 6),
    ("console/text", 6),
    ("console/keys", 7),
    ("console/state", 8),
    ("console/render", 9),
    ("console/tasks", 10),
    ("console", 11),
    ("cli", 12),
];

const MAX_LINES: usize = 900;

#[test]
fn layers_import_only_downwards_and_no_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check_tree(&src);
    assert!(problems.is_empty(), "the source tree breaks its layer rule (see README, Layout):\n{}", problems.join("\n"));
}

#[test]
fn no_source_file_is_over_900_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long: Vec<String> = rust_files(&src)
        .into_iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(&f).expect("read source").lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files (one concept each, at most {MAX_LINES} lines):\n{}", long.join("\n"));
}

/// The checker itself, on a tree that breaks both rules: it must name both files each time.
#[test]
fn the_checker_names_an_upward_import_and_a_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |p: &str, text: &str| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "pub mod util;\npub mod store;\npub mod engine;\npub use engine::Engine;\n");
    write("util/mod.rs", "pub mod time;\n");
    write("util/time.rs", "// crate::engine in a comment is no import\nfn f() -> crate::Engine { todo!() }\n");
    write("store/mod.rs", "pub mod a;\npub mod b;\nmod c;\npub struct S;\nfn g() { c::h() }\n");
    write("store/c.rs", "use crate::store::S;\npub fn h() {}\n");
    write("store/a.rs", "use super::b::{self, B};\n");
    write("store/b.rs", "use crate::store::{a::A, lake};\nconst S: &str = \"crate::ops::x\";\n");
    write("engine/mod.rs", "use crate::store::a;\npub struct Engine;\n");
    let problems = check_tree(dir.path());
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("util/time.rs") && problems[0].contains("engine/mod.rs") && problems[0].contains("upward"), "{}", problems[0]);
    let cycle = |a: &str, b: &str| problems[1..].iter().any(|p| p.contains(a) && p.contains(b) && p.contains("cycle"));
    assert!(cycle("store/a.rs", "store/b.rs"), "{problems:#?}");
    // A parent calling into its child by the child's bare name, while the child imports the parent.
    assert!(cycle("store/c.rs", "store/mod.rs"), "{problems:#?}");
}

/// Every problem of the tree under `src`, as sentences naming the files.
fn check_tree(src: &Path) -> Vec<String> {
    let files: BTreeMap<Vec<String>, PathBuf> = rust_files(src)
        .into_iter()
        .filter(|f| !matches!(f.strip_prefix(src).ok().and_then(Path::to_str), Some("lib.rs" | "main.rs")))
        .map(|f| (module_path(src, &f), f))
        .collect();
    let mut reexports = BTreeMap::from([(Vec::new(), module_reexports(&[], &std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default()))]);
    for (module, file) in &files {
        reexports.insert(module.clone(), module_reexports(module, &std::fs::read_to_string(file).expect("read source")));
    }
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let code = strip_tests(&code_only(&text));
        for path in crate_paths(&code, &child_modules(&code)) {
            let Some(target) = absolute(module, &path) else { continue };
            let target = resolve(&files, &reexports, &target);
            if let Some(t) = target.filter(|t| t != module) {
                edges.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    let name = |m: &Vec<String>| files.get(m).map_or_else(|| m.join("/"), |f| f.strip_prefix(src).unwrap_or(f).display().to_string());
    let mut problems = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            let (lf, lt) = (layer(from), layer(to));
            match (lf, lt) {
                (Some(a), Some(b)) if b > a => problems.push(format!(
                    "upward import: {} (layer {a}) imports {} (layer {b})",
                    name(from),
                    name(to)
                )),
                (None, _) | (_, None) => problems.push(format!(
                    "{} imports {}: add the folder to LAYERS in tests/it/architecture.rs and to README, Layout",
                    name(from),
                    name(to)
                )),
                _ => {}
            }
        }
    }
    for cycle in cycles(&edges) {
        let names: Vec<String> = cycle.iter().map(&name).collect();
        problems.push(format!("import cycle between {}", names.join(", ")));
    }
    problems
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn layer(module: &[String]) -> Option<usize> {
    let joined = module.join("/");
    LAYERS
        .iter()
        .filter(|(prefix, _)| joined == *prefix || joined.starts_with(&format!("{prefix}/")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, l)| *l)
}

/// What a module re-exports (`pub use child::Engine;` in `engine/mod.rs`): name → the absolute
/// path it stands for, so `crate::engine::Engine` lands in the file that defines it, not in the
/// facade (a facade importing its children is no cycle with a sibling that uses the facade).
fn module_reexports(module: &[String], text: &str) -> BTreeMap<String, Vec<String>> {
    let code = strip_tests(&code_only(text));
    let children = child_modules(&code);
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(tree) = ["pub use ", "pub(crate) use "].iter().find_map(|p| stmt.rsplit_once(p).map(|(_, t)| t)) else { continue };
        for path in flatten_use(tree.trim()) {
            let path = match path.first().map(String::as_str) {
                Some(first) if children.iter().any(|c| c == first) => std::iter::once("self".to_string()).chain(path).collect(),
                _ => path,
            };
            let (Some(name), Some(target)) = (path.last().cloned(), absolute(module, &path)) else { continue };
            out.insert(name, target);
        }
    }
    out
}

/// The source without comments and with string and char literals emptied.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) && !prev_is_ident(b, i) {
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                i = text[start..].find(&close).map_or(b.len(), |e| start + e + close.len());
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && is_char_literal(b, i) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let ch = text[i..].chars().next().expect("char boundary");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `'a'`, `'\n'`, `'\u{1F600}'` are literals; `'a` (a lifetime) is not.
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            let len = std::str::from_utf8(&b[i + 1..]).ok().and_then(|s| s.chars().next()).map_or(1, char::len_utf8);
            b.get(i + 1 + len) == Some(&b'\'')
        }
        None => false,
    }
}

/// Unit tests at the end of a file (`#[cfg(test)] mod tests`) may reach anywhere.
fn strip_tests(code: &str) -> String {
    let mut at = 0;
    while let Some(pos) = code[at..].find("#[cfg(test)]") {
        let start = at + pos;
        if code[start + "#[cfg(test)]".len()..].trim_start().starts_with("mod tests") {
            return code[..start].to_string();
        }
        at = start + 1;
    }
    code.to_string()
}

/// The modules a file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`; not inline `mod x { … }`).
fn child_modules(code: &str) -> Vec<String> {
    code.split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            match words.as_slice() {
                [.., "mod", name] if name.chars().all(|c| c.is_alphanumeric() || c == '_') => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Every `crate::`, `super::` and `self::` path, and every path into one of the file's own
/// `children` (as `self::child::…`): the leaves of `use` trees and inline paths.
fn crate_paths(code: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = String::new();
    let mut i = 0;
    while i < code.len() {
        if let Some(stmt_len) = use_statement_at(code, i) {
            let stmt = &code[i..i + stmt_len];
            let tree = stmt.split_once("use ").map_or("", |(_, t)| t).trim().trim_end_matches(';');
            paths.extend(flatten_use(tree.trim()));
            i += stmt_len;
        } else {
            let ch = code[i..].chars().next().expect("char boundary");
            rest.push(ch);
            i += ch.len_utf8();
        }
    }
    let bytes = rest.as_bytes();
    let roots: Vec<String> =
        ["crate", "super", "self"].iter().map(|r| r.to_string()).chain(children.iter().cloned()).map(|r| format!("{r}::")).collect();
    for root in &roots {
        let mut at = 0;
        while let Some(pos) = rest[at..].find(root.as_str()) {
            let start = at + pos;
            at = start + root.len();
            if prev_is_ident(bytes, start) || (start >= 2 && &bytes[start - 2..start] == b"::") {
                continue;
            }
            let end = rest[start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(rest.len(), |e| start + e);
            let path: Vec<String> = rest[start..end].split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            paths.push(path);
        }
    }
    paths
        .into_iter()
        .filter_map(|p| match p.first().map(String::as_str) {
            Some("crate" | "super" | "self") => Some(p),
            Some(first) if children.iter().any(|c| c == first) => Some(std::iter::once("self".to_string()).chain(p).collect()),
            _ => None,
        })
        .collect()
}

/// The length of a `use …;` statement starting at `i`, if one does.
fn use_statement_at(code: &str, i: usize) -> Option<usize> {
    let bytes = code.as_bytes();
    if prev_is_ident(bytes, i) {
        return None;
    }
    let rest = &code[i..];
    ["pub(crate) use ", "pub(super) use ", "pub use ", "use "].iter().find(|p| rest.starts_with(**p))?;
    rest.find(';').map(|e| e + 1)
}

/// `a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c` (aliases dropped).
fn flatten_use(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace() || *c == ' ').collect();
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        let mut segs: Vec<String> = path.split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if segs.last().is_some_and(|s| s == "self" || s == "*") {
            segs.pop();
        }
        return vec![segs];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let mut parts = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let joined = if prefix.is_empty() { part.to_string() } else { format!("{prefix}::{part}") };
        out.extend(flatten_use(&joined));
    }
    out
}

/// A path relative to `module` made absolute (without `crate`); `None` for other crates.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" | "super" => {
            let mut base = module.to_vec();
            let mut segs = path;
            while let Some((s, tail)) = segs.split_first() {
                match s.as_str() {
                    "self" => {}
                    "super" => {
                        base.pop();
                    }
                    _ => break,
                }
                segs = tail;
            }
            base.extend(segs.iter().cloned());
            Some(base)
        }
        _ => None,
    }
}

/// The module file a path lands in: its longest prefix that is a file of the tree, followed
/// through the re-exports of the module it lands in (the crate root's too).
fn resolve(files: &BTreeMap<Vec<String>, PathBuf>, reexports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>, target: &[String]) -> Option<Vec<String>> {
    resolve_within(files, reexports, target, 8)
}

fn resolve_within(
    files: &BTreeMap<Vec<String>, PathBuf>,
    reexports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
    target: &[String],
    hops: usize,
) -> Option<Vec<String>> {
    let landed = (1..=target.len()).rev().map(|n| target[..n].to_vec()).find(|p| files.contains_key(p)).unwrap_or_default();
    let through = target.get(landed.len()).and_then(|name| reexports.get(&landed)?.get(name));
    match through {
        Some(path) if hops > 0 && path.as_slice() != target => {
            let followed: Vec<String> = path.iter().chain(&target[landed.len() + 1..]).cloned().collect();
            resolve_within(files, reexports, &followed, hops - 1).or(Some(landed).filter(|l| !l.is_empty()))
        }
        _ => Some(landed).filter(|l| !l.is_empty()),
    }
}

/// Strongly connected components of two or more files (Tarjan), each sorted.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: &Vec<String>) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    component.push(w);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), found: Vec::new() };
    let nodes: BTreeSet<&Vec<String>> = edges.keys().chain(edges.values().flatten()).collect();
    for v in nodes {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found.sort();
    walk.found
}
