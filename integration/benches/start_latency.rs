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

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use test_bundles::{BundleBuilder, Scenario};

mod common;

use common::{
    alternate, cnfbox_built, ms_since, rounds_arg, run_container, summarize, which, Rounds,
};

fn main() -> ExitCode {
    common::in_private_mount_ns(|args| {
        let rounds = rounds_arg(args, 100);
        run(rounds)
    })
}

fn run(rounds: usize) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle = BundleBuilder::new(tmp.path().join("bundle"))
        .scenario(&Scenario::True)
        .build()
        .map_err(|e| e.to_string())?;
    // A private pool and ledger; the host user namespace is allowed so the
    // runc-comparable plain start can be measured too.
    let config = tmp.path().join("cnfbox.toml");
    std::fs::write(
        &config,
        format!(
            "[idmap]\npool = \"3000000000:6553600\"\nledger_dir = \"{}\"\nallow_host_userns = true\n",
            tmp.path().join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("CNFBOX_CONFIG", &config);
    let host_bundle = BundleBuilder::new(tmp.path().join("bundle-host"))
        .scenario(&Scenario::True)
        .annotation("cnfbox.io/userns", "host")
        .build()
        .map_err(|e| e.to_string())?;
    let cnfbox = cnfbox_built()?;
    let mut runtimes: Vec<(String, PathBuf, PathBuf)> = vec![
        (
            "cnfbox (pod userns + idmapped rootfs)".into(),
            cnfbox.clone(),
            bundle.dir.clone(),
        ),
        (
            "cnfbox (host userns, as runc)".into(),
            cnfbox,
            host_bundle.dir.clone(),
        ),
    ];
    for name in ["runc", "crun"] {
        match which(name) {
            Some(p) => runtimes.push((name.into(), p, bundle.dir.clone())),
            None => eprintln!("note: {name} not installed; skipped (apt-get install {name})"),
        }
    }
    let plan = Rounds {
        rounds,
        warmup: 5,
        progress_every: 10,
    };
    let names: Vec<&str> = runtimes.iter().map(|r| r.0.as_str()).collect();
    eprintln!(
        "{} rounds (+{} warm-up) of: {}",
        rounds,
        plan.warmup,
        names.join(", ")
    );
    let mut samples = alternate(&plan, &names, |i, round| {
        let (_, bin, bundle_dir) = &runtimes[i];
        let root = tmp.path().join(format!("root-{i}"));
        let t = Instant::now();
        run_container(bin, &root, bundle_dir, &format!("bench-{round}"))?;
        Ok(ms_since(t))
    })?;
    let stats: Vec<(f64, f64)> = samples.iter_mut().map(|s| summarize(s)).collect();
    let runc_median = runtimes
        .iter()
        .position(|r| r.0 == "runc")
        .map(|i| stats[i].0);
    println!("| runtime | median (ms) | p90 (ms) | median / runc |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _, _)) in runtimes.iter().enumerate() {
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
