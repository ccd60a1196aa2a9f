//! The mappings of a user namespace given by path.
//!
//! containerd 2.x creates a kubelet user-namespace pod's network namespace
//! inside a user namespace of kubelet's mappings, pins that user namespace
//! (`.../pinned-namespaces/user`) and gives the sandbox its path: the pod
//! must join it, or pod root would have no capability over its own network
//! namespace. Before cnfbox registers and joins it, it reads the mappings
//! the kernel holds for it, so the ledger records what the pod really maps.
//!
//! A pinned namespace has no process to read `/proc/PID/uid_map` of: a
//! forked child joins it (setns(2) needs a single-threaded caller, which a
//! fresh child is) and reads its own maps, which the kernel shows relative
//! to the parent namespace. The child only makes raw syscalls.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use idmap::{Mapping, PodMapping};

/// NS_GET_NSTYPE, ioctl_ns(2): _IO(0xb7, 0x3).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Errors reading a user namespace's mappings.
#[derive(Debug, thiserror::Error)]
pub enum UsernsPathError {
    #[error("open user namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a user namespace")]
    NotUserns { path: PathBuf },
    #[error("pipe for reading the mappings of {path}")]
    Pipe {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("fork to read the mappings of {path}")]
    Fork {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("joining user namespace {path} to read its mappings failed")]
    Join { path: PathBuf },
    #[error("user namespace {path}: {what} {text:?} is not one contiguous range")]
    Maps {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
}

/// The uid and gid mappings of the user namespace at `path`; each must be
/// one line (cnfbox gives a pod one contiguous range).
pub fn mappings(path: &Path) -> Result<PodMapping, UsernsPathError> {
    let ns = File::open(path).map_err(|source| UsernsPathError::Open {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: `ns` is an open fd for the call; NS_GET_NSTYPE takes no
    // argument and returns the namespace type or -1.
    let typ = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE) };
    if typ != libc::CLONE_NEWUSER {
        return Err(UsernsPathError::NotUserns {
            path: path.to_owned(),
        });
    }
    let text = read_in_child(&ns, path)?;
    let (uid, gid) = text.split_once('\0').unwrap_or((&text, ""));
    Ok(PodMapping {
        uid: one_line(path, "uid_map", uid)?,
        gid: one_line(path, "gid_map", gid)?,
    })
}

fn one_line(path: &Path, what: &'static str, text: &str) -> Result<Mapping, UsernsPathError> {
    let bad = || UsernsPathError::Maps {
        path: path.to_owned(),
        what,
        text: text.to_owned(),
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or_else(bad)?;
    if lines.next().is_some() {
        return Err(bad());
    }
    let n: Vec<u32> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [c, h, s] = n[..] else {
        return Err(bad());
    };
    Mapping::new(c, h, s).map_err(|_| bad())
}

/// Forks a child that joins `ns` and writes its uid_map, a NUL and its
/// gid_map to a pipe.
fn read_in_child(ns: &File, path: &Path) -> Result<String, UsernsPathError> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| {
        UsernsPathError::Pipe {
            path: path.to_owned(),
            source,
        }
    })?;
    // SAFETY: the child only makes async-signal-safe raw syscalls (setns,
    // open, read, write, close, _exit) on buffers of its own stack before
    // it exits; it never returns into Rust code of the parent's threads.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => child_main(ns.as_raw_fd(), wr.as_raw_fd()),
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(source) => {
            return Err(UsernsPathError::Fork {
                path: path.to_owned(),
                source,
            })
        }
    };
    drop(wr);
    let mut text = String::new();
    let read = File::from(rd).read_to_string(&mut text);
    let status = nix::sys::wait::waitpid(child, None);
    match (read, status) {
        (Ok(_), Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) => Ok(text),
        _ => Err(UsernsPathError::Join {
            path: path.to_owned(),
        }),
    }
}

/// The forked child: never returns.
fn child_main(ns: i32, out: i32) -> ! {
    const MAPS: [&std::ffi::CStr; 2] = [c"/proc/self/uid_map", c"/proc/self/gid_map"];
    const NUL: [u8; 1] = [0];
    // SAFETY: raw syscalls on fds this process holds and on its own stack
    // buffer; the paths are C strings.
    unsafe {
        if libc::setns(ns, libc::CLONE_NEWUSER) != 0 {
            libc::_exit(1);
        }
        for (i, p) in MAPS.iter().enumerate() {
            if i > 0 && libc::write(out, NUL.as_ptr().cast(), 1) != 1 {
                libc::_exit(1);
            }
            let fd = libc::open(p.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                libc::_exit(1);
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n < 0 {
                    libc::_exit(1);
                }
                if n == 0 {
                    break;
                }
                if libc::write(out, buf.as_ptr().cast(), n as usize) != n {
                    libc::_exit(1);
                }
            }
            libc::close(fd);
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_of_a_fresh_user_namespace_are_read_back() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root to write a user namespace's maps");
            return;
        }
        // A child in a new user namespace that waits; host root maps it.
        let mut child = std::process::Command::new("unshare")
            .args(["-U", "sleep", "30"])
            .spawn()
            .expect("unshare");
        let pid = child.id();
        let ns = PathBuf::from(format!("/proc/{pid}/ns/user"));
        for _ in 0..200 {
            let own = std::fs::read_link(&ns).ok();
            if own.is_some() && own != std::fs::read_link("/proc/self/ns/user").ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 3000000000 65536").expect("uid_map");
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 3000065536 65536").expect("gid_map");
        let m = mappings(&ns).expect("mappings");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(m.uid, Mapping::new(0, 3_000_000_000, 65536).unwrap());
        assert_eq!(m.gid, Mapping::new(0, 3_000_065_536, 65536).unwrap());
    }

    #[test]
    fn a_path_that_is_no_user_namespace_is_refused() {
        let e = mappings(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(matches!(e, UsernsPathError::NotUserns { .. }), "{e}");
        let e = mappings(Path::new("/nonexistent/ns")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    }

    #[test]
    fn several_lines_or_garbage_are_refused() {
        let p = Path::new("/x");
        assert!(one_line(p, "uid_map", "0 100 10\n10 200 10\n").is_err());
        assert!(one_line(p, "uid_map", "zero\n").is_err());
        assert!(one_line(p, "uid_map", "").is_err());
        assert_eq!(
            one_line(p, "uid_map", "         0     200000      65536\n").unwrap(),
            Mapping::new(0, 200_000, 65536).unwrap()
        );
    }
}
