//! The allocator: which pod owns which host IDs, across processes and
//! crashes.
//!
//! Every call takes the ledger lock, reads and verifies the ledger, changes
//! it in memory, and writes it back durably before returning. A grant is
//! therefore on disk before any caller can act on it, and no two processes
//! ever decide from the same snapshot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, EtcRoot, Pools};
use crate::ledger::{Ledger, LedgerError, LockMode};
use crate::range::PodMapping;
use crate::state::{root_label, Conflict, Origin, PodEntry, State};

/// Longest pod id accepted (sandbox ids are 64 hex digits).
pub const MAX_POD_ID_LEN: usize = 256;

/// Errors of allocator operations.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Reading, locking or writing the ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Resolving the pools from the config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another ledger on the node hands out IDs of these pools.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The pod id is empty, too long, or has control characters.
    #[error(
        "invalid pod id {pod:?}: must be 1..={MAX_POD_ID_LEN} bytes without control characters"
    )]
    PodId { pod: String },
    /// Every slot of the pool is taken.
    #[error(
        "no free range of {range_size} IDs for pod {pod}: the pools (uid {uid}, gid {gid}) hold \
         {capacity} ranges and {live} pods hold ranges; release or gc some, or grow the pool"
    )]
    Exhausted {
        pod: String,
        range_size: u32,
        uid: crate::range::IdRange,
        gid: crate::range::IdRange,
        capacity: u32,
        live: usize,
    },
    /// `register` of a mapping that would break the invariants.
    #[error("refusing to register pod {pod} (state root {root}) with {mapping}")]
    Register {
        pod: String,
        root: String,
        mapping: PodMapping,
        #[source]
        source: Box<Conflict>,
    },
    /// `repair` given live pods whose mappings overlap each other.
    #[error("cannot rebuild the ledger from the live pods: pod {pod}")]
    RepairConflict {
        pod: String,
        #[source]
        source: Box<Conflict>,
    },
}

/// What [`Allocator::repair`] found and did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepairReport {
    /// Why the old ledger was replaced: its corruption, or "healthy".
    pub previous: String,
    /// Where the old ledger was moved, if there was one.
    pub saved_as: Option<PathBuf>,
    /// The entries of the rebuilt ledger.
    pub entries: Vec<PodEntry>,
}

/// What [`Allocator::release_in`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// The range was freed; this is what the pod held.
    Freed(PodEntry),
    /// The pod holds the range, and something still uses it.
    Kept {
        /// What the pod holds.
        entry: PodEntry,
        /// What uses it.
        reason: String,
    },
    /// The pod holds no range.
    NotHeld,
}

/// Allocates and records per-pod host ID ranges.
#[derive(Clone, Debug)]
pub struct Allocator {
    ledger: Ledger,
    pools: Pools,
    /// Where the ledger is registered for its pools before it hands out
    /// IDs (`registry`); none for an allocator made from parts (tests).
    registry: Option<crate::registry::Registry>,
}

impl Allocator {
    /// An allocator over `pools` with its ledger in `ledger_dir`.
    pub fn new(ledger_dir: impl Into<PathBuf>, pools: Pools) -> Result<Self, AllocError> {
        Ok(Allocator {
            ledger: Ledger::open(ledger_dir)?,
            pools,
            registry: None,
        })
    }

    /// The allocator the host config describes: pools resolved from the
    /// config or subuid/subgid under `etc`, ledger in `ledger_dir`.
    /// Before it hands out IDs its ledger is registered for the pools on
    /// the node (`registry`): a second config naming overlapping pools
    /// with another ledger gets none.
    pub fn from_config(config: &Config, etc: &EtcRoot) -> Result<Self, AllocError> {
        let pools = config.pools(etc)?;
        let mut alloc = Self::new(config.idmap.ledger_dir.clone(), pools)?;
        alloc.registry = Some(crate::registry::Registry::node());
        Ok(alloc)
    }

    /// Registers the ledger for the pools, where this allocator has a
    /// registry: before any ID is handed out or recorded.
    fn claim(&self) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, AllocError> {
        match &self.registry {
            Some(r) => Ok(Some(r.claim(self.ledger.dir(), &self.pools)?)),
            None => Ok(None),
        }
    }

    /// The pools allocations come from.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// The ledger store (for its paths, and for tests that hold its lock).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The pod's range: the one it already holds (same pod, same range), or
    /// the lowest free one. The pod has no state root: see
    /// [`Allocator::allocate_in`].
    pub fn allocate(&self, pod: &str) -> Result<PodMapping, AllocError> {
        self.allocate_in(None, pod)
    }

