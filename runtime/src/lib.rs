//! The parts of `cnfbox` that read untrusted input (a bundle's
//! `config.json`, its annotations, `config.toml` and the pod policy they
//! ask for), built as a library too so that the fuzz targets in `fuzz/`
//! can drive them (see [`fuzzing`]). The `cnfbox` binary compiles the same
//! modules from `main.rs`. The annotation keys themselves are the
//! `cnfbox-annotations` crate's, which the shim shares.

pub mod bundle;
pub mod capabilities;
pub mod config;
pub mod fuzzing;
pub mod host_ns;
pub mod pod;

/// Of the host layer, only the namespace file helpers and the
/// symlink-free directory opener (the bundle's rootfs).
pub mod host {
    pub mod nofollow;
    pub mod ns;
}

/// Of `numa`, the planning only (the rest binds memory, mounts hugetlbfs
/// and writes cgroups).
pub mod numa {
    pub mod derive;
    pub mod inputs;
    mod placement;
    pub use placement::*;
}

/// Of `net`, only the request parser (the rest drives netlink).
pub mod net {
    pub mod request;
}

pub use fuzzing::{check_untrusted_annotations, check_untrusted_spec};
