//! Shared by the start-latency benchmarks: a private mount namespace with
//! the cgroup2 tree unmounted (crun 1.8 refuses hybrid hosts), binaries,
//! and summaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const INNER: &str = "CNFBOX_BENCH_INNER";

/// Re-runs this benchmark inside `unshare -m` (once) and calls `run` there,
/// after unmounting `/sys/fs/cgroup/unified`.
pub fn in_private_mount_ns(run: impl FnOnce(&[String]) -> Result<(), String>) -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if std::env::var_os(INNER).is_none() {
        let exe = std::env::current_exe().expect("current_exe");
        let status = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--"])
            .arg(exe)
            .args(&args)
            .env(INNER, "1")
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => {
                eprintln!("benchmark failed: {s}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("benchmark needs unshare(1) from util-linux: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if Path::new("/sys/fs/cgroup/unified").exists() {
        let ok = Command::new("umount")
            .arg("/sys/fs/cgroup/unified")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("benchmark failed: umount /sys/fs/cgroup/unified");
            return ExitCode::FAILURE;
        }
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn cnfbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CNFBOX_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("cnfbox")
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Median and 90th percentile (nearest rank) of `s`, in its unit.
pub fn summarize(s: &mut [f64]) -> (f64, f64) {
    s.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (pick(0.5), pick(0.9))
}
