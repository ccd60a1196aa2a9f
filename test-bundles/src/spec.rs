//! The default `config.json`: runc's `runc spec` with containerd's
//! capability set, built with oci-spec's builders.
//!
//! Differences from `runc spec` (1.1), all deliberate:
//! - capabilities are containerd's default set (oci/spec.go
//!   `defaultUnixCaps`), in bounding/effective/permitted only, as
//!   containerd generates them; `runc spec` has three caps and ambient;
//! - `process.terminal` is false (tests capture stdio) and `root.readonly`
//!   is false (tests may write to the rootfs);
//! - no `/sys/fs/cgroup` mount unless asked for: on this project's hybrid
//!   cgroup hosts that mount is the runtime's business, not the bundle's;
//! - `linux.cgroupsPath` is left unset so the runtime picks its default.

use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// `PATH` of the default process environment (as `runc spec`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default hostname of a bundle.
pub const DEFAULT_HOSTNAME: &str = "cnfbox";

/// containerd's default capability set (containerd `oci/spec.go`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// runc's default masked paths (`runc spec`).
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// runc's default read-only paths (`runc spec`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Errors while building a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("building the OCI runtime spec ({part})")]
    Build {
        part: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// Knobs of [`default_spec`] that change its structure rather than a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecOptions {
    /// Add a cgroup namespace.
    pub cgroup_namespace: bool,
    /// Add runc's read-only `/sys/fs/cgroup` cgroup mount.
    pub cgroup_mount: bool,
    /// `linux.cgroupsPath`; `None` leaves it to the runtime.
    pub cgroups_path: Option<PathBuf>,
}

fn err(part: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> SpecError {
    move |source| SpecError::Build { part, source }
}

/// containerd's default capabilities as an oci-spec set.
pub fn default_capabilities() -> Capabilities {
    DEFAULT_CAPABILITIES.into_iter().collect()
}

/// The default spec: runs `sh`, as root, in `rootfs`.
pub fn default_spec(opts: &SpecOptions) -> Result<Spec, SpecError> {
    let caps = default_capabilities();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(err("capabilities"))?;
    // The builder fills unset sets from oci-spec's Default (three caps);
    // containerd leaves inheritable and ambient empty.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(err("user"))?,
        )
        .args(vec!["sh".to_owned()])
        .env(vec![
            format!("PATH={DEFAULT_PATH}"),
            "TERM=xterm".to_owned(),
        ])
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .map_err(err("rlimits"))?])
        .no_new_privileges(true)
        .build()
        .map_err(err("process"))?;

    let mut linux = LinuxBuilder::default()
        .resources(
            // Deny all devices, as `runc spec`; the runtime adds its defaults.
            LinuxResourcesBuilder::default()
                .devices(vec![LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .map_err(err("device cgroup"))?])
                .build()
                .map_err(err("resources"))?,
        )
        .namespaces(namespaces(opts.cgroup_namespace)?)
        .masked_paths(MASKED_PATHS.map(str::to_owned).to_vec())
        .readonly_paths(READONLY_PATHS.map(str::to_owned).to_vec());
    if let Some(path) = &opts.cgroups_path {
        linux = linux.cgroups_path(path.clone());
    }

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .map_err(err("root"))?,
        )
        .process(process)
        .hostname(DEFAULT_HOSTNAME)
        .mounts(mounts(opts.cgroup_mount)?)
        .linux(linux.build().map_err(err("linux"))?)
        .build()
        .map_err(err("spec"))?;
    // The builder starts from oci-spec's Default, which has an empty map.
    spec.set_annotations(None);
    Ok(spec)
}

fn namespaces(cgroup: bool) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if cgroup {
        types.push(LinuxNamespaceType::Cgroup);
    }
    types
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(err("namespace"))
        })
        .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    let mut b = MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source);
    if !options.is_empty() {
        b = b.options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>());
    }
    b.build().map_err(err("mount"))
}

/// `runc spec`'s mounts, without `/sys/fs/cgroup` unless `cgroup`.
fn mounts(cgroup: bool) -> Result<Vec<Mount>, SpecError> {
    let mut m = vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    if cgroup {
        m.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_matches_runc_defaults() {
        let spec = default_spec(&SpecOptions::default()).expect("spec");
        assert_eq!(spec.version(), oci_spec::runtime::VERSION);
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), &PathBuf::from("rootfs"));
        assert_eq!(root.readonly(), Some(false));
        let p = spec.process().as_ref().expect("process");
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let caps = p.capabilities().as_ref().expect("caps");
        assert_eq!(caps.bounding().as_ref().map(|c| c.len()), Some(14));
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps.ambient().is_none() && caps.inheritable().is_none());
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.cgroups_path().is_none());
        assert_eq!(linux.namespaces().as_ref().map(Vec::len), Some(5));
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
    }

    #[test]
    fn options_add_cgroup_ns_mount_and_path() {
        let spec = default_spec(&SpecOptions {
            cgroup_namespace: true,
            cgroup_mount: true,
            cgroups_path: Some("/cnfbox/x".into()),
        })
        .expect("spec");
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(linux.cgroups_path(), &Some(PathBuf::from("/cnfbox/x")));
        let ns = linux.namespaces().as_ref().expect("namespaces");
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
        let mounts = spec.mounts().as_ref().expect("mounts");
        assert_eq!(mounts.len(), 7);
    }
}
