//! Added start latency of NUMA placement with hugepages: a container with
//! the `cnfbox.io/numa-node` hint, a CPU pin, a 2 MiB hugepage limit and
//! its own hugetlbfs, against the same container without them, and
//! against the same pin derived from the CPU list alone (no annotation,
//! `[numa] align = "auto"`). Both run
//! with the pod profile (own user namespace, id-mapped rootfs); the two
//! alternate within each round so machine noise hits both alike.
//!
//! Runs on the host's real cgroup layout (the hybrid host's cgroup2 tree
//! holds the hugetlb controller cnfbox uses): no private mount namespace.
//!
//! `cargo bench -p integration --bench numa_start [-- ROUNDS]`

use std::process::ExitCode;
use std::time::Instant;

use test_bundles::{BundleBuilder, Scenario};

mod common;

use common::{
    alternate, cnfbox_built, ms_since, report, rounds_arg, run_container, summarize, Rounds,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    report(run(rounds_arg(&args, 50)))
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
    let pin = move |s: &mut oci_spec::runtime::Spec| {
        let mut d = serde_json::to_value(&*s).unwrap();
        d["linux"]["resources"]["cpu"] = serde_json::json!({ "cpus": cpu });
        d["linux"]["resources"]["hugepageLimits"] =
            serde_json::json!([{ "pageSize": "2MB", "limit": 4 << 20 }]);
        *s = serde_json::from_value(d).unwrap();
    };
    let pinned = BundleBuilder::new(tmp.path().join("pinned"))
        .scenario(&Scenario::True)
        .annotation("cnfbox.io/numa-node", "0")
        .modify(pin)
        .build()
        .map_err(|e| e.to_string())?;
    let derived = BundleBuilder::new(tmp.path().join("derived"))
        .scenario(&Scenario::True)
        .modify(pin)
        .build()
        .map_err(|e| e.to_string())?;
    let free = std::fs::read_to_string(
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages",
    )
    .ok()
    .and_then(|t| t.trim().parse::<u64>().ok())
    .unwrap_or(0);
    if free < 2 {
        return Err(format!(
            "node 0 has {free} free 2 MiB hugepages; the pinned containers' limit needs 2 \
             (echo 8 > /proc/sys/vm/nr_hugepages first, 0 after)"
        ));
    }
    let cnfbox = cnfbox_built()?;
    let variants = [
        ("plain (pod profile)", plain.dir),
        ("NUMA-pinned + 2 MiB hugepage limit + hugetlbfs", pinned.dir),
        ("the same, node derived from cpu.cpus", derived.dir),
    ];
    let plan = Rounds {
        rounds,
        warmup: 5,
        progress_every: 10,
    };
    eprintln!(
        "{rounds} rounds (+{} warm-up), CPU {cpu} on node 0",
        plan.warmup
    );
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    let root = tmp.path().join("root");
    let mut samples = alternate(&plan, &names, |i, round| {
        let id = format!("numa-bench-{}-{i}-{round}", std::process::id());
        let t = Instant::now();
        run_container(&cnfbox, &root, &variants[i].1, &id)?;
        Ok(ms_since(t))
    })?;
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
