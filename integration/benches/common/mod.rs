//! Shared by the start-latency benchmarks: a private mount namespace with
//! the cgroup2 tree unmounted (crun 1.8 refuses hybrid hosts), binaries,
//! the alternating timing loop, and summaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

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
    report(run(&args))
}

/// The rounds asked for on the command line (the first number), else
/// `default`.
pub fn rounds_arg(args: &[String], default: usize) -> usize {
    args.iter().find_map(|a| a.parse().ok()).unwrap_or(default)
}

/// A benchmark's exit status, its error (if any) printed on stderr.
pub fn report(result: Result<(), String>) -> ExitCode {
    match result {
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

/// The cnfbox binary, or an error saying how to build it.
pub fn cnfbox_built() -> Result<PathBuf, String> {
    let cnfbox = cnfbox_bin();
    if !cnfbox.exists() {
        return Err(format!(
            "{} missing: cargo build --release -p cnfbox",
            cnfbox.display()
        ));
    }
    Ok(cnfbox)
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `RUNTIME --root ROOT run --bundle BUNDLE ID` to the container's exit,
/// output discarded; an error unless it exits 0.
pub fn run_container(bin: &Path, root: &Path, bundle: &Path, id: &str) -> Result<(), String> {
    let st = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !st.success() {
        return Err(format!("run failed: {st}"));
    }
    Ok(())
}

/// How many rounds a benchmark measures and how it reports progress.
pub struct Rounds {
    /// Measured rounds.
    pub rounds: usize,
    /// Rounds run first and thrown away (caches, page cache, lazy setup).
    pub warmup: usize,
    /// Print progress after every this many measured rounds.
    pub progress_every: usize,
}

/// Runs `warmup + rounds` rounds of one `sample(variant, round)` per
/// variant, the order rotated by one each round so machine noise and
/// drift hit every variant alike, and returns the measured rounds' samples
/// per variant, in the order of `names`.
pub fn alternate<S>(
    plan: &Rounds,
    names: &[&str],
    mut sample: impl FnMut(usize, usize) -> Result<S, String>,
) -> Result<Vec<Vec<S>>, String> {
    let n = names.len();
    let mut samples: Vec<Vec<S>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..plan.rounds + plan.warmup {
        for k in 0..n {
            let i = (round + k) % n;
            let s = sample(i, round).map_err(|e| format!("{} in round {round}: {e}", names[i]))?;
            if round >= plan.warmup {
                samples[i].push(s);
            }
        }
        if round >= plan.warmup && (round - plan.warmup + 1) % plan.progress_every.max(1) == 0 {
            eprintln!("  {}/{} rounds", round - plan.warmup + 1, plan.rounds);
        }
    }
    Ok(samples)
}
