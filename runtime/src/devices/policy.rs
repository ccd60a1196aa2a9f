//! Which device nodes a user-namespaced pod may be given: containerd's
//! default set, plus what `[devices] allow` in `/etc/cnfbox/config.toml`
//! names.
//!
//! ```toml
//! [devices]
//! allow = ["c 10:232", "c 10:238", "c 10:200", "c 241:*", "b 259:*"]
//! ```
//!
//! A rule is `TYPE MAJOR:MINOR` as the devices cgroup writes it
//! (Documentation/admin-guide/cgroup-v1/devices.rst): `c` char, `b` block,
//! `a` either; `*` for any major or minor. The policy bounds which nodes
//! cnfbox makes; the container's device cgroup still decides what may be
//! opened.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxDeviceType;

/// containerd's default device set (`oci.WithDefaultUnixDevices`: null,
/// zero, full, random, urandom, tty, console, ptmx, pts and tun), which is
/// also what libcontainer's device cgroup always allows
/// (`libcgroups::common::default_allow_devices` and `default_devices`):
/// cnfbox makes these nodes without an allowlist entry. Making a node is
/// not opening it: the console reaches the host's (`withheld`), so the
/// cgroup denies it unless `[devices] allow` names it.
const DEFAULT_SET: &[(char, i64, Option<i64>, &str)] = &[
    ('c', 1, Some(3), "null"),
    ('c', 1, Some(5), "zero"),
    ('c', 1, Some(7), "full"),
    ('c', 1, Some(8), "random"),
    ('c', 1, Some(9), "urandom"),
    ('c', 5, Some(0), "tty"),
    ('c', 5, Some(1), "console"),
    ('c', 5, Some(2), "ptmx"),
    ('c', 136, None, "pts"),
    ('c', 10, Some(200), "net/tun"),
];

/// Errors of the device policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: [devices] allow {rule:?}: {reason} (expected e.g. \"c 10:232\", \"c 10:*\" or \"b *:*\")")]
    Rule {
        path: PathBuf,
        rule: String,
        reason: &'static str,
    },
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `c`, `b` or `a` (either).
    typ: char,
    major: Option<i64>,
    minor: Option<i64>,
}

impl Rule {
    /// Parses `c 10:232`, `c 10:*`, `b *:*`, `a *:*`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let mut parts = text.split_whitespace();
        let (Some(typ), Some(numbers), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("not TYPE MAJOR:MINOR");
        };
        let typ = match typ {
            "c" | "b" | "a" => typ.chars().next().unwrap_or('a'),
            _ => return Err("type must be c, b or a"),
        };
        let (major, minor) = numbers.split_once(':').ok_or("not MAJOR:MINOR")?;
        let number = |s: &str| -> Result<Option<i64>, &'static str> {
            match s {
                "*" => Ok(None),
                _ => s
                    .parse::<u32>()
                    .map(|n| Some(i64::from(n)))
                    .map_err(|_| "major and minor must be numbers or *"),
            }
        };
        Ok(Self {
            typ,
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    fn matches(&self, dev: &Dev) -> bool {
        (self.typ == 'a' || self.typ == dev.typ)
            && self.major.is_none_or(|m| m == dev.major)
            && self.minor.is_none_or(|m| m == dev.minor)
    }
}

/// A device by type (`c` or `b`; `u` counts as `c`), major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dev {
    pub typ: char,
    pub major: i64,
    pub minor: i64,
}

impl Dev {
    /// The device of an OCI device type; `None` for a FIFO (no device) and
    /// for `a`, which names no single node.
    pub fn of(typ: LinuxDeviceType, major: i64, minor: i64) -> Option<Self> {
        let typ = match typ {
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::P | LinuxDeviceType::A => return None,
        };
        Some(Self { typ, major, minor })
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.typ, self.major, self.minor)
    }
}

/// The allowlist, from the `[devices]` section of the config file.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<(String, Rule)>,
    config: PathBuf,
}

