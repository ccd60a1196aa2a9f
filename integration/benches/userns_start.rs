//! Start latency of a user-namespaced container with a small rootfs (busybox
//! and 10 files) and with a 50,000-file rootfs: cnfbox, whose rootfs is an
//! id-mapped view (constant time), side by side with runc and crun on a
//! rootfs chowned to each new pod's range (what a runtime without id-mapped
//! mounts must do; the chown is part of the time). Also cnfbox with and
//! without a user namespace on the small rootfs.
//!
//! Each round starts `/bin/true` once per variant, in rotating order; a
//! "new pod" alternates between two host ranges, so runc and crun chown on
//! every round. Runs in one private mount namespace with the cgroup2 tree
//! unmounted (crun 1.8 refuses hybrid hosts).
//!
//! `cargo bench -p integration --bench userns_start [-- ROUNDS] [cnfbox-only]`
//!
//! `cnfbox-only` leaves runc and crun out: their 50,000-inode chowns fill
//! the ext4 journal, which the allocator's fsync then waits on, and that
//! interference lands on whichever variant runs next.

mod common;

use std::os::unix::fs::lchown;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use common::{
    alternate, cnfbox_built, ms_since, rounds_arg, run_container, summarize, which, Rounds,
};
use serde_json::json;
use test_bundles::{Bundle, BundleBuilder, Scenario};

/// Two pod ranges for runc/crun (outside cnfbox's pool below).
const RANGES: [u32; 2] = [3_800_000_000, 3_800_065_536];

fn main() -> ExitCode {
    common::in_private_mount_ns(|args| {
        let rounds = rounds_arg(args, 15);
        let cnfbox_only = args.iter().any(|a| a == "cnfbox-only");
        run(rounds, cnfbox_only)
    })
}

fn bundle(dir: &Path, files: usize, annotate_host: bool) -> Result<Bundle, String> {
    let mut b = BundleBuilder::new(dir)
        .scenario(&Scenario::True)
        .files(files)
        // Never share the host's busybox inode: runc/crun variants chown it.
        .hard_link_busybox(false);
    if annotate_host {
        b = b.annotation("cnfbox.io/userns", "host");
    }
    b.build().map_err(|e| e.to_string())
}

/// A runc/crun bundle dir whose config maps the pod to `host` and whose
/// root is `rootfs` (shared by both ranges' bundles).
fn userns_bundle(dir: &Path, base: &Bundle, rootfs: &Path, host: u32) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&base.config_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    doc["root"]["path"] = json!(rootfs);
    doc["linux"]["namespaces"]
        .as_array_mut()
        .ok_or("namespaces")?
        .push(json!({"type": "user"}));
    let m = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
    doc["linux"]["uidMappings"] = m.clone();
    doc["linux"]["gidMappings"] = m;
    std::fs::write(dir.join("config.json"), doc.to_string()).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}

/// chown -R, as a runtime without id-mapped mounts does per pod.
fn chown_tree(path: &Path, id: u32) -> std::io::Result<()> {
    lchown(path, Some(id), Some(id))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), id)?;
        }
    }
    Ok(())
}

struct Variant {
    name: String,
    bin: PathBuf,
    /// One bundle per pod range (cnfbox: the same bundle twice).
    bundles: [PathBuf; 2],
    /// Rootfs to chown to the round's range first (runc, crun).
    chown: Option<PathBuf>,
}

fn run(rounds: usize, cnfbox_only: bool) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t = tmp.path();
    let config = t.join("cnfbox.toml");
    std::fs::write(
        &config,
        format!(
            "[idmap]\npool = \"3000000000:6553600\"\nledger_dir = \"{}\"\nallow_host_userns = true\n",
            t.join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("CNFBOX_CONFIG", &config);
    eprintln!("building rootfs: small (busybox + 10 files) and large (50,000 files)...");
    let small = bundle(&t.join("small"), 10, false)?;
    let large = bundle(&t.join("large"), 50_000, false)?;
    let plain = bundle(&t.join("plain"), 10, true)?;
    let cnfbox = cnfbox_built()?;
    let mut variants = Vec::new();
    for (label, b) in [("small", &small), ("large", &large)] {
        variants.push(Variant {
            name: format!("cnfbox idmapped, {label}"),
            bin: cnfbox.clone(),
            bundles: [b.dir.clone(), b.dir.clone()],
            chown: None,
        });
    }
    variants.push(Variant {
        name: "cnfbox no userns, small".into(),
        bin: cnfbox.clone(),
        bundles: [plain.dir.clone(), plain.dir.clone()],
        chown: None,
    });
    let others: &[&str] = if cnfbox_only { &[] } else { &["runc", "crun"] };
    for rt in others {
        let rt = *rt;
        let Some(bin) = which(rt) else {
            eprintln!("note: {rt} not installed; skipped (apt-get install {rt})");
            continue;
        };
        for (label, b) in [("small", &small), ("large", &large)] {
            // Each runtime chowns its own copy of the tree.
            let rootfs = t.join(format!("{rt}-{label}-rootfs"));
            let st = Command::new("cp")
                .args(["-a"])
                .arg(&b.rootfs)
                .arg(&rootfs)
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err("cp -a rootfs".into());
            }
            let bundles = [
                userns_bundle(&t.join(format!("{rt}-{label}-a")), b, &rootfs, RANGES[0])?,
                userns_bundle(&t.join(format!("{rt}-{label}-b")), b, &rootfs, RANGES[1])?,
            ];
            variants.push(Variant {
                name: format!("{rt} chown, {label}"),
                bin: bin.clone(),
                bundles,
                chown: Some(rootfs),
            });
        }
    }
    let plan = Rounds {
        rounds,
        warmup: 2,
        progress_every: 1,
    };
    eprintln!(
        "{rounds} rounds (+{} warm-up) of {} variants",
        plan.warmup,
        variants.len()
    );
    let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    let mut samples = alternate(&plan, &names, |i, round| {
        let v = &variants[i];
        let slot = round % 2;
        let start = Instant::now();
        if let Some(rootfs) = &v.chown {
            chown_tree(rootfs, RANGES[slot]).map_err(|e| format!("chown: {e}"))?;
        }
        let root = t.join(format!("root-{i}"));
        run_container(&v.bin, &root, &v.bundles[slot], &format!("ub-{i}-{round}"))?;
        Ok(ms_since(start))
    })?;
    let stats: Vec<(f64, f64)> = samples.iter_mut().map(|s| summarize(s)).collect();
    println!("| variant | median (ms) | p90 (ms) |");
    println!("|---|---:|---:|");
    for (v, (m, p)) in variants.iter().zip(&stats) {
        println!("| {} | {m:.2} | {p:.2} |", v.name);
    }
    let median = |name: &str| {
        variants
            .iter()
            .position(|v| v.name == name)
            .map(|i| stats[i].0)
    };
    println!();
    if let (Some(l), Some(s)) = (
        median("cnfbox idmapped, large"),
        median("cnfbox idmapped, small"),
    ) {
        println!("cnfbox large/small: {:.2} (goal <= 1.1)", l / s);
    }
    if let (Some(u), Some(p)) = (
        median("cnfbox idmapped, small"),
        median("cnfbox no userns, small"),
    ) {
        println!("cnfbox userns/plain: {:.2} (goal <= 1.2)", u / p);
    }
    for rt in ["runc", "crun"] {
        if let (Some(l), Some(s)) = (
            median(&format!("{rt} chown, large")),
            median(&format!("{rt} chown, small")),
        ) {
            println!("{rt} (chown) large/small: {:.2}", l / s);
        }
    }
    Ok(())
}
