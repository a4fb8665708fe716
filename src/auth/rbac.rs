//! Roles, permissions, clearances and resource grants: what a principal may
//! do, decided without I/O (the grants and custom roles it needs are loaded
//! when the principal is authenticated).

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

/// One permission, such as `tools:execute`. Stored and sent as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    ToolsRead,
    ToolsExecute,
    ToolsWrite,
    ServersRead,
    ServersWrite,
    ProfilesRead,
    ProfilesWrite,
    UsersAdmin,
    AuditRead,
    MetricsRead,
    /// Manage the tenant's webhooks and read their delivery logs.
    WebhooksManage,
    /// Manage tenants and create stdio servers (platform admins only).
    PlatformAdmin,
}

impl Permission {
    pub const ALL: [Permission; 12] = [
        Self::ToolsRead,
        Self::ToolsExecute,
        Self::ToolsWrite,
        Self::ServersRead,
        Self::ServersWrite,
        Self::ProfilesRead,
        Self::ProfilesWrite,
        Self::UsersAdmin,
        Self::AuditRead,
        Self::MetricsRead,
        Self::WebhooksManage,
        Self::PlatformAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolsRead => "tools:read",
            Self::ToolsExecute => "tools:execute",
            Self::ToolsWrite => "tools:write",
            Self::ServersRead => "servers:read",
            Self::ServersWrite => "servers:write",
            Self::ProfilesRead => "profiles:read",
            Self::ProfilesWrite => "profiles:write",
            Self::UsersAdmin => "users:admin",
            Self::AuditRead => "audit:read",
            Self::MetricsRead => "metrics:read",
            Self::WebhooksManage => "webhooks:manage",
            Self::PlatformAdmin => "platform:admin",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions (a bit set: checked on every request).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u32);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn all() -> Self {
        Self::of(&Permission::ALL)
    }

    pub fn of(items: &[Permission]) -> Self {
        Self(items.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn contains_all(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.has(*p))
    }

    pub fn names(self) -> Vec<String> {
        self.iter().map(|p| p.as_str().to_owned()).collect()
    }

    /// Parses permission names; `*` is every permission but platform
    /// administration, `tools:*` every tools permission, and so on.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut set = Self::NONE;
        for name in names {
            let name = name.as_ref().trim();
            let matched: Vec<Permission> = if name == "*" {
                Permission::ALL
                    .into_iter()
                    .filter(|p| *p != Permission::PlatformAdmin)
                    .collect()
            } else if let Some(group) = name.strip_suffix(":*") {
                Permission::ALL
                    .into_iter()
                    .filter(|p| p.as_str().split(':').next() == Some(group))
                    .collect()
            } else {
                Permission::ALL
                    .into_iter()
                    .filter(|p| p.as_str() == name)
                    .collect()
            };
            if matched.is_empty() {
                return Err(format!(
                    "unknown permission {name:?}; known: {}",
                    Permission::ALL.map(|p| p.as_str()).join(", ")
                ));
            }
            set = set.union(Self::of(&matched));
        }
        Ok(set)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|p| p.as_str()))
            .finish()
    }
}

/// A role: the permissions it gives and the clearance it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    pub name: String,
    pub permissions: Permissions,
    pub clearance: i64,
    pub builtin: bool,
    pub description: Option<String>,
}

pub const BUILTIN_ROLES: [&str; 5] = ["platform_admin", "admin", "operator", "user", "viewer"];

/// The built-in role of this name, if it is one.
pub fn builtin_role(name: &str) -> Option<RoleDef> {
    use Permission::*;
    let (permissions, clearance) = match name {
        "platform_admin" => (Permissions::all(), 100),
        "admin" => (
            Permissions::all().intersect(Permissions(!PlatformAdmin.bit())),
            100,
        ),
        "operator" => (
            Permissions::of(&[
                ToolsRead,
                ToolsExecute,
                ToolsWrite,
                ServersRead,
                ServersWrite,
                ProfilesRead,
                ProfilesWrite,
                AuditRead,
                MetricsRead,
            ]),
            75,
        ),
        "user" => (
            Permissions::of(&[ToolsRead, ToolsExecute, ServersRead, ProfilesRead]),
            50,
        ),
        "viewer" => (Permissions::of(&[ToolsRead, ServersRead, ProfilesRead]), 25),
        _ => return None,
    };
    Some(RoleDef {
        name: name.to_owned(),
        permissions,
        clearance,
        builtin: true,
        description: None,
    })
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// What a grant's pattern is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A server name.
    Server,
    /// A tool's public name, or `server/original_name`.
    Tool,
}

/// A grant that applies to one principal (already selected by subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub effect: Effect,
    pub kind: ResourceKind,
    pub pattern: String,
}

impl Grant {
    fn matches(&self, server: Option<&str>, public: &str, original: &str) -> bool {
        match self.kind {
            ResourceKind::Server => server.is_some_and(|s| glob(&self.pattern, s)),
            ResourceKind::Tool => {
                glob(&self.pattern, public)
                    || server.is_some_and(|s| glob(&self.pattern, &format!("{s}/{original}")))
            }
        }
    }
}

