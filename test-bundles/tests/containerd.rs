//! The image archives work with real containerd 1.6: a private instance
//! imports them and runs them with runc.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{not_root, wait_timeout};
use test_bundles::containerd::missing_tool;
use test_bundles::{
    CheckReport, ImageBuilder, PrivateContainerd, DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF,
};

/// The reason these tests cannot run here, if any.
fn cannot_run() -> Option<String> {
    if let Some(why) = not_root() {
        return Some(format!("containerd tests need root because {why}"));
    }
    missing_tool()
        .map(|t| format!("{t} is not installed (apt-get install containerd runc util-linux)"))
}

/// System paths the private instance must never create.
const SYSTEM_PATHS: [&str; 2] = ["/run/containerd", "/var/lib/containerd"];

fn absent_system_paths() -> Vec<&'static str> {
    SYSTEM_PATHS
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn containerd_imports_and_runs_busybox_image() {
    if let Some(why) = cannot_run() {
        skip!("containerd_imports_and_runs_busybox_image because {why}");
    }
    let absent = absent_system_paths();
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = ImageBuilder::busybox()
        .write(&tmp.path().join("busybox.tar"))
        .expect("write image archive");

    let cd = PrivateContainerd::start().expect("start private containerd");
    let dir = cd.dir().expect("containerd dir").to_owned();
    cd.ctr_ok([Path::new("images"), Path::new("import"), &archive.path])
        .expect("ctr images import");
    let ls = stdout(&cd.ctr_ok(["images", "ls", "-q"]).expect("ctr images ls"));
    assert!(
        ls.lines().any(|l| l.trim() == DEFAULT_IMAGE_REF),
        "{DEFAULT_IMAGE_REF} not in:\n{ls}"
    );

    let out = cd
        .ctr_ok(["run", "--rm", DEFAULT_IMAGE_REF, "t1", "/bin/echo", "hello"])
        .expect("ctr run echo");
    assert_eq!(stdout(&out).trim(), "hello");

    let out = cd
        .ctr_ok(["run", "--rm", DEFAULT_IMAGE_REF, "c1", "/bin/cnfbox-check"])
        .expect("ctr run cnfbox-check");
    let report = CheckReport::parse(&stdout(&out));
    assert!(report.is_complete(), "{}", stdout(&out));
    assert_eq!(report.get("pid"), Some("1"));
    assert_eq!(report.errors(), Vec::<&str>::new(), "{}", stdout(&out));
    assert!(report.all("mountinfo_root").next().is_some());

    cd.stop().expect("stop and clean up private containerd");
    assert!(!dir.exists(), "{} survived", dir.display());
    for p in absent {
        assert!(!Path::new(p).exists(), "private containerd created {p}");
    }
}

#[test]
fn containerd_runs_pause_image_until_sigterm() {
    if let Some(why) = cannot_run() {
        skip!("containerd_runs_pause_image_until_sigterm because {why}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = ImageBuilder::pause()
        .write(&tmp.path().join("pause.tar"))
        .expect("write pause archive");
    let cd = PrivateContainerd::start().expect("start private containerd");
    cd.ctr_ok([Path::new("images"), Path::new("import"), &archive.path])
        .expect("ctr images import pause");

    let mut run = cd
        .ctr()
        .args(["run", "--rm", PAUSE_IMAGE_REF, "p1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr run pause");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = cd
            .ctr_ok(["tasks", "ls"])
            .map(|o| stdout(&o))
            .unwrap_or_default();
        if tasks
            .lines()
            .any(|l| l.starts_with("p1 ") && l.contains("RUNNING"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pause never ran; tasks:\n{tasks}"
        );
        sleep(Duration::from_millis(100));
    }
    // Let the entrypoint install its traps before the signal lands.
    sleep(Duration::from_millis(300));
    cd.ctr_ok(["tasks", "kill", "--signal", "SIGTERM", "p1"])
        .expect("ctr tasks kill");
    let status = wait_timeout(&mut run, Duration::from_secs(20));
    let Some(status) = status else {
        let _ = run.kill();
        panic!("pause still runs 20s after SIGTERM");
    };
    assert_eq!(status.code(), Some(0), "ctr run pause: {status}");
    cd.stop().expect("stop and clean up private containerd");
}
