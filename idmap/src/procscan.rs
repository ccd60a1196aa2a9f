//! Which host IDs live processes use: the user namespace of every process,
//! read from `/proc/PID/uid_map` and `gid_map`.
//!
//! `ranges gc` frees a range only when its owner is proven gone, and a
//! process running in a user namespace mapped on the range is proof of the
//! opposite, whatever the container records say (a state root removed under
//! a running pod, a record lost to a crash). Reading the maps is cheap: one
//! small file per process, and only gc and release by hand do it, never
//! create.
//!
//! user_namespaces(7): read from a process in another user namespace, the
//! outside IDs of a map are shown in the reader's namespace, so from the
//! host's initial namespace every map (nested ones too) reads in host IDs.
//! A process in the reader's own namespace shows the identity map
//! `0 0 4294967295`, and is skipped. Only host root can make another
//! namespace with that map (a pod's nested namespaces map parts of the
//! pod's range), so skipping every such process never hides a pod; it is
//! also what works where `ns/user` links cannot be read (they need ptrace
//! access, uid_map does not).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::range::{parse_decimal_u32, IdRange, PodMapping};

/// Errors scanning `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcScanError {
    /// `readdir` of the proc root, or `read` of a map.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A map line is not `INSIDE OUTSIDE COUNT`.
    #[error("{path}:{line}: expected `INSIDE OUTSIDE COUNT`, found {text:?}")]
    Map {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// The host ranges of one user namespace other than the reader's, and a
/// process in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsUse {
    /// A process in the namespace.
    pub pid: u32,
    /// Host uids its `uid_map` maps.
    pub uids: Vec<IdRange>,
    /// Host gids its `gid_map` maps.
    pub gids: Vec<IdRange>,
}

/// Every user namespace (other than the reader's) that a live process is in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    /// One entry per distinct pair of maps.
    pub namespaces: Vec<NsUse>,
}

impl InUse {
    /// Scans `proc_root` (`/proc` on a host, a fake tree in tests). A
    /// process that exits while it is read is skipped; anything else that
    /// cannot be read is an error, since an unread process might be the
    /// owner.
    pub fn scan(proc_root: &Path) -> Result<Self, ProcScanError> {
        let read_err = |path: PathBuf| move |source| ProcScanError::Read { path, source };
        let entries = std::fs::read_dir(proc_root).map_err(read_err(proc_root.to_owned()))?;
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut namespaces = Vec::new();
        for entry in entries {
            let entry = entry.map_err(read_err(proc_root.to_owned()))?;
            let Some(pid) = entry.file_name().to_str().and_then(parse_decimal_u32) else {
                continue;
            };
            let dir = entry.path();
            let Some(uid_text) = read_gone_ok(&dir.join("uid_map"))? else {
                continue;
            };
            if uid_text.split_whitespace().eq(["0", "0", "4294967295"]) {
                continue;
            }
            // A zombie runs nothing (a killed container's init waits there
            // until its new parent reaps it), so it uses no ID; but a leader
            // thread that exited shows `Z` while its other threads run.
            match read_gone_ok(&dir.join("stat"))? {
                None => continue,
                Some(stat) if is_dead(&stat) && !any_thread_runs(&dir)? => continue,
                Some(_) => {}
            }
            let Some(gid_text) = read_gone_ok(&dir.join("gid_map"))? else {
                continue;
            };
            if !seen.insert((uid_text.clone(), gid_text.clone())) {
                continue;
            }
            namespaces.push(NsUse {
                pid,
                uids: parse_map(&dir.join("uid_map"), &uid_text)?,
                gids: parse_map(&dir.join("gid_map"), &gid_text)?,
            });
        }
        Ok(InUse { namespaces })
    }

    /// A process whose user namespace maps any host uid or gid of `m`.
    pub fn user_of(&self, m: &PodMapping) -> Option<u32> {
        let (u, g) = (m.uid.host_range(), m.gid.host_range());
        self.namespaces
            .iter()
            .find(|ns| {
                ns.uids.iter().any(|r| r.overlaps(&u)) || ns.gids.iter().any(|r| r.overlaps(&g))
            })
            .map(|ns| ns.pid)
    }
}

