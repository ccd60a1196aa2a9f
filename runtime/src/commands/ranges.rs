//! `cnfbox ranges` and `cnfbox setup`: which pod owns which host IDs, and
//! giving cnfbox an ID pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use idmap::{Allocator, EtcRoot, Format, PodEntry, PodMapping, Release, SetupOptions};

use super::Ctx;
use crate::holders;

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
    /// Free the range of a pod of this --root (only for a pod that is gone)
    Release { pod: String },
    /// Free the ranges whose owner is provably gone, in every state root:
    /// no container of the pod in its root (or the root removed) and no
    /// process in a user namespace mapped on the range
    Gc {
        /// Keep ranges granted less than this many seconds ago (a pod
        /// between allocation and its first container)
        #[arg(long, default_value = "300")]
        grace: u64,
    },
    /// Rebuild the ledger from the live containers of this --root, of the
    /// roots the old ledger names and of the default roots (after corruption)
    Repair,
}

/// `cnfbox setup`
#[derive(Args, Debug)]
#[command(after_help = SETUP_HELP)]
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
    /// Host IDs of the `kubelet` subuid/subgid entry written when there is
    /// none (kubelet's own user-namespace pool), a multiple of 65536
    /// (default: 110 pods, kubelet's default maxPods)
    #[arg(long)]
    pub kubelet_pool_size: Option<u32>,
    /// Output format: text or json
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// What `cnfbox setup --help` says after the options.
const SETUP_HELP: &str = "\
Files: the config is $CNFBOX_CONFIG when set, else /etc/cnfbox/config.toml;
the pool goes to /etc/subuid and /etc/subgid as `cnfbox:START:SIZE` lines and
to the config as `[idmap] pool = \"START:SIZE\"`. Running setup again
changes nothing.

Where the pool starts: setup takes the lowest free block above the host's
IDs (65536) that no other subuid/subgid entry uses. To choose the start,
write it first, in either place (START and SIZE multiples of 65536), e.g.

    [idmap]
    pool = \"1073741824:67108864\"

and run setup: it keeps what it finds and writes the other side to match
(one that disagrees is reported, never overwritten).";

fn format(s: &str) -> anyhow::Result<Format> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("--format {s:?}: expected text or json"))
}

fn allocator(etc: &EtcRoot) -> anyhow::Result<Allocator> {
    let config = crate::config::load(&etc.config_path())?.idmap(crate::config::named_by_env())?;
    Ok(Allocator::from_config(&config, etc)?)
}

/// Why the range of `e` is still in use, or `None` when its owner is
/// provably gone: no process runs in a user namespace mapped on it, and no
/// container of the pod is left in its state root (gone or empty). An
/// entry that recorded no root (a v1 ledger's) may belong to any root, so
/// every root this command can know of is searched: its own `--root`, the
/// roots the ledger names, and the CLI's and the shim's default roots.
fn held_by(
    e: &PodEntry,
    here: &Path,
    ledger_roots: &[PathBuf],
    used: &idmap::InUse,
) -> Option<String> {
    if let Some(pid) = used.user_of(&e.mapping) {
        return Some(format!(
            "process {pid} runs in a user namespace mapped on its host IDs"
        ));
    }
    let roots: Vec<PathBuf> = match &e.root {
        Some(r) => vec![r.clone()],
        None => std::iter::once(here.to_path_buf())
            .chain(ledger_roots.iter().cloned())
            .chain(holders::conventional_roots())
            .collect(),
    };
    roots.iter().find_map(|r| holders::in_root(r, &e.pod, None))
}

/// Scans `/proc` once, at the first entry that needs it (under the ledger
/// lock); a failed scan keeps every range and is reported afterwards.
struct LazyScan {
    used: Option<idmap::InUse>,
    error: Option<idmap::ProcScanError>,
}

impl LazyScan {
    fn new() -> Self {
        LazyScan {
            used: None,
            error: None,
        }
    }

    fn get(&mut self) -> Option<&idmap::InUse> {
        if self.used.is_none() && self.error.is_none() {
            match idmap::InUse::scan(Path::new("/proc")) {
                Ok(u) => self.used = Some(u),
                Err(e) => self.error = Some(e),
            }
        }
        self.used.as_ref()
    }

    fn check(self) -> anyhow::Result<()> {
        match self.error {
            Some(e) => Err(anyhow::Error::new(e)
                .context("find the processes using host ID ranges (nothing was freed)")),
            None => Ok(()),
        }
    }
}