/// How a set of grants judges one resource.
#[derive(Debug, Default)]
struct Verdict {
    /// A deny grant matched.
    denied: bool,
    /// Some allow grant counts (the principal is allow-listed).
    any_allow: bool,
    /// An allow grant matched.
    allowed: bool,
}

impl Verdict {
    /// Applies `hit` to each grant that `counts` (deny wins over allow).
    fn of(grants: &[Grant], counts: impl Fn(&Grant) -> bool, hit: impl Fn(&Grant) -> bool) -> Self {
        let mut v = Verdict::default();
        for grant in grants.iter().filter(|g| counts(g)) {
            let matched = hit(grant);
            match grant.effect {
                Effect::Deny => v.denied |= matched,
                Effect::Allow => {
                    v.any_allow = true;
                    v.allowed |= matched;
                }
            }
        }
        v
    }

    fn admits(&self) -> bool {
        !self.denied && (!self.any_allow || self.allowed)
    }
}

/// Whether the grants let a principal reach a tool. A deny that matches
/// wins; when the principal has allow grants at all, one must match
/// (allow-listing); with no grants everything its permissions cover is
/// reachable.
pub fn grants_admit(grants: &[Grant], server: Option<&str>, public: &str, original: &str) -> bool {
    Verdict::of(grants, |_| true, |g| g.matches(server, public, original)).admits()
}

/// Whether a server is reachable at all through the grants (for server
/// listings): not denied by a server grant, and allowed when allow-listing
/// by server.
pub fn grants_admit_server(grants: &[Grant], server: &str) -> bool {
    let v = Verdict::of(
        grants,
        |g| g.kind == ResourceKind::Server,
        |g| glob(&g.pattern, server),
    );
    // Tool allow grants name tools of servers: a principal allow-listed by
    // tool still sees the servers those tools live on.
    let tool_allows = grants
        .iter()
        .any(|g| g.kind == ResourceKind::Tool && g.effect == Effect::Allow);
    !v.denied && (!v.any_allow || v.allowed || tool_allows)
}

/// Whether a server's prompts and resources (which are not tools) are
/// reachable: a matching server deny hides them; a principal with allow
/// grants of any kind is allow-listed and needs a server allow that matches.
pub fn grants_admit_server_content(grants: &[Grant], server: &str) -> bool {
    Verdict::of(
        grants,
        |_| true,
        |g| g.kind == ResourceKind::Server && glob(&g.pattern, server),
    )
    .admits()
}

/// Shell-style matching: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Role names as given, de-duplicated and sorted.
pub fn normalize_roles(roles: &[String]) -> Vec<String> {
    roles
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("fs__*", "fs__read_file"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*read*", "fs__read_file"));
        assert!(!glob("fs__*", "git__status"));
        assert!(glob("everything/*", "everything/echo"));
    }

    #[test]
    fn deny_wins_and_allows_restrict() {
        let g = |effect, kind, pattern: &str| Grant {
            effect,
            kind,
            pattern: pattern.into(),
        };
        let none: Vec<Grant> = vec![];
        assert!(grants_admit(&none, Some("fs"), "fs__read", "read"));
        let deny = vec![g(Effect::Deny, ResourceKind::Tool, "fs__*")];
        assert!(!grants_admit(&deny, Some("fs"), "fs__read", "read"));
        assert!(grants_admit(&deny, Some("git"), "git__log", "log"));
        let allow = vec![g(Effect::Allow, ResourceKind::Server, "git")];
        assert!(!grants_admit(&allow, Some("fs"), "fs__read", "read"));
        assert!(grants_admit(&allow, Some("git"), "git__log", "log"));
        let both = vec![
            g(Effect::Allow, ResourceKind::Server, "git"),
            g(Effect::Deny, ResourceKind::Tool, "git/push"),
        ];
        assert!(!grants_admit(&both, Some("git"), "git__push", "push"));
        assert!(grants_admit(&both, Some("git"), "git__log", "log"));
        assert!(grants_admit_server(&both, "git"));
        assert!(grants_admit_server_content(&both, "git"));
        assert!(!grants_admit_server_content(&both, "fs"));
        let tools_only = vec![g(Effect::Allow, ResourceKind::Tool, "fs__read")];
        assert!(!grants_admit_server_content(&tools_only, "fs"));
        assert!(grants_admit_server_content(&none, "fs"));
        assert!(!grants_admit_server(&both, "fs"));
    }

    #[test]
    fn permissions_parse_with_wildcards_and_refuse_unknown_names() {
        let p = Permissions::parse(&["tools:*"]).unwrap();
        assert!(p.has(Permission::ToolsWrite) && !p.has(Permission::ServersRead));
        let all = Permissions::parse(&["*"]).unwrap();
        assert!(all.has(Permission::UsersAdmin) && !all.has(Permission::PlatformAdmin));
        assert!(Permissions::parse(&["tools:delete"]).is_err());
    }

    #[test]
    fn built_in_roles_are_ordered_by_power() {
        let r = |n| builtin_role(n).unwrap().permissions;
        assert!(r("platform_admin").contains_all(r("admin")));
        assert!(r("admin").contains_all(r("operator")));
        assert!(r("operator").contains_all(r("user")));
        assert!(r("user").contains_all(r("viewer")));
        assert!(!r("admin").has(Permission::PlatformAdmin));
        assert!(!r("user").has(Permission::ToolsWrite));
    }
}
