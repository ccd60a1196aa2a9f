//! The sandbox's own user namespace: a range allocated from the pool, the
//! mapping kubelet put in the spec registered, or the user namespace
//! containerd pinned joined (`host::userns`); and the check of the network
//! namespace a sandbox is given.

use std::fs;
use std::path::{Path, PathBuf};

use idmap::{Mapping, PodMapping};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Spec,
};

use super::{allocator, ProfileError};
use crate::pod;

pub(super) fn user_ns(spec: &Spec) -> Option<&LinuxNamespace> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
}

/// One `LinuxIdMapping` line as an idmap `Mapping`.
fn one_line(field: &'static str, lines: &[LinuxIdMapping]) -> Result<Mapping, ProfileError> {
    let [m] = lines else {
        return Err(ProfileError::Mappings {
            field,
            reason: format!(
                "expected one contiguous range per pod, got {} lines",
                lines.len()
            ),
        });
    };
    Mapping::new(m.container_id(), m.host_id(), m.size()).map_err(|e| ProfileError::Mappings {
        field,
        reason: e.to_string(),
    })
}

fn to_oci(field: &'static str, m: Mapping) -> Result<LinuxIdMapping, ProfileError> {
    LinuxIdMappingBuilder::default()
        .container_id(m.container_id())
        .host_id(m.host_id())
        .size(m.size())
        .build()
        .map_err(|e| ProfileError::Mappings {
            field,
            reason: e.to_string(),
        })
}

/// Whether the namespace at `path` is owned by the host's user namespace
/// (`NS_GET_USERNS`, ioctl_ns(2)).
fn owned_by_host(path: &Path) -> std::io::Result<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let ns = fs::File::open(path)?;
    // NS_GET_USERNS, ioctl_ns(2): _IO(0xb7, 0x1).
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: `ns` is an open namespace fd for the duration of the call;
    // NS_GET_USERNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a new descriptor nothing owns.
    let owner = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let id = |m: fs::Metadata| (m.dev(), m.ino());
    let owner = owner.metadata()?;
    let host = fs::metadata("/proc/self/ns/user")?;
    Ok(id(owner) == id(host))
}

/// Refuses a network namespace path owned by the host's user namespace:
/// the pod's init, already in its own user namespace when it joins, would
/// get EPERM from setns(2), and NET_ADMIN would not reach it anyway.
pub(super) fn check_netns_path(spec: &Spec) -> Result<(), ProfileError> {
    let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|v| v.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .and_then(|n| n.path().clone())
    else {
        return Ok(());
    };
    match owned_by_host(&path) {
        Ok(true) => Err(ProfileError::HostOwnedNetns { path }),
        Ok(false) => Ok(()),
        Err(source) => Err(ProfileError::NetnsOwner { path, source }),
    }
}

/// Refuses an ipc, uts, mount, pid, cgroup or time namespace path owned by
/// the host's user namespace, naming the namespace and the path: the
/// pod's init could not join it (libcontainer's setns(2) fails with a bare
/// EACCES/EPERM inside the init). Paths into the pod's own namespaces (a
/// member joining its sandbox's) are fine.
pub(super) fn check_ns_paths(spec: &Spec) -> Result<(), ProfileError> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in namespaces {
        let Some(path) = n.path().clone() else {
            continue;
        };
        let ns = match n.typ() {
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            LinuxNamespaceType::Mount => "mount",
            LinuxNamespaceType::Pid => "pid",
            LinuxNamespaceType::Cgroup => "cgroup",
            LinuxNamespaceType::Time => "time",
            // user: own_userns/join_sandbox; network: check_netns_path.
            _ => continue,
        };
        match owned_by_host(&path) {
            Ok(false) => {}
            Ok(true) => return Err(ProfileError::HostOwnedNs { ns, path }),
            Err(source) => return Err(ProfileError::NsOwner { ns, path, source }),
        }
    }
    Ok(())
}

