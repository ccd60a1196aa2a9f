//! The allocator: which pod owns which host IDs, across processes and
//! crashes.
//!
//! Every call takes the ledger lock, reads and verifies the ledger, changes
//! it in memory, and writes it back durably before returning. A grant is
//! therefore on disk before any caller can act on it, and no two processes
//! ever decide from the same snapshot.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, EtcRoot, Pools};
use crate::ledger::{Ledger, LedgerError, LockMode};
use crate::range::PodMapping;
use crate::state::{Conflict, Origin, PodEntry, State};

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
    #[error("refusing to register pod {pod}")]
    Register {
        pod: String,
        #[source]
        source: Conflict,
    },
    /// `repair` given live pods whose mappings overlap each other.
    #[error("cannot rebuild the ledger from the live pods: pod {pod}")]
    RepairConflict {
        pod: String,
        #[source]
        source: Conflict,
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

/// Allocates and records per-pod host ID ranges.
#[derive(Clone, Debug)]
pub struct Allocator {
    ledger: Ledger,
    pools: Pools,
}

impl Allocator {
    /// An allocator over `pools` with its ledger in `ledger_dir`.
    pub fn new(ledger_dir: impl Into<PathBuf>, pools: Pools) -> Result<Self, AllocError> {
        Ok(Allocator {
            ledger: Ledger::open(ledger_dir)?,
            pools,
        })
    }

    /// The allocator the host config describes: pools resolved from the
    /// config or subuid/subgid under `etc`, ledger in `ledger_dir`.
    pub fn from_config(config: &Config, etc: &EtcRoot) -> Result<Self, AllocError> {
        let pools = config.pools(etc)?;
        Self::new(config.idmap.ledger_dir.clone(), pools)
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
    /// the lowest free one.
    pub fn allocate(&self, pod: &str) -> Result<PodMapping, AllocError> {
        check_pod_id(pod)?;
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        if let Some(e) = state.get(pod) {
            tracing::debug!(pod, mapping = %e.mapping, "pod already holds a range");
            return Ok(e.mapping);
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
            .insert(entry(pod, Origin::Allocated, mapping))
            .map_err(|source| AllocError::Register {
                pod: pod.to_owned(),
                source,
            })?;
        lock.store(&mut state)?;
        tracing::info!(pod, %mapping, generation = state.generation, "allocated host ID range");
        Ok(mapping)
    }

    /// Records a mapping chosen elsewhere. Idempotent for the same mapping;
    /// refuses a different mapping for a known pod, a range below 65536, or
    /// one overlapping another pod's.
    pub fn register(&self, pod: &str, mapping: PodMapping) -> Result<(), AllocError> {
        check_pod_id(pod)?;
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        if state.get(pod).is_some_and(|e| e.mapping == mapping) {
            return Ok(());
        }
        state
            .insert(entry(pod, Origin::Registered, mapping))
            .map_err(|source| {
                tracing::warn!(pod, %mapping, error = %source, "register refused");
                AllocError::Register {
                    pod: pod.to_owned(),
                    source,
                }
            })?;
        lock.store(&mut state)?;
        tracing::info!(pod, %mapping, "registered host ID range");
        Ok(())
    }

    /// Frees the pod's range; returns what it held (`None` if nothing, which
    /// is not an error: release must be safe to repeat).
    pub fn release(&self, pod: &str) -> Result<Option<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        let Some(e) = state.remove(pod) else {
            return Ok(None);
        };
        lock.store(&mut state)?;
        tracing::info!(pod, mapping = %e.mapping, "released host ID range");
        Ok(Some(e))
    }

    /// The pod's entry, if it holds a range.
    pub fn show(&self, pod: &str) -> Result<Option<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Shared)?;
        Ok(lock.load()?.get(pod).cloned())
    }

    /// Every entry, sorted by pod id.
    pub fn list(&self) -> Result<Vec<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Shared)?;
        Ok(lock.load()?.entries().cloned().collect())
    }

    /// Releases the ranges of pods not in `live`, except those granted less
    /// than `grace` ago: a pod between `allocate` and the creation of its
    /// first container is not yet "live" to the caller, and reclaiming its
    /// range then would hand it to a second pod.
    pub fn gc(&self, live: &HashSet<String>, grace: Duration) -> Result<Vec<PodEntry>, AllocError> {
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let mut state = lock.load()?;
        let cutoff = now().saturating_sub(grace.as_secs());
        let dead: Vec<String> = state
            .entries()
            .filter(|e| !live.contains(&e.pod) && e.created <= cutoff)
            .map(|e| e.pod.clone())
            .collect();
        let freed: Vec<PodEntry> = dead.iter().filter_map(|p| state.remove(p)).collect();
        if !freed.is_empty() {
            lock.store(&mut state)?;
        }
        for e in &freed {
            tracing::info!(pod = %e.pod, mapping = %e.mapping, "gc released host ID range");
        }
        Ok(freed)
    }

    /// Rebuilds the ledger from the live pods and their mappings (read from
    /// the live containers by the caller), whether the old ledger is corrupt
    /// or not. The old file is kept beside it as `ledger.corrupt-<time>` or
    /// `ledger.replaced-<time>` for inspection.
    pub fn repair(
        &self,
        live: impl IntoIterator<Item = (String, PodMapping)>,
    ) -> Result<RepairReport, AllocError> {
        let lock = self.ledger.lock(LockMode::Exclusive)?;
        let (previous, generation, tag) = match lock.load() {
            Ok(s) => (
                format!("healthy ({} pods)", s.len()),
                s.generation,
                "replaced",
            ),
            Err(e @ LedgerError::Corrupt { .. }) => (e.to_string(), 0, "corrupt"),
            Err(e) => return Err(e.into()),
        };
        let mut state = State::with_generation(generation);
        for (pod, mapping) in live {
            check_pod_id(&pod)?;
            let origin = if self.is_pool_slot(&mapping) {
                Origin::Allocated
            } else {
                Origin::Registered
            };
            state
                .insert(entry(&pod, origin, mapping))
                .map_err(|source| AllocError::RepairConflict { pod, source })?;
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

fn entry(pod: &str, origin: Origin, mapping: PodMapping) -> PodEntry {
    PodEntry {
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
