//! `cnfbox`: a runc-compatible OCI runtime for telecom CNF pods.

mod adopt;
mod bundle;
mod bundle_alias;
mod capabilities;
mod causes;
mod cgroups;
mod cli;
mod commands;
mod config;
mod devices;
mod failpoint;
mod fields;
mod holders;
mod hooks;
mod host;
mod host_ns;
mod journal;
mod logging;
mod meta;
mod net;
mod numa;
mod oom_killer;
mod overlay;
mod pod;
mod profile;
mod propagation;
mod state_lock;
mod sysctl;
mod views;
mod volume_overlay;
mod volumes;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let format = match logging::Format::parse(cli.global.log_format.as_deref()) {
        Ok(f) => f,
        Err(err) => return fail(&anyhow::Error::new(err)),
    };
    if let Err(err) = logging::init(cli.global.log.as_deref(), format, cli.global.debug) {
        return fail(&anyhow::Error::new(err));
    }
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => fail(&err),
    }
}

/// Reports `err` as one line on stderr and, for containerd, in the log
/// (`"level":"error"`). The stderr line starts `cnfbox: error:` so that
/// tools driving a runtime see an error, as runc's `ERRO[...]` lines.
fn fail(err: &anyhow::Error) -> ExitCode {
    // The innermost cause, when libcontainer's forks logged one the chain
    // lost ("failed to prepare rootfs": why).
    let line = causes::complete(format!("{err:#}").replace('\n', " "));
    // What kind of failure, for callers that must tell them apart (the
    // shim's NOT_FOUND) without matching words of the message.
    use cnfbox_annotations::error_kind;
    let kind = if err.chain().any(|e| e.is::<commands::NoSuchContainer>()) {
        error_kind::NOT_FOUND
    } else if err.chain().any(|e| e.is::<commands::NotRunning>()) {
        error_kind::NOT_RUNNING
    } else {
        error_kind::FAILED
    };
    tracing::error!(kind, "{line}");
    eprintln!("cnfbox: error: {line}");
    ExitCode::FAILURE
}