    /// The range of pod `pod` of state root `root`: the one it already
    /// holds, or the lowest free one. An entry of that id without a root
    /// (a v1 ledger's) is the pod's own and gets the root recorded.
    pub fn allocate_in(&self, root: Option<&Path>, pod: &str) -> Result<PodMapping, AllocError> {
        check_pod_id(pod)?;
        // Held until the grant is on disk (`registry`).
        let _registry = self.claim()?;
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        if let Some(e) = state.get(root, pod) {
            tracing::debug!(pod, mapping = %e.mapping, "pod already holds a range");
            return Ok(e.mapping);
        }
        if let Some(mapping) = adopt_legacy(&mut state, root, pod, None) {
            lock.store(&mut state)?;
            return Ok(mapping);
        }
        let mapping = state
            .first_fit(&self.pools)
            .ok_or_else(|| AllocError::Exhausted {
                pod: pod.to_owned(),
                range_size: self.pools.range_size,
                uid: self.pools.uid,
                gid: self.pools.gid,
                capacity: self.pools.capacity(),
                live: state.len(),
            })?;
        state
            .insert(entry(root, pod, Origin::Allocated, mapping))
            .map_err(|source| AllocError::Register {
                pod: pod.to_owned(),
                root: root_label(root),
                mapping,
                source: Box::new(source),
            })?;
        lock.store(&mut state)?;
        tracing::info!(pod, root = %root_label(root), %mapping, generation = state.generation, "allocated host ID range");
        Ok(mapping)
    }

    /// Records a mapping chosen elsewhere for a pod without a state root:
    /// see [`Allocator::register_in`].
    pub fn register(&self, pod: &str, mapping: PodMapping) -> Result<(), AllocError> {
        self.register_in(None, pod, mapping)
    }

    /// Records a mapping chosen elsewhere (kubelet's `hostUsers: false`).
    /// Idempotent for the same mapping; refuses a different mapping for a
    /// known pod, a range below 65536, or one overlapping another pod's
    /// (the error names both pods, roots and ranges).
    pub fn register_in(
        &self,
        root: Option<&Path>,
        pod: &str,
        mapping: PodMapping,
    ) -> Result<(), AllocError> {
        check_pod_id(pod)?;
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        if state.get(root, pod).is_some_and(|e| e.mapping == mapping) {
            return Ok(());
        }
        if adopt_legacy(&mut state, root, pod, Some(mapping)).is_some() {
            lock.store(&mut state)?;
            return Ok(());
        }
        state
            .insert(entry(root, pod, Origin::Registered, mapping))
            .map_err(|source| {
                tracing::warn!(pod, root = %root_label(root), %mapping, error = %source, "register refused");
                AllocError::Register {
                    pod: pod.to_owned(),
                    root: root_label(root),
                    mapping,
                    source: Box::new(source),
                }
            })?;
        lock.store(&mut state)?;
        tracing::info!(pod, root = %root_label(root), %mapping, "registered host ID range");
        Ok(())
    }

    /// Frees the range of a pod without a state root; returns what it held
    /// (`None` if nothing, which is not an error: release must be safe to
    /// repeat).
    pub fn release(&self, pod: &str) -> Result<Option<PodEntry>, AllocError> {
        match self.release_in(None, pod, |_| None)? {
            Release::Freed(e) => Ok(Some(e)),
            Release::NotHeld | Release::Kept { .. } => Ok(None),
        }
    }

    /// Frees the range of pod `pod` of state root `root` (or the rootless
    /// entry of that id, from a v1 ledger) unless `held_by`, asked under
    /// the ledger lock, names something that still uses it: the pod's
    /// other containers, a process in its user namespace. Nothing can take
    /// the range between that answer and the write.
    pub fn release_in(
        &self,
        root: Option<&Path>,
        pod: &str,
        held_by: impl FnOnce(&PodEntry) -> Option<String>,
    ) -> Result<Release, AllocError> {
        release_in(&self.ledger, root, pod, held_by)
    }

