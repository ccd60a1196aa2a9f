//! Command line: runc's global flags and commands, on liboci-cli's types.

use clap::{Args, Parser, Subcommand};
use liboci_cli::{
    Create, Delete, Events, Exec, Features, List, Pause, Ps, Resume, Run, Spec, Start, State,
    Update,
};

/// cnfbox: an OCI runtime for telecom CNF pods (runc-compatible).
#[derive(Parser, Debug)]
#[command(name = "cnfbox", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// runc's global options.
#[derive(Args, Debug)]
pub struct Global {
    /// Root directory for container state
    #[arg(long, global = true, default_value = "/run/cnfbox")]
    pub root: std::path::PathBuf,
    /// Log file (default: none; errors go to stderr)
    #[arg(long, global = true)]
    pub log: Option<std::path::PathBuf>,
    /// Log format: text or json
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// Log at debug level
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use the systemd cgroup driver (requires a running systemd)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
}

/// `kill` as runc takes it: the signal is optional and defaults to TERM.
#[derive(Args, Debug)]
pub struct Kill {
    /// Container ID
    pub container_id: String,
    /// Signal name or number (default TERM)
    #[arg(default_value = "TERM")]
    pub signal: String,
    /// Send the signal to every process of the container
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle
    Create(Create),
    /// Start a created container
    Start(Start),
    /// Create and start a container
    Run(Run),
    /// Print a container's state (runc's JSON)
    State(State),
    /// Send a signal to a container
    Kill(Kill),
    /// Delete a container
    Delete(Delete),
    /// Run a process in a running container
    Exec(Exec),
    /// List the processes of a container
    Ps(Ps),
    /// List containers
    List(List),
    /// Freeze a container
    Pause(Pause),
    /// Thaw a container
    Resume(Resume),
    /// Print resource statistics
    Events(Events),
    /// Update resource limits
    Update(Update),
    /// Print the OCI features document
    Features(Features),
    /// Write a default config.json
    Spec(Spec),
    /// Per-pod host ID ranges: list, show, release, gc, repair
    Ranges(crate::commands::ranges::Ranges),
    /// Show a pod's host ID range, containers, capabilities, namespaces and id-mapped mounts
    Inspect(crate::commands::inspect::Inspect),
    /// Give cnfbox a host ID pool (subuid/subgid entries and config.toml)
    Setup(crate::commands::ranges::Setup),
    /// Runs an OCI hook with the user's bundle in its state (cnfbox's own use)
    #[command(name = "hook-relay", hide = true)]
    HookRelay(HookRelay),
}

/// `hook-relay --bundle BUNDLE -- PATH ARG0 ARGS...` (see `hooks.rs`).
#[derive(Args, Debug)]
pub struct HookRelay {
    /// The bundle the user gave to create
    #[arg(long)]
    pub bundle: std::path::PathBuf,
    /// Where to write the hook's path when it fails (a poststop hook's, in
    /// the container's state dir)
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// The hook's path
    pub path: std::path::PathBuf,
    /// The hook's argv, arg0 first
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<String>,
}
