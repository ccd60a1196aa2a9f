//! `cnfbox-test-bundles`: writes test bundles and image archives.
//!
//! ```text
//! cnfbox-test-bundles bundle --scenario exit:3 /tmp/b
//! cnfbox-test-bundles bundle --files 50000 /tmp/big --args /bin/sh -c 'exit 0'
//! cnfbox-test-bundles image --out busybox.tar
//! cnfbox-test-bundles image --out pause.tar --pause
//! cnfbox-test-bundles critest-images --registry 127.0.0.1:5000 --shell-tree T --work W
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use test_bundles::{BundleBuilder, ImageBuilder, Scenario};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "cnfbox-test-bundles", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write an OCI runtime bundle (DIR/rootfs + DIR/config.json).
    Bundle {
        /// true, sleep, exit:N, echo:TEXT, checker or pause.
        #[arg(long, default_value = "true")]
        scenario: Scenario,
        /// Extra filler files in the rootfs (under /usr/share/filler).
        #[arg(long, default_value_t = 0)]
        files: usize,
        /// Container hostname.
        #[arg(long)]
        hostname: Option<String>,
        /// linux.cgroupsPath (default: unset, the runtime decides).
        #[arg(long)]
        cgroups_path: Option<PathBuf>,
        /// Add a cgroup namespace.
        #[arg(long)]
        cgroupns: bool,
        /// process.terminal = true.
        #[arg(long)]
        terminal: bool,
        /// KEY=VALUE added to process.env (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// KEY=VALUE added to annotations (repeatable).
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        /// Bundle directory (created; must not hold a config.json).
        dir: PathBuf,
        /// Process args replacing the scenario's; takes everything after it.
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARG")]
        args: Vec<String>,
    },
    /// Write an OCI image layout tar for `ctr images import`.
    Image {
        /// Output archive.
        #[arg(long)]
        out: PathBuf,
        /// Image reference (default docker.io/cnfbox/busybox:test, or
        /// docker.io/cnfbox/pause:test with --pause).
        #[arg(long = "ref")]
        reference: Option<String>,
        /// Build the pause image.
        #[arg(long)]
        pause: bool,
    },
    /// Build the stand-ins of the images critest pulls and push them to a
    /// registry (HTTP) under their repository paths.
    CritestImages {
        /// The registry, HOST:PORT.
        #[arg(long)]
        registry: String,
        /// Tree copied over the default image: a PATH-searching `bin/sh`
        /// and its libraries.
        #[arg(long)]
        shell_tree: PathBuf,
        /// Scratch directory for the helpers.
        #[arg(long)]
        work: PathBuf,
    },
}

fn key_value(s: &str) -> Result<(&str, &str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("{s:?} is not KEY=VALUE"),
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bundle {
            scenario,
            files,
            hostname,
            cgroups_path,
            cgroupns,
            terminal,
            env,
            annotations,
            dir,
            args,
        } => {
            let mut b = BundleBuilder::new(&dir)
                .scenario(&scenario)
                .files(files)
                .terminal(terminal)
                .cgroup_namespace(cgroupns);
            if !args.is_empty() {
                b = b.args(args);
            }
            if let Some(h) = hostname {
                b = b.hostname(h);
            }
            if let Some(p) = cgroups_path {
                b = b.cgroups_path(p);
            }
            for e in &env {
                let (k, v) = key_value(e).context("--env")?;
                b = b.env(k, v);
            }
            for a in &annotations {
                let (k, v) = key_value(a).context("--annotation")?;
                b = b.annotation(k, v);
            }
            let bundle = b
                .build()
                .with_context(|| format!("writing bundle {}", dir.display()))?;
            println!("bundle={}", bundle.dir.display());
            println!("config={}", bundle.config_path.display());
        }
        Command::Image {
            out,
            reference,
            pause,
        } => {
            let mut b = if pause {
                ImageBuilder::pause()
            } else {
                ImageBuilder::busybox()
            };
            if let Some(r) = reference {
                b = b.reference(r);
            }
            let image = b
                .write(&out)
                .with_context(|| format!("writing image archive {}", out.display()))?;
            println!("archive={}", image.path.display());
            println!("reference={}", image.reference);
            println!("manifest={}", image.manifest_digest);
        }
        Command::CritestImages {
            registry,
            shell_tree,
            work,
        } => {
            let inputs = test_bundles::critest::CritestInputs { shell_tree, work };
            let pushed = test_bundles::critest::push_all(&inputs, &registry)
                .with_context(|| format!("pushing critest images to {registry}"))?;
            for (reference, digest) in pushed {
                println!("{reference} {digest}");
            }
        }
    }
    Ok(())
}
