//! The architecture's arrows, checked from the source (the `use` lines and paths of every
//! module, and each crate's `[dependencies]`), so the layering stays kept:
//!
//! - crates depend only on crates of a lower layer (the table [`CRATE_LAYERS`]);
//! - within a crate, no two top-level modules import each other, directly or round a cycle;
//! - within a layered crate, no module imports from a layer above its own ([`MODULE_LAYERS`]);
//! - the foundations, ports, execution core and services name no HTTP, Lambda-event, AWS SDK or
//!   Redis type ([`FORBIDDEN`]);
//! - each function's `main.rs` wires and starts only (at most [`MAIN_MAX_LINES`] lines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each workspace crate and its layer: a crate may depend on crates of lower layers only.
const CRATE_LAYERS: &[(&str, u8)] = &[
    ("ak-core", 1),
    ("ak-lambda", 1),
    ("ak-adapters", 2),
    ("ak-agents", 3),
    ("ak-runtime", 4),
    ("ak-auth", 5),
    ("ak-http", 5),
    ("agent-app", 6),
    ("ak-local", 7),
    ("request-handler", 7),
    ("agent-runner", 7),
    ("response-handler", 7),
    ("authorizer", 7),
    ("ak-tests", 8),
];

/// Layers of modules inside a crate (top-level module → layer); a module may use modules of
/// its own layer or below. Crates not listed have one layer.
const MODULE_LAYERS: &[(&str, &[(&str, u8)])] = &[
    (
        "ak-core",
        &[
            ("lenient", 1),
            ("secret", 1),
            ("time", 1),
            ("config", 1),
            ("error", 1),
            ("request", 1),
            ("events", 1),
            ("answer", 1),
            ("https", 1),
            ("metrics", 1),
            ("otel", 1),
            ("logging", 1),
            ("ports", 2),
        ],
    ),
    ("ak-runtime", &[("exec", 1), ("service", 2)]),
];

/// Crates, and module path prefixes in them, that must not name these paths.
const FORBIDDEN: &[(&str, &str, &[&str])] = &[
    (
        "ak-core",
        "ports",
        &["http::", "lambda_http", "hyper", "aws_sdk", "redis::"],
    ),
    (
        "ak-core",
        "",
        &[
            "lambda_http",
            "lambda_runtime",
            "aws_sdk",
            "aws_config",
            "redis::",
            "rmcp::",
        ],
    ),
    (
        "ak-runtime",
        "",
        &[
            "http::",
            "lambda_http",
            "lambda_runtime",
            "hyper",
            "aws_sdk",
            "redis::",
            "rmcp::",
        ],
    ),
    (
        "ak-adapters",
        "",
        &["lambda_http", "http::Response", "rmcp::"],
    ),
];

/// The longest a function's `main.rs` may be.
const MAIN_MAX_LINES: usize = 40;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The workspace's crates: name → directory.
fn crates() -> BTreeMap<String, PathBuf> {
    let root = workspace();
    let mut found = BTreeMap::new();
    for dir in ["crates", "functions"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let manifest = entry.path().join("Cargo.toml");
            if let Some(name) = package_name(&manifest) {
                found.insert(name, entry.path());
            }
        }
    }
    if let Some(name) = package_name(&root.join("tests/Cargo.toml")) {
        found.insert(name, root.join("tests"));
    }
    found
}

fn package_name(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|v| v.trim_matches('"').to_owned())
}

