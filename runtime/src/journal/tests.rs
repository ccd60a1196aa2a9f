//! The journal's file, its owner, and teardown on fake roots (steps whose
//! undo touches only paths: no range, no cgroup).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::record::RecordError;
use super::teardown::TeardownError;
use super::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn begin_is_exclusive_and_private() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::begin(tmp.path(), "c1").unwrap();
    assert_eq!(mode(&tmp.path().join(DIR)), 0o700);
    assert_eq!(mode(&path_of(tmp.path(), "c1")), 0o600);
    assert_eq!(j.creator, Creator::myself());
    let err = Journal::begin(tmp.path(), "c1").unwrap_err();
    assert!(matches!(err, JournalError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("delete --force c1"), "{err}");
}

#[test]
fn steps_are_on_disk_before_they_are_made_and_commit_drops_the_creator() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::begin(tmp.path(), "c1").unwrap();
    j.record(Step::Stage {
        dir: tmp.path().join("s"),
    })
    .unwrap();
    let on_disk = Journal::load(tmp.path(), "c1").unwrap().unwrap();
    assert_eq!(on_disk.steps, j.steps);
    assert!(on_disk.live_creator().is_some(), "this test process runs");
    j.commit(crate::meta::tests::full()).unwrap();
    let on_disk = Journal::load(tmp.path(), "c1").unwrap().unwrap();
    assert_eq!(on_disk.creator, None);
    assert!(Journal::load(tmp.path(), "other").unwrap().is_none());
    fs::write(path_of(tmp.path(), "bad"), b"{").unwrap();
    assert!(matches!(
        Journal::load(tmp.path(), "bad"),
        Err(JournalError::Parse { .. })
    ));
}

#[test]
fn a_dead_or_reused_pid_is_no_creator() {
    let me = Creator::myself().unwrap();
    assert!(me.alive());
    let reused = Creator {
        pid: me.pid,
        start: me.start + 1,
    };
    assert!(!reused.alive());
    let gone = Creator {
        pid: i32::MAX,
        start: 0,
    };
    assert!(!gone.alive());
}

#[test]
fn teardown_refuses_a_journal_whose_create_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("stage");
    fs::create_dir(&stage).unwrap();
    let mut j = Journal::begin(tmp.path(), "c1").unwrap();
    j.record(Step::Stage { dir: stage.clone() }).unwrap();
    let err = teardown(tmp.path(), j, true, &crate::profile::release_range).unwrap_err();
    assert!(matches!(err, TeardownError::Creating { .. }), "{err}");
    assert!(stage.exists(), "nothing undone under a live create");
}

/// A journal of path-only steps, as a create leaves them.
fn made(tmp: &Path) -> (Journal, Vec<std::path::PathBuf>) {
    let views = tmp.join("rootfs/c1");
    fs::create_dir_all(views.join("root")).unwrap();
    fs::create_dir_all(views.join("layers/0")).unwrap();
    let volumes = tmp.join("volumes/c1");
    fs::create_dir_all(volumes.join("0")).unwrap();
    fs::write(volumes.join("1"), b"").unwrap();
    let devices = tmp.join("devices/c1");
    fs::create_dir_all(&devices).unwrap();
    let stage = tmp.join("stage/c1.1");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join("config.json"), b"{}").unwrap();
    let mut j = Journal::begin(tmp, "c1").unwrap();
    for step in [
        Step::Views { dir: views.clone() },
        Step::Volumes {
            dir: volumes.clone(),
        },
        Step::Devices {
            dir: devices.clone(),
        },
        Step::Stage { dir: stage.clone() },
    ] {
        j.record(step).unwrap();
    }
    j.creator = None;
    (j, vec![views, volumes, devices, stage])
}

#[test]
fn teardown_undoes_every_step_and_removes_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, paths) = made(tmp.path());
    let warnings = teardown(tmp.path(), j, false, &crate::profile::release_range).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    for p in paths {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert!(!path_of(tmp.path(), "c1").exists());
    // A step recorded but never made undoes to nothing.
    let mut j = Journal::begin(tmp.path(), "c2").unwrap();
    j.record(Step::Devices {
        dir: tmp.path().join("never"),
    })
    .unwrap();
    j.creator = None;
    teardown(tmp.path(), j, false, &crate::profile::release_range).unwrap();
}

#[test]
fn a_step_that_cannot_be_undone_is_reported_and_kept_with_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, paths) = made(tmp.path());
    // Something that is not a mount point, inside a volume mount point:
    // rmdir (never a recursive removal) refuses it.
    fs::write(paths[1].join("0/file"), b"x").unwrap();
    j.steps.insert(
        0,
        Step::Range {
            pod: "p1".to_string(),
        },
    );
    let err = teardown(tmp.path(), j.clone(), true, &crate::profile::release_range).unwrap_err();
    let TeardownError::Incomplete { failed, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(failed.len(), 1, "{err}");
    assert!(err.to_string().contains("volumes: remove"), "{err}");
    // --force went on with the other steps, but kept the range.
    assert!(!paths[3].exists() && !paths[2].exists() && !paths[0].exists());
    let kept = Journal::load(tmp.path(), "c1").unwrap().unwrap();
    let names: Vec<_> = kept.steps.iter().map(Step::name).collect();
    assert_eq!(names, ["range", "volumes"]);
    // Without --force the first failure stops the teardown.
    let (mut j, paths) = made(&tmp.path().join("again"));
    fs::write(paths[1].join("0/file"), b"x").unwrap();
    j.steps.swap(1, 3);
    teardown(
        &tmp.path().join("again"),
        j,
        false,
        &crate::profile::release_range,
    )
    .unwrap_err();
    for p in [&paths[0], &paths[2], &paths[3]] {
        assert!(
            p.exists(),
            "{} was undone after the failed step",
            p.display()
        );
    }
}

