//! Where configuration values come from: the YAML file and `AK_` environment variables, merged
//! into one JSON tree, with a record of where each value came from for error messages.

use super::ConfigError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable naming the YAML file explicitly.
pub const CONFIG_PATH_VAR: &str = "AK_CONFIG_PATH_OVERRIDE";
const ENV_PREFIX: &str = "AK_";
const FILE_NAME: &str = "config.yaml";

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A built-in default.
    Default,
    /// The YAML file, at a line when it could be located.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: Option<usize>,
    },
    /// An environment variable.
    Env(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// The merged configuration tree and the provenance of its values.
#[derive(Debug, Default)]
pub struct Layers {
    /// The YAML file merged with the environment.
    pub tree: Value,
    file: Option<(PathBuf, String)>,
    env: BTreeMap<String, String>,
}

impl Layers {
    /// Reads the file (if any) and overlays the `AK_` variables of `env`.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut layers = Layers {
            tree: Value::Object(Map::new()),
            ..Layers::default()
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            layers.tree = parse_yaml(path, &text)?;
            layers.file = Some((path.to_path_buf(), text));
        }
        for (name, value) in env {
            let Some(key) = env_key(name) else { continue };
            if value.trim().is_empty() {
                continue;
            }
            let segments: Vec<&str> = key.split("__").collect();
            if segments.iter().any(|s| s.is_empty()) {
                return Err(ConfigError::invalid(
                    key.replace("__", "."),
                    Some(&Value::String(value.clone())),
                    Origin::Env(name.clone()),
                    "the name has an empty segment; nest keys with a double underscore, \
                     e.g. AK_EXECUTION__MODE",
                ));
            }
            insert_path(&mut layers.tree, &segments, Value::String(value.clone()));
            layers.env.insert(segments.join("."), name.clone());
        }
        Ok(layers)
    }

    /// Where the value at a dotted key (`execution.queues.input.url`, `agents.definitions[0].name`)
    /// came from: the environment variable that set it or an enclosing key, else the file line.
    pub fn origin(&self, key: &str) -> Origin {
        // A variable below the key (AK_SESION__TYPE for an unknown `sesion`) explains it too.
        let below = format!("{key}.");
        if let Some((_, var)) = self.env.iter().find(|(k, _)| k.starts_with(&below)) {
            return Origin::Env(var.clone());
        }
        let mut probe = key.to_owned();
        loop {
            if let Some(var) = self.env.get(&probe) {
                return Origin::Env(var.clone());
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe.truncate(i),
                None => break,
            }
        }
        if let Some((path, text)) = &self.file
            && lookup(&self.tree, key).is_some()
        {
            return Origin::File {
                path: path.clone(),
                line: yaml_line(text, key),
            };
        }
        Origin::Default
    }
}

/// Finds the YAML file: `AK_CONFIG_PATH_OVERRIDE` (which must exist), else `./config.yaml`, else
/// `$LAMBDA_TASK_ROOT/config.yaml`. No file at all is fine: defaults and environment apply.
pub fn find_config_file(
    env: &[(String, String)],
    cwd: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
    };
    if let Some(path) = var(CONFIG_PATH_VAR) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(ConfigError::Read {
                path,
                reason: format!("{CONFIG_PATH_VAR} names it, but there is no such file"),
            })
        };
    }
    let local = cwd.join(FILE_NAME);
    if local.is_file() {
        return Ok(Some(local));
    }
    if let Some(root) = var("LAMBDA_TASK_ROOT") {
        let task = Path::new(&root).join(FILE_NAME);
        if task.is_file() {
            return Ok(Some(task));
        }
    }
    Ok(None)
}

/// `AK_EXECUTION__MODE` → `execution__mode`; `None` for variables that are not configuration.
fn env_key(name: &str) -> Option<String> {
    let prefix = name.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) || name.eq_ignore_ascii_case(CONFIG_PATH_VAR) {
        return None;
    }
    Some(name[ENV_PREFIX.len()..].to_ascii_lowercase())
}

fn parse_yaml(path: &Path, text: &str) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            line: Some(1),
            message: format!(
                "the file must be a mapping of keys (execution:, session:, ...), not {}",
                crate::lenient::describe(&other)
            ),
        }),
    }
}

/// Sets `value` at `segments`, matching existing keys case-insensitively and replacing
/// anything that is not a mapping on the way.
fn insert_path(tree: &mut Value, segments: &[&str], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if !tree.is_object() {
        *tree = Value::Object(Map::new());
    }
    let Value::Object(map) = tree else { return };
    let key = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case(first))
        .cloned()
        .unwrap_or_else(|| (*first).to_owned());
    if rest.is_empty() {
        map.insert(key, value);
    } else {
        let child = map.entry(key).or_insert(Value::Null);
        insert_path(child, rest, value);
    }
}

/// The value at a dotted key with optional `[n]` indices.
pub fn lookup<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    let mut node = tree;
    for part in key_parts(key) {
        node = match part {
            KeyPart::Field(name) => node.as_object()?.get(name)?,
            KeyPart::Index(i) => node.as_array()?.get(i)?,
        };
    }
    Some(node)
}

enum KeyPart<'a> {
    Field(&'a str),
    Index(usize),
}

fn key_parts(key: &str) -> impl Iterator<Item = KeyPart<'_>> {
    key.split('.').filter(|s| !s.is_empty()).flat_map(|seg| {
        let mut parts = Vec::new();
        let (name, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            parts.push(KeyPart::Field(name));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                parts.push(KeyPart::Index(i));
            }
            rest = &rest[end + 1..];
        }
        parts
    })
}

/// The 1-based line of a dotted key in block-style YAML, found by indentation; `None` where the
/// file uses flow style or the key sits inside a list.
fn yaml_line(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for part in key_parts(key) {
        let KeyPart::Field(name) = part else {
            return found;
        };
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(parent) = parent_indent
                && indent <= parent
            {
                break;
            }
            let unquoted = trimmed.trim_start_matches(['"', '\'']);
            if let Some(after) = unquoted.strip_prefix(name)
                && after.trim_start_matches(['"', '\'']).starts_with(':')
            {
                hit = Some((i, indent));
                break;
            }
        }
        let (i, indent) = hit?;
        found = Some(i + 1);
        from = i + 1;
        parent_indent = Some(indent);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_lines_follow_indentation() {
        let text = "\
# comment
execution:
  mode: rest_sync
  queues:
    input:
      url: memory://in
session:
  mode: x
";
        assert_eq!(yaml_line(text, "execution"), Some(2));
        assert_eq!(yaml_line(text, "execution.mode"), Some(3));
        assert_eq!(yaml_line(text, "execution.queues.input.url"), Some(6));
        assert_eq!(yaml_line(text, "session.mode"), Some(8));
        assert_eq!(yaml_line(text, "execution.queues.output"), None);
    }

    #[test]
    fn env_keys_nest_case_insensitively_and_skip_other_vars() {
        assert_eq!(
            env_key("AK_EXECUTION__MODE").as_deref(),
            Some("execution__mode")
        );
        assert_eq!(
            env_key("ak_session__type").as_deref(),
            Some("session__type")
        );
        assert_eq!(env_key("AK_CONFIG_PATH_OVERRIDE"), None);
        assert_eq!(env_key("PATH"), None);
        assert_eq!(env_key("AKX"), None);
    }

    #[test]
    fn lookup_walks_fields_and_indices() {
        let tree = serde_json::json!({"a": {"b": [{"c": 1}]}});
        assert_eq!(lookup(&tree, "a.b[0].c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&tree, "a.x"), None);
    }
}
