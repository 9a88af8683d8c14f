//! The library's layers look down, never up: no two of its top-level
//! modules (a file, or a folder with its files) import each other, directly
//! or through others. Read from the sources, so that an arrow pointing up
//! fails here, with the circle it closes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` with the top-level modules it names
/// (`crate::NAME`), comments and unit tests left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&top.as_str())
            || path.extension().is_none_or(|e| e != "rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let named = graph.entry(top.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    named.insert(name);
                }
            }
            // `use crate::{a::X, b}`: each name at the start of a path.
            if let Some(list) = line.trim_start().strip_prefix("use crate::{") {
                for part in list.split([',', '{', '}']) {
                    let name = part.trim().split("::").next().unwrap_or("");
                    if !name.is_empty()
                        && name != top
                        && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        named.insert(name.to_string());
                    }
                }
            }
        }
    }
    graph
}

/// A path from `from` back to `to`, if there is one.
fn path_back(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(vec![to.to_string()]);
    }
    if !seen.insert(from.to_string()) {
        return None;
    }
    for next in graph.get(from).into_iter().flatten() {
        if let Some(mut rest) = path_back(graph, next, to, seen) {
            rest.insert(0, from.to_string());
            return Some(rest);
        }
    }
    None
}

#[test]
fn no_two_modules_of_the_library_import_each_other() {
    let graph = imports();
    assert!(graph.len() > 20, "{graph:?}");
    let mut circles = Vec::new();
    for (module, named) in &graph {
        for next in named {
            if let Some(back) = path_back(&graph, next, module, &mut BTreeSet::new()) {
                circles.push(format!("{module} -> {}", back.join(" -> ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}
