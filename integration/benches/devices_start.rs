//! Added start latency of device nodes: a `/bin/true` pod given four
//! `linux.devices` entries (kvm at `/dev/cnf/kvm0`, tun, vhost-net and a
//! null at a path of its own), for which cnfbox mounts a tmpfs and makes
//! four nodes, against the same pod with none. Both run with the pod
//! profile (own user namespace, id-mapped rootfs); the two alternate
//! within each round so machine noise hits both alike. The nodes are made
//! and bound, never opened, so the host needs none of the drivers.
//!
//! `cargo bench -p integration --bench devices_start [-- ROUNDS]`

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
            "[idmap]\npool = \"3200000000:6553600\"\nledger_dir = \"{}\"\n\n[devices]\nallow = [\"c 10:232\", \"c 10:238\"]\n",
            tmp.path().join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("CNFBOX_CONFIG", &config);
    let plain = BundleBuilder::new(tmp.path().join("plain"))
        .scenario(&Scenario::True)
        .build()
        .map_err(|e| e.to_string())?;
    let devices = BundleBuilder::new(tmp.path().join("devices"))
        .scenario(&Scenario::True)
        .modify(|s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            let dev = |path: &str, major: u32, minor: u32| {
                serde_json::json!({ "path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o600 })
            };
            d["linux"]["devices"] = serde_json::json!([
                dev("/dev/cnf/kvm0", 10, 232),
                dev("/dev/net/tun", 10, 200),
                dev("/dev/vhost-net", 10, 238),
                dev("/dev/cnf/null", 1, 3),
            ]);
            *s = serde_json::from_value(d).unwrap();
        })
        .build()
        .map_err(|e| e.to_string())?;
    let cnfbox = cnfbox_built()?;
    let variants = [("no devices", plain.dir), ("4 devices", devices.dir)];
    let plan = Rounds {
        rounds,
        warmup: 5,
        progress_every: 10,
    };
    eprintln!("{rounds} rounds (+{} warm-up)", plan.warmup);
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    let root = tmp.path().join("root");
    let mut samples = alternate(&plan, &names, |i, round| {
        let id = format!("dev-bench-{}-{i}-{round}", std::process::id());
        let t = Instant::now();
        run_container(&cnfbox, &root, &variants[i].1, &id)?;
        Ok(ms_since(t))
    })?;
    let stats: Vec<(f64, f64)> = samples.iter_mut().map(|s| summarize(s)).collect();
    println!(
        "| pod | run median (ms) | run p90 (ms) | added vs none (ms) | added per device (ms) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let added = stats[i].0 - stats[0].0;
        let per = if i == 0 {
            "-".to_string()
        } else {
            format!("{:+.2}", added / 4.0)
        };
        println!(
            "| {name} | {:.2} | {:.2} | {added:+.2} | {per} |",
            stats[i].0, stats[i].1
        );
    }
    Ok(())
}