    /// The entry of `pod`: the rootless one, else that id's in any state
    /// root (the first by root), for callers that know ids are unique.
    pub fn show(&self, pod: &str) -> Result<Option<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Shared)?;
        let state = lock.load()?;
        if let Some(e) = state.get(None, pod) {
            return Ok(Some(e.clone()));
        }
        let found = state.entries().find(|e| e.pod == pod).cloned();
        Ok(found)
    }

    /// The entry of pod `pod` of state root `root`, or the rootless entry
    /// of that id.
    pub fn show_in(&self, root: Option<&Path>, pod: &str) -> Result<Option<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Shared)?;
        let state = lock.load()?;
        Ok(state
            .get(root, pod)
            .or_else(|| state.get(None, pod))
            .cloned())
    }

    /// Every entry, sorted by state root and pod id.
    pub fn list(&self) -> Result<Vec<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Shared)?;
        Ok(lock.load()?.entries().cloned().collect())
    }

    /// Releases the ranges of pods whose id is not in `live` (in whatever
    /// state root), except those granted less than `grace` ago: see
    /// [`Allocator::gc_with`].
    pub fn gc(&self, live: &HashSet<String>, grace: Duration) -> Result<Vec<PodEntry>, AllocError> {
        self.gc_with(grace, |e, _| {
            live.contains(&e.pod).then(|| "listed live".to_owned())
        })
    }

    /// Releases every range granted at least `grace` ago whose owner
    /// `held_by` cannot find. `held_by` runs under the ledger lock, once per
    /// candidate, with the state roots the ledger names (for entries that
    /// recorded none), and answers why the range is still in use, or
    /// `None` when its owner is proven gone. The grace keeps a pod between
    /// `allocate` and its first container, which nothing on disk shows yet.
    pub fn gc_with(
        &self,
        grace: Duration,
        mut held_by: impl FnMut(&PodEntry, &[PathBuf]) -> Option<String>,
    ) -> Result<Vec<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        let cutoff = now().saturating_sub(grace.as_secs());
        let roots = state.roots();
        let mut dead = Vec::new();
        for e in state.entries().filter(|e| e.created <= cutoff) {
            match held_by(e, &roots) {
                Some(reason) => {
                    tracing::info!(pod = %e.pod, root = %root_label(e.root.as_deref()), mapping = %e.mapping, %reason, "gc keeps host ID range");
                }
                None => dead.push((e.root.clone(), e.pod.clone())),
            }
        }
        let freed: Vec<PodEntry> = dead
            .iter()
            .filter_map(|(r, p)| state.remove(r.as_deref(), p))
            .collect();
        if !freed.is_empty() {
            lock.store(&mut state)?;
        }
        for e in &freed {
            tracing::info!(pod = %e.pod, root = %root_label(e.root.as_deref()), mapping = %e.mapping, "gc released host ID range");
        }
        Ok(freed)
    }

    /// Rebuilds the ledger from the live pods of rootless callers: see
    /// [`Allocator::repair_in`].
    pub fn repair(
        &self,
        live: impl IntoIterator<Item = (String, PodMapping)>,
    ) -> Result<RepairReport, AllocError> {
        self.repair_in(&[], live.into_iter().map(|(p, m)| (None, p, m)), |_| true)
    }

    /// Rebuilds the ledger from the live pods (state root, pod, mapping)
    /// the caller read from the container records of the state roots in
    /// `scanned`, whether the old ledger is corrupt or not. From a healthy
    /// old ledger, the entries of roots not scanned are kept, and so are
    /// rootless ones unless a live pod of that id and mapping replaces them
    /// or `gone` says their owner is gone: a repair in one state root must
    /// not free the ranges of another's pods. The old file is kept beside
    /// it as `ledger.corrupt-<time>` or `ledger.replaced-<time>`.
    pub fn repair_in(
        &self,
        scanned: &[PathBuf],
        live: impl IntoIterator<Item = (Option<PathBuf>, String, PodMapping)>,
        mut gone: impl FnMut(&PodEntry) -> bool,
    ) -> Result<RepairReport, AllocError> {
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let (previous, generation, tag, old) = match lock.load() {
            Ok(s) => (
                format!("healthy ({} pods)", s.len()),
                s.generation,
                "replaced",
                s.entries().cloned().collect(),
            ),
            Err(e @ LedgerError::Corrupt { .. }) => (e.to_string(), 0, "corrupt", Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut state = State::with_generation(generation);
        for (root, pod, mapping) in live {
            check_pod_id(&pod)?;
            let origin = if self.is_pool_slot(&mapping) {
                Origin::Allocated
            } else {
                Origin::Registered
            };
            state
                .insert(entry(root.as_deref(), &pod, origin, mapping))
                .map_err(|source| AllocError::RepairConflict {
                    pod,
                    source: Box::new(source),
                })?;
        }
        for e in old {
            let kept = match &e.root {
                Some(r) => !scanned.contains(r),
                None => {
                    let replaced = state
                        .entries()
                        .any(|l| l.pod == e.pod && l.mapping == e.mapping);
                    !replaced && !gone(&e)
                }
            };
            if kept {
                let pod = e.pod.clone();
                state
                    .insert(e)
                    .map_err(|source| AllocError::RepairConflict {
                        pod,
                        source: Box::new(source),
                    })?;
            }
        }
        let saved_as = lock.quarantine(&format!("{tag}-{}", now_nanos()))?;
        lock.store(&mut state)?;
        tracing::warn!(previous = %previous, saved_as = ?saved_as, pods = state.len(), "ledger rebuilt from live pods");
        Ok(RepairReport {
            previous,
            saved_as,
            entries: state.entries().cloned().collect(),
        })
    }

    /// Whether `m` is exactly a slot this allocator would hand out.
    fn is_pool_slot(&self, m: &PodMapping) -> bool {
        let p = &self.pools;
        let (u, g) = (m.uid.host_range(), m.gid.host_range());
        m.uid.container_id() == 0
            && m.gid.container_id() == 0
            && u.size() == p.range_size
            && g.size() == p.range_size
            && p.uid.contains_range(&u)
            && p.gid.contains_range(&g)
            && u.start() - p.uid.start() == g.start() - p.gid.start()
            && (u.start() - p.uid.start()) % p.range_size == 0
    }
}

/// [`Allocator::release_in`] on a ledger alone: releasing needs no pool
/// (a node whose pool was taken out of the config still frees its pods'
/// ranges).
pub fn release_in(
    ledger: &Ledger,
    root: Option<&Path>,
    pod: &str,
    held_by: impl FnOnce(&PodEntry) -> Option<String>,
) -> Result<Release, AllocError> {
    let lock = ledger.lock(LockMode::Exclusive)?;
    let mut state = lock.load()?;
    let key = match state.get(root, pod) {
        Some(_) => root,
        None if root.is_some() && state.get(None, pod).is_some() => None,
        None => return Ok(Release::NotHeld),
    };
    let Some(held) = state.get(key, pod).cloned() else {
        return Ok(Release::NotHeld);
    };
    if let Some(reason) = held_by(&held) {
        tracing::info!(pod, root = %root_label(key), mapping = %held.mapping, %reason, "host ID range kept");
        return Ok(Release::Kept {
            entry: held,
            reason,
        });
    }
    let Some(e) = state.remove(key, pod) else {
        return Ok(Release::NotHeld);
    };
    lock.store(&mut state)?;
    tracing::info!(pod, root = %root_label(key), mapping = %e.mapping, "released host ID range");
    Ok(Release::Freed(e))
}

/// Gives the rootless entry of `pod` (a v1 ledger's) to the pod of state
/// root `root`, if there is one and (for a registration) it has `mapping`;
/// returns its mapping. Before roots were recorded a pod id had one range
/// whatever its root, so the entry is this pod's.
fn adopt_legacy(
    state: &mut State,
    root: Option<&Path>,
    pod: &str,
    mapping: Option<PodMapping>,
) -> Option<PodMapping> {
    root?;
    let legacy = state.get(None, pod)?;
    if mapping.is_some_and(|m| m != legacy.mapping) {
        return None;
    }
    let mut e = state.remove(None, pod)?;
    e.root = root.map(Path::to_path_buf);
    let m = e.mapping;
    // Removing then re-adding the same ranges cannot conflict.
    if let Err(err) = state.insert(e) {
        tracing::error!(pod, %err, "re-recording a v1 ledger entry");
        return None;
    }
    tracing::info!(pod, root = %root_label(root), mapping = %m, "v1 ledger entry now records its state root");
    Some(m)
}

fn entry(root: Option<&Path>, pod: &str, origin: Origin, mapping: PodMapping) -> PodEntry {
    PodEntry {
        root: root.map(Path::to_path_buf),
        pod: pod.to_owned(),
        origin,
        created: now(),
        mapping,
    }
}

fn check_pod_id(pod: &str) -> Result<(), AllocError> {
    if pod.is_empty() || pod.len() > MAX_POD_ID_LEN || pod.chars().any(char::is_control) {
        return Err(AllocError::PodId {
            pod: pod.to_owned(),
        });
    }
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
