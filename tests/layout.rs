//! The house: no import cycle between the proxy's modules, nor between its folders
//! (`listen/`, `flow/`, `http/`, `admin/`, `origin/`, and the top-level modules). Read from
//! the sources: every `crate::a::b` and `super::x` path outside `#[cfg(test)]` code is an
//! edge from the module that writes it to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `proxy/listen/edge.rs` → `["listen", "edge"]`; `mod.rs` names its folder.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts
}

/// The identifiers following `prefix` in `code` (`crate::` → `["listen", "edge"]`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    code.match_indices(prefix)
        .map(|(i, _)| {
            code[i + prefix.len()..]
                .split("::")
                .map(|seg| {
                    let end = seg
                        .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                        .unwrap_or(seg.len());
                    &seg[..end]
                })
                .take_while(|s| !s.is_empty())
                .take(2)
                .collect()
        })
        .collect()
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let files: Vec<_> = files
        .into_iter()
        .filter(|f| {
            let m = module_of(&root, f);
            // The binary's own code is not the library's.
            m != ["main"] && m.first().map(String::as_str) != Some("cli") && m != ["lib"]
        })
        .collect();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&root, f).join("/"))
        .collect();
    let known = |mut path: Vec<&str>| -> Option<String> {
        while !path.is_empty() {
            let p = path.join("/");
            if modules.contains(&p) {
                return Some(p);
            }
            path.pop();
        }
        None
    };
    let mut g = Graph::new();
    for f in &files {
        let me = module_of(&root, f);
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let mut targets: Vec<Vec<&str>> = paths_after(&code, "crate::");
        let parent: Vec<&str> = me[..me.len() - 1].iter().map(String::as_str).collect();
        for p in paths_after(&code, "super::") {
            targets.push(parent.iter().copied().chain(p).collect());
        }
        let name = me.join("/");
        for t in targets {
            if let Some(t) = known(t) {
                // A module may use its own submodules and its ancestors' items freely.
                if t != name
                    && !name.starts_with(&format!("{t}/"))
                    && !t.starts_with(&format!("{name}/"))
                {
                    g.entry(name.clone()).or_default().insert(t);
                }
            }
        }
    }
    g
}

fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_between_modules() {
    let g = graph();
    assert!(g.len() > 10, "the graph was read: {g:?}");
    assert_eq!(find_cycle(&g), None, "a cycle in {g:#?}");
}

#[test]
fn no_import_cycle_between_folders() {
    let top = |m: &str| m.split('/').next().unwrap().to_string();
    let mut folders = Graph::new();
    for (from, tos) in graph() {
        for to in tos {
            if top(&from) != top(&to) {
                folders.entry(top(&from)).or_default().insert(top(&to));
            }
        }
    }
    assert!(folders.contains_key("listen"), "{folders:?}");
    assert_eq!(find_cycle(&folders), None, "a cycle in {folders:#?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
