//! No two top-level modules of any workspace crate may import each other, directly or
//! through others: the layering in each crate's `lib.rs` is a DAG. An edge `foo → bar`
//! is any `crate::bar` path in a file of `src/foo.rs` or `src/foo/**` (in `use`
//! statements, grouped `use crate::{a, b::c}` forms included, and inline paths); the
//! crate root (`lib.rs`, `main.rs`), comments, `super::` paths and `#[cfg(test)]`
//! modules (tests may reach across) do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The source without comments and without `#[cfg(test)] mod … { … }` blocks.
fn strip(source: &str) -> String {
    let code: String = source
        .lines()
        .map(|line| {
            // A comment starts a line or follows a space (not `ws://` in a string).
            let comment = line.match_indices("//").find(|&(at, _)| {
                line[..at]
                    .chars()
                    .next_back()
                    .is_none_or(char::is_whitespace)
            });
            comment.map_or(line, |(at, _)| &line[..at])
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let Some(body) = after
            .strip_prefix("mod ")
            .and_then(|m| m.find(['{', ';']).map(|i| &m[i..]))
        else {
            rest = after;
            continue;
        };
        if let Some(after_declaration) = body.strip_prefix(';') {
            rest = after_declaration;
            continue;
        }
        let mut depth = 0;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(body.len(), |(i, _)| i + 1);
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segment of every item of a `{a, b::c, d::{e, f}}` group.
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut item, mut heads) = (0, String::new(), Vec::new());
    for c in group.chars().skip(1) {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(item.trim()).to_owned());
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    heads.push(ident(item.trim()).to_owned());
    heads
}

fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |file: &Path| -> Option<String> {
        let relative = file.strip_prefix(src).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        match first {
            "lib.rs" | "main.rs" => None,
            _ => Some(first.trim_end_matches(".rs").to_owned()),
        }
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        if file.file_stem().is_some_and(|stem| stem == "tests") {
            continue;
        }
        let source = strip(&std::fs::read_to_string(file).expect("read"));
        let targets = graph.entry(module.clone()).or_default();
        for (at, _) in source.match_indices("crate::") {
            let before = source[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `exec_crate::`
            }
            let path = &source[at + "crate::".len()..];
            let heads = match path.starts_with('{') {
                true => group_heads(path),
                false => vec![ident(path).to_owned()],
            };
            for head in heads {
                if head != module && modules.contains(&head) {
                    targets.insert(head);
                }
            }
        }
    }
    graph
}

/// One cycle per back edge found by a depth-first search, as `a → b → a`.
fn cycles(graph: &Graph) -> Vec<String> {
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        stack: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
        found: &mut Vec<String>,
    ) {
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(at) = stack.iter().position(|n| n == next) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(next);
                found.push(cycle.join(" → "));
            } else if !done.contains(next.as_str()) {
                visit(next, graph, stack, done, found);
            }
        }
        stack.pop();
        done.insert(node);
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        if !done.contains(node.as_str()) {
            visit(node, graph, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

#[test]
fn no_crate_of_the_workspace_has_module_cycles() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Crates at the top level, and one level down (`conformance/runner`).
    let subdirectories = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default()
    };
    let mut crates: Vec<PathBuf> = subdirectories(&workspace)
        .into_iter()
        .flat_map(|dir| {
            let nested = subdirectories(&dir);
            std::iter::once(dir).chain(nested)
        })
        .filter(|dir| dir.join("Cargo.toml").is_file() && dir.join("src/lib.rs").is_file())
        .collect();
    crates.sort();
    assert!(crates.len() >= 5, "found only {crates:?}");
    let mut failures = Vec::new();
    for dir in &crates {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        for cycle in cycles(&module_graph(&dir.join("src"))) {
            failures.push(format!("{name}: {cycle}"));
        }
    }
    assert!(
        failures.is_empty(),
        "module cycles:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn the_scanner_sees_grouped_inline_and_test_only_paths() {
    let source = "use crate::{a, b::{c, d}};\nfn f() { crate::e::g(); } // crate::h\n#[cfg(test)]\nmod tests { use crate::i; fn x() { if true { crate::j(); } } }\nuse crate::k;";
    let stripped = strip(source);
    assert!(!stripped.contains("crate::h") && !stripped.contains("crate::i"));
    assert!(stripped.contains("crate::k"), "{stripped}");
    assert_eq!(group_heads("{a, b::{c, d}}"), ["a", "b"]);
    let graph = Graph::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(cycles(&graph), ["a → b → a"]);
}
