//! What a pod asks for: OCI 1.3 `linux.netDevices` entries and the
//! `cnfbox.io/interfaces` annotation, parsed into one list of attachments.
//!
//! Annotation grammar, entries separated by commas:
//!
//! ```text
//! NAME=move:HOSTDEV            hand host device HOSTDEV over, named NAME inside
//! NAME=macvlan:PARENT[:MODE]   a macvlan child of host device PARENT (bridge,
//!                              private, vepa or passthru; default bridge)
//! NAME=vlan:PARENT:ID          an 802.1Q sub-interface of PARENT, VLAN ID 1-4094
//! ```

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::LinuxNetDevice;
use serde::{Deserialize, Serialize};

/// A request that is malformed or clashes with another: which request
/// (`origin`), and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Duplicate { origin: String, reason: String },
}

/// The pod annotation naming the attachments cnfbox creates or moves.
pub const ANNOTATION: &str = cnfbox_annotations::INTERFACES;

/// macvlan modes (ip-link(8) `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl MacvlanMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bridge" => Self::Bridge,
            "private" => Self::Private,
            "vepa" => Self::Vepa,
            "passthru" => Self::Passthru,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Private => "private",
            Self::Vepa => "vepa",
            Self::Passthru => "passthru",
        }
    }
}

/// How an interface gets into the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// A host device handed over as is, given back at delete.
    Move { host: String },
    /// A macvlan child of a host device, created inside, destroyed at delete.
    Macvlan { parent: String, mode: MacvlanMode },
    /// A VLAN sub-interface of a host device, created inside, destroyed at delete.
    Vlan { parent: String, id: u16 },
}

impl Kind {
    /// The host device the attachment takes or stacks on.
    pub fn host_device(&self) -> &str {
        match self {
            Kind::Move { host } => host,
            Kind::Macvlan { parent, .. } | Kind::Vlan { parent, .. } => parent,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Move { host } => write!(f, "move:{host}"),
            Kind::Macvlan { parent, mode } => write!(f, "macvlan:{parent}:{}", mode.name()),
            Kind::Vlan { parent, id } => write!(f, "vlan:{parent}:{id}"),
        }
    }
}

/// One interface the pod asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its name inside the pod.
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
    /// Where it was asked for (`linux.netDevices.eth1`,
    /// `annotation cnfbox.io/interfaces entry data0`): every error names it.
    pub origin: String,
}

/// Checks a network device name as the kernel does (dev_valid_name):
/// 1-15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn check_name(origin: &str, name: &str) -> Result<(), RequestError> {
    let bad = |reason: &str| RequestError::Syntax {
        origin: origin.to_string(),
        reason: format!("invalid interface name {name:?}: {reason}"),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 15 {
        return Err(bad("longer than 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(bad("contains '/', ':' or whitespace"));
    }
    Ok(())
}

/// Parses the annotation's value.
pub fn parse_annotation(value: &str) -> Result<Vec<Request>, RequestError> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let origin = format!("annotation {ANNOTATION} entry {entry:?}");
        let syntax = |reason: String| RequestError::Syntax {
            origin: origin.clone(),
            reason,
        };
        let (name, spec) = entry.split_once('=').ok_or_else(|| {
            syntax(
                "expected NAME=move:DEV, NAME=macvlan:PARENT[:MODE] or NAME=vlan:PARENT:ID".into(),
            )
        })?;
        let name = name.trim();
        check_name(&origin, name)?;
        let parts: Vec<&str> = spec.trim().split(':').map(str::trim).collect();
        let kind = match parts.as_slice() {
            ["move", dev] => Kind::Move {
                host: dev.to_string(),
            },
            ["macvlan", parent] => Kind::Macvlan {
                parent: parent.to_string(),
                mode: MacvlanMode::Bridge,
            },
            ["macvlan", parent, mode] => Kind::Macvlan {
                parent: parent.to_string(),
                mode: MacvlanMode::parse(mode).ok_or_else(|| {
                    syntax(format!(
                        "unknown macvlan mode {mode:?} (bridge, private, vepa, passthru)"
                    ))
                })?,
            },
            ["vlan", parent, id] => Kind::Vlan {
                parent: parent.to_string(),
                id: id
                    .parse::<u16>()
                    .ok()
                    .filter(|i| (1..=4094).contains(i))
                    .ok_or_else(|| syntax(format!("VLAN id {id:?} is not in 1-4094")))?,
            },
            [kind, ..] if !["move", "macvlan", "vlan"].contains(kind) => {
                return Err(syntax(format!(
                    "unknown attachment kind {kind:?} (move, macvlan, vlan)"
                )))
            }
            _ => {
                return Err(syntax(
                    "expected move:DEV, macvlan:PARENT[:MODE] or vlan:PARENT:ID".into(),
                ))
            }
        };
        check_name(&origin, kind.host_device())?;
        out.push(Request {
            name: name.to_string(),
            kind,
            origin,
        });
    }
    Ok(out)
}

