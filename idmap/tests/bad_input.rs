//! Bad input: garbage subuid lines, overlapping owners, pools that include
//! host IDs, size 0, overflow near u32::MAX, damaged ledgers.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use idmap::ledger::{encode, LEDGER_FILE};
use idmap::state::{Origin, PodEntry, State};
use idmap::{
    AllocError, Allocator, Config, ConfigError, EtcRoot, IdRange, LedgerError, Mapping, PodMapping,
    Pools, SubIdFile, ID_BLOCK,
};

fn etc(subuid: &str, subgid: &str) -> (tempfile::TempDir, EtcRoot) {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("subuid"), subuid).expect("subuid");
    std::fs::write(d.path().join("subgid"), subgid).expect("subgid");
    let e = EtcRoot::new(d.path());
    (d, e)
}

fn sym(host: u32, size: u32) -> PodMapping {
    PodMapping::symmetric(Mapping::new(0, host, size).expect("mapping"))
}

#[test]
fn garbage_subuid_lines_name_file_and_line() {
    let (_d, etc) = etc(
        "cnfbox:1048576:655360\nthis is not a line\n",
        "cnfbox:1048576:655360\n",
    );
    let err = Config::default().pools(&etc).expect_err("garbage");
    let msg = err.to_string();
    assert!(msg.contains("subuid:2:"), "{msg}");
    for bad in [
        "a::5",
        "a:5:",
        ":1:2",
        "a:1:2:",
        "a:99999999999:1",
        "a:-1:5",
        "a:1:2 # c",
    ] {
        let r = SubIdFile::parse(Path::new("/etc/subgid"), &format!("ok:100000:1\n{bad}\n"));
        let e = r.expect_err(bad).to_string();
        assert!(e.starts_with("/etc/subgid:2:"), "{bad}: {e}");
    }
}

#[test]
fn overlapping_owners_refused() {
    // cnfbox's subuid entry overlaps alice's.
    let (_d, etc) = etc(
        "alice:1048576:65536\ncnfbox:1000000:655360\n",
        "cnfbox:1000000:655360\n",
    );
    let err = Config::default().pools(&etc).expect_err("overlap");
    assert!(
        matches!(&err, ConfigError::PoolForeign { owner, line: 1, .. } if owner == "alice"),
        "{err}"
    );
    // A numeric owner that is cnfbox's uid is not foreign.
    std::fs::write(
        etc.passwd(),
        "root:x:0:0::/root:/bin/sh\ncnfbox:x:998:998::/:/sbin/nologin\n",
    )
    .expect("passwd");
    std::fs::write(etc.subuid(), "998:1048576:65536\ncnfbox:1000000:48576\n").expect("subuid");
    std::fs::write(etc.subgid(), "cnfbox:1000000:114112\n").expect("subgid");
    let p = Config::default()
        .pools(&etc)
        .expect("numeric owner is cnfbox");
    assert_eq!(p.uid, IdRange::new(1_000_000, 114_112).expect("merged"));
}

#[test]
fn pool_including_host_ids_refused() {
    for pool in ["0:1048576", "1:65536", "65535:65536"] {
        let r: IdRange = pool.parse().expect("range");
        let err = Pools::new(r, r, ID_BLOCK).expect_err(pool);
        assert!(
            matches!(err, ConfigError::PoolReserved { .. }),
            "{pool}: {err}"
        );
    }
    let (_d, etc) = etc("cnfbox:0:1048576\n", "cnfbox:0:1048576\n");
    let err = Config::default().pools(&etc).expect_err("subuid pool at 0");
    assert!(err.to_string().contains("below 65536"), "{err}");
}

#[test]
fn size_zero_refused() {
    assert!(IdRange::new(100_000, 0).is_err());
    let (_d, etc) = etc("cnfbox:100000:0\n", "cnfbox:100000:0\n");
    assert!(Config::default().pools(&etc).is_err());
    let c = Config::parse(Path::new("/c.toml"), "[idmap]\npool = \"100000:0\"\n");
    assert!(matches!(c, Err(ConfigError::PoolSyntax { .. })));
    let c = Config::parse(Path::new("/c.toml"), "[idmap]\nrange_size = 0\n");
    assert!(matches!(c, Err(ConfigError::RangeSize { .. })));
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 4);
    assert!(Mapping::new(0, 200_000, 0).is_err());
    assert!(matches!(a.allocate(""), Err(AllocError::PodId { .. })));
    assert!(matches!(
        a.allocate("bad\npod"),
        Err(AllocError::PodId { .. })
    ));
}

