//! NUMA: one feature. The node a CNF's container follows (from its
//! annotation, or from what kubelet and the device plugins decided) and
//! everything that follows the node: the cpuset, the memory policy of the
//! init and of every exec'd process, the pod's hugetlbfs mounts and their
//! hugetlb limits, and the free-hugepage check.
//!
//! - planning, pure and fuzzed (`lib.rs` builds these three alone):
//!   `inputs` (what names a node), `derive` (`[numa] align` between them),
//!   `placement` (node to cpuset and policy, the topology in sysfs);
//! - applying: `mempolicy` (`set_mempolicy(2)`), `hugepages` (limits,
//!   cgroup and mounts of a container), `hugetlbfs` (the host-side
//!   mounts), `hugetlb` (the limits and the hugetlb cgroup).

pub mod derive;
pub mod hugepages;
pub mod hugetlb;
pub mod hugetlbfs;
pub mod inputs;
pub mod mempolicy;
mod placement;

pub use placement::*;
