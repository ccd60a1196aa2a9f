//! `containerd-shim-cnfbox-v2`: containerd's shim v2 (task API v2, ttrpc)
//! for cnfbox pods. One shim process serves a whole pod; it drives the
//! `cnfbox` binary as containerd-shim-runc-v2 drives runc.

mod errors;
mod exits;
mod info;
mod io;
mod oom;
mod options;
mod process;
mod rootfs;
mod runtime;
mod shim;
mod start;
mod stats;
mod stop;
mod task;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.cnfbox.v2";

fn main() {
    // containerd 2.x asks `-info` before any shim exists; answer without
    // starting the async machinery (and its reaper).
    if std::env::args()
        .skip(1)
        .any(|a| a == "-info" || a == "--info")
    {
        std::process::exit(info::print());
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("containerd-shim-cnfbox-v2: starting the async runtime: {err}");
            std::process::exit(1);
        }
    };
    rt.block_on(containerd_shim::asynchronous::run::<shim::CnfboxShim>(
        RUNTIME_ID, None,
    ));
}