#[test]
fn overflow_near_u32_max() {
    assert!(IdRange::new(u32::MAX - 65_535, 65_536).is_err());
    assert!(IdRange::new(u32::MAX - 65_536, 65_536).is_ok());
    let (_d, etc) = etc("cnfbox:4294901760:65536\n", "cnfbox:4294901760:65536\n");
    assert!(matches!(
        Config::default().pools(&etc),
        Err(ConfigError::SubId(_))
    ));
    assert!(Mapping::new(u32::MAX - 10, 100_000, 65_536).is_err());
    // A pool that ends exactly at u32::MAX hands out its last whole slot and
    // then reports exhaustion instead of wrapping.
    let top = IdRange::new(u32::MAX - 2 * ID_BLOCK - 5, 2 * ID_BLOCK + 5).expect("top pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let a =
        Allocator::new(dir.path(), Pools::new(top, top, ID_BLOCK).expect("pools")).expect("alloc");
    let m1 = a.allocate("a").expect("slot 0");
    let m2 = a.allocate("b").expect("slot 1");
    assert_eq!(m2.uid.host_range().end(), top.start() + 2 * ID_BLOCK);
    assert!(m1.uid.host_range().end() <= m2.uid.host_id());
    assert!(matches!(a.allocate("c"), Err(AllocError::Exhausted { .. })));
    // A pool of exactly two slots ending exactly at u32::MAX.
    let exact = IdRange::new(u32::MAX - 2 * ID_BLOCK, 2 * ID_BLOCK).expect("exact pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Allocator::new(
        dir.path(),
        Pools::new(exact, exact, ID_BLOCK).expect("pools"),
    )
    .expect("alloc");
    a.allocate("a").expect("slot 0");
    let last = a.allocate("b").expect("slot 1 ends at u32::MAX");
    assert_eq!(last.uid.host_range().end(), u32::MAX);
    assert!(matches!(a.allocate("c"), Err(AllocError::Exhausted { .. })));
}

#[test]
fn register_refuses_overlap_and_host_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 4);
    let m = a.allocate("alloc").expect("allocate");
    let err = a
        .register("kubelet-pod", sym(m.uid.host_id() + 10, 65_536))
        .expect_err("overlap");
    assert!(err
        .to_string()
        .contains("refusing to register pod kubelet-pod"));
    let chain = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(chain.contains("held by pod alloc"), "{chain}");
    assert!(a.register("low", sym(0, 65_536)).is_err());
    assert!(a.register("low2", sym(65_535, 2)).is_err());
    // gid overlap alone is enough.
    let mixed = PodMapping {
        uid: Mapping::new(0, 50_000_000, 65_536).expect("m"),
        gid: m.gid,
    };
    assert!(a.register("gid-clash", mixed).is_err());
    // Idempotent for the same mapping, refused for a different one.
    let outside = sym(100_000_000, 65_536);
    a.register("k", outside).expect("register");
    a.register("k", outside).expect("register again");
    assert!(a.register("k", sym(200_000_000, 65_536)).is_err());
    assert_eq!(
        a.allocate("k").expect("allocate returns registered"),
        outside
    );
    common::assert_disjoint(&a.list().expect("list"));
}

#[test]
fn gc_keeps_live_and_young() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    for p in ["a", "b", "c"] {
        a.allocate(p).expect("allocate");
    }
    let live: HashSet<String> = ["b".to_owned()].into();
    assert!(a
        .gc(&live, Duration::from_secs(3600))
        .expect("gc")
        .is_empty());
    let freed = a.gc(&live, Duration::ZERO).expect("gc");
    let mut names: Vec<_> = freed.iter().map(|e| e.pod.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(a.list().expect("list").len(), 1);
}

fn ledger_path(dir: &Path) -> std::path::PathBuf {
    dir.join(LEDGER_FILE)
}

