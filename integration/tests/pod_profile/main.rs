//! The pod profile: a private user namespace per pod on its own host ID
//! range, an id-mapped rootfs (nothing chowned), pod members joining the
//! sandbox's namespaces, and kubelet's mappings registered or refused.
//!
//! - `ranges`: a range per pod or standalone container, freed after;
//!   kubelet's mappings, no pool, the host user namespace opt-in;
//! - `members`: members and execs joining the sandbox's namespaces, forged
//!   sandbox ids, containerd's pinned user namespace, `inspect`.

#[path = "../common/mod.rs"]
mod common;

mod members;
mod ranges;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;
use test_bundles::Scenario;

const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
