//! `cnfbox setup`: give cnfbox a pool of host IDs, idempotently.
//!
//! Writes `cnfbox:START:SIZE` to `/etc/subuid` and `/etc/subgid` (so that
//! useradd(8) and other tools that pick subordinate ranges keep out of it)
//! and a `config.toml` with an `[idmap]` section. Running it again changes
//! nothing; a `cnfbox` entry or config pool that disagrees with the other is
//! reported, never overwritten.
//!
//! It also gives kubelet a pool of its own, disjoint from cnfbox's. kubelet
//! (`hostUsers: false`, `getKubeletMappings` in pkg/kubelet/kubelet_pods.go)
//! picks pod ranges from the single `kubelet` entry of subuid/subgid (read
//! with getsubids(1), the same START:COUNT in both files, both multiples of
//! 65536), and from all of `[65536, 2^32)` when there is none, which would
//! overlap cnfbox's pool. An existing `kubelet` entry must have that shape
//! and stay clear of cnfbox's pool; a missing one is written in the lowest
//! gap. kubelet ignores the entry when no `kubelet` user exists, so the
//! report says whether passwd has one.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{check_pool, Config, ConfigError, EtcRoot, DEFAULT_LEDGER_DIR, SUBID_OWNER};

/// The user whose subordinate IDs kubelet gives to its pods.
pub const KUBELET_OWNER: &str = "kubelet";
/// kubelet's default `maxPods`: its pool holds at least that many ranges.
pub const KUBELET_DEFAULT_PODS: u32 = 110;
use crate::fsutil::{write_atomic, AtomicWriteError};
use crate::range::{
    align_up, check_block_multiple, IdRange, RangeError, HOST_RESERVED_END, ID_BLOCK,
};
use crate::subid::{Owner, SubIdError, SubIdFile};

/// Errors of [`setup`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Reading or validating the config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading subuid/subgid.
    #[error(transparent)]
    SubId(#[from] SubIdError),
    /// `pool_size` or `range_size` is not a positive multiple of 65536, or
    /// the pool is smaller than one range.
    #[error("setup option {option}")]
    Option {
        option: &'static str,
        #[source]
        source: RangeError,
    },
    /// No gap of `size` IDs is left below `u32::MAX`.
    #[error("no free range of {size} host IDs above {HOST_RESERVED_END} in {file}")]
    NoFreeRange { size: u32, file: PathBuf },
    /// Another ledger on the node hands out IDs of the pool: a config
    /// with this ledger would give live pods the same host IDs.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// cnfbox already has an entry that differs from the configured pool.
    #[error(
        "{file} gives {owner} {have}, but the pool is {want}; make them agree (edit one) and \
         run setup again"
    )]
    Mismatch {
        file: PathBuf,
        owner: &'static str,
        have: IdRange,
        want: IdRange,
    },
    /// Reading a file that is about to be rewritten.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `mkdir -p` of the config directory.
    #[error("creating directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The `kubelet` entries cannot be the pool kubelet needs.
    #[error("{file}: kubelet's subordinate IDs {have}: {reason}")]
    Kubelet {
        file: PathBuf,
        have: String,
        reason: String,
    },
    /// Writing subuid, subgid or the config.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: AtomicWriteError,
    },
}

/// Knobs of [`setup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupOptions {
    /// Host IDs in the pool when one must be chosen (default: 1024 pods).
    pub pool_size: u32,
    /// IDs per pod.
    pub range_size: u32,
    /// Ledger directory written to a new config.
    pub ledger_dir: PathBuf,
    /// Host IDs of the `kubelet` entry when one must be written.
    pub kubelet_pool_size: u32,
    /// The node's ledger registry (`registry`): a new config is not
    /// written for pools another existing ledger hands out.
    pub registry: PathBuf,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            pool_size: ID_BLOCK * 1024,
            range_size: ID_BLOCK,
            ledger_dir: PathBuf::from(DEFAULT_LEDGER_DIR),
            kubelet_pool_size: ID_BLOCK * KUBELET_DEFAULT_PODS,
            registry: PathBuf::from(crate::registry::NODE_DIR),
        }
    }
}

