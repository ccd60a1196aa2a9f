//! The in-memory ledger: which pod holds which host IDs, indexed by host ID
//! so that overlap checks and first-fit allocation cost O(log n) per probe
//! instead of a scan of the pool.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Pools;
use crate::range::{align_up, IdRange, Mapping, PodMapping, HOST_RESERVED_END};

/// How a pod got its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Chosen by [`crate::Allocator::allocate`] from the pool.
    Allocated,
    /// Chosen elsewhere (kubelet's `hostUsers: false`) and recorded by
    /// [`crate::Allocator::register`].
    Registered,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Allocated => "allocated",
            Origin::Registered => "registered",
        })
    }
}

/// One pod's record in the ledger.
///
/// A pod is identified by its state root *and* its id: two runtimes (the
/// CLI's `/run/cnfbox`, the shim's `/run/containerd/cnfbox/<ns>`) may both
/// have a pod `x`, and each gets its own range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodEntry {
    /// The state root (`--root`, canonical) of the runtime that holds the
    /// pod; `None` for entries of a v1 ledger, which did not record it, and
    /// for callers without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Pod (sandbox) id.
    pub pod: String,
    /// Allocated from the pool or registered from a spec.
    pub origin: Origin,
    /// Seconds since the Unix epoch when the range was granted.
    pub created: u64,
    /// The pod's uid and gid mappings.
    pub mapping: PodMapping,
}

/// Which ID space a conflict is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// Host uids.
    Uid,
    /// Host gids.
    Gid,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        })
    }
}

/// Why an entry cannot join the ledger.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The range includes host IDs below 65536.
    #[error(
        "host {kind}s {range} include IDs below {HOST_RESERVED_END}, which belong to the host"
    )]
    HostReserved { kind: IdKind, range: IdRange },
    /// The range overlaps another pod's.
    #[error(
        "host {kind}s {range} overlap {other_range} held by pod {other_pod} (state root {})",
        root_label(other_root.as_deref())
    )]
    Overlap {
        kind: IdKind,
        range: IdRange,
        other_pod: String,
        other_root: Option<PathBuf>,
        other_range: IdRange,
    },
    /// The pod already has an entry.
    #[error("pod {pod} (state root {}) already holds {existing}", root_label(root.as_deref()))]
    Duplicate {
        pod: String,
        root: Option<PathBuf>,
        existing: PodMapping,
    },
}

/// A state root for messages: its path, or what a rootless entry means.
pub fn root_label(root: Option<&Path>) -> String {
    root.map_or_else(|| "unrecorded".to_owned(), |r| r.display().to_string())
}

/// The ledger's key of a pod: (state root, pod id).
pub type PodKey = (Option<PathBuf>, String);

fn key_of(e: &PodEntry) -> PodKey {
    (e.root.clone(), e.pod.clone())
}

/// Disjoint ranges of one ID space, keyed by start. Because they are
/// disjoint, sorting by start also sorts by end, which makes the overlap
/// test a single lookup. Pod ids are not stored here (a ledger of 65534 pods
/// is rebuilt on every operation, and two string copies per pod showed up in
/// profiles); conflicts look the owner up in the entries instead.
#[derive(Clone, Debug, Default)]
struct Occupancy {
    by_start: BTreeMap<u32, IdRange>,
}

impl Occupancy {
    /// The held range that overlaps `r`, if any: only the last range
    /// starting before `r.end()` can, since it ends after all earlier ones.
    fn conflict(&self, r: &IdRange) -> Option<IdRange> {
        let (_, held) = self.by_start.range(..r.end()).next_back()?;
        (held.end() > r.start()).then_some(*held)
    }

    fn insert(&mut self, r: IdRange) {
        self.by_start.insert(r.start(), r);
    }

    fn remove(&mut self, r: &IdRange) {
        self.by_start.remove(&r.start());
    }

    fn ranges(&self) -> impl Iterator<Item = &IdRange> {
        self.by_start.values()
    }
}

/// The ledger contents with its host-ID indexes kept in step.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Bumped on every write; shown by `cnfbox ranges` to tell versions apart.
    pub generation: u64,
    entries: BTreeMap<PodKey, PodEntry>,
    uids: Occupancy,
    gids: Occupancy,
}

impl State {
    /// An empty ledger at `generation`.
    pub fn with_generation(generation: u64) -> Self {
        State {
            generation,
            ..State::default()
        }
    }

    /// Adds `entry` unless its pod is known (in its state root), a range
    /// dips below 65536, or a range overlaps another pod's.
    pub fn insert(&mut self, entry: PodEntry) -> Result<(), Conflict> {
        self.check(entry.root.as_deref(), &entry.pod, &entry.mapping)?;
        let m = entry.mapping;
        self.uids.insert(m.uid.host_range());
        self.gids.insert(m.gid.host_range());
        self.entries.insert(key_of(&entry), entry);
        Ok(())
    }

