//! CRI pod start latency and shim memory: cnfbox's shim against Debian's
//! containerd-shim-runc-v2 with runc, side by side on one private
//! containerd 1.6 (CRI on, overlayfs snapshotter, a CNI bridge of its own).
//!
//! Each round starts one pod per handler, alternating which goes first:
//! RunPodSandbox + CreateContainer + StartContainer of a `sleep` container,
//! timed from the client. Pods stay up; after `RSS_AT` rounds the resident
//! memory (VmRSS) of every shim serving the pods is read. Everything is
//! removed at the end.
//!
//! `cargo build --release -p cnfbox -p cnfbox-shim && cargo bench -p integration --bench cri_pods [-- ROUNDS]`

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use k8s_cri::v1::{
    CreateContainerRequest, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use test_bundles::{PrivateContainerd, StartOptions};

mod common;
#[path = "../tests/cri/mod.rs"]
mod cri;

use common::{cnfbox_bin, report, rounds_arg, summarize};
use cri::{Client, SHIM};

const RUNC_SHIM: &str = "containerd-shim-runc-v2";
const HANDLERS: [&str; 2] = ["cnfbox", "runc"];
/// Pods per handler running when shim memory is read.
const RSS_AT: usize = 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = rounds_arg(&args, 30);
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP cri_pods: needs root");
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    report(rt.block_on(run(rounds)))
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: name.into(),
            namespace: "cnfbox-bench".into(),
            attempt: 0,
        }),
        hostname: "bench".into(),
        annotations: HashMap::new(),
        ..Default::default()
    }
}

/// RunPodSandbox + CreateContainer + StartContainer; the pod id.
async fn start_pod(c: &mut Client, name: &str, handler: &str) -> Result<String, String> {
    let config = pod_config(name);
    let pod = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox {handler}: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let ctr = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::sleep_container("c")),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| format!("CreateContainer {handler}: {e}"))?
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest { container_id: ctr })
        .await
        .map_err(|e| format!("StartContainer {handler}: {e}"))?;
    Ok(pod)
}

/// VmRSS (KiB) of every process whose argv[0] ends with `name` and that
/// serves the containerd whose directory is `dir`.
fn shim_rss(name: &str, dir: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).into_owned();
        let args: Vec<&str> = cmd.split('\0').collect();
        let serving = !args.iter().any(|a| *a == "start" || *a == "delete");
        if !args[0].ends_with(name) || !cmd.contains(dir) || !serving {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            out.push(kb);
        }
    }
    out
}

async fn run(rounds: usize) -> Result<(), String> {
    let shim = cnfbox_bin().with_file_name(SHIM);
    if !shim.exists() || !cnfbox_bin().exists() {
        return Err(format!(
            "{} or cnfbox missing: cargo build --release -p cnfbox -p cnfbox-shim",
            shim.display()
        ));
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&shim, bin.join(SHIM)).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(cnfbox_bin(), bin.join("cnfbox")).map_err(|e| e.to_string())?;
    // A private pool and ledger big enough for every pod.
    let config = tmp.path().join("cnfbox.toml");
    // 128 pods of 65536 ids, in a pid-chosen slot below 2^32.
    let size = 128 * 65536u64;
    let start = (1u64 << 31) + u64::from(std::process::id() % 200) * size;
    std::fs::write(
        &config,
        format!(
            "[idmap]\npool = \"{start}:{size}\"\nledger_dir = \"{}\"\n",
            tmp.path().join("ledger").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let pid = std::process::id();
    let bridge = format!("cnfbb{}", pid % 100_000);
    let cni = tmp.path().join("cni");
    cri::write_bridge_network(
        &cni,
        &format!("cnfbox-bench-{pid}"),
        &bridge,
        &format!("10.{}.{}.0/24", 150 + pid % 50, (pid / 50) % 256),
        &tmp.path().join("ipam"),
        false,
    )
    .map_err(|e| e.to_string())?;
    let extra = cri::containerd_config(&cni, "");
    let opts = StartOptions {
        path_prepend: vec![bin],
        env: vec![("CNFBOX_CONFIG".into(), config.into())],
        cri: true,
    };
    let cd = PrivateContainerd::start_with(&extra, &opts).map_err(|e| e.to_string())?;
    let result = measure(&cd, tmp.path(), rounds).await;
    let stopped = cd.stop().map_err(|e| e.to_string());
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    result.and(stopped)
}

async fn measure(cd: &PrivateContainerd, tmp: &Path, rounds: usize) -> Result<(), String> {
    cri::import_images(cd, tmp)?;
    let mut c = cri::connect(cd.socket().to_owned()).await?;
    let dir = cd
        .dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut pods: Vec<String> = Vec::new();
    let mut rss: HashMap<&str, Vec<u64>> = HashMap::new();
    let outcome: Result<(), String> = async {
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                HANDLERS
            } else {
                [HANDLERS[1], HANDLERS[0]]
            };
            for handler in order {
                let t = Instant::now();
                let pod = start_pod(&mut c, &format!("{handler}-{round}"), handler).await?;
                times
                    .entry(handler)
                    .or_default()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                pods.push(pod);
            }
            eprintln!(
                "round {}/{rounds}: cnfbox {:.1} ms, runc {:.1} ms",
                round + 1,
                times["cnfbox"].last().copied().unwrap_or_default(),
                times["runc"].last().copied().unwrap_or_default()
            );
            if round + 1 == RSS_AT {
                rss.insert("cnfbox", shim_rss(SHIM, &dir));
                rss.insert("runc", shim_rss(RUNC_SHIM, &dir));
            }
        }
        Ok(())
    }
    .await;
    eprintln!("removing {} pods", pods.len());
    for p in &pods {
        let _ = c
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.clone(),
            })
            .await;
        let _ = c
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: p.clone(),
            })
            .await;
    }
    outcome?;
    let runc_median = summarize(times.get_mut("runc").ok_or("no runc times")?).0;
    println!("| handler | pod start median (ms) | p90 (ms) | median / runc |");
    println!("|---|---:|---:|---:|");
    for h in HANDLERS {
        let (m, p90) = summarize(times.get_mut(h).ok_or("no times")?);
        println!("| {h} | {m:.1} | {p90:.1} | {:.2} |", m / runc_median);
    }
    println!();
    println!("| shim ({RSS_AT} pods each) | shims | mean RSS per shim (MiB) | total (MiB) |");
    println!("|---|---:|---:|---:|");
    for (h, name) in [("cnfbox", SHIM), ("runc", RUNC_SHIM)] {
        let v = rss.get(h).cloned().unwrap_or_default();
        let total: u64 = v.iter().sum();
        let mean = if v.is_empty() {
            0.0
        } else {
            total as f64 / v.len() as f64
        };
        println!(
            "| {name} | {} | {:.1} | {:.1} |",
            v.len(),
            mean / 1024.0,
            total as f64 / 1024.0
        );
    }
    Ok(())
}
