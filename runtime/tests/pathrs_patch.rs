//! The patched pathrs (vendor/pathrs/NOTE.md): its cached procfs handle is
//! revalidated by the unique mount id only, and that check still refuses a
//! cached fd that was replaced. Its own test binary: the cache is global to
//! the process.

use std::os::fd::{AsFd, AsRawFd};

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};

#[test]
fn replaced_cached_procfs_handle_is_not_used() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP pathrs cache: needs root (fsopen of procfs; unprivileged handles are never cached)");
        return;
    }
    let first = ProcfsHandle::new().expect("procfs handle");
    let cached = first.as_fd().as_raw_fd();
    let again = ProcfsHandle::new().expect("procfs handle");
    if again.as_fd().as_raw_fd() != cached {
        eprintln!("SKIP pathrs cache: this kernel gave no cacheable handle (no fsopen subset=pid)");
        return;
    }
    // The fast path is taken and works: a procfs file reads through it.
    let mut status = String::new();
    std::io::Read::read_to_string(
        &mut again
            .open(ProcfsBase::ProcSelf, "status", OpenFlags::O_RDONLY)
            .expect("open self/status through the cached handle"),
        &mut status,
    )
    .unwrap();
    assert!(status.contains("Pid:"), "{status}");
    drop((first, again));

    // Another procfs root (the host's /proc: procfs, inode 1, but neither
    // detached nor subset=pid) dup2'ed over the cached fd: only the mount id
    // tells it apart, and the handle must not be handed out.
    let host_proc = std::fs::File::open("/proc").expect("open /proc");
    nix::unistd::dup2(host_proc.as_raw_fd(), cached).expect("dup2 over the cached fd");
    let next = ProcfsHandle::new().expect("procfs handle after the cached one went bad");
    assert_ne!(
        next.as_fd().as_raw_fd(),
        cached,
        "the replaced cached procfs fd was handed out as the safe procfs handle"
    );
}