/// The live pods of every root in `roots` (state root, pod, mapping), from
/// their container records.
fn live_pods(roots: &[PathBuf]) -> anyhow::Result<Vec<(Option<PathBuf>, String, PodMapping)>> {
    let mut live = BTreeMap::new();
    for root in roots {
        let found = holders::containers(root)
            .with_context(|| format!("read state root {}", root.display()))?;
        for c in found {
            if let Some(m) = c.mapping {
                live.entry((root.clone(), c.pod)).or_insert(m);
            }
        }
    }
    Ok(live
        .into_iter()
        .map(|((root, pod), m)| (Some(root), pod, m))
        .collect())
}

pub fn ranges(ctx: &Ctx, a: &Ranges) -> anyhow::Result<()> {
    let fmt = format(&a.format)?;
    let etc = EtcRoot::new(&a.etc);
    let alloc = allocator(&etc)?;
    let here = holders::root_key(&ctx.root);
    let entries = match &a.command {
        RangesCmd::List => alloc.list()?,
        RangesCmd::Show { pod } => vec![alloc
            .show_in(Some(&here), pod)?
            .ok_or_else(|| anyhow::anyhow!("pod {pod:?} holds no host ID range"))?],
        RangesCmd::Release { pod } => {
            let mut scan = LazyScan::new();
            let outcome = alloc.release_in(Some(&here), pod, |e| {
                let Some(used) = scan.get() else {
                    return Some("the processes using it are unknown".into());
                };
                held_by(e, &here, &[], used)
            })?;
            scan.check()?;
            match outcome {
                Release::Freed(e) => vec![e],
                Release::NotHeld => anyhow::bail!("pod {pod:?} holds no host ID range"),
                Release::Kept { reason, .. } => anyhow::bail!(
                    "pod {pod:?} of {} still has containers or processes ({reason}): delete them first",
                    here.display()
                ),
            }
        }
        RangesCmd::Gc { grace } => {
            let mut scan = LazyScan::new();
            let freed = alloc.gc_with(Duration::from_secs(*grace), |e, roots| {
                let Some(used) = scan.get() else {
                    return Some("the processes using it are unknown".into());
                };
                held_by(e, &here, roots, used)
            })?;
            scan.check()?;
            // What the freed pods left mounted without a delete goes too.
            for e in &freed {
                if let Some(root) = &e.root {
                    crate::journal::sweep::orphans(root, &e.mapping.uid.host_range());
                }
            }
            freed
        }
        RangesCmd::Repair => {
            // Every root whose pods the ledger holds: this one and those the
            // old ledger names (read past a bad checksum). A healthy
            // ledger's other entries are kept, so a root it lost is added
            // by a repair with that --root.
            let mut roots = vec![here.clone()];
            roots.extend(idmap::ledger::salvage_roots(&alloc.ledger().path()));
            roots.sort();
            roots.dedup();
            let live = live_pods(&roots)?;
            let mut scan = LazyScan::new();
            let report = alloc.repair_in(&roots, live, |e| {
                // A rootless entry no record replaced: gone only if no
                // process uses it either.
                scan.get().is_some_and(|u| u.user_of(&e.mapping).is_none())
            })?;
            scan.check()?;
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
        kubelet_pool_size: a.kubelet_pool_size.unwrap_or(defaults.kubelet_pool_size),
        registry: defaults.registry,
    };
    // An existing config must be one the runtime accepts before setup
    // builds on it, and the one setup writes must be too.
    let path = etc.config_path();
    crate::config::Config::read(&path)?;
    let report = idmap::setup(&etc, &path, &opts)?;
    crate::config::Config::read(&path)?;
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => println!(
            "uid pool {}\ngid pool {}\nkubelet pool {}\nsubuid: {:?}\nsubgid: {:?}\nconfig {}: {:?}",
            report.uid_pool,
            report.gid_pool,
            report.kubelet_pool,
            report.subuid,
            report.subgid,
            report.config_path.display(),
            report.config
        ),
    }
    if !report.kubelet_user {
        eprintln!(
            "warning: no `kubelet` user in {}: kubelet ignores its subuid entry {} and picks \
             user-namespace ranges from all IDs >= 65536, overlapping cnfbox's pool (cnfbox then \
             refuses those pods); create the user (useradd --system kubelet) and install getsubids",
            etc.passwd().display(),
            report.kubelet_pool
        );
    }
    Ok(())
}