    /// Whether `mapping` could be recorded for `pod` of state root `root`.
    pub fn check(
        &self,
        root: Option<&Path>,
        pod: &str,
        mapping: &PodMapping,
    ) -> Result<(), Conflict> {
        if let Some(e) = self.get(root, pod) {
            return Err(Conflict::Duplicate {
                pod: pod.to_owned(),
                root: root.map(Path::to_path_buf),
                existing: e.mapping,
            });
        }
        for (kind, occ, m) in [
            (IdKind::Uid, &self.uids, mapping.uid),
            (IdKind::Gid, &self.gids, mapping.gid),
        ] {
            let range = m.host_range();
            if range.touches_host_reserved() {
                return Err(Conflict::HostReserved { kind, range });
            }
            if let Some(held) = occ.conflict(&range) {
                let (other_root, other_pod) = self.holder(kind, &held);
                return Err(Conflict::Overlap {
                    kind,
                    range,
                    other_pod,
                    other_root,
                    other_range: held,
                });
            }
        }
        Ok(())
    }

    /// The pod holding exactly `held` (an error path: a linear scan).
    fn holder(&self, kind: IdKind, held: &IdRange) -> PodKey {
        self.entries
            .values()
            .find(|e| {
                let m = match kind {
                    IdKind::Uid => e.mapping.uid,
                    IdKind::Gid => e.mapping.gid,
                };
                m.host_range() == *held
            })
            .map_or_else(|| (None, "<unknown>".to_owned()), key_of)
    }