/// Whether a `/proc/PID/stat` line is of a zombie or dead task (procfs'
/// parse, which finds the state after the last `)` of the command). A line
/// it cannot parse counts as alive: an unread process might be the owner.
fn is_dead(stat: &str) -> bool {
    use procfs::FromRead as _;
    procfs::process::Stat::from_read(stat.as_bytes()).is_ok_and(|s| matches!(s.state, 'Z' | 'X'))
}

/// Whether any thread of the process at `dir` is neither a zombie nor
/// dead (`task/TID/stat`): a process whose leader exited (exit(2) or
/// pthread_exit from `main`) reads `Z` in its own `stat` while its workers
/// run on.
pub fn any_thread_runs(dir: &Path) -> Result<bool, ProcScanError> {
    let tasks = dir.join("task");
    let entries = match std::fs::read_dir(&tasks) {
        Ok(e) => e,
        Err(e) if gone(&e) => return Ok(false),
        Err(source) => {
            return Err(ProcScanError::Read {
                path: tasks,
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| ProcScanError::Read {
            path: tasks.clone(),
            source,
        })?;
        if let Some(stat) = read_gone_ok(&entry.path().join("stat"))? {
            if !is_dead(&stat) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// ENOENT or ESRCH: the process exited while we looked. EINVAL too: it is
/// what opening `uid_map`/`gid_map` of a task that is already gone returns
/// (`proc_id_map_open` finds no task, hence no user namespace).
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EINVAL))
}

fn read_gone_ok(path: &Path) -> Result<Option<String>, ProcScanError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if gone(&e) => Ok(None),
        Err(source) => Err(ProcScanError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The outside (host) ranges of a map; an empty map (a namespace whose
/// maps are not written yet) maps nothing.
fn parse_map(path: &Path, text: &str) -> Result<Vec<IdRange>, ProcScanError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || ProcScanError::Map {
            path: path.to_owned(),
            line: i + 1,
            text: line.to_owned(),
        };
        let f: Vec<u32> = line
            .split_whitespace()
            .map(|w| parse_decimal_u32(w).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        let [_, outside, count] = f.as_slice() else {
            return Err(bad());
        };
        out.push(IdRange::new(*outside, *count).map_err(|_| bad())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Mapping;

    /// A whole `/proc/PID/stat` line (as the kernel writes it) with `comm`
    /// and `state`.
    fn stat(pid: &str, comm: &str, state: char) -> String {
        // The fields after `state` of a real line (a shell's, kernel 6.x).
        const REST: &str = "6788 6788 2307 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 1528672 \
            3133440 388 18446744073709551615 94804246839296 94804246859177 140732960705408 0 0 \
            0 0 0 0 0 0 17 0 0 0 0 0 0 94804246875184 94804246876800 94805319221248 \
            140732960709136 140732960709156 140732960709156 140732960710635 0";
        format!("{pid} ({comm}) {state} {REST}\n")
    }

    fn fake_proc(procs: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (pid, uid, gid) in procs {
            let p = d.path().join(pid);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("uid_map"), uid).expect("uid_map");
            std::fs::write(p.join("gid_map"), gid).expect("gid_map");
            std::fs::write(p.join("stat"), stat(pid, "a b) c", 'S')).expect("stat");
        }
        d
    }

    fn pod(host: u32) -> PodMapping {
        PodMapping::symmetric(Mapping::new(0, host, 65_536).expect("mapping"))
    }

    #[test]
    fn host_processes_are_skipped_and_pods_found() {
        let full = "         0          0 4294967295\n";
        let d = fake_proc(&[
            ("1", full, full),
            ("20", "0 1048576 65536\n", "0 1048576 65536\n"),
            ("21", "0 1048576 65536\n", "0 1048576 65536\n"),
            // A nested namespace of a pod: part of the pod's range.
            ("22", "0 1048577 1000\n", "0 1048577 1000\n"),
            // Not written yet: maps nothing.
            ("23", "", ""),
            ("self", "garbage", "garbage"),
        ]);
        let used = InUse::scan(d.path()).expect("scan");
        assert_eq!(used.namespaces.len(), 3, "{used:?}");
        // Zombies run nothing.
        for pid in ["20", "21", "22"] {
            std::fs::write(d.path().join(pid).join("stat"), stat(pid, "sleep", 'Z')).expect("stat");
        }
        let used = InUse::scan(d.path()).expect("scan");
        assert_eq!(used.user_of(&pod(1_048_576)), None, "{used:?}");
        // ... unless another thread of the process still runs.
        let task = d.path().join("21/task/25");
        std::fs::create_dir_all(&task).expect("task dir");
        std::fs::write(task.join("stat"), stat("25", "worker", 'S')).expect("stat");
        let used = InUse::scan(d.path()).expect("scan");
        assert_eq!(used.user_of(&pod(1_048_576)), Some(21), "{used:?}");
        std::fs::write(task.join("stat"), stat("25", "worker", 'Z')).expect("stat");
        let used = InUse::scan(d.path()).expect("scan");
        assert_eq!(used.user_of(&pod(1_048_576)), None, "{used:?}");
        for pid in ["20", "21", "22"] {
            std::fs::write(d.path().join(pid).join("stat"), stat(pid, "x) Z", 'R')).expect("stat");
        }
        let used = InUse::scan(d.path()).expect("scan");
        assert!(
            matches!(used.user_of(&pod(1_048_576)), Some(20 | 21)),
            "{used:?}"
        );
        assert_eq!(used.user_of(&pod(1_048_576 + 65_536)), None);
        assert_eq!(used.user_of(&pod(1_048_576 - 65_536)), None);
    }

    #[test]
    fn a_gid_only_overlap_counts_and_bad_maps_are_errors() {
        let d = fake_proc(&[("5", "0 3000000 65536\n", "0 1048576 10\n")]);
        let used = InUse::scan(d.path()).expect("scan");
        assert_eq!(used.user_of(&pod(1_048_576)), Some(5));
        std::fs::write(d.path().join("5/uid_map"), "0 x 1\n").expect("write");
        let err = InUse::scan(d.path()).expect_err("bad map");
        assert!(err.to_string().contains("5/uid_map:1"), "{err}");
    }

    /// A real process whose main thread exited while a worker runs: its
    /// `stat` says `Z`, and it is alive all the same.
    #[test]
    fn a_process_whose_leader_exited_runs_while_a_thread_does() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child starts one thread, then ends its main thread
        // with exit(2); the worker blocks on the pipe and exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(w);
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
                    // SAFETY: ends the whole process from the worker.
                    unsafe { libc::_exit(0) }
                });
                // exit(2), not pthread_exit (whose forced unwind would run
                // through the test harness and abort the process).
                // SAFETY: ends only the calling (main) thread, without
                // unwinding; the worker runs on.
                unsafe { libc::syscall(libc::SYS_exit, 0) };
                unreachable!("exit(2) returned")
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(r);
                let dir = Path::new("/proc").join(child.as_raw().to_string());
                // The leader is a zombie once its exit is through.
                let mut leader_dead = false;
                for _ in 0..100_000 {
                    let stat = std::fs::read_to_string(dir.join("stat")).expect("stat");
                    if is_dead(&stat) {
                        leader_dead = true;
                        break;
                    }
                    std::thread::yield_now();
                }
                let runs = any_thread_runs(&dir).expect("tasks");
                // What `scan` reads first must read for such a process too.
                let map = read_gone_ok(&dir.join("uid_map")).expect("uid_map");
                drop(w);
                let _ = nix::sys::wait::waitpid(child, None);
                assert!(leader_dead, "the leader never read Z");
                assert!(runs, "the worker thread was not seen running");
                assert!(
                    map.is_some(),
                    "uid_map of a process whose leader exited read as gone"
                );
                assert!(!any_thread_runs(&dir).expect("tasks of a reaped process"));
            }
        }
    }

    #[test]
    fn the_real_proc_reads() {
        let used = InUse::scan(Path::new("/proc")).expect("scan /proc");
        // The test runs in the initial user namespace: its own pid is not
        // listed.
        let me = std::process::id();
        assert!(used.namespaces.iter().all(|ns| ns.pid != me), "{used:?}");
    }
}
