//! The nodes of libcgroups' default set that cnfbox takes back.
//!
//! libcgroups 0.7 appends its own defaults after the spec's rules on every
//! apply, at create and at every `update` (`common::default_allow_devices`
//! and `default_devices`: `c *:* m`, `b *:* m`, `c 5:1`, `c 136:*`,
//! `c 5:2`, `c 10:200`, null, zero, full, tty, random, urandom, all
//! `rwm`): on v1 they are written to `devices.allow` after the spec's
//! rules, on v2 they are compiled into the program after them, so no spec
//! rule can deny one. The device cgroup knows a node only by number, so
//! each of these opens through any node of that number: one in the image
//! (containerd's unpacker makes it from a tar entry) or a `linux.devices`
//! entry. What each number reaches from a pod (audited with a test per
//! node, `escapes::console`):
//!
//! - `c 5:1` is the system console whatever the node's path (the tty
//!   core's `console_device()`, drivers/tty/tty_io.c): the host's ttyS0,
//!   whose output pod root writes and, with `TIOCSCTTY` and `TIOCSTI`,
//!   whose input it injects. runc dropped it from its defaults
//!   (`specconv.AllowedDevices`); libcontainer's terminal is a pty slave
//!   bound over `/dev/console` (`c 136:*`) and never needs it. Withheld
//!   here unless `[devices] allow` names it.
//! - `c 5:0` is the caller's controlling terminal (`tty_open_current_tty`)
//!   and ENXIO without one; libcontainer's init and exec'd processes call
//!   setsid(2), so a pod's only one is the pty it was given.
//! - `c 5:2` allocates a pty on the devpts mounted at `pts` beside the node
//!   (`devpts_acquire` -> `path_pts`, fs/devpts/inode.c) and is ENOENT
//!   without one: the only devpts a pod sees is its own (or one it mounts
//!   itself).
//! - `c 136:*` outside a devpts is EIO (`pts_unix98_lookup`:
//!   `devpts_get_priv` of a dentry on another filesystem).
//! - `c 10:200` creates taps in the pod's own network namespace.
//!
//! After create, before the init can run anything of the pod's, cnfbox
//! denies the withheld numbers on the container's own cgroup: on v1 it
//! writes them to `devices.deny` (which removes libcgroups' exception), on
//! v2 it attaches a second program with `BPF_F_ALLOW_MULTI` that denies
//! them and allows the rest (an open needs every program on the cgroup to
//! allow it, see `rules`). `update` runs libcgroups' apply again, which
//! re-adds the v1 exception and, on v2, detaches every program on the
//! cgroup, ours included: cnfbox freezes the container around the update
//! and denies again before it thaws (`commands::resources`).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcgroups::common::CgroupSetup;
use libcgroups::v2::devices::{bpf, program::Program};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::policy::{Dev, Policy};

/// The numbers libcgroups always allows that reach beyond the pod, with
/// the node's usual name.
const WITHHELD: &[(Dev, &str)] = &[(
    Dev {
        typ: 'c',
        major: 5,
        minor: 1,
    },
    "/dev/console",
)];

/// The license the kernel asks of a BPF program (NUL-terminated).
const LICENSE: &str = "Apache-2.0\0";