/// The sandbox's own user namespace: kubelet's mapping registered, or a
/// fresh range allocated, for pod `pod` of state root `root` (a ledger key).
///
/// containerd 2.x gives a kubelet user-namespace sandbox the path of a user
/// namespace of kubelet's mappings that owns the pod's network namespace
/// (`host::userns`): the sandbox joins it, with the mappings the kernel
/// holds for it. In `kubelet` mode a mapping below 65536 is taken as given
/// and not recorded (cnfbox's pool never reaches there).
pub(super) fn own_userns(
    root: &Path,
    spec: &mut Spec,
    pod: &str,
    kubelet: bool,
) -> Result<(PodMapping, bool, Option<PathBuf>), ProfileError> {
    let joined = match user_ns(spec).and_then(|n| n.path().clone()) {
        Some(path) if is_cri_sandbox(spec) => {
            let m = crate::host::userns::mappings(&path).map_err(ProfileError::JoinedUserns)?;
            Some((path, m))
        }
        Some(path) => return Err(ProfileError::UsernsPath { path }),
        None => None,
    };
    let adopted = match check_netns_path(spec) {
        Err(ProfileError::HostOwnedNetns { path })
            if is_cri_sandbox(spec) && crate::adopt::adoptable(&path) =>
        {
            drop_netns_path(spec);
            tracing::info!(pod, netns = %path.display(), "adopting the CRI sandbox's CNI network namespace");
            Some(path)
        }
        other => {
            other?;
            None
        }
    };
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let given_uid = linux.uid_mappings().clone().unwrap_or_default();
    let given_gid = linux.gid_mappings().clone().unwrap_or_default();
    let alloc = allocator()?;
    let existed = alloc
        .show_in(Some(root), pod)
        .map_err(|e| ProfileError::Alloc(Box::new(e)))?
        .is_some();
    let given = if given_uid.is_empty() && given_gid.is_empty() {
        None
    } else {
        Some(PodMapping {
            uid: one_line("uidMappings", &given_uid)?,
            gid: one_line("gidMappings", &given_gid)?,
        })
    };
    let given = match (&joined, given) {
        (Some((path, held)), Some(g)) if g != *held => {
            return Err(ProfileError::Mappings {
                field: "uidMappings",
                reason: format!(
                    "{g} differs from the mappings {held} of the user namespace {}",
                    path.display()
                ),
            })
        }
        (Some((_, held)), _) => Some(*held),
        (None, g) => g,
    };
    let low = |m: &PodMapping| {
        m.uid.host_range().touches_host_reserved() || m.gid.host_range().touches_host_reserved()
    };
    let mapping = match given {
        None => alloc
            .allocate_in(Some(root), pod)
            .map_err(|e| ProfileError::Alloc(Box::new(e)))?,
        Some(mapping) if kubelet && low(&mapping) => {
            tracing::warn!(pod, %mapping, "kubelet's mapping reaches below 65536: used as given and not recorded ([idmap] mode = \"kubelet\")");
            mapping
        }
        Some(mapping) => {
            alloc
                .register_in(Some(root), pod, mapping)
                .map_err(|source| ProfileError::Register {
                    pod: pod.to_string(),
                    source: Box::new(source),
                })?;
            mapping
        }
    };
    crate::failpoint::hit("create:after-range")?;
    if joined.is_some() {
        // libcontainer joins the namespace; its mappings are the kernel's.
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
        return Ok((mapping, !existed, adopted));
    }
    linux.set_uid_mappings(Some(vec![to_oci("uidMappings", mapping.uid)?]));
    linux.set_gid_mappings(Some(vec![to_oci("gidMappings", mapping.gid)?]));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User)
    {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    Ok((mapping, !existed, adopted))
}

/// A CRI (or CRI-O) sandbox container: the only kind whose network
/// namespace cnfbox adopts.
fn is_cri_sandbox(spec: &Spec) -> bool {
    pod::container_type(spec.annotations().as_ref()) == Some("sandbox")
}

/// Makes the spec's network namespace a new one (no path).
fn drop_netns_path(spec: &mut Spec) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for n in namespaces
        .iter_mut()
        .filter(|n| n.typ() == LinuxNamespaceType::Network)
    {
        n.set_path(None);
    }
    linux.set_namespaces(Some(namespaces));
}