/// The spec's `linux.netDevices` as move requests, in name order.
pub fn from_net_devices(
    devices: &HashMap<String, LinuxNetDevice>,
) -> Result<Vec<Request>, RequestError> {
    let sorted: BTreeMap<_, _> = devices.iter().collect();
    let mut out = Vec::new();
    for (host, dev) in sorted {
        let origin = format!("linux.netDevices.{host}");
        check_name(&origin, host)?;
        let name = dev
            .name()
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(host);
        check_name(&origin, name)?;
        out.push(Request {
            name: name.to_string(),
            kind: Kind::Move { host: host.clone() },
            origin,
        });
    }
    Ok(out)
}

/// Refuses two attachments with one name inside the pod, a host device
/// handed over twice, and a device both handed over and used as a parent.
pub fn check_unique(requests: &[Request]) -> Result<(), RequestError> {
    for (i, r) in requests.iter().enumerate() {
        for earlier in &requests[..i] {
            if earlier.name == r.name {
                return Err(RequestError::Duplicate {
                    origin: r.origin.clone(),
                    reason: format!(
                        "interface name {} is also asked for by {}",
                        r.name, earlier.origin
                    ),
                });
            }
            let moved = |x: &Request| matches!(x.kind, Kind::Move { .. });
            if earlier.kind.host_device() == r.kind.host_device() && (moved(r) || moved(earlier)) {
                return Err(RequestError::Duplicate {
                    origin: r.origin.clone(),
                    reason: format!(
                        "host device {} is also used by {}",
                        r.kind.host_device(),
                        earlier.origin
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_grammar() {
        let r = parse_annotation(
            "data0=macvlan:trunk0:bridge, fh0=move:vf3 ,v1=vlan:trunk0:100,m=macvlan:t1",
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].name, "data0");
        assert_eq!(
            r[0].kind,
            Kind::Macvlan {
                parent: "trunk0".into(),
                mode: MacvlanMode::Bridge
            }
        );
        assert_eq!(r[1].kind, Kind::Move { host: "vf3".into() });
        assert_eq!(
            r[2].kind,
            Kind::Vlan {
                parent: "trunk0".into(),
                id: 100
            }
        );
        assert_eq!(r[3].kind.to_string(), "macvlan:t1:bridge");
        assert!(parse_annotation("").unwrap().is_empty());
    }

    #[test]
    fn annotation_errors_name_the_entry() {
        for (value, needle) in [
            ("data0", "expected NAME="),
            ("x=tap:eth0", "unknown attachment kind \"tap\""),
            ("x=macvlan:t:weird", "unknown macvlan mode"),
            ("x=vlan:t:0", "not in 1-4094"),
            ("x=vlan:t:4095", "not in 1-4094"),
            ("x=vlan:t", "expected move:DEV"),
            ("averyveryverylongname=move:eth0", "longer than 15"),
            ("a/b=move:eth0", "'/'"),
            ("x=move:", "empty"),
        ] {
            let err = parse_annotation(value).unwrap_err().to_string();
            assert!(err.contains(needle), "{value}: {err}");
            assert!(err.contains(ANNOTATION), "{value}: {err}");
        }
    }

    #[test]
    fn net_devices_and_uniqueness() {
        let mut d = HashMap::new();
        d.insert("eth1".to_string(), LinuxNetDevice::default());
        let mut named = LinuxNetDevice::default();
        named.set_name(Some("net0".into()));
        d.insert("eth2".to_string(), named);
        let r = from_net_devices(&d).unwrap();
        assert_eq!(r[0].name, "eth1");
        assert_eq!(r[1].name, "net0");
        assert_eq!(r[1].origin, "linux.netDevices.eth2");
        check_unique(&r).unwrap();

        let mut all = r.clone();
        all.extend(parse_annotation("net0=macvlan:trunk0").unwrap());
        let err = check_unique(&all).unwrap_err().to_string();
        assert!(
            err.contains("net0") && err.contains("linux.netDevices.eth2"),
            "{err}"
        );

        let two = parse_annotation("a=macvlan:eth1").unwrap();
        let err = check_unique(&[r[0].clone(), two[0].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("host device eth1"), "{err}");
        // Two macvlans on one parent are fine.
        check_unique(&parse_annotation("a=macvlan:t,b=macvlan:t").unwrap()).unwrap();
    }
}
