//! Property tests of range arithmetic, subuid parsing and allocation.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use idmap::state::{Origin, PodEntry, State};
use idmap::{IdRange, Mapping, PodMapping, SubIdFile, HOST_RESERVED_END};
use proptest::prelude::*;

/// u32 values biased towards the edges where off-by-ones live.
fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..4,
        (u32::MAX - 3)..=u32::MAX,
        65_530u32..65_540,
        any::<u32>(),
        Just(1u32 << 31),
    ]
}

proptest! {
    #[test]
    fn range_new_matches_u64_arithmetic(start in edgy_u32(), size in edgy_u32()) {
        let fits = size > 0 && u64::from(start) + u64::from(size) <= u64::from(u32::MAX);
        let r = IdRange::new(start, size);
        prop_assert_eq!(r.is_ok(), fits);
        if let Ok(r) = r {
            prop_assert_eq!(u64::from(r.end()), u64::from(start) + u64::from(size));
            prop_assert!(r.contains(start));
            prop_assert!(!r.contains(r.end()));
            prop_assert_eq!(r.touches_host_reserved(), start < HOST_RESERVED_END);
            prop_assert_eq!(r.to_string().parse::<IdRange>(), Ok(r));
        }
    }

    #[test]
    fn overlap_matches_brute_force(a in edgy_u32(), al in 1u32..100, b in edgy_u32(), bl in 1u32..100) {
        let (Ok(x), Ok(y)) = (IdRange::new(a, al), IdRange::new(b, bl)) else {
            return Ok(());
        };
        let brute = (u64::from(a)..u64::from(a) + u64::from(al))
            .any(|i| u64::from(b) <= i && i < u64::from(b) + u64::from(bl));
        prop_assert_eq!(x.overlaps(&y), brute);
        prop_assert_eq!(y.overlaps(&x), brute);
    }

    #[test]
    fn subid_round_trip(entries in prop::collection::vec(
        ("[a-z_][a-z0-9_-]{0,15}|[0-9]{1,5}", edgy_u32(), 1u32..1_000_000), 0..20),
        comments in prop::collection::vec("#[ -~]{0,20}", 0..5)) {
        let mut text = String::new();
        let mut want = Vec::new();
        for (i, (owner, start, count)) in entries.iter().enumerate() {
            if let Some(c) = comments.get(i) {
                text.push_str(c);
                text.push_str("\n\n");
            }
            text.push_str(&format!("{owner}:{start}:{count}\n"));
            want.push((owner.clone(), IdRange::new(*start, *count)));
        }
        let parsed = SubIdFile::parse(Path::new("/etc/subuid"), &text);
        if want.iter().all(|(_, r)| r.is_ok()) {
            let parsed = parsed.expect("valid lines parse");
            let got: Vec<_> = parsed.entries.iter().map(|e| (e.owner.clone(), Ok(e.range))).collect();
            prop_assert_eq!(got, want);
        } else {
            let err = parsed.expect_err("overflowing line refused").to_string();
            prop_assert!(err.starts_with("/etc/subuid:"), "{}", err);
        }
    }

    #[test]
    fn subid_garbage_never_panics(text in "[ -~\n:#0-9]{0,200}") {
        // Either parses or names file:line; never panics.
        if let Err(e) = SubIdFile::parse(Path::new("/etc/subgid"), &text) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("/etc/subgid:"), "{}", msg);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Allocate(u8),
    Release(u8),
    Register(u8, u32, u32, u32),
    Gc(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|p| Op::Allocate(p % 24)),
        2 => any::<u8>().prop_map(|p| Op::Release(p % 24)),
        // Registered ranges anywhere near the pool, aligned or not, some
        // below 65536 (which must be refused).
        2 => (any::<u8>(), 0u32..(40 << 16), 0u32..(40 << 16), 1u32..(3 << 16))
            .prop_map(|(p, u, g, s)| Op::Register(p % 24, u, g, s)),
        1 => prop::collection::vec(any::<u8>().prop_map(|p| p % 24), 0..12).prop_map(Op::Gc),
    ]
}

fn pod(p: u8) -> String {
    format!("pod-{p}")
}