/// The workspace crates a manifest's `[dependencies]` name (dev-dependencies excluded).
fn internal_dependencies(manifest: &Path, names: &BTreeSet<String>) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let mut deps = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[dependencies]" {
            continue;
        }
        let key: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        if names.contains(&key) {
            deps.push(key);
        }
    }
    deps
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A source file's module path relative to `src` (`ports/memory.rs` → `["ports", "memory"]`,
/// `ports/mod.rs` → `["ports"]`, `lib.rs` → `[]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The code of a file without comments (so a doc comment naming a module is no import).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top-level modules a file refers to (`crate::x`, `crate::{x, y}`, and `super::x`
/// from a module directly under the root).
fn references(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let add_after = |marker: &str, out: &mut BTreeSet<String>| {
        for (at, _) in code.match_indices(marker) {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + marker.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                for item in inner.split(',') {
                    let name = ident(item);
                    if !name.is_empty() && name != "self" {
                        out.insert(name);
                    }
                }
            } else {
                let name = ident(rest);
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    };
    add_after("crate::", &mut out);
    // `super::` of a top-level module's own file is the crate root.
    if path.len() == 1 {
        add_after("super::", &mut out);
    }
    out
}

struct CrateModules {
    /// Top-level module → the top-level modules it refers to.
    edges: BTreeMap<String, BTreeSet<String>>,
    /// (module path, file, code) of every file.
    files: Vec<(Vec<String>, PathBuf, String)>,
}

fn modules(dir: &Path) -> CrateModules {
    let src = dir.join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    let tops: BTreeSet<String> = sources(&src)
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .collect();
    for file in sources(&src) {
        let path = module_path(&src, &file);
        let text = code(&std::fs::read_to_string(&file).unwrap_or_default());
        if let Some(top) = path.first() {
            let refs = references(&text, &path)
                .into_iter()
                .filter(|r| r != top && tops.contains(r))
                .collect::<BTreeSet<_>>();
            edges.entry(top.clone()).or_default().extend(refs);
        }
        files.push((path, file, text));
    }
    CrateModules { edges, files }
}

/// A cycle in `edges`, if there is one, as the modules round it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let crates = crates();
    let layers: BTreeMap<&str, u8> = CRATE_LAYERS.iter().copied().collect();
    let names: BTreeSet<String> = crates.keys().cloned().collect();
    let mut problems = Vec::new();
    for (name, dir) in &crates {
        let Some(layer) = layers.get(name.as_str()) else {
            problems.push(format!("{name} has no layer in CRATE_LAYERS"));
            continue;
        };
        for dep in internal_dependencies(&dir.join("Cargo.toml"), &names) {
            let dep_layer = layers.get(dep.as_str()).copied().unwrap_or(u8::MAX);
            if dep_layer >= *layer {
                problems.push(format!(
                    "{name} (layer {layer}) depends on {dep} (layer {dep_layer})"
                ));
            }
        }
    }
    assert!(crates.len() >= 13, "found only {crates:?}");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn no_module_imports_round_a_cycle_or_from_a_layer_above() {
    let layered: BTreeMap<&str, &[(&str, u8)]> = MODULE_LAYERS.iter().copied().collect();
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let modules = modules(&dir);
        if let Some(cycle) = find_cycle(&modules.edges) {
            problems.push(format!(
                "{name}: modules import round a cycle: {}",
                cycle.join(" → ")
            ));
        }
        let Some(layers) = layered.get(name.as_str()) else {
            continue;
        };
        let layer_of: BTreeMap<&str, u8> = layers.iter().copied().collect();
        for (module, uses) in &modules.edges {
            let Some(own) = layer_of.get(module.as_str()) else {
                problems.push(format!(
                    "{name}: module {module} has no layer in MODULE_LAYERS"
                ));
                continue;
            };
            for used in uses {
                let theirs = layer_of.get(used.as_str()).copied().unwrap_or(u8::MAX);
                if theirs > *own {
                    problems.push(format!(
                        "{name}: {module} (layer {own}) uses {used} (layer {theirs})"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_core_and_runtime_name_no_http_lambda_or_sdk_types() {
    let crates = crates();
    let mut problems = Vec::new();
    for (name, prefix, words) in FORBIDDEN {
        let Some(dir) = crates.get(*name) else {
            problems.push(format!("no crate {name}"));
            continue;
        };
        for (path, file, text) in modules(dir).files {
            if !prefix.is_empty() && path.first().map(String::as_str) != Some(*prefix) {
                continue;
            }
            // The HTTPS client and the configuration's checks of header names and URLs are
            // the only HTTP in the foundations: outbound calls, not the API.
            if *name == "ak-core"
                && prefix.is_empty()
                && matches!(path.first().map(String::as_str), Some("https" | "config"))
            {
                continue;
            }
            for word in *words {
                if text.contains(word) {
                    problems.push(format!("{} names {word}", file.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn function_mains_wire_and_start_only() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        if !dir.starts_with(workspace().join("functions")) {
            continue;
        }
        let main = dir.join("src/main.rs");
        let lines = std::fs::read_to_string(&main)
            .unwrap_or_default()
            .lines()
            .count();
        if lines > MAIN_MAX_LINES || lines == 0 {
            problems.push(format!(
                "{name}: main.rs has {lines} lines (at most {MAIN_MAX_LINES})"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    let refs = references(
        "use crate::{ports::Queue, error};\nfn f() { crate::metrics::emit(); }\nsuper::x::y();",
        &["events".to_owned()],
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["error", "metrics", "ports", "x"]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    edges.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(find_cycle(&edges), None);
}
