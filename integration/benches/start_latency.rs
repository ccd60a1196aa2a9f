//! Start latency: cnfbox against Debian's runc and crun on one busybox bundle
//! running `/bin/true` (create + start + wait + delete, i.e. `RUNTIME run`).
//!
//! crun 1.8 refuses hybrid cgroup hosts, so the whole run happens inside one
//! private mount namespace with the cgroup2 tree unmounted: all three
//! runtimes see the same v1 layout. Runtimes alternate within each round so
//! machine noise hits all of them alike; results are medians and p90s with
//! ratios to runc.
//!
//! `cargo bench -p integration --bench start_latency [-- ROUNDS]`

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use test_bundles::{BundleBuilder, Scenario};

const INNER: &str = "CNFBOX_BENCH_INNER";

fn main() -> ExitCode {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    if std::env::var_os(INNER).is_none() {
        // Re-run this binary in a private mount namespace.
        let exe = std::env::current_exe().expect("current_exe");
        let status = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--"])
            .arg(exe)
            .arg(rounds.to_string())
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
    match run(rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cnfbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CNFBOX_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("cnfbox")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn run(rounds: usize) -> Result<(), String> {
    if Path::new("/sys/fs/cgroup/unified").exists() {
        let st = Command::new("umount")
            .arg("/sys/fs/cgroup/unified")
            .status()
            .map_err(|e| format!("umount: {e}"))?;
        if !st.success() {
            return Err("umount /sys/fs/cgroup/unified failed".into());
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle = BundleBuilder::new(tmp.path().join("bundle"))
        .scenario(&Scenario::True)
        .build()
        .map_err(|e| e.to_string())?;
    let cnfbox = cnfbox_bin();
    if !cnfbox.exists() {
        return Err(format!(
            "{} missing: cargo build --release -p cnfbox",
            cnfbox.display()
        ));
    }
    let mut runtimes: Vec<(String, PathBuf)> = vec![("cnfbox".into(), cnfbox)];
    for name in ["runc", "crun"] {
        match which(name) {
            Some(p) => runtimes.push((name.into(), p)),
            None => eprintln!("note: {name} not installed; skipped (apt-get install {name})"),
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
    let warmup = 5;
    eprintln!(
        "{} rounds (+{warmup} warm-up) of: {}",
        rounds,
        runtimes
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for round in 0..rounds + warmup {
        for k in 0..runtimes.len() {
            // Rotate the order each round.
            let i = (round + k) % runtimes.len();
            let (name, bin) = &runtimes[i];
            let root = tmp.path().join(format!("root-{name}"));
            let id = format!("bench-{round}");
            let t = Instant::now();
            let st = Command::new(bin)
                .arg("--root")
                .arg(&root)
                .args(["run", "--bundle"])
                .arg(&bundle.dir)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("{name}: {e}"))?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if !st.success() {
                return Err(format!("{name} run failed in round {round}: {st}"));
            }
            if round >= warmup {
                samples[i].push(ms);
            }
        }
        if round >= warmup && (round - warmup + 1) % 10 == 0 {
            eprintln!("  {}/{} rounds", round - warmup + 1, rounds);
        }
    }
    let stats: Vec<(f64, f64)> = samples.iter_mut().map(|s| summarize(s)).collect();
    let runc_median = runtimes
        .iter()
        .position(|r| r.0 == "runc")
        .map(|i| stats[i].0);
    println!("| runtime | median (ms) | p90 (ms) | median / runc |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in runtimes.iter().enumerate() {
        let ratio = runc_median
            .map(|r| format!("{:.2}", stats[i].0 / r))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {name} | {:.2} | {:.2} | {ratio} |",
            stats[i].0, stats[i].1
        );
    }
    Ok(())
}

/// Median and 90th percentile (nearest rank).
fn summarize(s: &mut [f64]) -> (f64, f64) {
    s.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (pick(0.5), pick(0.9))
}
