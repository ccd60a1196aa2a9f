//! The pod profile cnfbox applies to every container: a private user
//! namespace on the pod's own host ID range, and an id-mapped view of the
//! rootfs so the image stays unchowned on disk.
//!
//! The sandbox (or a standalone container) allocates the pod's range, or
//! registers the mapping kubelet put in the spec (`hostUsers: false`); the
//! pod's other containers join the sandbox's user and network namespaces.

use std::fs;
use std::path::{Path, PathBuf};

use idmap::{Allocator, Config, EtcRoot, IdmapMode, PodMapping};
use oci_spec::runtime::Spec;

use crate::host::nofollow::OpenedDir;
use crate::journal::{Making, Recorder};
use crate::pod::{self, Role};

mod members;
mod userns;

use members::join_sandbox;
pub use members::wait_for_exec;
use userns::{own_userns, user_ns};

/// Errors applying or removing the pod profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    File(#[from] crate::config::ConfigError),
    #[error("load the host ID pool config")]
    Config(#[source] idmap::ConfigError),
    #[error("host ID allocator")]
    Alloc(#[source] Box<idmap::AllocError>),
    #[error("pod {pod}: its user namespace mapping was refused")]
    Register {
        pod: String,
        #[source]
        source: Box<idmap::AllocError>,
    },
    #[error("linux.{field}: {reason}")]
    Mappings { field: &'static str, reason: String },
    #[error(
        "linux.namespaces: a user namespace path ({path}) is only set by cnfbox for pod members or by the CRI for a sandbox"
    )]
    UsernsPath { path: PathBuf },
    #[error("linux.namespaces: the sandbox's user namespace path")]
    JoinedUserns(#[source] crate::host::userns::UsernsPathError),
    #[error("running in the host's user namespace ({how}) is refused: set `allow_host_userns = true` under [idmap] in {config} to permit it")]
    HostUserns { how: String, config: PathBuf },
    #[error("linux.namespaces: network path {path} belongs to the host's user namespace; a pod with its own user namespace cannot join it (omit the path and cnfbox creates the pod's network namespace)")]
    HostOwnedNetns { path: PathBuf },
    #[error("inspect network namespace {path}")]
    NetnsOwner {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.namespaces: {ns} path {path} belongs to the host's user namespace; a pod with its own user namespace cannot join it (omit the path and the pod gets its own {ns} namespace)")]
    HostOwnedNs { ns: &'static str, path: PathBuf },
    #[error("linux.namespaces: {ns} path {path}: cannot inspect the namespace")]
    NsOwner {
        ns: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: no running sandbox container to join (create the sandbox first)")]
    NoSandbox { pod: String },
    #[error("{what}: its init (pid {pid}) has not started its program yet; its namespaces cannot be joined from the pod's user namespace")]
    NotStarted { what: String, pid: i32 },
    #[error("create rootfs mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("id-mapped rootfs view of {rootfs}")]
    IdmapRootfs {
        rootfs: PathBuf,
        #[source]
        source: idmap::MountError,
    },
    #[error("id-mapped view of the overlay rootfs {rootfs}")]
    OverlayRootfs {
        rootfs: PathBuf,
        #[source]
        source: Box<crate::overlay::OverlayError>,
    },
    #[error("pin the sandbox's network namespace")]
    PinNetns(#[source] crate::host::PinError),
    #[error(transparent)]
    Volume(#[from] Box<crate::volumes::VolumeError>),
    #[error(transparent)]
    Views(#[from] views::ViewsError),
    #[error(transparent)]
    HostNamespaces(Box<crate::host_ns::HostNsError>),
    #[error(transparent)]
    Propagation(Box<crate::propagation::PropagationError>),
    #[error("record what the profile makes")]
    Record(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Failpoint(#[from] crate::failpoint::Injected),
}

/// What the profile did for one container (recorded in its metadata).
#[derive(Debug, Clone)]
pub struct Applied {
    pub pod: String,
    pub sandbox: bool,
    /// `None` when the container runs in the host's user namespace.
    pub mapping: Option<PodMapping>,
    pub rootfs_view: Option<PathBuf>,
    /// Namespace files bind-mounted for the create only (see `pin_netns`).
    pub pinned: Option<PathBuf>,
    /// Id-mapped views of the spec's bind mounts.
    pub volume_views: Vec<PathBuf>,
    /// A CRI sandbox's CNI network namespace whose interfaces move into
    /// the pod's own once the init exists (see `adopt`).
    pub adopted_netns: Option<PathBuf>,
}

/// The `[idmap]` part of this command's config (see `crate::config`).
fn idmap_config() -> Result<Config, ProfileError> {
    crate::config::current()?
        .idmap(crate::config::named_by_env())
        .map_err(ProfileError::Config)
}

fn allocator() -> Result<Allocator, ProfileError> {
    let config = idmap_config()?;
    Allocator::from_config(&config, &EtcRoot::default())
        .map_err(|e| ProfileError::Alloc(Box::new(e)))
}

use crate::views::{self, Kind, Owner};

/// Pod or container annotation asking for the host's user namespace.
pub const USERNS_ANNOTATION: &str = cnfbox_annotations::USERNS;

/// How the spec asks for the host's user namespace, if it does.
fn host_userns_request(spec: &Spec) -> Option<String> {
    if let Some(v) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(USERNS_ANNOTATION))
    {
        if v == "host" {
            return Some(format!("annotation {USERNS_ANNOTATION}: host"));
        }
    }
    let path = user_ns(spec)?.path().clone()?;
    crate::host::ns::is_own(&path, "user")
        .then(|| format!("linux.namespaces user path {}", path.display()))
}

/// Applies the profile to `spec` (the staged copy) for container `id`,
/// telling `record` what it is about to make (the pod's range, the
/// container's directory with its rootfs view and pin, its volume views)
/// before it makes it. On failure what it made is left to the journal's
/// teardown.
pub fn apply(
    root: &Path,
    id: &str,
    spec: &mut Spec,
    rootfs: &OpenedDir,
    record: &mut dyn Recorder,
) -> Result<Applied, ProfileError> {
    let mut making = |what| record.making(what).map_err(ProfileError::Record);
    let role = pod::role(id, spec.annotations().as_ref());
    let key = crate::holders::root_key(root);
    let etc = EtcRoot::default();
    let config = idmap_config()?;
    let kubelet = config.idmap.mode == IdmapMode::Kubelet;
    let host = match host_userns_request(spec) {
        Some(how) => {
            if !config.idmap.allow_host_userns {
                return Err(ProfileError::HostUserns {
                    how,
                    config: etc.config_path(),
                });
            }
            Some(how)
        }
        // The CRI's NamespaceMode_NODE, followed as runc follows it.
        None if kubelet && user_ns(spec).is_none() => {
            Some("no user namespace in the spec, [idmap] mode = \"kubelet\"".to_string())
        }
        // Host network/PID/IPC or privileged: by `[pods] host_namespaces`.
        None => crate::host_ns::admit(spec, &etc.config_path())
            .map_err(|e| ProfileError::HostNamespaces(Box::new(e)))?
            .map(|r| format!("{r}, [pods] host_namespaces = \"host-userns\"")),
    };
    crate::propagation::fit(spec, host.is_none())
        .map_err(|e| ProfileError::Propagation(Box::new(e)))?;
    if let Some(how) = host {
        tracing::warn!(id, %how, "container runs in the host's user namespace (allowed by config)");
        return Ok(Applied {
            pod: role.pod().to_string(),
            sandbox: matches!(role, Role::Sandbox { .. }),
            mapping: None,
            rootfs_view: None,
            pinned: None,
            volume_views: Vec::new(),
            adopted_netns: None,
        });
    }
    userns::check_ns_paths(spec)?;
    let paths = views::Paths::of(root, id);
    making(Making::Range {
        pod: role.pod().to_string(),
    })?;
    // The member's pin goes into the container's directory: both recorded
    // before either exists.
    making(Making::Views {
        dir: paths.dir.clone(),
    })?;
    let (mapping, pinned, adopted_netns) = match &role {
        Role::Sandbox { pod } => {
            let (m, _granted, adopted) = own_userns(&key, spec, pod, kubelet)?;
            container_dir(root, id, &m)?;
            (m, None, adopted)
        }
        Role::Member { pod } => {
            let (m, pin) = join_sandbox(root, id, spec, pod)?;
            (m, Some(pin), None)
        }
    };
    attach_rootfs(rootfs, &paths.view, &mapping)?;
    making(Making::Volumes {
        dir: paths.volumes.clone(),
    })?;
    views::mount_dir(root, Kind::Volumes)?;
    let volume_views = crate::volumes::apply(spec, &mapping, &paths.volumes)
        .map_err(|e| ProfileError::Volume(Box::new(e)))?;
    if let Some(r) = spec.root_mut() {
        r.set_path(paths.view.clone());
    }
    crate::failpoint::hit("create:after-mounts")?;
    Ok(Applied {
        pod: role.pod().to_string(),
        sandbox: matches!(role, Role::Sandbox { .. }),
        mapping: Some(mapping),
        rootfs_view: Some(paths.view),
        pinned,
        volume_views,
        adopted_netns,
    })
}

/// Creates container `id`'s directory (`views::container_dir`), private to
/// the pod's host root, which its init walks as that uid.
fn container_dir(root: &Path, id: &str, mapping: &PodMapping) -> Result<PathBuf, ProfileError> {
    let dir = views::container_dir(root, id);
    views::mount_dir(root, Kind::Rootfs)?;
    views::guard(&dir, Owner::pod_root(mapping)).map_err(|source| ProfileError::MountPoint {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Frees the host ID range of pod `pod` of state root `root` once no
/// container of the pod is left there (a no-op if it holds none): the last
/// of sandbox and members to go frees it (`tearing_down` is the one going,
/// whose journal does not count). Decided under the ledger lock
/// from the state root's files (`holders`), so no create or delete can
/// slip between the look and the write.
pub fn release_unused(root: &Path, pod: &str, tearing_down: &str) -> Result<(), ProfileError> {
    let key = crate::holders::root_key(root);
    // Only the ledger counts: a config without a pool (a create refused
    // for it, a pool taken out of the config) frees what is recorded.
    let ledger_dir = idmap_config()?.idmap.ledger_dir;
    if !ledger_dir.join(idmap::ledger::LEDGER_FILE).exists() {
        return Ok(());
    }
    let ledger =
        idmap::Ledger::open(&ledger_dir).map_err(|e| ProfileError::Alloc(Box::new(e.into())))?;
    let outcome = idmap::alloc::release_in(&ledger, Some(&key), pod, |_| {
        crate::holders::in_root(root, pod, Some(tearing_down))
    })
    .map_err(|e| ProfileError::Alloc(Box::new(e)))?;
    if let idmap::Release::Kept { reason, .. } = outcome {
        tracing::info!(pod, root = %key.display(), %reason, "pod range kept for its remaining containers");
    }
    Ok(())
}

/// [`release_unused`] as the journal's teardown takes it (`journal::Release`):
/// the range lifecycle lives above the journal, which only records.
pub fn release_range(
    root: &Path,
    pod: &str,
    tearing_down: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    release_unused(root, pod, tearing_down).map_err(Into::into)
}

/// Attaches the id-mapped view of the bundle's `rootfs` on `view`. The
/// directory is reached through its descriptor (`OpenedDir::handle`), never
/// by its path again: what is mapped is what `bundle` checked.
fn attach_rootfs(
    opened: &OpenedDir,
    view: &Path,
    mapping: &PodMapping,
) -> Result<(), ProfileError> {
    let (handle, rootfs) = (opened.handle(), opened.path());
    fs::create_dir_all(view).map_err(|source| ProfileError::MountPoint {
        path: view.to_path_buf(),
        source,
    })?;
    if crate::overlay::is_overlay(&handle) {
        // An overlay cannot be id-mapped, its layers can (see `overlay`).
        let staging = view.with_file_name(views::LAYERS);
        return crate::overlay::idmapped_view(rootfs, view, mapping, &staging).map_err(|source| {
            let _ = fs::remove_dir(view);
            ProfileError::OverlayRootfs {
                rootfs: rootfs.to_path_buf(),
                source: Box::new(source),
            }
        });
    }
    idmap::idmapped_bind(&handle, view, mapping).map_err(|source| {
        let _ = fs::remove_dir(view);
        ProfileError::IdmapRootfs {
            rootfs: rootfs.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut doc = serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "mount"}]}
        });
        for (k, v) in json.as_object().unwrap() {
            doc[k] = v.clone();
        }
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn the_host_user_namespace_is_asked_for_by_annotation_or_by_path() {
        assert_eq!(host_userns_request(&spec(serde_json::json!({}))), None);
        let by_annotation = spec(serde_json::json!({"annotations": {USERNS_ANNOTATION: "host"}}));
        let how = host_userns_request(&by_annotation).unwrap();
        assert!(how.contains(USERNS_ANNOTATION), "{how}");
        let other = spec(serde_json::json!({"annotations": {USERNS_ANNOTATION: "pod"}}));
        assert_eq!(host_userns_request(&other), None);
        let by_path = spec(serde_json::json!({"linux": {"namespaces": [
            {"type": "user", "path": "/proc/self/ns/user"}
        ]}}));
        let how = host_userns_request(&by_path).unwrap();
        assert!(how.contains("/proc/self/ns/user"), "{how}");
        let elsewhere = spec(serde_json::json!({"linux": {"namespaces": [
            {"type": "user", "path": "/proc/self/ns/net"}
        ]}}));
        assert_eq!(host_userns_request(&elsewhere), None);
    }
}
