//! Which host devices a pod may take or stack on, from `[network]` in
//! `/etc/cnfbox/config.toml`:
//!
//! ```toml
//! [network]
//! movable = ["vf*"]          # host devices a pod may be handed (move, linux.netDevices)
//! parents = [                # host devices macvlan/vlan children may be made on
//!     "trunk0",              # macvlan bridge/private/vepa only
//!     { name = "tr*", passthru = true, vlans = [100, "200-299"] },
//! ]
//! max_attachments = 4        # interfaces per pod
//! ```
//!
//! Patterns are shell globs. Without the section nothing may be attached: a
//! tenant must never get the host's management NIC by default.
//!
//! A `parents` entry is a pattern, or a table with the pattern as `name`
//! and what children of a matching parent may be; the first entry whose
//! pattern matches decides. A macvlan in `passthru` mode takes the parent
//! over (pod root sets its MAC address and promiscuity, the host's trunk's
//! own), so it needs `passthru = true`. A VLAN sub-interface puts the pod
//! on that VLAN of the trunk, so its id must be in the entry's `vlans`
//! (ids and `"A-B"` ranges); without `vlans` the parent takes no VLAN
//! children at all.

use std::path::{Path, PathBuf};

use super::request::{Kind, MacvlanMode, Request};
use super::NetError;

/// Attachments per pod when the config does not say.
pub const DEFAULT_MAX: usize = 8;

/// A `parents` entry: which devices, and what their children may be.
#[derive(Debug, Clone)]
struct Parent {
    pattern: String,
    glob: glob::Pattern,
    passthru: bool,
    /// Inclusive VLAN id ranges; empty: no VLAN children.
    vlans: Vec<(u16, u16)>,
}

/// The `[network]` policy.
#[derive(Debug, Clone)]
pub struct Policy {
    movable: Vec<(String, glob::Pattern)>,
    parents: Vec<Parent>,
    max: usize,
    config: PathBuf,
}

fn pattern(path: &Path, key: &str, p: &str) -> Result<glob::Pattern, NetError> {
    glob::Pattern::new(p).map_err(|e| NetError::Config {
        path: path.to_path_buf(),
        reason: format!("{key}: bad pattern {p:?}: {e}"),
    })
}

fn patterns(
    path: &Path,
    key: &str,
    list: &[String],
) -> Result<Vec<(String, glob::Pattern)>, NetError> {
    list.iter()
        .map(|p| pattern(path, key, p).map(|g| (p.clone(), g)))
        .collect()
}

/// One `vlans` item: an id or an `"A-B"` range, within 1-4094.
fn vlan_range(item: &toml::Value) -> Result<(u16, u16), String> {
    let id = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|i| (1..=4094).contains(i))
            .ok_or_else(|| format!("VLAN id {n} is not in 1-4094"))
    };
    let text_id = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{item} is not a VLAN id or \"A-B\" range"))
            .and_then(id)
    };
    match item {
        toml::Value::Integer(n) => id(*n).map(|i| (i, i)),
        toml::Value::String(s) => {
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (text_id(a)?, text_id(b)?),
                None => {
                    let a = text_id(s)?;
                    (a, a)
                }
            };
            if a > b {
                return Err(format!("range {s:?} is empty"));
            }
            Ok((a, b))
        }
        other => Err(format!("{other} is not a VLAN id or \"A-B\" range")),
    }
}

fn parent(path: &Path, line: usize, n: usize, entry: &toml::Value) -> Result<Parent, NetError> {
    let bad = |reason: String| NetError::Entry {
        path: path.to_path_buf(),
        line,
        reason: format!("parents entry {n}: {reason}"),
    };
    let table = match entry {
        toml::Value::String(p) => {
            return Ok(Parent {
                pattern: p.clone(),
                glob: pattern(path, "parents", p)?,
                passthru: false,
                vlans: Vec::new(),
            })
        }
        toml::Value::Table(t) => t,
        other => {
            return Err(bad(format!(
                "{other} is neither a pattern nor a table {{ name = ..., passthru = ..., vlans = [...] }}"
            )))
        }
    };
    if let Some(k) = table
        .keys()
        .find(|k| !["name", "passthru", "vlans"].contains(&k.as_str()))
    {
        return Err(bad(format!("unknown key {k:?} (name, passthru, vlans)")));
    }
    let name = match table.get("name") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("name = {other} is not a string"))),
        None => return Err(bad("no name (the parent device pattern)".into())),
    };
    let passthru = match table.get("passthru") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(bad(format!(
                "{name}: passthru = {other} is not true or false"
            )))
        }
    };
    let vlans = match table.get("vlans") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(vlan_range)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("{name}: vlans: {e}")))?,
        Some(other) => return Err(bad(format!("{name}: vlans = {other} is not a list"))),
    };
    Ok(Parent {
        glob: pattern(path, "parents", &name)?,
        pattern: name,
        passthru,
        vlans,
    })
}

