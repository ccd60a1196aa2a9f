//! A pod is (state root, pod id): two runtimes with the same id get two
//! ranges, a release or gc in one root never frees another's, a release
//! can be refused by the caller's liveness check, and a v1 ledger's
//! rootless entries are adopted by the root that uses them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use idmap::{Mapping, PodMapping, Release};

fn sym(host: u32) -> PodMapping {
    PodMapping::symmetric(Mapping::new(0, host, 65_536).expect("mapping"))
}

#[test]
fn the_same_id_in_two_roots_gets_two_ranges_and_each_is_freed_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 4);
    let (ra, rb) = (
        Path::new("/run/cnfbox"),
        Path::new("/run/containerd/cnfbox/k8s.io"),
    );
    let ma = a.allocate_in(Some(ra), "x").expect("allocate in a");
    let mb = a.allocate_in(Some(rb), "x").expect("allocate in b");
    assert!(
        !ma.uid.host_range().overlaps(&mb.uid.host_range()),
        "{ma} {mb}"
    );
    assert_eq!(a.allocate_in(Some(ra), "x").expect("again"), ma);
    common::assert_disjoint(&a.list().expect("list"));

    // A release in root b frees b's pod only.
    let freed = a.release_in(Some(rb), "x", |_| None).expect("release");
    assert!(matches!(freed, Release::Freed(e) if e.mapping == mb));
    assert_eq!(
        a.show_in(Some(ra), "x").expect("show").map(|e| e.mapping),
        Some(ma)
    );
    assert_eq!(
        a.release_in(Some(rb), "x", |_| None).expect("again"),
        Release::NotHeld
    );

    // The liveness check runs under the lock and can keep the range.
    let kept = a
        .release_in(Some(ra), "x", |e| {
            assert_eq!(e.root.as_deref(), Some(ra));
            Some("member still running".into())
        })
        .expect("release");
    assert!(matches!(kept, Release::Kept { ref reason, .. } if reason == "member still running"));
    assert!(a.show_in(Some(ra), "x").expect("show").is_some());
}

#[test]
fn gc_frees_only_what_the_check_proves_gone_and_sees_every_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    let live_root = PathBuf::from("/live");
    let gone_root = PathBuf::from("/gone");
    let live = a.allocate_in(Some(&live_root), "p").expect("allocate");
    a.allocate_in(Some(&gone_root), "p").expect("allocate");
    a.allocate("legacy").expect("allocate rootless");
    // Within the grace nothing is even asked about.
    let freed = a
        .gc_with(Duration::from_secs(3600), |e, _| {
            panic!("asked about {e:?}")
        })
        .expect("gc");
    assert!(freed.is_empty());
    let mut asked = Vec::new();
    let freed = a
        .gc_with(Duration::ZERO, |e, roots| {
            assert_eq!(roots, [gone_root.clone(), live_root.clone()]);
            asked.push((e.root.clone(), e.pod.clone()));
            (e.root.as_deref() == Some(live_root.as_path())).then(|| "live".to_owned())
        })
        .expect("gc");
    assert_eq!(asked.len(), 3, "{asked:?}");
    let mut freed: Vec<_> = freed.into_iter().map(|e| (e.root, e.pod)).collect();
    freed.sort();
    assert_eq!(
        freed,
        [
            (None, "legacy".to_owned()),
            (Some(gone_root), "p".to_owned())
        ]
    );
    assert_eq!(
        a.show_in(Some(&live_root), "p")
            .expect("show")
            .map(|e| e.mapping),
        Some(live)
    );
}

#[test]
fn a_rootless_entry_is_adopted_by_the_root_that_uses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 4);
    let old = a.allocate("pod").expect("v1-style entry");
    let root = Path::new("/run/containerd/cnfbox/k8s.io");
    assert_eq!(
        a.show_in(Some(root), "pod")
            .expect("show")
            .map(|e| e.mapping),
        Some(old)
    );
    assert_eq!(a.allocate_in(Some(root), "pod").expect("adopt"), old);
    let list = a.list().expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].root.as_deref(), Some(root));
    // A rootless release no longer finds it; the root's does.
    assert_eq!(a.release("pod").expect("release"), None);
    assert!(matches!(
        a.release_in(Some(root), "pod", |_| None).expect("release"),
        Release::Freed(_)
    ));
}

#[test]
fn register_names_both_pods_roots_and_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 4);
    let m = a
        .allocate_in(Some(Path::new("/run/cnfbox")), "cnf")
        .expect("allocate");
    let clash = sym(m.uid.host_id() + 4096);
    let err = a
        .register_in(
            Some(Path::new("/run/containerd/cnfbox/k8s.io")),
            "kube",
            clash,
        )
        .expect_err("overlap");
    let mut msg = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    for want in [
        "pod kube",
        "/run/containerd/cnfbox/k8s.io",
        &clash.uid.host_id().to_string(),
        "held by pod cnf",
        "(state root /run/cnfbox)",
        &m.uid.host_id().to_string(),
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn repair_in_one_root_keeps_the_other_roots_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), 8);
    let (here, other) = (PathBuf::from("/here"), PathBuf::from("/other"));
    let mine = a.allocate_in(Some(&here), "mine").expect("allocate");
    a.allocate_in(Some(&here), "stale").expect("allocate");
    let theirs = a.allocate_in(Some(&other), "theirs").expect("allocate");
    let report = a
        .repair_in(
            std::slice::from_ref(&here),
            [(Some(here.clone()), "mine".to_owned(), mine)],
            |_| true,
        )
        .expect("repair");
    let mut got: Vec<_> = report
        .entries
        .iter()
        .map(|e| (e.pod.as_str(), e.mapping))
        .collect();
    got.sort();
    assert_eq!(got, [("mine", mine), ("theirs", theirs)]);
}
