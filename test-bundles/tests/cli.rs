//! The `cnfbox-test-bundles` binary, run as a user would.

use std::process::Command;

use test_bundles::{verify_archive, Bundle, PAUSE_IMAGE_REF};

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cnfbox-test-bundles"))
}

#[test]
fn cli_bundle_writes_scenario_args_and_options() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    let out = cli()
        .args([
            "bundle",
            "--scenario",
            "exit:3",
            "--files",
            "5",
            "--env",
            "K=V",
        ])
        .args(["--hostname", "h1", "--cgroups-path", "/cnfbox/x"])
        .arg(&dir)
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("bundle={}", dir.display())),
        "{stdout}"
    );
    let spec = Bundle::open(&dir).expect("open").spec().expect("spec");
    let p = spec.process().as_ref().expect("process");
    assert_eq!(
        p.args().as_deref(),
        Some(&["/bin/sh".to_owned(), "-c".into(), "exit 3".into()][..])
    );
    assert!(p
        .env()
        .as_ref()
        .is_some_and(|e| e.contains(&"K=V".to_owned())));
    assert_eq!(spec.hostname().as_deref(), Some("h1"));
    assert!(dir.join("rootfs/usr/share/filler/d00000/f00004").is_file());
}

#[test]
fn cli_bundle_args_take_the_rest_of_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    let out = cli()
        .arg("bundle")
        .arg(&dir)
        .args(["--args", "/bin/sh", "-c", "exit 4"])
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = Bundle::open(&dir).expect("open").spec().expect("spec");
    let args = spec.process().as_ref().and_then(|p| p.args().clone());
    assert_eq!(
        args,
        Some(vec!["/bin/sh".into(), "-c".into(), "exit 4".into()])
    );
}

#[test]
fn cli_rejects_unknown_scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = cli()
        .args(["bundle", "--scenario", "nope"])
        .arg(tmp.path().join("b"))
        .output()
        .expect("run cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

#[test]
fn cli_image_pause_writes_a_valid_archive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("pause.tar");
    let out = cli()
        .args(["image", "--pause", "--out"])
        .arg(&tar)
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = verify_archive(&tar).expect("archive verifies");
    assert_eq!(v.reference.as_deref(), Some(PAUSE_IMAGE_REF));
    assert_eq!(v.os, "linux");
}

#[test]
fn cli_image_ref_sets_both_annotations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("x.tar");
    let out = cli()
        .args(["image", "--ref", "localhost/cnfbox/x:v2", "--out"])
        .arg(&tar)
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = verify_archive(&tar).expect("archive verifies");
    assert_eq!(v.reference.as_deref(), Some("localhost/cnfbox/x:v2"));
    assert_eq!(v.tag.as_deref(), Some("v2"));
}
