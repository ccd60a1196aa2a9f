//! Test fixtures for cnfbox, built from Debian's `busybox-static`:
//!
//! - OCI runtime bundles (`rootfs/` + `config.json`) for named
//!   [`Scenario`]s or custom setups via [`BundleBuilder`];
//! - OCI image archives that `ctr images import` accepts
//!   ([`ImageBuilder`]), including a pause image.
//!
//! [`PrivateContainerd`] runs a throw-away containerd for tests that import
//! those images.
//!
//! Every rootfs carries `/bin/cnfbox-check`, which prints what the
//! container sees as key=value lines; parse them with [`CheckReport`].
//!
//! ```no_run
//! use test_bundles::{BundleBuilder, Scenario};
//! let bundle = BundleBuilder::new("/tmp/b")
//!     .scenario(&Scenario::Exit(3))
//!     .hostname("x")
//!     .build()?;
//! # Ok::<(), test_bundles::Error>(())
//! ```

pub mod bundle;
pub mod busybox;
pub mod check;
pub mod containerd;
pub mod critest;
pub mod helpers;
pub mod image;
pub mod rootfs;
pub mod scenario;
pub mod spec;

pub use bundle::{Bundle, BundleBuilder, BundleError};
pub use busybox::{Busybox, BusyboxError};
pub use check::CheckReport;
pub use containerd::{ContainerdError, PrivateContainerd, StartOptions};
pub use image::{
    verify_archive, ImageArchive, ImageBuilder, ImageError, ImageKind, VerifiedImage,
    DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF,
};
pub use rootfs::{Rootfs, RootfsBuilder, RootfsError};
pub use scenario::{Scenario, ScenarioError};
pub use spec::{default_spec, SpecError, SpecOptions};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}