#[test]
fn flipped_bytes_stop_allocation_until_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    let ma = a.allocate("a").expect("allocate");
    a.allocate("b").expect("allocate");
    let path = ledger_path(dir.path());
    let good = std::fs::read(&path).expect("read");
    for &at in &[0, good.len() / 2, good.len() - 3] {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&path, &bad).expect("corrupt");
        for r in [
            a.allocate("c").map(|_| ()),
            a.release("a").map(|_| ()),
            a.list().map(|_| ()),
        ] {
            let err = r.expect_err("corrupt ledger must stop every operation");
            let msg = err.to_string();
            assert!(
                matches!(err, AllocError::Ledger(LedgerError::Corrupt { .. })),
                "{msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        // Never silently reset: the damaged file is still there, untouched.
        assert_eq!(std::fs::read(&path).expect("read"), bad);
    }
    // Repair from the live containers ("b" is gone, "a" lives).
    let report = a.repair([("a".to_owned(), ma)]).expect("repair");
    assert!(report.previous.contains("corrupt"), "{}", report.previous);
    let saved = report.saved_as.expect("corrupt ledger kept");
    assert!(saved.exists());
    let list = a.list().expect("list after repair");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].origin, Origin::Allocated);
    assert_eq!(a.allocate("a").expect("same range"), ma);
    let mc = a.allocate("c").expect("allocate after repair");
    assert_ne!(mc, ma);
    common::assert_disjoint(&a.list().expect("list"));
}

#[test]
fn truncated_and_empty_ledgers_are_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    a.allocate("a").expect("allocate");
    let path = ledger_path(dir.path());
    let good = std::fs::read(&path).expect("read");
    for len in [0, 1, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..len]).expect("truncate");
        assert!(
            matches!(
                a.allocate("x"),
                Err(AllocError::Ledger(LedgerError::Corrupt { .. }))
            ),
            "truncation to {len} bytes not detected"
        );
    }
    std::fs::write(&path, &good).expect("restore");
    // A stale temporary file from a crash mid-write is ignored.
    std::fs::write(dir.path().join("ledger.tmp"), b"half a ledg").expect("tmp");
    a.allocate("x").expect("allocate with stale tmp");
    assert_eq!(a.list().expect("list").len(), 2);
}

#[test]
fn repair_refuses_overlapping_live_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    std::fs::write(ledger_path(dir.path()), b"garbage\n").expect("corrupt");
    let m = sym(5_000_000, 65_536);
    let err = a
        .repair([("x".to_owned(), m), ("y".to_owned(), m)])
        .expect_err("overlapping live pods");
    assert!(matches!(err, AllocError::RepairConflict { .. }), "{err}");
    // The corrupt ledger is still in place.
    assert_eq!(
        std::fs::read(ledger_path(dir.path())).expect("read"),
        b"garbage\n"
    );
}

/// 65534 slots of 65536 IDs fill `[65536, u32::MAX)`, the whole usable ID
/// space (the kernel refuses an extent ending at 2^32). Fill all but the last
/// slot, allocate it, and check exhaustion; first fit walks the full map.
#[test]
fn full_scale_pool() {
    let pool = IdRange::new(ID_BLOCK, u32::MAX - ID_BLOCK).expect("pool");
    let pools = Pools::new(pool, pool, ID_BLOCK).expect("pools");
    assert_eq!(pools.capacity(), 65_534);
    let mut s = State::default();
    for k in 0..65_533u32 {
        let host = ID_BLOCK + k * ID_BLOCK;
        s.insert(PodEntry {
            root: None,
            pod: format!("p{k}"),
            origin: Origin::Allocated,
            created: 0,
            mapping: sym(host, ID_BLOCK),
        })
        .expect("insert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(ledger_path(dir.path()), encode(&s)).expect("write");
    let a = Allocator::new(dir.path(), pools).expect("allocator");
    let t = Instant::now();
    let last = a.allocate("last").expect("last slot");
    eprintln!("allocate with 65533 live pods took {:?}", t.elapsed());
    assert_eq!(last.uid.host_id(), ID_BLOCK + 65_533 * ID_BLOCK);
    assert_eq!(last.uid.host_range().end(), u32::MAX - ID_BLOCK + 1);
    assert!(matches!(
        a.allocate("one-too-many"),
        Err(AllocError::Exhausted { .. })
    ));
    // Freeing a slot in the middle makes it the next first fit.
    let freed = a.release("p30000").expect("release").expect("held");
    assert_eq!(a.allocate("again").expect("reuse"), freed.mapping);
}