proptest! {
    /// In-memory model: random sequences on `State` keep ranges disjoint and
    /// first fit finds a slot whenever the pool has one.
    #[test]
    fn state_sequences_stay_disjoint(ops in prop::collection::vec(op(), 1..200)) {
        let pools = common::pools(1 << 20, 16);
        let mut s = State::default();
        for op in ops {
            match op {
                Op::Allocate(p) => {
                    if s.get(None, &pod(p)).is_none() {
                        if let Some(m) = s.first_fit(&pools) {
                            s.insert(PodEntry { root: None, pod: pod(p), origin: Origin::Allocated, created: 0, mapping: m })
                                .expect("first fit result must insert");
                        } else {
                            // Exhausted: every slot must really be blocked.
                            let free = (0..16u32).any(|k| {
                                let m = PodMapping::symmetric(Mapping::new(0, (1 << 20) + k * 65_536, 65_536).expect("m"));
                                s.check(None, "probe", &m).is_ok()
                            });
                            prop_assert!(!free, "first_fit missed a free slot");
                        }
                    }
                }
                Op::Release(p) => { s.remove(None, &pod(p)); }
                Op::Register(p, u, g, size) => {
                    if let (Ok(uid), Ok(gid)) = (Mapping::new(0, u, size), Mapping::new(0, g, size)) {
                        let m = PodMapping { uid, gid };
                        let res = s.insert(PodEntry { root: None, pod: pod(p), origin: Origin::Registered, created: 0, mapping: m });
                        if u < 65_536 || g < 65_536 {
                            prop_assert!(res.is_err());
                        }
                    }
                }
                Op::Gc(live) => {
                    let live: HashSet<String> = live.into_iter().map(pod).collect();
                    let dead: Vec<String> = s.entries().filter(|e| !live.contains(&e.pod)).map(|e| e.pod.clone()).collect();
                    for d in dead { s.remove(None, &d); }
                }
            }
            prop_assert!(s.is_disjoint());
            common::assert_disjoint(&s.entries().cloned().collect::<Vec<_>>());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The real allocator, ledger and fsync included: after every step the
    /// ledger on disk has no overlap, allocation is idempotent, and the set
    /// of pods matches a model.
    #[test]
    fn allocator_sequences_stay_disjoint(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = common::allocator(dir.path(), 8);
        let mut model: BTreeMap<String, PodMapping> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate(p) => match a.allocate(&pod(p)) {
                    Ok(m) => {
                        if let Some(old) = model.get(&pod(p)) {
                            prop_assert_eq!(*old, m, "allocate not idempotent");
                        }
                        model.insert(pod(p), m);
                        prop_assert_eq!(a.allocate(&pod(p)).expect("again"), m);
                    }
                    Err(idmap::AllocError::Exhausted { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                },
                Op::Release(p) => {
                    let had = a.release(&pod(p)).expect("release");
                    prop_assert_eq!(had.map(|e| e.mapping), model.remove(&pod(p)));
                }
                Op::Register(p, u, g, size) => {
                    let (Ok(uid), Ok(gid)) = (Mapping::new(0, u, size), Mapping::new(0, g, size)) else {
                        continue;
                    };
                    let m = PodMapping { uid, gid };
                    match a.register(&pod(p), m) {
                        Ok(()) => {
                            prop_assert!(u >= 65_536 && g >= 65_536);
                            prop_assert!(model.get(&pod(p)).is_none_or(|old| *old == m));
                            model.insert(pod(p), m);
                        }
                        Err(idmap::AllocError::Register { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Gc(live) => {
                    let live: HashSet<String> = live.into_iter().map(pod).collect();
                    let freed = a.gc(&live, Duration::ZERO).expect("gc");
                    for e in freed {
                        prop_assert!(!live.contains(&e.pod));
                        model.remove(&e.pod);
                    }
                    prop_assert!(model.keys().all(|p| live.contains(p)));
                }
            }
            let list = a.list().expect("list");
            common::assert_disjoint(&list);
            let got: BTreeMap<String, PodMapping> = list.into_iter().map(|e| (e.pod, e.mapping)).collect();
            prop_assert_eq!(&got, &model);
        }
    }
}

proptest! {
    /// The ledger loader's bulk build agrees with inserting one by one.
    #[test]
    fn bulk_build_matches_inserts(raw in prop::collection::vec(
        (0u8..30, 0u32..40, 0u32..40, 1u32..8), 0..24)) {
        // A tight grid straddling 65536: ranges often touch, overlap by one
        // ID, or dip below the host floor.
        let entries: Vec<PodEntry> = raw
            .iter()
            .map(|&(p, u, g, n)| (p, 65_524 + u * 3, 65_524 + g * 3, n))
            .filter_map(|(p, u, g, n)| {
                Some(PodEntry {
                    root: None,
                    pod: pod(p),
                    origin: Origin::Registered,
                    created: 0,
                    mapping: PodMapping { uid: Mapping::new(0, u, n).ok()?, gid: Mapping::new(0, g, n).ok()? },
                })
            })
            .collect();
        let mut one_by_one = State::default();
        let seq = entries.iter().try_for_each(|e| one_by_one.insert(e.clone()));
        let bulk = State::from_entries(0, entries.clone());
        prop_assert_eq!(seq.is_ok(), bulk.is_ok(), "seq {:?} bulk {:?}", seq, bulk.as_ref().err());
        if let Ok(b) = bulk {
            prop_assert!(b.is_disjoint());
            let a: Vec<_> = one_by_one.entries().cloned().collect();
            let b: Vec<_> = b.entries().cloned().collect();
            prop_assert_eq!(a, b);
        }
    }
}

proptest! {
    /// Overlap checks against brute force on a tight grid, where ranges often
    /// touch or overlap by exactly one ID (the off-by-one cases).
    #[test]
    fn insert_refuses_exactly_the_overlaps(raw in prop::collection::vec(
        (0u8..40, 0u32..48, 1u32..10, 0u32..48, 1u32..10), 1..40)) {
        let mut s = State::default();
        let mut held: Vec<(String, IdRange, IdRange)> = Vec::new();
        for (p, us, un, gs, gn) in raw {
            // Starts straddle 65536 so the host-ID floor is hit too.
            let (u0, g0) = (65_520 + us * 3, 65_520 + gs * 3);
            let m = PodMapping {
                uid: Mapping::new(0, u0, un).expect("m"),
                gid: Mapping::new(0, g0, gn).expect("m"),
            };
            let (ur, gr) = (m.uid.host_range(), m.gid.host_range());
            let brute_ok = u0 >= 65_536
                && g0 >= 65_536
                && !held.iter().any(|(q, hu, hg)| *q == pod(p) || hu.overlaps(&ur) || hg.overlaps(&gr));
            let res = s.insert(PodEntry { root: None, pod: pod(p), origin: Origin::Registered, created: 0, mapping: m });
            prop_assert_eq!(res.is_ok(), brute_ok, "{:?} vs held {:?}: {:?}", m, held, res);
            if brute_ok {
                held.push((pod(p), ur, gr));
            }
        }
        common::assert_disjoint(&s.entries().cloned().collect::<Vec<_>>());
    }
}
