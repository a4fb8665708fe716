//! Profiles (virtual servers): named subsets of the catalog, each served as
//! its own MCP endpoint at `/mcp/{profile}`, with per-profile names and
//! descriptions.
//!
//! A tool belongs to a profile when any selector matches it: one of its
//! `servers`, a name `pattern` (`*` and `?` wildcards over public names), a
//! `tag`, a `category`, or an explicit entry in `tools`. Explicit tools and
//! override keys name a tool by identity (`server/tool`), so they survive a
//! change of prefix mode, or by public name.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{ToolEntry, names::validate_tool_name};
use crate::upstream::spec::{Source, validate_name};

/// The profile name taken by discovery mode (`/mcp/discovery`, which shows
/// only `search_tools` and `call_tool`).
pub const DISCOVERY: &str = "discovery";

/// Per-profile changes to how one tool is shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A profile definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub overrides: BTreeMap<String, ToolOverride>,
    #[serde(default = "api_source")]
    pub source: Source,
}

fn api_source() -> Source {
    Source::Api
}

impl Profile {
    /// Checks what the types do not.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name).map_err(|e| e.to_string())?;
        if self.name == DISCOVERY {
            // `/mcp/discovery` is discovery mode: a profile of that name
            // could never be reached, so it is refused rather than shadowed.
            return Err(format!(
                "the profile name {:?} is reserved for discovery mode (/mcp/discovery)",
                self.name
            ));
        }
        for pattern in &self.patterns {
            if pattern.is_empty() || pattern.len() > 256 {
                return Err("patterns must be 1 to 256 characters".into());
            }
        }
        let mut names = HashSet::new();
        for (key, o) in &self.overrides {
            if let Some(name) = &o.name {
                validate_tool_name(name).map_err(|e| format!("overrides.{key}.name: {e}"))?;
                if !names.insert(name) {
                    return Err(format!("two overrides use the name {name}"));
                }
            }
        }
        Ok(())
    }

    fn refers_to(key: &str, entry: &ToolEntry) -> bool {
        match key.split_once('/') {
            Some((server, tool)) => entry.server() == Some(server) && entry.original_name() == tool,
            None => entry.public_name == key,
        }
    }

    /// Whether the profile selects `entry`.
    pub fn selects(&self, entry: &ToolEntry) -> bool {
        entry
            .server()
            .is_some_and(|s| self.servers.iter().any(|x| x == s))
            || self.tools.iter().any(|key| Self::refers_to(key, entry))
            || self.patterns.iter().any(|p| glob(p, &entry.public_name))
            || entry
                .overlay
                .tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(|t| self.tags.contains(t)))
            || entry
                .overlay
                .category
                .as_ref()
                .is_some_and(|c| self.categories.contains(c))
    }

    fn override_for(&self, entry: &ToolEntry) -> Option<&ToolOverride> {
        self.overrides
            .iter()
            .find(|(key, _)| Self::refers_to(key, entry))
            .map(|(_, o)| o)
    }
}

/// One tool as a profile shows it.
#[derive(Debug, Clone)]
pub struct ProfileTool {
    /// The name callers of the profile use.
    pub name: String,
    pub entry: Arc<ToolEntry>,
    /// The definition with the profile's name and description applied.
    pub definition: rmcp::model::Tool,
}

/// A profile resolved against a catalog snapshot.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub profile: Profile,
    pub tools: Vec<ProfileTool>,
    by_name: HashMap<String, usize>,
    /// Servers whose prompts and resources the profile serves.
    pub servers: HashSet<String>,
}

impl ProfileView {
    pub fn build(profile: Profile, tools: &[Arc<ToolEntry>]) -> Self {
        let mut view = Self {
            servers: profile.servers.iter().cloned().collect(),
            profile,
            tools: Vec::new(),
            by_name: HashMap::new(),
        };
        for entry in tools.iter().filter(|e| view.profile.selects(e)) {
            let o = view
                .profile
                .override_for(entry)
                .cloned()
                .unwrap_or_default();
            let name = o.name.clone().unwrap_or_else(|| entry.public_name.clone());
            if view.by_name.contains_key(&name) {
                tracing::warn!(profile = %view.profile.name, tool = %name, "two tools of a profile share a name; the second is left out");
                continue;
            }
            let mut definition = entry.definition.clone();
            definition.name = name.clone().into();
            if let Some(d) = o.description {
                definition.description = Some(d.into());
            }
            view.by_name.insert(name.clone(), view.tools.len());
            view.tools.push(ProfileTool {
                name,
                entry: entry.clone(),
                definition,
            });
        }
        view
    }

    pub fn tool(&self, name: &str) -> Option<&ProfileTool> {
        self.by_name.get(name).map(|i| &self.tools[*i])
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("fs__read_*", "fs__read_file"));
        assert!(glob("*echo", "everything__echo"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("fs__*", "git__log"));
    }

    #[test]
    fn discovery_is_a_reserved_name() {
        let p: Profile = serde_json::from_value(serde_json::json!({"name": "discovery"})).unwrap();
        let err = p.validate().unwrap_err();
        assert!(err.contains("reserved for discovery mode"), "{err}");
    }

    #[test]
    fn validates_override_names() {
        let mut p: Profile = serde_json::from_value(serde_json::json!({"name": "p"})).unwrap();
        assert!(p.validate().is_ok());
        p.overrides.insert(
            "a/b".into(),
            ToolOverride {
                name: Some("bad name".into()),
                description: None,
            },
        );
        assert!(p.validate().is_err());
        assert!(
            serde_json::from_value::<Profile>(serde_json::json!({"name": "p", "sever": []}))
                .is_err()
        );
    }
}