    /// Builds a state from many entries at once (the ledger loader): sorts
    /// and compares neighbours, then bulk-builds the B-trees, instead of
    /// `insert`ing one by one. On a conflict, returns the index (in `entries`)
    /// of an offending entry with the reason.
    pub fn from_entries(
        generation: u64,
        entries: Vec<PodEntry>,
    ) -> Result<Self, (usize, Conflict)> {
        let mut by_pod: Vec<usize> = (0..entries.len()).collect();
        fn key(e: &PodEntry) -> (Option<&Path>, &str) {
            (e.root.as_deref(), e.pod.as_str())
        }
        by_pod.sort_by(|&a, &b| key(&entries[a]).cmp(&key(&entries[b])));
        for w in by_pod.windows(2) {
            let (a, b) = (&entries[w[0]], &entries[w[1]]);
            if key(a) == key(b) {
                return Err((
                    w[1],
                    Conflict::Duplicate {
                        pod: b.pod.clone(),
                        root: b.root.clone(),
                        existing: a.mapping,
                    },
                ));
            }
        }
        let mut sides = Vec::with_capacity(2);
        for kind in [IdKind::Uid, IdKind::Gid] {
            let side = |e: &PodEntry| match kind {
                IdKind::Uid => e.mapping.uid.host_range(),
                IdKind::Gid => e.mapping.gid.host_range(),
            };
            let mut ranges: Vec<(IdRange, usize)> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| (side(e), i))
                .collect();
            ranges.sort_unstable();
            for &(range, i) in &ranges {
                if range.touches_host_reserved() {
                    return Err((i, Conflict::HostReserved { kind, range }));
                }
            }
            for w in ranges.windows(2) {
                let ((held, a), (range, b)) = (w[0], w[1]);
                if held.end() > range.start() {
                    let (other_root, other_pod) = key_of(&entries[a]);
                    return Err((
                        b,
                        Conflict::Overlap {
                            kind,
                            range,
                            other_pod,
                            other_root,
                            other_range: held,
                        },
                    ));
                }
            }
            sides.push(Occupancy {
                by_start: ranges.into_iter().map(|(r, _)| (r.start(), r)).collect(),
            });
        }
        let gids = sides.pop().unwrap_or_default();
        let uids = sides.pop().unwrap_or_default();
        Ok(State {
            generation,
            entries: entries.into_iter().map(|e| (key_of(&e), e)).collect(),
            uids,
            gids,
        })
    }

    /// Removes and returns the entry of `pod` in state root `root`.
    pub fn remove(&mut self, root: Option<&Path>, pod: &str) -> Option<PodEntry> {
        let e = self
            .entries
            .remove(&(root.map(Path::to_path_buf), pod.to_owned()))?;
        self.uids.remove(&e.mapping.uid.host_range());
        self.gids.remove(&e.mapping.gid.host_range());
        Some(e)
    }

    /// The entry of `pod` in state root `root` (exactly: a `None` root is
    /// only the entries that recorded none).
    pub fn get(&self, root: Option<&Path>, pod: &str) -> Option<&PodEntry> {
        // The key owns its strings; a lookup copies two short ones, which
        // is nothing next to the ledger's parse and fsync.
        self.entries
            .get(&(root.map(Path::to_path_buf), pod.to_owned()))
    }

    /// The state roots the entries name, each once, sorted.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self.entries.keys().filter_map(|(r, _)| r.clone()).collect();
        roots.dedup();
        roots
    }

    /// All entries, by state root then pod id.
    pub fn entries(&self) -> impl Iterator<Item = &PodEntry> {
        self.entries.values()
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pod holds a range.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The lowest free slot of the pools: the first offset, a multiple of
    /// `range_size`, where both the uid and the gid range are free.
    ///
    /// Each probe is one B-tree lookup; a failed probe jumps past the range
    /// in the way, so the loop runs at most once per held range (plus one),
    /// whatever the size of the pool.
    pub fn first_fit(&self, pools: &Pools) -> Option<PodMapping> {
        let size = pools.range_size;
        let limit = pools.uid.size().min(pools.gid.size());
        let mut offset = 0u32;
        loop {
            if offset.checked_add(size)? > limit {
                return None;
            }
            let uid = pools.uid.sub_range(offset, size)?;
            let gid = pools.gid.sub_range(offset, size)?;
            // `held.end() > probe.start() >= pool.start()`: no underflow.
            if let Some(held) = self.uids.conflict(&uid) {
                offset = align_up(held.end() - pools.uid.start(), size)?;
                continue;
            }
            if let Some(held) = self.gids.conflict(&gid) {
                offset = align_up(held.end() - pools.gid.start(), size)?;
                continue;
            }
            return Some(PodMapping {
                uid: Mapping::from_root(uid),
                gid: Mapping::from_root(gid),
            });
        }
    }

    /// Whether the held ranges are pairwise disjoint (they always are; the
    /// tests and the ledger loader check it independently of `insert`).
    pub fn is_disjoint(&self) -> bool {
        [&self.uids, &self.gids].iter().all(|occ| {
            let v: Vec<&IdRange> = occ.ranges().collect();
            v.windows(2).all(|w| w[0].end() <= w[1].start())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(start: u32, slots: u32) -> Pools {
        let r = IdRange::new(start, slots * 65_536).expect("pool");
        Pools::new(r, r, 65_536).expect("pools")
    }

    fn entry(pod: &str, mapping: PodMapping, origin: Origin) -> PodEntry {
        PodEntry {
            root: None,
            pod: pod.into(),
            origin,
            created: 0,
            mapping,
        }
    }

    #[test]
    fn first_fit_skips_registered_ranges() {
        let p = pools(1 << 20, 4);
        let mut s = State::default();
        // A registered range straddling slots 0 and 1.
        let reg = Mapping::new(0, (1 << 20) + 1000, 65_536).expect("mapping");
        s.insert(entry("reg", PodMapping::symmetric(reg), Origin::Registered))
            .expect("insert");
        let m = s.first_fit(&p).expect("fit");
        assert_eq!(m.uid.host_id(), (1 << 20) + 2 * 65_536);
        s.insert(entry("a", m, Origin::Allocated)).expect("insert");
        let m = s.first_fit(&p).expect("fit");
        assert_eq!(m.uid.host_id(), (1 << 20) + 3 * 65_536);
        s.insert(entry("b", m, Origin::Allocated)).expect("insert");
        assert_eq!(s.first_fit(&p), None);
        assert!(s.is_disjoint());
    }

    #[test]
    fn gid_conflict_moves_both() {
        let p = pools(1 << 20, 3);
        let mut s = State::default();
        let uid = Mapping::new(0, 5 << 20, 65_536).expect("mapping");
        let gid = Mapping::new(0, 1 << 20, 65_536).expect("mapping");
        s.insert(entry("g", PodMapping { uid, gid }, Origin::Registered))
            .expect("insert");
        let m = s.first_fit(&p).expect("fit");
        assert_eq!(m.uid.host_id(), m.gid.host_id());
        assert_eq!(m.uid.host_id(), (1 << 20) + 65_536);
    }

    #[test]
    fn conflicts() {
        let mut s = State::default();
        let m = PodMapping::symmetric(Mapping::new(0, 200_000, 65_536).expect("m"));
        s.insert(entry("a", m, Origin::Allocated)).expect("insert");
        assert!(matches!(
            s.insert(entry("a", m, Origin::Allocated)),
            Err(Conflict::Duplicate { .. })
        ));
        let over = PodMapping::symmetric(Mapping::new(0, 265_535, 10).expect("m"));
        assert!(matches!(
            s.insert(entry("b", over, Origin::Registered)),
            Err(Conflict::Overlap {
                kind: IdKind::Uid,
                ..
            })
        ));
        let touching = PodMapping::symmetric(Mapping::new(0, 265_536, 10).expect("m"));
        s.insert(entry("c", touching, Origin::Registered))
            .expect("adjacent is fine");
        let low = PodMapping::symmetric(Mapping::new(0, 65_535, 10).expect("m"));
        assert!(matches!(
            s.insert(entry("d", low, Origin::Registered)),
            Err(Conflict::HostReserved { .. })
        ));
        assert!(s.remove(None, "a").is_some());
        let inside = PodMapping::symmetric(Mapping::new(0, 200_000, 65_536).expect("m"));
        s.insert(entry("b", inside, Origin::Registered))
            .expect("free after release");
        assert!(s.is_disjoint());
    }
}
