//! `/etc/cnfbox/config.toml` (path from `CNFBOX_CONFIG`): every section in
//! one typed [`Config`], parsed once per command.
//!
//! Each feature keeps the meaning of its section (`[idmap]`: the idmap
//! crate; `[numa]`, `[capabilities]`, `[network]`, `[devices]`, `[pods]`:
//! their modules here); this module only knows their shape. Every struct
//! refuses what it does not know, so that a misspelt `[netwrok]` or
//! `alow = [...]` stops the command with the file, the line and the key
//! instead of silently meaning "no policy".

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_path_to_error::Segment;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The host ID pool (idmap crate).
    #[serde(default)]
    pub idmap: idmap::IdmapConfig,
    /// CPUs kept for the host (`numa`).
    #[serde(default)]
    pub numa: Numa,
    /// The capability allowlist (`capabilities`); absent: the default one.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// Which host devices pods may take or stack on (`net::policy`).
    #[serde(default)]
    pub network: Network,
    /// The device node allowlist (`devices::policy`).
    #[serde(default)]
    pub devices: Option<Devices>,
    /// Host namespaces and privileged pods (`host_ns`).
    #[serde(default)]
    pub pods: Pods,
    /// Where it came from.
    #[serde(skip)]
    pub path: PathBuf,
    /// Whether the file existed (a missing file gives the defaults).
    #[serde(skip)]
    pub found: bool,
    /// Offsets where each line starts, for the lines of later checks.
    #[serde(skip)]
    line_starts: Vec<usize>,
}

/// `[numa]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numa {
    /// A CPU list (`0-1,8`) the pods never get.
    #[serde(default)]
    pub reserved_cpus: String,
    /// How the node follows kubelet's cpuset and the pod's devices when no
    /// annotation names one, and when the inputs disagree (`numa::derive`).
    #[serde(default)]
    pub align: crate::numa::derive::Align,
}

/// `[capabilities]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Capabilities a spec or the annotation may ask for.
    pub allow: Vec<String>,
}

/// `[network]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Host devices a pod may be handed (globs).
    #[serde(default)]
    pub movable: Vec<String>,
    /// Parents of macvlan/VLAN children: a glob, or a table `{ name,
    /// passthru, vlans }` (checked by `net::policy`, which names the line).
    #[serde(default)]
    pub parents: Vec<toml::Spanned<toml::Value>>,
    /// Interfaces per pod.
    pub max_attachments: Option<usize>,
}

/// `[devices]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// Device rules (`c 10:200`, `b 8:*`).
    pub allow: Vec<String>,
}

/// `[pods]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pods {
    /// What happens to pods asking for host namespaces or privilege.
    #[serde(default)]
    pub host_namespaces: HostNamespaces,
}

/// `[pods] host_namespaces`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostNamespaces {
    /// Refuse such pods with an error naming the field (the default).
    #[default]
    Refuse,
    /// Run them in the host's user namespace, as runc does.
    HostUserns,
}

/// Errors reading or parsing the file: one line each, naming the file and,
/// for what it says, the line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("{path}:{line}: {what}")]
    Parse {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

type Loaded = Result<Arc<Config>, ConfigError>;

static LOADED: Mutex<Option<HashMap<PathBuf, Loaded>>> = Mutex::new(None);

/// The config at `path`, read and parsed on the first call for it in this
/// process: one command sees one version of the file (or one error).
pub fn load(path: &Path) -> Loaded {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loaded
        .get_or_insert_with(HashMap::new)
        .entry(path.to_path_buf())
        .or_insert_with(|| Config::read(path).map(Arc::new))
        .clone()
}

/// The config this command uses: `$CNFBOX_CONFIG` or
/// `/etc/cnfbox/config.toml`.
pub fn current() -> Loaded {
    load(&idmap::EtcRoot::default().config_path())
}

/// Whether `CNFBOX_CONFIG` names the file: then it must exist for the
/// host ID pool (see [`Config::idmap`]).
pub fn named_by_env() -> bool {
    std::env::var_os(idmap::config::CONFIG_ENV).is_some_and(|p| !p.is_empty())
}

impl Config {
    /// Reads and parses `path`; a missing file gives the defaults.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config {
                path: path.to_path_buf(),
                ..Config::default()
            }),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source: Arc::new(source),
            }),
        }
    }

    /// Parses `text`, refusing unknown sections and keys and values of the
    /// wrong type with the line they are on.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let de = toml::Deserializer::new(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let segments: Vec<String> = e
                .path()
                .iter()
                .map(|s| match s {
                    Segment::Map { key } => key.clone(),
                    Segment::Seq { index } => format!("[{index}]"),
                    Segment::Enum { variant } => variant.clone(),
                    Segment::Unknown => "?".into(),
                })
                .collect();
            let inner = e.into_inner();
            let offset = inner.span().map_or(0, |s| s.start);
            let line = line_of(&line_starts, offset);
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                what: describe(&segments, &one_line(inner.message()), line_text),
            }
        })?;
        cfg.path = path.to_path_buf();
        cfg.found = true;
        cfg.line_starts = line_starts;
        Ok(cfg)
    }

    /// The 1-based line of byte `offset` of the file (of a span that a
    /// section kept, as `[network] parents` does).
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(&self.line_starts, offset)
    }

    /// The idmap crate's view of `[idmap]`, checked as it checks it. A
    /// missing file is an error when `must_exist` (someone named it in
    /// `CNFBOX_CONFIG`).
    pub fn idmap(&self, must_exist: bool) -> Result<idmap::Config, idmap::ConfigError> {
        if !self.found {
            if must_exist {
                return Err(idmap::ConfigError::Read {
                    path: self.path.clone(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            return Ok(idmap::Config::default());
        }
        idmap::Config::from_section(&self.path, self.idmap.clone())
    }
}

fn line_of(line_starts: &[usize], offset: usize) -> usize {
    line_starts.partition_point(|&start| start <= offset).max(1)
}

/// One line for a serde error at `segments` (section, key, ...): unknown
/// sections and keys with what is known there, other errors after the key
/// they are about.
fn describe(segments: &[String], message: &str, line_text: &str) -> String {
    if let Some((name, known)) = unknown_field(message) {
        return match segments {
            [] | [_] if line_text.trim_start().starts_with('[') => {
                format!("unknown section [{name}] (known: {known})")
            }
            [] | [_] => format!("unknown key `{name}` outside any section (sections: {known})"),
            [section, ..] => format!("unknown field `{name}` in [{section}] (known: {known})"),
        };
    }
    match segments {
        [] => message.to_string(),
        [section] => format!("[{section}]: {message}"),
        [section, key @ ..] => format!("[{section}] {}: {message}", key.join(".")),
    }
}

/// toml's syntax errors span lines ("invalid table header\nexpected ...").
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(": ")
}

/// The name and the known names of serde's `unknown field` message.
fn unknown_field(message: &str) -> Option<(&str, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let known = match rest.split_once("expected ") {
        Some((_, list)) => list.trim_start_matches("one of ").replace('`', ""),
        None => "none".to_string(),
    };
    Some((name, known))
}

#[cfg(test)]
mod tests;
