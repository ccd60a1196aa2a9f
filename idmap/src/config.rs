//! Where the ID pool comes from: `[idmap]` of `/etc/cnfbox/config.toml`
//! (path overridable with `CNFBOX_CONFIG`), or else the `cnfbox` entries of
//! `/etc/subuid` and `/etc/subgid`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::range::{check_block_multiple, IdRange, RangeError, HOST_RESERVED_END, ID_BLOCK};
use crate::subid::{Owner, SubIdError, SubIdFile};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "CNFBOX_CONFIG";
/// The owner name of cnfbox's entries in subuid/subgid.
pub const SUBID_OWNER: &str = "cnfbox";
/// Default ledger directory.
pub const DEFAULT_LEDGER_DIR: &str = "/var/lib/cnfbox/idmap";

/// Errors loading the config or resolving the ID pool.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `read(2)` of the config file.
    #[error("reading config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The TOML is malformed or has unknown `[idmap]` keys.
    #[error("parsing config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// `pool` is not `START:SIZE`.
    #[error("{path}: [idmap] pool")]
    PoolSyntax {
        path: PathBuf,
        #[source]
        source: RangeError,
    },
    /// Both `pool` and `pool_start`/`pool_size` are set, or only one of the
    /// latter two.
    #[error("{path}: [idmap] set either pool = \"START:SIZE\" or both pool_start and pool_size")]
    PoolKeys { path: PathBuf },
    /// `range_size` is not a positive multiple of 65536.
    #[error("{path}: [idmap] range_size")]
    RangeSize {
        path: PathBuf,
        #[source]
        source: RangeError,
    },
    /// The pool includes host IDs below 65536.
    #[error("{kind} pool {range} from {origin} includes host IDs below {HOST_RESERVED_END}")]
    PoolReserved {
        kind: &'static str,
        range: IdRange,
        origin: String,
    },
    /// The pool overlaps another owner's subordinate IDs.
    #[error(
        "{kind} pool {range} from {origin} overlaps {owner}:{other} at {file}:{line}; \
         pick a range no other user owns"
    )]
    PoolForeign {
        kind: &'static str,
        range: IdRange,
        origin: String,
        owner: String,
        other: IdRange,
        file: PathBuf,
        line: usize,
    },
    /// The pool cannot hold even one pod range.
    #[error("{kind} pool {range} from {origin} is smaller than range_size {range_size}")]
    PoolTooSmall {
        kind: &'static str,
        range: IdRange,
        origin: String,
        range_size: u32,
    },
    /// subuid/subgid could not be read or parsed.
    #[error(transparent)]
    SubId(#[from] SubIdError),
    /// Neither the config nor subuid/subgid define a pool.
    #[error(
        "no host ID pool for cnfbox: set `[idmap] pool = \"START:SIZE\"` in {config}, or add \
         `{owner}:START:SIZE` lines to {subuid} and {subgid} (START >= {HOST_RESERVED_END}, SIZE \
         a multiple of {ID_BLOCK}, not overlapping other users' ranges), or run `cnfbox setup` \
         to do both"
    )]
    NoPool {
        config: PathBuf,
        subuid: PathBuf,
        subgid: PathBuf,
        owner: &'static str,
    },
}

/// The directory holding `subuid`, `subgid`, `passwd` and `cnfbox/`:
/// `/etc` on a host, a temporary directory in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcRoot(PathBuf);

impl Default for EtcRoot {
    fn default() -> Self {
        EtcRoot(PathBuf::from("/etc"))
    }
}

impl EtcRoot {
    /// An etc directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EtcRoot(path.into())
    }
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `subuid(5)`.
    pub fn subuid(&self) -> PathBuf {
        self.0.join("subuid")
    }
    /// `subgid(5)`.
    pub fn subgid(&self) -> PathBuf {
        self.0.join("subgid")
    }
    /// `passwd(5)`, to resolve numeric owners.
    pub fn passwd(&self) -> PathBuf {
        self.0.join("passwd")
    }
    /// `cnfbox/config.toml`, used when `CNFBOX_CONFIG` is unset.
    pub fn default_config(&self) -> PathBuf {
        self.0.join("cnfbox").join("config.toml")
    }
    /// The config path: `$CNFBOX_CONFIG` if set, else [`Self::default_config`].
    pub fn config_path(&self) -> PathBuf {
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.default_config(),
        }
    }
}

