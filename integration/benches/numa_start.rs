//! Added start latency of NUMA placement with hugepages: a container with
//! the `cnfbox.io/numa-node` hint, a CPU pin, a 2 MiB hugepage limit and
//! its own hugetlbfs, against the same container without them. Both run
//! with the pod profile (own user namespace, id-mapped rootfs); the two
//! alternate within each round so machine noise hits both alike.
//!
//! Runs on the host's real cgroup layout (the hybrid host's cgroup2 tree
//! holds the hugetlb controller cnfbox uses): no private mount namespace.
//!
//! `cargo bench -p integration --bench numa_start [-- ROUNDS]`

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use test_bundles::{BundleBuilder, Scenario};

mod common;

use common::{cnfbox_bin, summarize};

fn main() -> ExitCode {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    match run(rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(rounds: usize) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = tmp.path().join("cnfbox.toml");
    std::fs::write(
        &config,
        format!(
            "[idmap]\npool = \"3100000000:6553600\"\nledger_dir = \"{}\"\n",
            tmp.path().join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("CNFBOX_CONFIG", &config);
    let plain = BundleBuilder::new(tmp.path().join("plain"))
        .scenario(&Scenario::True)
        .build()
        .map_err(|e| e.to_string())?;
    let cpu = if std::fs::read_to_string("/sys/devices/system/node/node0/cpulist")
        .unwrap_or_default()
        .contains('1')
    {
        "1"
    } else {
        "0"
    };
    let pinned = BundleBuilder::new(tmp.path().join("pinned"))
        .scenario(&Scenario::True)
        .annotation("cnfbox.io/numa-node", "0")
        .modify(move |s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            d["linux"]["resources"]["cpu"] = serde_json::json!({ "cpus": cpu });
            d["linux"]["resources"]["hugepageLimits"] =
                serde_json::json!([{ "pageSize": "2MB", "limit": 4 << 20 }]);
            *s = serde_json::from_value(d).unwrap();
        })
        .build()
        .map_err(|e| e.to_string())?;
    let cnfbox = cnfbox_bin();
    if !cnfbox.exists() {
        return Err(format!(
            "{} missing: cargo build --release -p cnfbox",
            cnfbox.display()
        ));
    }
    let variants = [
        ("plain (pod profile)", plain.dir),
        ("NUMA-pinned + 2 MiB hugepage limit + hugetlbfs", pinned.dir),
    ];
    let warmup = 5;
    eprintln!("{rounds} rounds (+{warmup} warm-up), CPU {cpu} on node 0");
    let mut samples = vec![Vec::new(); variants.len()];
    for round in 0..rounds + warmup {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (name, dir) = &variants[i];
            let id = format!("numa-bench-{}-{i}-{round}", std::process::id());
            let t = Instant::now();
            let st = Command::new(&cnfbox)
                .arg("--root")
                .arg(tmp.path().join("root"))
                .args(["run", "--bundle"])
                .arg(dir)
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
    println!("| container | median (ms) | p90 (ms) | extra vs plain (ms) |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {:.2} | {:.2} | {:+.2} |",
            stats[i].0,
            stats[i].1,
            stats[i].0 - stats[0].0
        );
    }
    Ok(())
}