/// Errors withholding devices.
#[derive(Debug, thiserror::Error)]
pub enum WithheldError {
    #[error("read the cgroups of the container's init from {path}")]
    ReadCgroups {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} names no {what} cgroup")]
    NoCgroup { path: PathBuf, what: &'static str },
    #[error("find the cgroup v1 devices hierarchy")]
    DevicesMount(#[source] libcgroups::v1::util::V1MountPointError),
    #[error("find the host's cgroup layout")]
    Setup(#[source] libcgroups::common::GetCgroupSetupError),
    #[error("deny {rule} in {path}")]
    DenyV1 {
        path: PathBuf,
        rule: String,
        #[source]
        source: std::io::Error,
    },
    #[error("build the device program denying {rules}")]
    Program {
        rules: String,
        #[source]
        source: libcgroups::v2::devices::program::ProgramError,
    },
    #[error("load the device program denying {rules}")]
    Load {
        rules: String,
        #[source]
        source: bpf::BpfError,
    },
    #[error("open cgroup {path}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attach the device program denying {rules} to {path}")]
    Attach {
        path: PathBuf,
        rules: String,
        #[source]
        source: bpf::BpfError,
    },
}

/// The withheld numbers `policy`'s `[devices] allow` gives back: what a
/// container keeps for its whole life (`ContainerMeta::granted_devices`).
pub fn granted(policy: &Policy) -> Vec<Dev> {
    WITHHELD
        .iter()
        .filter(|(dev, _)| policy.config_allows(dev).is_some())
        .map(|(dev, _)| *dev)
        .collect()
}

/// The withheld numbers not in `granted`.
pub fn denied(granted: &[Dev]) -> Vec<Dev> {
    WITHHELD
        .iter()
        .map(|(dev, _)| *dev)
        .filter(|dev| !granted.contains(dev))
        .collect()
}

fn deny_rule(dev: &Dev) -> LinuxDeviceCgroup {
    let typ = if dev.typ == 'b' {
        LinuxDeviceType::B
    } else {
        LinuxDeviceType::C
    };
    LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(typ)
        .major(dev.major)
        .minor(dev.minor)
        .access("rwm")
        .build()
        .expect("a deny rule for one node has every field it needs")
}

fn describe(denied: &[Dev]) -> String {
    denied
        .iter()
        .map(|d| {
            let name = WITHHELD.iter().find(|(w, _)| w == d).map_or("", |(_, n)| n);
            format!("{d} ({name})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Denies `denied` on the cgroup of `pid` (the container's init), read
/// from `<proc>/<pid>/cgroup`.
pub fn deny(proc: &Path, pid: i32, denied: &[Dev]) -> Result<(), WithheldError> {
    if denied.is_empty() {
        return Ok(());
    }
    let setup = libcgroups::common::get_cgroup_setup().map_err(WithheldError::Setup)?;
    let cgroups_file = proc.join(pid.to_string()).join("cgroup");
    let text = fs::read_to_string(&cgroups_file).map_err(|source| WithheldError::ReadCgroups {
        path: cgroups_file.clone(),
        source,
    })?;
    match setup {
        CgroupSetup::Unified => {
            let rel =
                crate::host::cgroup_of(&text, None).ok_or_else(|| WithheldError::NoCgroup {
                    path: cgroups_file.clone(),
                    what: "cgroup v2",
                })?;
            let dir = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT).join(rel);
            deny_v2(&dir, denied)
        }
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            let rel = crate::host::cgroup_of(&text, Some("devices")).ok_or_else(|| {
                WithheldError::NoCgroup {
                    path: cgroups_file.clone(),
                    what: "devices",
                }
            })?;
            let mount = libcgroups::v1::util::get_subsystem_mount_point(
                &libcgroups::v1::ControllerType::Devices,
            )
            .map_err(WithheldError::DevicesMount)?;
            deny_v1(&mount.join(rel), denied)
        }
    }
}

/// v1: a deny removes the matching exception libcgroups wrote
/// (Documentation/admin-guide/cgroup-v1/devices.rst).
fn deny_v1(dir: &Path, denied: &[Dev]) -> Result<(), WithheldError> {
    let path = dir.join("devices.deny");
    for dev in denied {
        let rule = deny_rule(dev).to_string();
        fs::write(&path, &rule).map_err(|source| WithheldError::DenyV1 {
            path: path.clone(),
            rule: rule.clone(),
            source,
        })?;
        tracing::debug!(%rule, path = %path.display(), "withheld device");
    }
    Ok(())
}

/// v2: a program that denies `denied` and allows the rest, next to
/// libcgroups' (`BPF_F_ALLOW_MULTI`, as libcgroups attaches its own).
fn deny_v2(dir: &Path, denied: &[Dev]) -> Result<(), WithheldError> {
    let rules: Vec<LinuxDeviceCgroup> = denied.iter().map(deny_rule).collect();
    let what = describe(denied);
    let prog = Program::from_rules(&rules, true).map_err(|source| WithheldError::Program {
        rules: what.clone(),
        source,
    })?;
    let raw = bpf::prog::load(LICENSE, prog.bytecodes()).map_err(|source| WithheldError::Load {
        rules: what.clone(),
        source,
    })?;
    // SAFETY: `load` returned a new program fd (it fails on a negative
    // one) that nothing else owns or closes.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let cgroup = fs::File::open(dir).map_err(|source| WithheldError::OpenCgroup {
        path: dir.to_path_buf(),
        source,
    })?;
    // The attachment holds the program for the cgroup's life; our fd is
    // closed when `prog_fd` drops.
    bpf::prog::attach(prog_fd.as_raw_fd(), cgroup.as_fd().as_raw_fd()).map_err(|source| {
        WithheldError::Attach {
            path: dir.to_path_buf(),
            rules: what.clone(),
            source,
        }
    })?;
    tracing::debug!(rules = %what, path = %dir.display(), "withheld devices");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: Dev = Dev {
        typ: 'c',
        major: 5,
        minor: 1,
    };

    fn policy(allow: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, format!("[devices]\nallow = [{allow}]\n")).unwrap();
        Policy::load(&path).unwrap()
    }

    #[test]
    fn the_console_is_withheld_unless_the_config_names_it() {
        assert_eq!(granted(&policy("")), vec![]);
        assert_eq!(denied(&granted(&policy(""))), vec![CONSOLE]);
        assert_eq!(granted(&policy("\"c 10:232\"")), vec![]);
        assert_eq!(granted(&policy("\"c 5:1\"")), vec![CONSOLE]);
        assert_eq!(granted(&policy("\"c 5:*\"")), vec![CONSOLE]);
        assert!(denied(&[CONSOLE]).is_empty());
    }

    #[test]
    fn finds_the_devices_and_the_v2_cgroup() {
        let text = "12:pids:/cnfbox/a\n5:cpu,cpuacct:/cnfbox/a\n3:devices:/cnfbox/a\n0::/x/y\n";
        assert_eq!(
            crate::host::cgroup_of(text, Some("devices")),
            Some("cnfbox/a")
        );
        assert_eq!(crate::host::cgroup_of(text, None), Some("x/y"));
        assert_eq!(crate::host::cgroup_of("0::/only\n", Some("devices")), None);
        assert_eq!(crate::host::cgroup_of("1:name=systemd:/s\n", None), None);
    }

    #[test]
    fn the_deny_rule_is_the_cgroup_v1_text() {
        assert_eq!(deny_rule(&CONSOLE).to_string(), "c 5:1 rwm");
    }
}
