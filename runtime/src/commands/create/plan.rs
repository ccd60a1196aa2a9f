//! Create's plan: the spec in, what to make out. Everything here checks
//! and rewrites the spec in memory and reads the host (through injectable
//! roots) but makes nothing, so bad input fails before any range, cgroup
//! or mount exists.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use libcgroups::common::CgroupSetup;
use oci_spec::runtime::Spec;

use crate::cgroups::{self, Driver};
use crate::numa::hugepages;

/// The host files the plan reads.
#[derive(Debug, Clone)]
pub struct HostRoots {
    /// `/sys` (NUMA topology, hugepage pools, the hugetlb cgroup2 tree).
    pub sys: PathBuf,
    /// `/proc` (the default hugepage size).
    pub proc: PathBuf,
    /// `/etc/cnfbox/config.toml` (NUMA and network policy).
    pub config: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            proc: "/proc".into(),
            config: idmap::EtcRoot::default().config_path(),
        }
    }
}

/// What create will make for one container.
#[derive(Debug)]
pub struct Plan {
    /// The spec to stage, as far as it is known before the pod profile.
    pub spec: Spec,
    /// The cgroup path given to libcontainer.
    pub cgroup_path: PathBuf,
    pub driver: Driver,
    pub numa: Option<crate::numa::Record>,
    /// Why no node was bound although inputs named nodes.
    pub numa_unbound: Option<String>,
    pub hugepages: hugepages::Plan,
    /// Secondary interfaces to attach once the init exists.
    pub interfaces: Vec<crate::net::Request>,
}

/// Plans container `id` from its bundle's `spec` and `rootfs`.
pub fn plan(
    id: &str,
    spec: &Spec,
    rootfs: &Path,
    driver: Driver,
    setup: CgroupSetup,
    roots: &HostRoots,
) -> anyhow::Result<Plan> {
    let spec_cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let cgroup_path = cgroups::resolve(spec_cgroup.as_deref(), id, driver, setup)?;
    let mut spec = spec.clone();
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.to_path_buf());
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(cgroup_path.clone()));
    }
    // `noNewPrivileges: false` means what an absent field means, but
    // libcontainer 0.7 takes any present value for "set" and then loads the
    // seccomp filter after the capabilities are dropped, which the kernel
    // refuses without CAP_SYS_ADMIN ("failed to load seccomp context").
    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
    let context = || format!("create container {id}");
    // Secondary interfaces are checked against the spec and the policy;
    // libcontainer never sees netDevices. Planned first: the devices they
    // take are inputs of the NUMA placement.
    let interfaces = crate::net::plan(id, &spec, &roots.config).with_context(context)?;
    // NUMA placement and hugepage checks.
    let outcome = crate::numa::apply(&mut spec, &roots.sys, &roots.config, &interfaces)
        .with_context(context)?;
    for w in &outcome.warnings {
        crate::commands::warn(Some(format!("create container {id}: {w}")));
    }
    let numa = outcome.record;
    let hugepages = hugepages::check(
        &mut spec,
        &hugepages::Roots {
            sys: roots.sys.clone(),
            proc: roots.proc.clone(),
        },
        numa.as_ref().map(|r| (r.node, r.from.as_str())),
    )
    .with_context(context)?;
    crate::net::strip(&mut spec);
    crate::devices::rules::deny_by_default(&mut spec);
    Ok(Plan {
        spec,
        cgroup_path,
        driver,
        numa,
        numa_unbound: outcome.unbound,
        hugepages,
        interfaces,
    })
}

#[cfg(test)]
mod tests;