/// What [`setup`] did to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    /// Already right.
    Unchanged,
    /// Written anew.
    Created,
    /// A line was added.
    Appended,
}

/// The outcome of [`setup`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    /// cnfbox's host uids.
    pub uid_pool: IdRange,
    /// cnfbox's host gids.
    pub gid_pool: IdRange,
    /// What happened to subuid.
    pub subuid: FileAction,
    /// What happened to subgid.
    pub subgid: FileAction,
    /// What happened to the config.
    pub config: FileAction,
    /// The config file.
    pub config_path: PathBuf,
    /// kubelet's host uids and gids (its `kubelet` entries), disjoint from
    /// cnfbox's pools.
    pub kubelet_pool: IdRange,
    /// Whether passwd has a `kubelet` user (without one, kubelet ignores
    /// its entry and uses all IDs from 65536 up).
    pub kubelet_user: bool,
}

/// Gives cnfbox an ID pool under `etc`, with its config at `config_path`.
pub fn setup(
    etc: &EtcRoot,
    config_path: &Path,
    opts: &SetupOptions,
) -> Result<SetupReport, SetupError> {
    let range_size =
        check_block_multiple(opts.range_size).map_err(|source| SetupError::Option {
            option: "range_size",
            source,
        })?;
    let pool_size = check_block_multiple(opts.pool_size).map_err(|source| SetupError::Option {
        option: "pool_size",
        source,
    })?;
    if pool_size < range_size {
        return Err(SetupError::Option {
            option: "pool_size",
            source: RangeError::NotBlockMultiple { size: pool_size },
        });
    }
    let owner = Owner::lookup(SUBID_OWNER, &etc.passwd())?;
    let subuid = SubIdFile::load(&etc.subuid())?;
    let subgid = SubIdFile::load(&etc.subgid())?;
    let config = Config::load_from(config_path, false)?;
    let have_uid = subuid.contiguous_range(&owner)?;
    let have_gid = subgid.contiguous_range(&owner)?;

    let (uid_pool, gid_pool) = match config.configured_pool()? {
        Some(p) => (p, p),
        None => {
            let both = [&subuid, &subgid];
            match (have_uid, have_gid) {
                (Some(u), Some(g)) => (u, g),
                (Some(u), None) => (u, reuse_or_find(u, &subgid, &owner)?),
                (None, Some(g)) => (reuse_or_find(g, &subuid, &owner)?, g),
                (None, None) => {
                    let p = find_free(&both, pool_size, &subuid.path)?;
                    (p, p)
                }
            }
        }
    };
    let origin = "cnfbox setup";
    let range_size = config
        .source
        .as_ref()
        .map_or(range_size, |_| config.idmap.range_size);
    check_pool("uid", uid_pool, range_size, origin, &subuid, &owner)?;
    check_pool("gid", gid_pool, range_size, origin, &subgid, &owner)?;

    let kubelet = Owner::lookup(KUBELET_OWNER, &etc.passwd())?;
    let kubelet_pool = kubelet_pool(&subuid, &subgid, &kubelet, uid_pool, gid_pool, opts)?;
    let have_kubelet = [
        subuid.contiguous_range(&kubelet)?,
        subgid.contiguous_range(&kubelet)?,
    ];

    let subuid_action = ensure_entry(&subuid, have_uid, uid_pool)?;
    let subgid_action = ensure_entry(&subgid, have_gid, gid_pool)?;
    let subuid_action = subuid_action.then(add_line(
        &subuid.path,
        KUBELET_OWNER,
        have_kubelet[0],
        kubelet_pool,
    )?);
    let subgid_action = subgid_action.then(add_line(
        &subgid.path,
        KUBELET_OWNER,
        have_kubelet[1],
        kubelet_pool,
    )?);
    let config_action = if config.source.is_some() {
        FileAction::Unchanged
    } else {
        let pools = crate::config::Pools {
            uid: uid_pool,
            gid: gid_pool,
            range_size,
        };
        crate::registry::Registry::at(&opts.registry).check(&opts.ledger_dir, &pools)?;
        write_config(
            config_path,
            uid_pool,
            gid_pool,
            range_size,
            &opts.ledger_dir,
        )?;
        FileAction::Created
    };

    // Check the result the way the runtime will read it.
    Config::load_from(config_path, true)?.pools(etc)?;
    let report = SetupReport {
        uid_pool,
        gid_pool,
        subuid: subuid_action,
        subgid: subgid_action,
        config: config_action,
        config_path: config_path.to_owned(),
        kubelet_pool,
        kubelet_user: kubelet.uid.is_some(),
    };
    if !report.kubelet_user {
        tracing::warn!(passwd = %etc.passwd().display(), "no kubelet user: kubelet ignores its subuid entry and picks user-namespace ranges from all IDs >= 65536, overlapping cnfbox's pool");
    }
    tracing::info!(?report, "cnfbox ID pool set up");
    Ok(report)
}