/// The whole `config.toml` as this crate sees it. Sections of other crates
/// are ignored here (the runtime's own parser, which knows them all,
/// refuses unknown ones); `[idmap]` itself refuses unknown keys, since a
/// typo in it would silently change who owns which host IDs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Config {
    /// The `[idmap]` section.
    #[serde(default)]
    pub idmap: IdmapConfig,
    /// Where it was loaded from, if from a file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[idmap]` of `config.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdmapConfig {
    /// The pool as `"START:SIZE"`, for uids and gids alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// First host ID of the pool (with `pool_size`, instead of `pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_start: Option<u32>,
    /// Number of host IDs in the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// IDs per pod, a multiple of 65536.
    #[serde(default = "default_range_size")]
    pub range_size: u32,
    /// Ledger directory.
    #[serde(default = "default_ledger_dir")]
    pub ledger_dir: PathBuf,
    /// Whether pods may share the host user namespace (`hostUsers: true`).
    #[serde(default)]
    pub allow_host_userns: bool,
    /// Who decides a pod's user namespace (`always` or `kubelet`).
    #[serde(default)]
    pub mode: IdmapMode,
}

/// `[idmap] mode`: who decides whether and how a pod gets its own user
/// namespace.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdmapMode {
    /// Every pod of the handler gets its own user namespace: a range from
    /// the pool, or the mapping kubelet put in the spec (`hostUsers: false`).
    #[default]
    Always,
    /// Follow the CRI, as runc does: a spec without a user namespace
    /// (`NamespaceMode_NODE`, `hostUsers: true`) runs in the host's; one
    /// with kubelet's mappings runs with them as given, host IDs below
    /// 65536 included (kubelet is then the authority over its ranges).
    Kubelet,
}

fn default_range_size() -> u32 {
    ID_BLOCK
}

fn default_ledger_dir() -> PathBuf {
    PathBuf::from(DEFAULT_LEDGER_DIR)
}

impl Default for IdmapConfig {
    fn default() -> Self {
        IdmapConfig {
            pool: None,
            pool_start: None,
            pool_size: None,
            range_size: default_range_size(),
            ledger_dir: default_ledger_dir(),
            allow_host_userns: false,
            mode: IdmapMode::Always,
        }
    }
}

/// The uid and gid pools and the per-pod range size. A pod gets the same
/// offset in both pools, so its uid and gid ranges line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pools {
    /// Host uids cnfbox hands out.
    pub uid: IdRange,
    /// Host gids cnfbox hands out.
    pub gid: IdRange,
    /// IDs per pod.
    pub range_size: u32,
}

impl Pools {
    /// Pools after the checks that need no files: above the host IDs, a
    /// range size that is a multiple of 65536, room for one pod.
    pub fn new(uid: IdRange, gid: IdRange, range_size: u32) -> Result<Self, ConfigError> {
        let origin = "arguments".to_owned();
        let range_size =
            check_block_multiple(range_size).map_err(|source| ConfigError::RangeSize {
                path: PathBuf::from("<arguments>"),
                source,
            })?;
        for (kind, range) in [("uid", uid), ("gid", gid)] {
            check_pool_shape(kind, range, range_size, &origin)?;
        }
        Ok(Pools {
            uid,
            gid,
            range_size,
        })
    }

    /// Number of pod ranges: the smaller pool decides, since offsets match.
    pub fn capacity(&self) -> u32 {
        self.uid.size().min(self.gid.size()) / self.range_size
    }
}

fn check_pool_shape(
    kind: &'static str,
    range: IdRange,
    range_size: u32,
    origin: &str,
) -> Result<(), ConfigError> {
    if range.touches_host_reserved() {
        return Err(ConfigError::PoolReserved {
            kind,
            range,
            origin: origin.to_owned(),
        });
    }
    if range.size() < range_size {
        return Err(ConfigError::PoolTooSmall {
            kind,
            range,
            origin: origin.to_owned(),
            range_size,
        });
    }
    Ok(())
}

/// Every check of one pool against the subordinate ID file of its kind.
pub(crate) fn check_pool(
    kind: &'static str,
    range: IdRange,
    range_size: u32,
    origin: &str,
    file: &SubIdFile,
    owner: &Owner,
) -> Result<(), ConfigError> {
    check_pool_shape(kind, range, range_size, origin)?;
    check_not_foreign(kind, range, origin, file, owner)
}

fn check_not_foreign(
    kind: &'static str,
    range: IdRange,
    origin: &str,
    file: &SubIdFile,
    owner: &Owner,
) -> Result<(), ConfigError> {
    match file.foreign_overlap(owner, &range) {
        Some(e) => Err(ConfigError::PoolForeign {
            kind,
            range,
            origin: origin.to_owned(),
            owner: e.owner.clone(),
            other: e.range,
            file: file.path.clone(),
            line: e.line,
        }),
        None => Ok(()),
    }
}

