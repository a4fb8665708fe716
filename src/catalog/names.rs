//! Public names from identities. A tool's identity is (server, original name);
//! what callers see is derived from it by the prefix mode, so a change of mode
//! or a new colliding server changes names, never identities.

use std::collections::HashMap;

use crate::config::PrefixMode;

/// The spec's limit on tool and prompt names.
pub const MAX_NAME_LEN: usize = 128;

/// One name to derive: `server` is `None` for hand-registered tools, which
/// keep the name they were registered with.
#[derive(Debug, Clone)]
pub struct NameRequest<'a> {
    pub server: Option<&'a str>,
    pub original: &'a str,
}

/// The outcome for one request: its public name, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derived {
    Name(String),
    /// Refused: the public name is already taken by `taken_by`.
    Conflict {
        wanted: String,
        taken_by: String,
    },
}

/// Derives public names for `requests`, in order: where two would get the
/// same name, the earlier keeps it and the later is refused (never silently
/// overwritten). Hand-registered tools should come first, then upstreams in
/// their stable order.
pub fn derive(requests: &[NameRequest<'_>], mode: PrefixMode, sep: &str) -> Vec<Derived> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    if mode == PrefixMode::Conditional {
        for r in requests {
            *counts.entry(r.original).or_default() += 1;
        }
    }
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let wanted = match (r.server, mode) {
            (None, _) | (Some(_), PrefixMode::Never) => r.original.to_owned(),
            (Some(server), PrefixMode::Always) => prefixed(server, sep, r.original),
            (Some(server), PrefixMode::Conditional) => {
                if counts.get(r.original).copied().unwrap_or(0) > 1 {
                    prefixed(server, sep, r.original)
                } else {
                    r.original.to_owned()
                }
            }
        };
        let owner = match r.server {
            Some(s) => format!("{s}/{}", r.original),
            None => r.original.to_owned(),
        };
        if let Some(taken_by) = taken.get(&wanted) {
            out.push(Derived::Conflict {
                wanted,
                taken_by: taken_by.clone(),
            });
        } else {
            taken.insert(wanted.clone(), owner);
            out.push(Derived::Name(wanted));
        }
    }
    out
}

/// `server{sep}name`, shortened to the spec's limit when needed: the tail is
/// replaced by a hash of the full name, so two long names stay distinct.
pub fn prefixed(server: &str, sep: &str, original: &str) -> String {
    let full = format!("{server}{sep}{original}");
    fit(full)
}

fn fit(name: String) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let hash = format!("{:016x}", fnv1a(name.as_bytes()));
    let mut cut = MAX_NAME_LEN - 1 - 8;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{}", &name[..cut], &hash[..8])
}

/// FNV-1a: a stable hash (std's hasher may change between releases, and
/// names must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Checks a name given by a user for a hand-registered tool.
pub fn validate_tool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("may use only A-Z a-z 0-9 _ - .".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(server: Option<&'a str>, original: &'a str) -> NameRequest<'a> {
        NameRequest { server, original }
    }

    fn names(out: &[Derived]) -> Vec<String> {
        out.iter()
            .map(|d| match d {
                Derived::Name(n) => n.clone(),
                Derived::Conflict { wanted, .. } => format!("!{wanted}"),
            })
            .collect()
    }

    #[test]
    fn always_prefixes() {
        let out = derive(
            &[req(Some("a"), "echo"), req(Some("b"), "echo")],
            PrefixMode::Always,
            "__",
        );
        assert_eq!(names(&out), ["a__echo", "b__echo"]);
    }

    #[test]
    fn conditional_prefixes_only_collisions() {
        let out = derive(
            &[
                req(Some("a"), "echo"),
                req(Some("b"), "echo"),
                req(Some("b"), "add"),
            ],
            PrefixMode::Conditional,
            "__",
        );
        assert_eq!(names(&out), ["a__echo", "b__echo", "add"]);
    }

    #[test]
    fn never_refuses_the_second_of_a_name() {
        let out = derive(
            &[req(Some("a"), "echo"), req(Some("b"), "echo")],
            PrefixMode::Never,
            "__",
        );
        assert_eq!(out[0], Derived::Name("echo".into()));
        assert_eq!(
            out[1],
            Derived::Conflict {
                wanted: "echo".into(),
                taken_by: "a/echo".into()
            }
        );
    }

    #[test]
    fn a_manual_tool_and_a_prefixed_name_never_overwrite() {
        let out = derive(
            &[req(None, "a__echo"), req(Some("a"), "echo")],
            PrefixMode::Always,
            "__",
        );
        assert_eq!(names(&out), ["a__echo", "!a__echo"]);
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let long = "x".repeat(200);
        let a = prefixed("server", "__", &format!("{long}1"));
        let b = prefixed("server", "__", &format!("{long}2"));
        assert!(a.len() <= MAX_NAME_LEN && b.len() <= MAX_NAME_LEN);
        assert_ne!(a, b);
        assert_eq!(prefixed("s", "__", "t"), "s__t");
    }
}