/// `want` if nobody else in `file` holds any of it, else a free range of
/// the same size.
fn reuse_or_find(want: IdRange, file: &SubIdFile, owner: &Owner) -> Result<IdRange, SetupError> {
    match file.foreign_overlap(owner, &want) {
        None => Ok(want),
        Some(_) => find_free(&[file], want.size(), &file.path),
    }
}

/// The lowest 65536-aligned range of `size` IDs at or above 65536 that no
/// entry of `files` overlaps.
fn find_free(files: &[&SubIdFile], size: u32, name: &Path) -> Result<IdRange, SetupError> {
    let none = || SetupError::NoFreeRange {
        size,
        file: name.to_owned(),
    };
    let mut taken: Vec<IdRange> = files
        .iter()
        .flat_map(|f| f.entries.iter().map(|e| e.range))
        .collect();
    taken.sort();
    let mut start = HOST_RESERVED_END;
    for r in taken {
        let candidate = IdRange::new(start, size).map_err(|_| none())?;
        if r.overlaps(&candidate) {
            start = align_up(r.end(), ID_BLOCK).ok_or_else(none)?;
        }
    }
    IdRange::new(start, size).map_err(|_| none())
}

impl FileAction {
    /// The file's action after `self` and then `next` on it.
    fn then(self, next: FileAction) -> FileAction {
        match (self, next) {
            (FileAction::Unchanged, n) => n,
            (s, _) => s,
        }
    }
}

/// kubelet's pool: its entries if both files have the same single one, of
/// whole 65536-ID blocks and clear of cnfbox's pools; otherwise the one
/// entry of either file, or else the lowest free gap, of
/// `opts.kubelet_pool_size` IDs, above everything else in both files and
/// cnfbox's pools.
fn kubelet_pool(
    subuid: &SubIdFile,
    subgid: &SubIdFile,
    kubelet: &Owner,
    uid_pool: IdRange,
    gid_pool: IdRange,
    opts: &SetupOptions,
) -> Result<IdRange, SetupError> {
    let size =
        check_block_multiple(opts.kubelet_pool_size).map_err(|source| SetupError::Option {
            option: "kubelet_pool_size",
            source,
        })?;
    let mut found = None;
    for (file, pool) in [(subuid, uid_pool), (subgid, gid_pool)] {
        let lines: Vec<_> = file.owned_by(kubelet).collect();
        let bad = |reason: String| SetupError::Kubelet {
            file: file.path.clone(),
            have: lines
                .iter()
                .map(|e| format!("{}:{} (line {})", e.range.start(), e.range.size(), e.line))
                .collect::<Vec<_>>()
                .join(", "),
            reason,
        };
        let range = match lines.as_slice() {
            [] => continue,
            [one] => one.range,
            _ => {
                return Err(bad(
                    "kubelet reads exactly one entry; merge them into one".into()
                ))
            }
        };
        if range.start() % ID_BLOCK != 0 || range.size() % ID_BLOCK != 0 {
            return Err(bad(format!(
                "kubelet needs START and COUNT to be multiples of {ID_BLOCK}"
            )));
        }
        if range.overlaps(&pool) {
            return Err(bad(format!(
                "overlaps cnfbox's pool {pool}, so kubelet and cnfbox would give the same host \
                 IDs to two pods; move one of them"
            )));
        }
        match found {
            Some(other) if other != range => {
                return Err(bad(format!(
                    "differs from the kubelet entry {other} of the other file; kubelet needs the \
                     same range for uids and gids"
                )))
            }
            _ => found = Some(range),
        }
    }
    if let Some(r) = found {
        // The file without the entry gets the same one: it must be free there.
        for (file, pool) in [(subuid, uid_pool), (subgid, gid_pool)] {
            let taken = file.owned_by(kubelet).next().is_none()
                && (file.foreign_overlap(kubelet, &r).is_some() || r.overlaps(&pool));
            if taken {
                return Err(SetupError::Kubelet {
                    file: file.path.clone(),
                    have: r.to_string(),
                    reason: "the other file's kubelet range is taken here; give kubelet a free \
                             range in both files"
                        .into(),
                });
            }
        }
        return Ok(r);
    }
    let pools = SubIdFile {
        path: subuid.path.clone(),
        entries: [uid_pool, gid_pool]
            .into_iter()
            .map(|range| crate::subid::SubIdEntry {
                owner: SUBID_OWNER.to_owned(),
                range,
                line: 0,
            })
            .collect(),
    };
    find_free(&[subuid, subgid, &pools], size, &subuid.path)
}

