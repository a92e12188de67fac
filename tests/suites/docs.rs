//! The documentation holds together: every relative link and `#anchor` in `README.md`,
//! `docs/*.md` and the fixture READMEs points at a file and a heading that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Markdown files a reader follows links through.
fn pages() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md")];
    for dir in [
        "docs",
        "tests/fixtures/model_replies",
        "tests/fixtures/model_streams",
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// The text without fenced code blocks and inline code (links there are examples), lines kept.
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                return String::new();
            }
            let mut out = String::new();
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                    out.push('`');
                } else if !in_code {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// GitHub's anchor of a heading: lowercase, link markup and punctuation dropped (but `-` and
/// `_`), spaces to `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [label](target) → label
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                text.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if fenced || hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `(line, target)` of every `[text](target)` and `![alt](target)` in prose.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose(text).iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            out.push((number + 1, target.to_owned()));
            rest = &after[end.min(after.len())..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = workspace();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap_or_default();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            checked += 1;
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(&root).join(path)
            };
            let shown = page
                .strip_prefix(&root)
                .unwrap_or(&page)
                .display()
                .to_string();
            if !dest.exists() {
                broken.push(format!("{shown}:{line}: {target} (no such file)"));
            } else if !fragment.is_empty() && !anchors(&dest).contains(fragment) {
                broken.push(format!("{shown}:{line}: {target} (no heading #{fragment})"));
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} links found: is the checker reading the pages?"
    );
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        slug("Streaming answers (server-sent events)"),
        "streaming-answers-server-sent-events"
    );
    assert_eq!(
        slug("Retrying safely: `request_id` is an idempotency key"),
        "retrying-safely-request_id-is-an-idempotency-key"
    );
    assert_eq!(slug("See [the API](http-api.md) now"), "see-the-api-now");
    let found = links("a [x](docs/a.md#b) and ![y](p.png)\n```\n[z](no.md)\n```\n`[w](no.md)`");
    assert_eq!(
        found,
        [(1, "docs/a.md#b".to_owned()), (1, "p.png".to_owned())]
    );
}

/// The OpenAPI document's operations: (METHOD, path).
fn documented() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("docs/openapi.yaml")).unwrap_or_default();
    let doc: serde_json::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}"));
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    use ak_http::{Api, RoutePaths, Router};
    let settings = ak_core::Settings::default();
    let runtime = ak_agents::AgentRuntime::from_settings(
        &settings,
        &agent_app::tools(),
        std::sync::Arc::new(ak_agents::offline::OfflineModel),
        std::sync::Arc::new(ak_core::ports::memory::MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let router = agent_app::routes(Router::builder(RoutePaths::default()))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Api::from_settings(
        &settings,
        &ak_adapters::AwsConfig::default(),
        Some(std::sync::Arc::new(runtime)),
        router,
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The router names no path parameters (`{param}`); the document does (`{model}`).
    let documented: Vec<(String, String)> = documented()
        .into_iter()
        .map(|(method, path)| {
            let path = path
                .split('/')
                .map(|s| if s.starts_with('{') { "{param}" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            (method, path)
        })
        .collect();
    let mut missing = Vec::new();
    for (method, path) in api.routes() {
        let covered = match &method {
            Some(method) => documented.contains(&(method.to_string(), path.clone())),
            // A protocol surface takes any method: at least one must be documented.
            None => documented.iter().any(|(_, p)| *p == path),
        };
        if !covered {
            missing.push(format!(
                "{} {path}",
                method.map_or("*".to_owned(), |m| m.to_string())
            ));
        }
    }
    assert!(api.routes().len() >= 5, "{:?}", api.routes());
    assert!(
        missing.is_empty(),
        "routes the OpenAPI document does not describe: {missing:?}"
    );
}