#[test]
fn by_names_finds_the_stages_of_dead_creates_only() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join(crate::meta::STAGING);
    let dead = staging.join(format!("c1.{}", i32::MAX));
    let live = staging.join(format!("c1.{}", std::process::id()));
    fs::create_dir_all(&dead).unwrap();
    fs::create_dir_all(&live).unwrap();
    let j = by_names(tmp.path(), "c1", false);
    let stages: Vec<_> = j
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Stage { dir } => Some(dir.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stages, [dead]);
    let containers = j
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Container { .. }))
        .count();
    assert_eq!(containers, 1, "the default cgroup path: {:?}", j.steps);
}

#[test]
fn only_a_mount_point_is_taken_for_an_old_layout_view() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!step::is_mount_point(tmp.path()).unwrap());
    assert!(step::is_mount_point(Path::new("/proc")).unwrap());
}

/// Issue 25: a journal planted in the state root naming a directory
/// elsewhere (or climbing out with `..`): nothing of it is touched, the
/// step is reported and stays in the journal.
#[test]
fn steps_outside_cnfbox_paths_are_not_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let victim = tmp.path().join("victim");
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("sub/file"), b"keep").unwrap();
    for step in [
        Step::Stage {
            dir: victim.clone(),
        },
        Step::Stage {
            dir: root.join(".staging/../../victim"),
        },
        Step::Volumes {
            dir: victim.clone(),
        },
        // The state root itself.
        Step::Stage { dir: root.clone() },
        Step::Hugepages {
            mounts: root.join("hugepages"),
            cgroup2: Some(victim.clone()),
        },
    ] {
        let mut j = Journal::begin(&root, "c1").unwrap();
        j.record(step.clone()).unwrap();
        j.creator = None;
        let err = teardown(&root, j, true, &crate::profile::release_range)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not under cnfbox's own paths"),
            "{step:?}: {err}"
        );
        assert!(victim.join("sub/file").exists(), "{step:?} removed it");
        assert!(root.join(".journal").exists(), "{step:?} removed the root");
        assert!(path_of(&root, "c1").exists(), "the journal stays");
        fs::remove_file(path_of(&root, "c1")).unwrap();
    }
}

/// The record is written by the commit that ends the create, read back by
/// `record` and listed by `records` from the journal.
#[test]
fn the_record_lives_in_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut j = Journal::begin(root, "c1").unwrap();
    j.record(Step::Range { pod: "p".into() }).unwrap();
    assert!(matches!(
        record(root, "c1"),
        Err(RecordError::Missing { .. })
    ));
    let meta = crate::meta::tests::full();
    j.commit(meta.clone()).unwrap();
    let loaded = Journal::load(root, "c1").unwrap().unwrap();
    assert_eq!(loaded.creator, None);
    assert_eq!(loaded.record.as_ref(), Some(&meta));
    assert_eq!(record(root, "c1").unwrap(), meta);
    let all = records(root);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, "c1");
    assert_eq!(all[0].source, path_of(root, "c1"));
    assert!(!root.join("c1").exists(), "no file beside the state dir");
}

/// A container of the previous release: its record in
/// `<root>/<id>/cnfbox.json`, with a journal that has none, or with no
/// journal at all; both read as the journal's record would be, and the
/// journal-less one gets its teardown rebuilt.
#[test]
fn a_previous_release_record_is_read_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let meta = crate::meta::tests::full();
    for id in ["journaled", "bare"] {
        fs::create_dir_all(root.join(id)).unwrap();
        fs::write(
            previous::path_of(root, id),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
    }
    let mut j = Journal::begin(root, "journaled").unwrap();
    j.record(Step::Range { pod: "p".into() }).unwrap();
    j.creator = None;
    j.save().unwrap();
    for id in ["journaled", "bare"] {
        assert_eq!(record(root, id).unwrap(), meta, "{id}");
    }
    let mut all = records(root);
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<_> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["bare", "journaled"]);
    assert_eq!(all[0].source, root.join("bare/cnfbox.json"));
    let rebuilt = previous::journal(root, "bare").unwrap().unwrap();
    let names: Vec<_> = rebuilt.steps.iter().map(|s| s.name()).collect();
    assert_eq!(names.first(), Some(&"range"), "{names:?}");
    assert!(
        rebuilt.steps.iter().any(
            |s| matches!(s, Step::Container { cgroup_path, .. } if *cgroup_path == meta.cgroup_path)
        ),
        "{names:?}"
    );
    assert!(previous::journal(root, "none").unwrap().is_none());
    fs::write(previous::path_of(root, "bare"), b"{").unwrap();
    assert!(matches!(
        record(root, "bare"),
        Err(RecordError::Previous(_))
    ));
}
