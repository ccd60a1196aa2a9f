//! `cnfbox ranges` and `cnfbox setup`: which pod owns which host IDs, and
//! giving cnfbox an ID pool.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use idmap::{Allocator, Config, EtcRoot, Format, PodMapping, SetupOptions};

use super::Ctx;
use crate::meta::ContainerMeta;

/// `cnfbox ranges ...`
#[derive(Args, Debug)]
pub struct Ranges {
    /// Output format: text or json
    #[arg(long, global = true, default_value = "text")]
    pub format: String,
    /// Root of the host's /etc (subuid, subgid, cnfbox/config.toml)
    #[arg(long, global = true, default_value = "/etc", hide = true)]
    pub etc: PathBuf,
    #[command(subcommand)]
    pub command: RangesCmd,
}

#[derive(Subcommand, Debug)]
pub enum RangesCmd {
    /// Every pod's host ID range
    List,
    /// One pod's host ID range
    Show { pod: String },
    /// Free a pod's range (only for a pod that is gone)
    Release { pod: String },
    /// Free the ranges of pods that have no container left
    Gc {
        /// Keep ranges granted less than this many seconds ago (a pod
        /// between allocation and its first container)
        #[arg(long, default_value = "300")]
        grace: u64,
    },
    /// Rebuild the ledger from the live containers (after corruption)
    Repair,
}

/// `cnfbox setup`
#[derive(Args, Debug)]
pub struct Setup {
    /// Root of the host's /etc to write subuid, subgid and cnfbox/config.toml in
    #[arg(long, default_value = "/etc", hide = true)]
    pub etc: PathBuf,
    /// Host IDs in cnfbox's pool, a multiple of 65536 (default: 1024 pods)
    #[arg(long)]
    pub pool_size: Option<u32>,
    /// Host IDs per pod, a multiple of 65536
    #[arg(long)]
    pub range_size: Option<u32>,
    /// Where the allocation ledger lives
    #[arg(long)]
    pub ledger_dir: Option<PathBuf>,
    /// Output format: text or json
    #[arg(long, default_value = "text")]
    pub format: String,
}

fn format(s: &str) -> anyhow::Result<Format> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("--format {s:?}: expected text or json"))
}

fn allocator(etc: &EtcRoot) -> anyhow::Result<Allocator> {
    let config = Config::load(etc)?;
    Ok(Allocator::from_config(&config, etc)?)
}

/// The pods of the containers in the state root, with their mappings.
fn live_pods(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, Option<PodMapping>>> {
    let mut pods = BTreeMap::new();
    let Ok(entries) = fs::read_dir(&ctx.root) else {
        return Ok(pods);
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("read state root {}", ctx.root.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // A container deleted while we scan simply does not count.
        let Ok(meta) = ContainerMeta::load(&entry.path()) else {
            continue;
        };
        if let Some(pod) = meta.pod {
            let slot = pods.entry(pod).or_insert(None);
            if slot.is_none() {
                *slot = meta.mapping;
            }
        }
    }
    Ok(pods)
}

pub fn ranges(ctx: &Ctx, a: &Ranges) -> anyhow::Result<()> {
    let fmt = format(&a.format)?;
    let etc = EtcRoot::new(&a.etc);
    let alloc = allocator(&etc)?;
    let entries = match &a.command {
        RangesCmd::List => alloc.list()?,
        RangesCmd::Show { pod } => vec![alloc
            .show(pod)?
            .ok_or_else(|| anyhow::anyhow!("pod {pod:?} holds no host ID range"))?],
        RangesCmd::Release { pod } => {
            if live_pods(ctx)?.contains_key(pod) {
                anyhow::bail!(
                    "pod {pod:?} still has containers in {}: delete them first",
                    ctx.root.display()
                );
            }
            vec![alloc
                .release(pod)?
                .ok_or_else(|| anyhow::anyhow!("pod {pod:?} holds no host ID range"))?]
        }
        RangesCmd::Gc { grace } => {
            let live: HashSet<String> = live_pods(ctx)?.into_keys().collect();
            alloc.gc(&live, Duration::from_secs(*grace))?
        }
        RangesCmd::Repair => {
            let live = live_pods(ctx)?
                .into_iter()
                .filter_map(|(pod, m)| m.map(|m| (pod, m)));
            let report = alloc.repair(live)?;
            if fmt == Format::Text {
                eprintln!(
                    "ledger rebuilt: previous {}; old file kept as {}",
                    report.previous,
                    report
                        .saved_as
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(none)".into())
                );
            }
            report.entries
        }
    };
    print!("{}", idmap::render_entries(&entries, fmt)?);
    Ok(())
}

pub fn setup(a: &Setup) -> anyhow::Result<()> {
    let fmt = format(&a.format)?;
    let etc = EtcRoot::new(&a.etc);
    let defaults = SetupOptions::default();
    let opts = SetupOptions {
        pool_size: a.pool_size.unwrap_or(defaults.pool_size),
        range_size: a.range_size.unwrap_or(defaults.range_size),
        ledger_dir: a.ledger_dir.clone().unwrap_or(defaults.ledger_dir),
    };
    let report = idmap::setup(&etc, &etc.config_path(), &opts)?;
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => println!(
            "uid pool {}\ngid pool {}\nsubuid: {:?}\nsubgid: {:?}\nconfig {}: {:?}",
            report.uid_pool,
            report.gid_pool,
            report.subuid,
            report.subgid,
            report.config_path.display(),
            report.config
        ),
    }
    Ok(())
}
