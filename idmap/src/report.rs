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
    /// The same as an ISO-8601 UTC time (`2026-12-07T17:36:13Z`).
    pub created_at: String,
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
            created_at: iso8601(e.created),
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
            let rows = views
                .iter()
                .map(|v| {
                    vec![
                        v.pod.clone(),
                        v.origin.to_string(),
                        format!("[{}, {})", v.uid.host_start, v.uid.host_end),
                        format!("[{}, {})", v.gid.host_start, v.gid.host_end),
                        v.created_at.clone(),
                        v.root.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "POD",
                    "ORIGIN",
                    "HOST UIDS [start, end)",
                    "HOST GIDS [start, end)",
                    "CREATED",
                    "STATE ROOT",
                ],
                rows,
            ))
        }
    }
}

/// Unix seconds as an ISO-8601 UTC time to the second
/// (`2026-12-07T17:36:13Z`); the number itself if it is out of range.
pub fn iso8601(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// A text table: each column as wide as its widest cell or header, cells
/// left-aligned, two spaces between columns, no trailing blanks.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
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
        assert!(text.contains("1970-01-01T00:00:42Z"), "{text}");
        // Every value starts in its header's column.
        let lines: Vec<&str> = text.lines().collect();
        for header in ["ORIGIN", "HOST UIDS", "HOST GIDS", "CREATED", "STATE ROOT"] {
            let col = lines[0].find(header).expect(header);
            assert_eq!(&lines[1][col - 2..col], "  ", "{header} column: {text}");
            assert_ne!(&lines[1][col..col + 1], " ", "{header} column: {text}");
        }
        let json = render_entries(&[e], "json".parse().expect("fmt")).expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v[0]["uid"]["host_end"], 165_536);
        assert_eq!(v[0]["origin"], "allocated");
        assert_eq!(v[0]["root"], "/run/cnfbox");
        assert_eq!(v[0]["created"], 42);
        assert_eq!(v[0]["created_at"], "1970-01-01T00:00:42Z");
        assert!("yaml".parse::<Format>().is_err());
    }
}
