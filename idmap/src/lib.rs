//! cnfbox `idmap`: which host UIDs and GIDs each pod owns, and id-mapped
//! mounts that let a pod's root see host-owned files as its own.
//!
//! The invariant everything here serves: two live pods never share a host
//! UID or GID, whatever crash or race happens.
//!
//! - [`config`]: where the ID pool comes from (`config.toml` or
//!   `/etc/subuid` + `/etc/subgid`), and its validation.
//! - [`setup`](mod@setup): `cnfbox setup`, which gives cnfbox a pool.
//! - [`Allocator`]: allocate / register / release / list / gc / repair over
//!   a crash-safe, locked, checksummed [`ledger`].
//! - [`procscan`]: which host IDs live processes' user namespaces map
//!   (`ranges gc` frees nothing a process still uses).
//! - [`mount`]: `idmapped_bind`, built on user-namespace fds from [`userns`].
//! - [`report`]: text and JSON output for `cnfbox ranges`.

pub mod alloc;
pub mod config;
pub mod fsutil;
pub mod fuzzing;
pub mod ledger;
pub mod mount;
pub mod procscan;
pub mod range;
pub mod registry;
pub mod report;
pub mod setup;
pub mod state;
pub mod subid;
pub mod userns;

pub use alloc::{AllocError, Allocator, Release, RepairReport};
pub use config::{Config, ConfigError, EtcRoot, IdmapConfig, IdmapMode, Pools};
pub use ledger::{Ledger, LedgerError};
pub use mount::{idmapped_bind, idmapped_bind_with, MountError};
pub use procscan::{InUse, ProcScanError};
pub use range::{IdRange, Mapping, PodMapping, RangeError, HOST_RESERVED_END, ID_BLOCK};
pub use registry::{Registry, RegistryError};
pub use report::{render_entries, Format, ReportError};
pub use setup::{setup, SetupError, SetupOptions, SetupReport};
pub use state::{root_label, Origin, PodEntry};
pub use subid::{SubIdError, SubIdFile};
pub use userns::{UsernsCache, UsernsError};

/// Every error of this crate, for callers that want one type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Range arithmetic or syntax.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// subuid/subgid parsing.
    #[error(transparent)]
    SubId(#[from] SubIdError),
    /// Config loading and pool validation.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `cnfbox setup`.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The ledger store.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Allocator operations.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// User-namespace fds.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    /// Id-mapped mounts.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Report rendering.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Scanning `/proc` for user namespaces.
    #[error(transparent)]
    ProcScan(#[from] ProcScanError),
}