fn ensure_entry(
    file: &SubIdFile,
    have: Option<IdRange>,
    want: IdRange,
) -> Result<FileAction, SetupError> {
    match have {
        Some(h) if h == want => Ok(FileAction::Unchanged),
        Some(h) => Err(SetupError::Mismatch {
            file: file.path.clone(),
            owner: SUBID_OWNER,
            have: h,
            want,
        }),
        None => add_line(&file.path, SUBID_OWNER, None, want),
    }
}

/// Appends `OWNER:START:SIZE` to `path` unless the owner has an entry
/// (`have`) there already.
fn add_line(
    path: &Path,
    owner: &str,
    have: Option<IdRange>,
    want: IdRange,
) -> Result<FileAction, SetupError> {
    match have {
        Some(_) => Ok(FileAction::Unchanged),
        None => {
            let path = &path.to_path_buf();
            let existed = path.exists();
            let (mut text, mode) = match std::fs::read_to_string(path) {
                Ok(t) => {
                    let mode = std::fs::metadata(path)
                        .map_err(|source| SetupError::Read {
                            path: path.clone(),
                            source,
                        })?
                        .permissions()
                        .mode();
                    (t, mode & 0o7777)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), 0o644),
                Err(source) => {
                    return Err(SetupError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{owner}:{}:{}\n", want.start(), want.size()));
            write_atomic(path, text.as_bytes(), mode).map_err(|source| SetupError::Write {
                path: path.clone(),
                source,
            })?;
            tracing::info!(path = %path.display(), owner, range = %want, "added subordinate ID entry");
            Ok(if !existed {
                FileAction::Created
            } else {
                FileAction::Appended
            })
        }
    }
}

fn write_config(
    path: &Path,
    uid: IdRange,
    gid: IdRange,
    range_size: u32,
    ledger_dir: &Path,
) -> Result<(), SetupError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| SetupError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    let pool_line = if uid == gid {
        format!(
            "# Host uids and gids handed out to pods (also `{SUBID_OWNER}` in subuid/subgid).\n\
             pool = \"{uid}\"\n"
        )
    } else {
        format!(
            "# The pool comes from the `{SUBID_OWNER}` entries of subuid ({uid}) and subgid \
             ({gid}).\n"
        )
    };
    let ledger = toml::Value::String(ledger_dir.display().to_string());
    let text = format!(
        "# cnfbox configuration, written by `cnfbox setup`.\n\n[idmap]\n{pool_line}\
         # IDs per pod, a multiple of 65536.\nrange_size = {range_size}\n\
         # Which pod holds which host IDs.\nledger_dir = {ledger}\n\
         allow_host_userns = false\n"
    );
    write_atomic(path, text.as_bytes(), 0o644).map_err(|source| SetupError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
