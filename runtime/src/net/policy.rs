//! Which host devices a pod may take or stack on, from `[network]` in
//! `/etc/cnfbox/config.toml`:
//!
//! ```toml
//! [network]
//! movable = ["vf*"]          # host devices a pod may be handed (move, linux.netDevices)
//! parents = ["trunk0"]       # host devices macvlan/vlan children may be made on
//! max_attachments = 4        # interfaces per pod
//! ```
//!
//! Patterns are shell globs. Without the section nothing may be attached: a
//! tenant must never get the host's management NIC by default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::request::{Kind, Request};
use super::NetError;

/// Attachments per pod when the config does not say.
pub const DEFAULT_MAX: usize = 8;

#[derive(Debug, Default, Deserialize)]
struct File {
    network: Option<Section>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    movable: Vec<String>,
    #[serde(default)]
    parents: Vec<String>,
    max_attachments: Option<usize>,
}

/// The `[network]` policy.
#[derive(Debug, Clone)]
pub struct Policy {
    movable: Vec<(String, glob::Pattern)>,
    parents: Vec<(String, glob::Pattern)>,
    max: usize,
    config: PathBuf,
}

fn patterns(
    path: &Path,
    key: &str,
    list: &[String],
) -> Result<Vec<(String, glob::Pattern)>, NetError> {
    list.iter()
        .map(|p| {
            glob::Pattern::new(p)
                .map(|g| (p.clone(), g))
                .map_err(|e| NetError::Config {
                    path: path.to_path_buf(),
                    reason: format!("{key}: bad pattern {p:?}: {e}"),
                })
        })
        .collect()
}

impl Policy {
    /// Loads the policy from `path`; a missing file or section allows nothing.
    pub fn load(path: &Path) -> Result<Self, NetError> {
        let section = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: File = toml::from_str(&text).map_err(|e| NetError::Config {
                    path: path.to_path_buf(),
                    reason: e.message().to_string(),
                })?;
                file.network.unwrap_or_default()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Section::default(),
            Err(source) => {
                return Err(NetError::ReadConfig {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Self {
            movable: patterns(path, "movable", &section.movable)?,
            parents: patterns(path, "parents", &section.parents)?,
            max: section.max_attachments.unwrap_or(DEFAULT_MAX),
            config: path.to_path_buf(),
        })
    }

    /// Checks every request against the allowlists and the per-pod maximum.
    pub fn check(&self, requests: &[Request]) -> Result<(), NetError> {
        if requests.len() > self.max {
            return Err(NetError::TooMany {
                count: requests.len(),
                max: self.max,
                config: self.config.clone(),
            });
        }
        for r in requests {
            let (rule, list) = match r.kind {
                Kind::Move { .. } => ("movable", &self.movable),
                Kind::Macvlan { .. } | Kind::Vlan { .. } => ("parents", &self.parents),
            };
            let dev = r.kind.host_device();
            if !list.iter().any(|(_, g)| g.matches(dev)) {
                let allowed: Vec<&str> = list.iter().map(|(s, _)| s.as_str()).collect();
                return Err(NetError::NotAllowed {
                    origin: r.origin.clone(),
                    device: dev.to_string(),
                    rule,
                    allowed: if allowed.is_empty() {
                        "none".into()
                    } else {
                        allowed.join(",")
                    },
                    config: self.config.clone(),
                });
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
}
