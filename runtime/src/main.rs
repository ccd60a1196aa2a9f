//! `cnfbox`: a runc-compatible OCI runtime for telecom CNF pods.

mod adopt;
mod bundle;
mod capabilities;
mod cgroups;
mod cli;
mod commands;
mod failpoint;
mod hugepages;
mod hugetlb;
mod hugetlbfs;
mod logging;
mod mempolicy;
mod meta;
mod net;
mod numa;
mod overlay;
mod pod;
mod profile;
mod views;
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

/// Reports `err` as one line on stderr and, for containerd, in the log.
fn fail(err: &anyhow::Error) -> ExitCode {
    let line = format!("{err:#}").replace('\n', " ");
    tracing::error!("{line}");
    eprintln!("cnfbox: {line}");
    ExitCode::FAILURE
}
