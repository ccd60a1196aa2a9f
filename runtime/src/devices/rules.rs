//! The device cgroup's rules on cgroup v1 and v2.
//!
//! libcontainer hands `linux.resources.devices` (followed by libcgroups'
//! defaults: containerd's default set and `m` on every node) to the manager
//! the host's layout picks, from its intermediate process, as host root,
//! before the pod's user namespace exists and before the init runs. On v1
//! the rules go to the container's `devices.allow` and `devices.deny`. On v2
//! libcgroups (built with `cgroupsv2_devices`) compiles them into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program and attaches it to the container's
//! own cgroup with `BPF_F_ALLOW_MULTI`: the kernel runs every program on the
//! cgroup's path to the root and an open needs all of them to allow it
//! (`__cgroup_bpf_check_dev_permission`, kernel/bpf/cgroup.c), so a program
//! a parent (systemd's slice) has keeps working and one of the pod's could
//! only deny more; pod root can neither load one nor get ours to detach it
//! (`BPF_PROG_LOAD` of this type and `BPF_PROG_GET_FD_BY_ID` need
//! `CAP_BPF`/`CAP_SYS_ADMIN` in the initial user namespace). The program
//! lives as long as the cgroup; no pin is needed. With `--systemd-cgroup`
//! on a unified host the container's cgroup is the scope systemd made;
//! libcgroups' systemd manager sets no device policy at all there, so
//! cnfbox attaches the same program to the scope itself (`scope`). Around
//! that, cnfbox settles what libcontainer leaves open:
//!
//! - libcontainer applies no cgroup setting at all to a spec without
//!   `linux.resources`, so no rule and, on v2, no program: every node the
//!   pod can reach would open. cnfbox gives such a spec empty resources.
//! - A new v1 cgroup starts from its parent's list (the root's `a *:* rwm`),
//!   a v2 program from "deny": rules that do not start with "deny all"
//!   would allow every device on v1 only. cnfbox puts runc's "deny all"
//!   first (runc `specconv.CreateCgroupConfig`) where the spec has none.
//! - `update` makes libcgroups' v2 manager (and cnfbox, on a systemd
//!   scope) build the program again from the update's resources, which carry no device rules: the
//!   pod would lose its allowed devices. As in runc, an update never
//!   changes device rules: on v2 (either driver) cnfbox passes the
//!   container's own, on v1 (whose rules only add) none.
//! - Before loading the program libcgroups sets `RLIMIT_MEMLOCK` to 128 MiB
//!   (soft and hard) in the intermediate process, which the init inherits
//!   and, being in the pod's user namespace by then, cannot raise again:
//!   cnfbox gives the created init back cnfbox's own limit when the spec
//!   sets none (VFIO's DMA mappings count against it).

use std::path::Path;

use libcgroups::common::AnyCgroupManager;
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, PosixRlimitType,
    Spec,
};

/// Errors keeping the device rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("read the container's device rules from {path}")]
    KeptSpec {
        path: std::path::PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("getrlimit(RLIMIT_MEMLOCK) of cnfbox")]
    GetMemlock(#[source] nix::Error),
    #[error("RLIMIT_MEMLOCK of the container's init")]
    SetMemlock(#[from] crate::host::rlimit::RlimitError),
}

/// runc's first rule: nothing is allowed but what the rules after it allow.
fn deny_all() -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(LinuxDeviceType::A)
        .access("rwm")
        .build()
        .expect("a deny-all rule has every field it needs")
}

fn is_deny_all(rule: &LinuxDeviceCgroup) -> bool {
    !rule.allow() && rule.typ().unwrap_or_default() == LinuxDeviceType::A
}

/// Gives the spec resources if it has none and puts "deny all" before its
/// device rules unless they start with it (containerd's and `cnfbox spec`'s
/// do): what is not allowed is denied on v1 as on v2.
pub fn deny_by_default(spec: &mut Spec) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    if !rules.first().is_some_and(is_deny_all) {
        rules.insert(0, deny_all());
    }
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
}

/// The device rules an `update` applies: the container's own on v2, with
/// the cgroupfs manager or on the systemd scope (both build the whole
/// program again), none on v1. Rules in the update itself are ignored, as runc's
/// `update` ignores them.
pub fn for_update(
    manager: &AnyCgroupManager,
    kept_spec: &Path,
    requested: &mut LinuxResources,
) -> Result<(), RulesError> {
    if requested.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        tracing::warn!("update: linux.resources.devices ignored (device rules never change)");
    }
    let rules = match manager {
        AnyCgroupManager::V1(_) => None,
        AnyCgroupManager::V2(_) | AnyCgroupManager::Systemd(_) => {
            let spec = Spec::load(kept_spec).map_err(|source| RulesError::KeptSpec {
                path: kept_spec.to_path_buf(),
                source,
            })?;
            Some(
                spec.linux()
                    .as_ref()
                    .and_then(|l| l.resources().as_ref())
                    .and_then(|r| r.devices().clone())
                    .unwrap_or_else(|| vec![deny_all()]),
            )
        }
    };
    requested.set_devices(rules);
    Ok(())
}

/// Gives the created (not yet started) init cnfbox's own `RLIMIT_MEMLOCK`
/// back unless the spec sets one (see the module doc).
pub fn restore_memlock(spec: &Spec, init: nix::unistd::Pid) -> Result<(), RulesError> {
    use nix::sys::resource::{getrlimit, Resource};
    let set_by_spec = spec
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().as_ref())
        .is_some_and(|r| r.iter().any(|l| l.typ() == PosixRlimitType::RlimitMemlock));
    if set_by_spec {
        return Ok(());
    }
    let (cur, max) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(RulesError::GetMemlock)?;
    let limit = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    crate::host::rlimit::set_limit(init, libc::RLIMIT_MEMLOCK, limit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, SpecBuilder};

    fn allow_kvm() -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(232)
            .access("rwm")
            .build()
            .unwrap()
    }

    fn rules_of(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
        spec.linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
    }

    #[test]
    fn a_spec_without_resources_gets_deny_all() {
        let mut spec = SpecBuilder::default()
            .linux(LinuxBuilder::default().build().unwrap())
            .build()
            .unwrap();
        spec.linux_mut().as_mut().unwrap().set_resources(None);
        deny_by_default(&mut spec);
        assert_eq!(rules_of(&spec), vec![deny_all()]);
    }

    #[test]
    fn deny_all_goes_first_once() {
        let mut spec = Spec::default();
        let mut resources = LinuxResources::default();
        resources.set_devices(Some(vec![allow_kvm()]));
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_resources(Some(resources));
        deny_by_default(&mut spec);
        assert_eq!(rules_of(&spec), vec![deny_all(), allow_kvm()]);
        // containerd's rules start with it (type absent means "a").
        let mut spec2 = spec.clone();
        deny_by_default(&mut spec2);
        assert_eq!(rules_of(&spec2), rules_of(&spec));
        let untyped = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert!(is_deny_all(&untyped));
    }
}