impl Policy {
    /// Loads the allowlist from `path` (a missing file or section allows
    /// nothing beyond the default set).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let rules = match &crate::config::load(path)?.devices {
            Some(section) => section.allow.clone(),
            None => Vec::new(),
        };
        let allow = rules
            .into_iter()
            .map(|text| match Rule::parse(&text) {
                Ok(r) => Ok((text, r)),
                Err(reason) => Err(PolicyError::Rule {
                    path: path.to_path_buf(),
                    rule: text,
                    reason,
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow,
            config: path.to_path_buf(),
        })
    }

    /// The config file the rules came from.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Why `dev` may be given: the default set's name or the rule's text;
    /// `None` when nothing allows it.
    pub fn allows(&self, dev: &Dev) -> Option<String> {
        if let Some((_, _, _, name)) = DEFAULT_SET.iter().find(|(t, major, minor, _)| {
            *t == dev.typ && *major == dev.major && minor.is_none_or(|m| m == dev.minor)
        }) {
            return Some(format!("containerd's default set (/dev/{name})"));
        }
        self.allow
            .iter()
            .find(|(_, r)| r.matches(dev))
            .map(|(text, _)| format!("[devices] allow {text:?}"))
    }

    /// The `[devices] allow` rule that names `dev`, the default set aside.
    pub fn config_allows(&self, dev: &Dev) -> Option<&str> {
        self.allow
            .iter()
            .find(|(_, r)| r.matches(dev))
            .map(|(text, _)| text.as_str())
    }

    /// The rules as the config spells them, for error messages.
    pub fn rules(&self) -> String {
        if self.allow.is_empty() {
            "none".into()
        } else {
            self.allow
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(typ: char, major: i64, minor: i64) -> Dev {
        Dev { typ, major, minor }
    }

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Policy::load(&path)
    }

    #[test]
    fn rules_parse_and_match() {
        let r = Rule::parse("c 10:232").unwrap();
        assert!(r.matches(&dev('c', 10, 232)));
        assert!(!r.matches(&dev('c', 10, 238)));
        assert!(!r.matches(&dev('b', 10, 232)));
        let r = Rule::parse("c 10:*").unwrap();
        assert!(r.matches(&dev('c', 10, 238)));
        assert!(!r.matches(&dev('c', 11, 1)));
        let r = Rule::parse("a *:*").unwrap();
        assert!(r.matches(&dev('b', 259, 0)));
        assert!(Rule::parse("b  8:0 ").is_ok());
        for bad in [
            "",
            "c",
            "c 10",
            "x 1:2",
            "c 1:2 rwm",
            "c -1:2",
            "c a:b",
            "c 1:",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_set_needs_no_rule() {
        let p = policy("[idmap]\npool = \"x\"\n").unwrap();
        assert!(p.allows(&dev('c', 1, 3)).is_some());
        assert!(p.allows(&dev('c', 136, 7)).is_some());
        assert!(p.allows(&dev('c', 10, 200)).is_some());
        assert_eq!(p.allows(&dev('c', 10, 232)), None);
        assert_eq!(p.allows(&dev('b', 1, 3)), None);
        assert_eq!(p.rules(), "none");
    }

    #[test]
    fn config_rules_and_errors() {
        let p = policy("[devices]\nallow = [\"c 10:232\", \"b 259:*\"]\n").unwrap();
        assert_eq!(
            p.allows(&dev('c', 10, 232)).as_deref(),
            Some("[devices] allow \"c 10:232\"")
        );
        assert!(p.allows(&dev('b', 259, 3)).is_some());
        assert_eq!(p.allows(&dev('c', 10, 238)), None);
        assert_eq!(p.rules(), "c 10:232, b 259:*");
        let e = policy("[devices]\nallow = [\"c 10\"]\n").unwrap_err();
        assert!(e.to_string().contains("allow \"c 10\""), "{e}");
        let e = policy("[devices]\nalow = []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `alow`"), "{e}");
        let missing = Policy::load(Path::new("/nonexistent/cnfbox.toml")).unwrap();
        assert_eq!(missing.rules(), "none");
    }
}