impl Config {
    /// Loads the config from `$CNFBOX_CONFIG` or `etc/cnfbox/config.toml`.
    /// A missing default file gives the defaults (no pool); a missing file
    /// named by `CNFBOX_CONFIG` is an error, since someone asked for it.
    pub fn load(etc: &EtcRoot) -> Result<Self, ConfigError> {
        Self::load_with(etc, |p| std::fs::read_to_string(p))
    }

    /// [`Config::load`] with the file read by `read` (a caller that reads
    /// the file once for several parsers).
    pub fn load_with(
        etc: &EtcRoot,
        read: impl FnOnce(&Path) -> io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let explicit = std::env::var_os(CONFIG_ENV).is_some_and(|p| !p.is_empty());
        Self::load_text(&etc.config_path(), explicit, read)
    }

    /// Loads the config at `path`; when it is missing, the defaults unless
    /// `must_exist`.
    pub fn load_from(path: &Path, must_exist: bool) -> Result<Self, ConfigError> {
        Self::load_text(path, must_exist, |p| std::fs::read_to_string(p))
    }

    fn load_text(
        path: &Path,
        must_exist: bool,
        read: impl FnOnce(&Path) -> io::Result<String>,
    ) -> Result<Self, ConfigError> {
        match read(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !must_exist => {
                tracing::debug!(path = %path.display(), "no config file, using defaults");
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses config text; `path` is recorded and used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Self::from_section(path, cfg.idmap)
    }

    /// The config of an `[idmap]` section another parser read from `path`
    /// (the runtime's, which knows every section), after the same checks
    /// as [`Config::parse`].
    pub fn from_section(path: &Path, idmap: IdmapConfig) -> Result<Self, ConfigError> {
        idmap.check(path)?;
        Ok(Config {
            idmap,
            source: Some(path.to_owned()),
        })
    }

    fn origin(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<defaults>"))
    }

    /// The pool from `[idmap]`, if set there.
    pub fn configured_pool(&self) -> Result<Option<IdRange>, ConfigError> {
        self.idmap.pool_range(&self.origin())
    }

    /// Resolves and validates the uid and gid pools: from `[idmap]` if set,
    /// else from the `cnfbox` entries of subuid/subgid.
    pub fn pools(&self, etc: &EtcRoot) -> Result<Pools, ConfigError> {
        let owner = Owner::lookup(SUBID_OWNER, &etc.passwd())?;
        let subuid = SubIdFile::load(&etc.subuid())?;
        let subgid = SubIdFile::load(&etc.subgid())?;
        let range_size = self.idmap.range_size;
        let (uid, gid, uid_origin, gid_origin) = match self.configured_pool()? {
            Some(pool) => {
                let origin = self.origin().display().to_string();
                (pool, pool, origin.clone(), origin)
            }
            None => match (
                subuid.contiguous_range(&owner)?,
                subgid.contiguous_range(&owner)?,
            ) {
                (Some(u), Some(g)) => (
                    u,
                    g,
                    subuid.path.display().to_string(),
                    subgid.path.display().to_string(),
                ),
                _ => {
                    return Err(ConfigError::NoPool {
                        config: etc.config_path(),
                        subuid: subuid.path.clone(),
                        subgid: subgid.path.clone(),
                        owner: SUBID_OWNER,
                    })
                }
            },
        };
        check_pool("uid", uid, range_size, &uid_origin, &subuid, &owner)?;
        check_pool("gid", gid, range_size, &gid_origin, &subgid, &owner)?;
        if uid.size() != gid.size() {
            tracing::warn!(%uid, %gid, "uid and gid pools differ in size; using the smaller");
        }
        tracing::debug!(%uid, %gid, range_size, "resolved ID pools");
        Ok(Pools {
            uid,
            gid,
            range_size,
        })
    }
}

impl IdmapConfig {
    /// Checks that need no other file.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        check_block_multiple(self.range_size).map_err(|source| ConfigError::RangeSize {
            path: path.to_owned(),
            source,
        })?;
        self.pool_range(path).map(|_| ())
    }

    /// The configured pool, from `pool` or from `pool_start` + `pool_size`.
    pub fn pool_range(&self, path: &Path) -> Result<Option<IdRange>, ConfigError> {
        let keys = || ConfigError::PoolKeys {
            path: path.to_owned(),
        };
        let syntax = |source| ConfigError::PoolSyntax {
            path: path.to_owned(),
            source,
        };
        match (&self.pool, self.pool_start, self.pool_size) {
            (None, None, None) => Ok(None),
            (Some(text), None, None) => text.parse().map(Some).map_err(syntax),
            (None, Some(start), Some(size)) => IdRange::new(start, size).map(Some).map_err(syntax),
            _ => Err(keys()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc_with(subuid: &str, subgid: &str) -> (tempfile::TempDir, EtcRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("subuid"), subuid).expect("subuid");
        std::fs::write(dir.path().join("subgid"), subgid).expect("subgid");
        let etc = EtcRoot::new(dir.path());
        (dir, etc)
    }

    fn cfg(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/cnfbox/config.toml"), text)
    }

    #[test]
    fn pool_from_config_wins() {
        let (_d, etc) = etc_with("cnfbox:1000000:65536\n", "cnfbox:1000000:65536\n");
        let c = cfg("[idmap]\npool = \"200000:131072\"\n").expect("config");
        let p = c.pools(&etc).expect("pools");
        assert_eq!(p.uid, IdRange::new(200_000, 131_072).expect("range"));
        assert_eq!(p.capacity(), 2);
    }

    #[test]
    fn pool_from_subid() {
        let (_d, etc) = etc_with(
            "root:100000:65536\ncnfbox:165536:131072\n",
            "cnfbox:300000:65536\ncnfbox:365536:65536\n",
        );
        let p = Config::default().pools(&etc).expect("pools");
        assert_eq!(p.uid.start(), 165_536);
        assert_eq!(p.gid, IdRange::new(300_000, 131_072).expect("range"));
    }

    #[test]
    fn no_pool_says_how_to_set_one_up() {
        let (_d, etc) = etc_with("root:100000:65536\n", "");
        let err = Config::default().pools(&etc).expect_err("no pool");
        let msg = err.to_string();
        assert!(
            msg.contains("cnfbox setup") && msg.contains("[idmap] pool"),
            "{msg}"
        );
    }

    #[test]
    fn bad_configs() {
        assert!(matches!(
            cfg("[idmap]\npool = \"1:2:3\"\n"),
            Err(ConfigError::PoolSyntax { .. })
        ));
        assert!(matches!(
            cfg("[idmap]\nrange_size = 0\n"),
            Err(ConfigError::RangeSize { .. })
        ));
        assert!(matches!(
            cfg("[idmap]\nrange_size = 1000\n"),
            Err(ConfigError::RangeSize { .. })
        ));
        assert!(matches!(
            cfg("[idmap]\npool = \"100000:65536\"\npool_start = 5\n"),
            Err(ConfigError::PoolKeys { .. })
        ));
        assert!(matches!(
            cfg("[idmap]\npool_start = 4294901760\npool_size = 65536\n"),
            Err(ConfigError::PoolSyntax { .. })
        ));
        assert!(matches!(
            cfg("[idmap]\npoool = \"100000:65536\"\n"),
            Err(ConfigError::Parse { .. })
        ));
        // Other sections belong to other crates.
        assert!(cfg("[runtime]\nanything = 1\n").is_ok());
    }

    #[test]
    fn pool_including_host_ids_refused() {
        let (_d, etc) = etc_with("", "");
        let c = cfg("[idmap]\npool = \"0:131072\"\n").expect("config");
        assert!(matches!(
            c.pools(&etc),
            Err(ConfigError::PoolReserved { .. })
        ));
        let c = cfg("[idmap]\npool = \"65535:131072\"\n").expect("config");
        assert!(matches!(
            c.pools(&etc),
            Err(ConfigError::PoolReserved { .. })
        ));
        let c = cfg("[idmap]\npool = \"65536:65536\"\n").expect("config");
        assert!(c.pools(&etc).is_ok());
    }

    #[test]
    fn pool_overlapping_other_owner_refused() {
        let (_d, etc) = etc_with("alice:100000:65536\n", "bob:500000:65536\n");
        let c = cfg("[idmap]\npool = \"131072:65536\"\n").expect("config");
        let err = c.pools(&etc).expect_err("overlap");
        assert!(err.to_string().contains("alice:100000:65536"), "{err}");
        let c = cfg("[idmap]\npool = \"458752:65536\"\n").expect("config");
        let err = c.pools(&etc).expect_err("overlap gid");
        assert!(
            matches!(
                err,
                ConfigError::PoolForeign {
                    kind: "gid",
                    line: 1,
                    ..
                }
            ),
            "{err}"
        );
        let c = cfg("[idmap]\npool = \"165536:65536\"\n").expect("config");
        assert!(c.pools(&etc).is_ok());
    }

    #[test]
    fn pool_too_small() {
        let (_d, etc) = etc_with("", "");
        let c = cfg("[idmap]\npool = \"131072:65536\"\nrange_size = 131072\n").expect("config");
        assert!(matches!(
            c.pools(&etc),
            Err(ConfigError::PoolTooSmall { .. })
        ));
    }
}
