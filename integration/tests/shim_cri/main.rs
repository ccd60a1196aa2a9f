//! cnfbox pods through containerd's CRI: a Rust CRI client (`k8s-cri` over
//! tonic) on a private containerd 1.6 with two runtime handlers, `cnfbox`
//! (`io.containerd.cnfbox.v2`) and `runc`, and a CNI bridge network of the
//! test's own (unique bridge name and subnet, removed after).
//!
//! CRI creates each pod's network namespace in the host user namespace and
//! runs CNI in it; cnfbox adopts it (runtime/src/adopt.rs): the pod gets a
//! network namespace of its own user namespace with CNI's eth0 moved in.
//!
//! - `handlers`: pods on both handlers side by side, and containerd's
//!   runc-v2 runtime type running cnfbox;
//! - `pod_config`: refused input, seccomp and sysctls, a sandbox's netns path;
//! - `host_access`: host namespaces under the opt-in, mount propagation
//!   and recursive read-only, devices;
//! - `numa`: kubelet's cpuset places the container on its NUMA node.

#[path = "../common/mod.rs"]
mod common;
#[path = "../cri/mod.rs"]
mod cri;
#[path = "../cri_node/mod.rs"]
mod cri_node;

mod handlers;
mod host_access;
mod numa;
mod pod_config;
