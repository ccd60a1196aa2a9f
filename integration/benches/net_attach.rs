//! Added start latency per pod interface: `cnfbox run` of `/bin/true`
//! (create, attach, start, wait, give back, delete) with no interface, one
//! moved veth, one macvlan child, and four macvlan children, alternating
//! within each round.
//!
//! Runs in a throwaway network namespace playing the host (a bridge as the
//! trunk, a veth pair to move): the machine's interfaces are never touched.
//!
//! `cargo bench -p integration --bench net_attach [-- ROUNDS]`

use std::os::fd::AsFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use test_bundles::{BundleBuilder, Scenario};

mod common;

use common::{alternate, cnfbox_built, ms_since, report, rounds_arg, summarize, Rounds};

/// The bench's network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(script: &str) -> Result<(), String> {
    let st = Command::new("sh")
        .args(["-ec", script])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("{script}: {st}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    report(run(rounds_arg(&args, 30)))
}

fn run(rounds: usize) -> Result<(), String> {
    let cnfbox = cnfbox_built()?;
    let pid = std::process::id();
    let ns = Netns(format!("cnfbox-bench-{pid}"));
    sh(&format!("ip netns add {}", ns.0))?;
    // From here on this process (and every cnfbox it starts) plays the host
    // in the bench's namespace.
    let file = std::fs::File::open(format!("/run/netns/{}", ns.0)).map_err(|e| e.to_string())?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    let (trunk, vf, peer) = ("btr0", "bvf0", "bpe0");
    sh(&format!(
        "ip link set lo up; ip link add {trunk} type bridge; ip link set {trunk} up; \
         ip link add {vf} type veth peer name {peer}; ip link set {vf} up"
    ))?;

    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = tmp.path().join("cnfbox.toml");
    std::fs::write(
        &config,
        format!(
            "[idmap]\npool = \"3000000000:6553600\"\nledger_dir = \"{}\"\n\
             [network]\nmovable = [\"bvf*\"]\nparents = [\"btr*\"]\n",
            tmp.path().join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let variants: Vec<(&str, usize, Option<String>)> = vec![
        ("none", 0, None),
        ("1 move (veth)", 1, Some(format!("fh0=move:{vf}"))),
        ("1 macvlan", 1, Some(format!("d0=macvlan:{trunk}"))),
        (
            "4 macvlan",
            4,
            Some(
                (0..4)
                    .map(|i| format!("d{i}=macvlan:{trunk}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
    ];
    let mut bundles = Vec::new();
    for (i, (_, _, ann)) in variants.iter().enumerate() {
        let mut b =
            BundleBuilder::new(tmp.path().join(format!("bundle-{i}"))).scenario(&Scenario::True);
        if let Some(a) = ann {
            b = b.annotation("cnfbox.io/interfaces", a.clone());
        }
        bundles.push(b.build().map_err(|e| e.to_string())?);
    }
    let plan = Rounds {
        rounds,
        warmup: 3,
        progress_every: 5,
    };
    let names: Vec<&str> = variants.iter().map(|v| v.0).collect();
    eprintln!(
        "{rounds} pods per variant (+{} warm-up), variants: {}",
        plan.warmup,
        names.join(", ")
    );
    // Per variant: (start, delete) in ms for each measured round.
    let timings = alternate(&plan, &names, |i, round| {
        let root = tmp.path().join(format!("root-{i}"));
        let id = format!("bench-{round}");
        // stderr goes to a file: a created init inherits it and would
        // hold a pipe open until it exits.
        let err_path = tmp.path().join("cnfbox.err");
        let cnf = |args: &[&str]| -> Result<(), String> {
            let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
            let st = Command::new(&cnfbox)
                .env("CNFBOX_CONFIG", &config)
                .arg("--root")
                .arg(&root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!(
                    "{args:?} failed: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                ));
            }
            Ok(())
        };
        let bundle = bundles[i].dir.to_string_lossy().into_owned();
        // Start latency: create (with the attachments) + start.
        let t = Instant::now();
        cnf(&["create", "--bundle", &bundle, &id])?;
        cnf(&["start", &id])?;
        let start_ms = ms_since(t);
        // /bin/true exits at once; wait for it, then time the delete
        // (which gives the interfaces back).
        let state = root.join(&id).join("state.json");
        for _ in 0..1000 {
            let raw = std::fs::read_to_string(&state).unwrap_or_default();
            let pid: Option<i32> = serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v["pid"].as_i64())
                .map(|p| p as i32);
            if pid.is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let t = Instant::now();
        cnf(&["delete", "--force", &id])?;
        Ok((start_ms, ms_since(t)))
    })?;
    // Every device is back on the bench's host side after each round.
    sh(&format!("ip link show {vf} >/dev/null"))?;
    let (mut starts, mut deletes): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        timings.into_iter().map(|t| t.into_iter().unzip()).unzip();
    let stats: Vec<(f64, f64)> = starts.iter_mut().map(|s| summarize(s)).collect();
    let del: Vec<(f64, f64)> = deletes.iter_mut().map(|s| summarize(s)).collect();
    let base = stats[0].0;
    println!("| pod interfaces | start median (ms) | start p90 (ms) | added per interface (ms) | start / none | delete median (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (name, n, _)) in variants.iter().enumerate() {
        let per = if *n == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", (stats[i].0 - base) / *n as f64)
        };
        println!(
            "| {name} | {:.2} | {:.2} | {per} | {:.2} | {:.2} |",
            stats[i].0,
            stats[i].1,
            stats[i].0 / base,
            del[i].0
        );
    }
    Ok(())
}
