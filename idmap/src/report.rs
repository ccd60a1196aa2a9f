//! Rendering for `cnfbox ranges list|show|release|gc|repair`: which pod owns
//! which host IDs, as a text table or as JSON (`--format json`).

use std::str::FromStr;

use serde::Serialize;

use crate::range::Mapping;
use crate::state::{Origin, PodEntry};

/// Errors rendering a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `--format` is neither `text` nor `json`.
    #[error("unknown format {0:?}: use text or json")]
    Format(String),
    /// JSON serialisation.
    #[error("encoding JSON report")]
    Json(#[source] serde_json::Error),
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Text,
    /// A JSON document for programs.
    Json,
}

impl FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(ReportError::Format(other.to_owned())),
        }
    }
}

/// One side (uid or gid) of a pod's range, with the half-open host end
/// spelled out.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SideView {
    /// First container ID.
    pub container_id: u32,
    /// First host ID.
    pub host_start: u32,
    /// One past the last host ID.
    pub host_end: u32,
    /// Number of IDs.
    pub size: u32,
}

impl From<Mapping> for SideView {
    fn from(m: Mapping) -> Self {
        SideView {
            container_id: m.container_id(),
            host_start: m.host_id(),
            host_end: m.host_range().end(),
            size: m.size(),
        }
    }
}

/// A pod's range as reported.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RangeView {
    /// Pod id.
    pub pod: String,
    /// State root of the runtime holding the pod (`null`: not recorded).
    pub root: Option<String>,
    /// Allocated or registered.
    pub origin: Origin,
    /// Unix seconds of the grant.
    pub created: u64,
    /// Host uids.
    pub uid: SideView,
    /// Host gids.
    pub gid: SideView,
}

impl From<&PodEntry> for RangeView {
    fn from(e: &PodEntry) -> Self {
        RangeView {
            pod: e.pod.clone(),
            root: e.root.as_ref().map(|r| r.display().to_string()),
            origin: e.origin,
            created: e.created,
            uid: e.mapping.uid.into(),
            gid: e.mapping.gid.into(),
        }
    }
}

/// Renders entries as a table (a header line, then one line per pod) or as
/// a JSON array.
pub fn render_entries(entries: &[PodEntry], format: Format) -> Result<String, ReportError> {
    let views: Vec<RangeView> = entries.iter().map(RangeView::from).collect();
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&views).map_err(ReportError::Json)?;
            s.push('\n');
            Ok(s)
        }
        Format::Text => {
            let width = views.iter().map(|v| v.pod.len()).max().unwrap_or(0).max(3);
            let mut out = String::new();
            out.push_str(&format!(
                "{:width$}  {:10}  {:>23}  {:>23}  {:10}  STATE ROOT\n",
                "POD", "ORIGIN", "HOST UIDS [start, end)", "HOST GIDS [start, end)", "CREATED"
            ));
            for v in &views {
                out.push_str(&format!(
                    "{:width$}  {:10}  {:>23}  {:>23}  {:10}  {}\n",
                    v.pod,
                    v.origin.to_string(),
                    format!("[{}, {})", v.uid.host_start, v.uid.host_end),
                    format!("[{}, {})", v.gid.host_start, v.gid.host_end),
                    v.created,
                    v.root.as_deref().unwrap_or("-")
                ));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::PodMapping;

    #[test]
    fn text_and_json() {
        let e = PodEntry {
            root: Some("/run/cnfbox".into()),
            pod: "pod-a".into(),
            origin: Origin::Allocated,
            created: 42,
            mapping: PodMapping::symmetric(Mapping::new(0, 100_000, 65_536).expect("m")),
        };
        let text = render_entries(std::slice::from_ref(&e), Format::Text).expect("text");
        assert!(
            text.contains("pod-a") && text.contains("[100000, 165536)"),
            "{text}"
        );
        let json = render_entries(&[e], "json".parse().expect("fmt")).expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v[0]["uid"]["host_end"], 165_536);
        assert_eq!(v[0]["origin"], "allocated");
        assert_eq!(v[0]["root"], "/run/cnfbox");
        assert!("yaml".parse::<Format>().is_err());
    }
}