fn show_vlans(vlans: &[(u16, u16)]) -> String {
    if vlans.is_empty() {
        return "none".into();
    }
    vlans
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Policy {
    /// Loads the policy from `path`; a missing file or section allows nothing.
    pub fn load(path: &Path) -> Result<Self, NetError> {
        let config = crate::config::load(path)?;
        let section = &config.network;
        Ok(Self {
            movable: patterns(path, "movable", &section.movable)?,
            parents: section
                .parents
                .iter()
                .enumerate()
                .map(|(i, e)| parent(path, config.line_of(e.span().start), i + 1, e.get_ref()))
                .collect::<Result<_, _>>()?,
            max: section.max_attachments.unwrap_or(DEFAULT_MAX),
            config: path.to_path_buf(),
        })
    }

    /// Checks every request against the allowlists, the parents' settings
    /// and the per-pod maximum.
    pub fn check(&self, requests: &[Request]) -> Result<(), NetError> {
        if requests.len() > self.max {
            return Err(NetError::TooMany {
                count: requests.len(),
                max: self.max,
                config: self.config.clone(),
            });
        }
        for r in requests {
            let dev = r.kind.host_device();
            let not_allowed = |rule: &'static str, allowed: Vec<&str>| NetError::NotAllowed {
                origin: r.origin.clone(),
                device: dev.to_string(),
                rule,
                allowed: if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(",")
                },
                config: self.config.clone(),
            };
            if let Kind::Move { .. } = r.kind {
                if !self.movable.iter().any(|(_, g)| g.matches(dev)) {
                    let allowed = self.movable.iter().map(|(s, _)| s.as_str()).collect();
                    return Err(not_allowed("movable", allowed));
                }
                continue;
            }
            let Some(p) = self.parents.iter().find(|p| p.glob.matches(dev)) else {
                let allowed = self.parents.iter().map(|p| p.pattern.as_str()).collect();
                return Err(not_allowed("parents", allowed));
            };
            let refused = |what: String, hint: String| {
                NetError::ParentSetting {
                origin: r.origin.clone(),
                reason: format!(
                    "interface {}: {what} on parent {dev} is not allowed by [network] parents entry {:?} in {} ({hint})",
                    r.name,
                    p.pattern,
                    self.config.display()
                ),
            }
            };
            match r.kind {
                Kind::Macvlan {
                    mode: MacvlanMode::Passthru,
                    ..
                } if !p.passthru => {
                    return Err(refused(
                        "macvlan mode passthru".into(),
                        "it needs passthru = true there".into(),
                    ))
                }
                Kind::Vlan { id, .. } if !p.vlans.iter().any(|(a, b)| (*a..=*b).contains(&id)) => {
                    return Err(refused(
                        format!("VLAN id {id}"),
                        format!("vlans there: {}", show_vlans(&p.vlans)),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::parse_annotation;
    use super::*;

    fn policy(text: &str) -> Result<Policy, NetError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Policy::load(&path)
    }

    #[test]
    fn default_allows_nothing() {
        let p = Policy::load(Path::new("/nonexistent/cnfbox.toml")).unwrap();
        let err = p
            .check(&parse_annotation("d=macvlan:trunk0").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trunk0") && err.contains("[network] parents") && err.contains("none"),
            "{err}"
        );
        let p = policy("[idmap]\npool = \"100000:65536\"\n").unwrap();
        assert!(p.check(&parse_annotation("f=move:vf0").unwrap()).is_err());
        assert!(p.check(&[]).is_ok());
    }

    #[test]
    fn globs_rules_and_maximum() {
        let p =
            policy("[network]\nmovable = [\"vf*\"]\nparents = [\"trunk0\"]\nmax_attachments = 2\n")
                .unwrap();
        p.check(&parse_annotation("a=move:vf3,b=macvlan:trunk0").unwrap())
            .unwrap();
        let err = p
            .check(&parse_annotation("a=move:eth0").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("eth0") && err.contains("[network] movable") && err.contains("vf*"),
            "{err}"
        );
        // A movable device is not a parent, nor the other way round.
        assert!(p
            .check(&parse_annotation("a=macvlan:vf3").unwrap())
            .is_err());
        assert!(p
            .check(&parse_annotation("a=move:trunk0").unwrap())
            .is_err());
        let err = p
            .check(&parse_annotation("a=macvlan:trunk0,b=macvlan:trunk0,c=macvlan:trunk0").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 interfaces") && err.contains("max_attachments = 2"),
            "{err}"
        );
    }

    #[test]
    fn bad_config_is_named() {
        let err = policy("[network]\nmovable = [\"[\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("movable: bad pattern"), "{err}");
        let err = policy("[network]\nmoveable = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[network]") && err.contains("moveable"),
            "{err}"
        );
    }

    #[test]
    fn passthru_needs_the_parent_entry_to_allow_it() {
        let p = policy("[network]\nparents = [\"trunk0\", { name = \"tr*\", passthru = true }]\n")
            .unwrap();
        // A plain pattern entry: bridge, private and vepa, never passthru.
        p.check(&parse_annotation("a=macvlan:trunk0:vepa,b=macvlan:trunk0").unwrap())
            .unwrap();
        let err = p
            .check(&parse_annotation("d0=macvlan:trunk0:passthru").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interface d0")
                && err.contains("macvlan mode passthru")
                && err.contains("parent trunk0")
                && err.contains("parents entry \"trunk0\"")
                && err.contains("passthru = true")
                && !err.contains('\n'),
            "{err}"
        );
        // The first matching entry decides: trunk0 matches "trunk0" before
        // "tr*"; tr1 only "tr*", which allows passthru.
        p.check(&parse_annotation("d0=macvlan:tr1:passthru").unwrap())
            .unwrap();
        let p = policy("[network]\nparents = [{ name = \"tr*\", passthru = false }]\n").unwrap();
        assert!(p
            .check(&parse_annotation("d0=macvlan:tr1:passthru").unwrap())
            .is_err());
    }

    #[test]
    fn vlan_ids_need_the_parent_entry_to_list_them() {
        let p = policy(
            "[network]\nparents = [\"plain*\", { name = \"tr*\", vlans = [7, \"100-199\", \"300\"] }]\n",
        )
        .unwrap();
        p.check(
            &parse_annotation("a=vlan:tr0:7,b=vlan:tr0:100,c=vlan:tr0:199,d=vlan:tr0:300").unwrap(),
        )
        .unwrap();
        for (entry, id) in [
            ("v8=vlan:tr0:8", "8"),
            ("v200=vlan:tr0:200", "200"),
            ("v1=vlan:tr0:1", "1"),
        ] {
            let err = p
                .check(&parse_annotation(entry).unwrap())
                .unwrap_err()
                .to_string();
            let name = entry.split('=').next().unwrap();
            assert!(
                err.contains(&format!("interface {name}"))
                    && err.contains(&format!("VLAN id {id} on parent tr0"))
                    && err.contains("parents entry \"tr*\"")
                    && err.contains("vlans there: 7,100-199,300"),
                "{err}"
            );
        }
        // An entry without vlans takes no VLAN children (stricter than
        // before, when any id was allowed); macvlan still works there.
        let err = p
            .check(&parse_annotation("v5=vlan:plain0:5").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vlans there: none") && err.contains("plain0"),
            "{err}"
        );
        p.check(&parse_annotation("m=macvlan:plain0").unwrap())
            .unwrap();
        // A macvlan child ignores vlans; a VLAN child ignores passthru.
        p.check(&parse_annotation("m=macvlan:tr0:bridge").unwrap())
            .unwrap();
    }

    #[test]
    fn bad_parent_entries_are_named() {
        for (text, needle) in [
            (
                "parents = [{ name = \"t\", passtru = true }]",
                "parents entry 1: unknown key \"passtru\"",
            ),
            (
                "parents = [\"a\", { passthru = true }]",
                "parents entry 2: no name",
            ),
            (
                "parents = [{ name = \"t\", vlans = [0] }]",
                "t: vlans: VLAN id 0 is not in 1-4094",
            ),
            (
                "parents = [{ name = \"t\", vlans = [\"5-4095\"] }]",
                "VLAN id 4095 is not in 1-4094",
            ),
            (
                "parents = [{ name = \"t\", vlans = [\"9-3\"] }]",
                "range \"9-3\" is empty",
            ),
            (
                "parents = [{ name = \"t\", vlans = [\"x\"] }]",
                "is not a VLAN id",
            ),
            ("parents = [{ name = \"t\", vlans = 5 }]", "is not a list"),
            (
                "parents = [{ name = \"t\", passthru = \"yes\" }]",
                "is not true or false",
            ),
            ("parents = [{ name = \"[\" }]", "parents: bad pattern"),
            ("parents = [3]", "neither a pattern nor a table"),
        ] {
            let err = policy(&format!("[network]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(needle) && err.contains("[network]"),
                "{text}: {err}"
            );
        }
        // A table entry's own keys are checked here, not by config.rs:
        // the line is still the entry's.
        let err = policy(
            "[network]
parents = [\n  \"a\",\n  { name = \"t\", vlan = [5] },\n]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("config.toml:4: [network] parents entry 2: unknown key \"vlan\""),
            "{err}"
        );
    }
}
