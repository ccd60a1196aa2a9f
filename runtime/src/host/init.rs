//! Whether a pid is still the process cnfbox recorded: its start time
//! (`/proc/<pid>/stat` field 22, clock ticks after boot) is read once and
//! compared, as runc does. A pid is reused once its process is reaped; the
//! reuser started later.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("read {proc}/{pid}/stat")]
    Stat {
        proc: String,
        pid: i32,
        #[source]
        source: procfs::ProcError,
    },
}

/// The start time of process `pid` under the proc root `proc`.
pub fn start_time(proc: &Path, pid: i32) -> Result<u64, InitError> {
    procfs::process::Process::new_with_root(proc.join(pid.to_string()))
        .and_then(|p| p.stat())
        .map(|s| s.starttime)
        .map_err(|source| InitError::Stat {
            proc: proc.display().to_string(),
            pid,
            source,
        })
}

/// Whether `pid` is still the process that started at `start`: it exists,
/// started then, and has not exited (a zombie has).
pub fn is(proc: &Path, pid: i32, start: u64) -> bool {
    procfs::process::Process::new_with_root(proc.join(pid.to_string()))
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.starttime == start && s.state != 'Z' && s.state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid: i32, state: char, start: u64) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(pid.to_string());
        std::fs::create_dir(&dir).unwrap();
        // Fields 3 (state) and 22 (starttime) matter; the rest are zeros.
        let mut fields = vec!["0".to_string(); 52];
        fields[0] = pid.to_string();
        fields[1] = "(sle ep)".to_string();
        fields[2] = state.to_string();
        fields[21] = start.to_string();
        std::fs::write(dir.join("stat"), fields.join(" ") + "\n").unwrap();
        root
    }

    #[test]
    fn a_pid_is_the_init_only_with_its_start_time_and_alive() {
        let proc = fake_proc(42, 'S', 1234);
        assert_eq!(start_time(proc.path(), 42).unwrap(), 1234);
        assert!(is(proc.path(), 42, 1234));
        assert!(!is(proc.path(), 42, 1233), "a reused pid started later");
        assert!(!is(proc.path(), 43, 1234), "no such process");
        let zombie = fake_proc(42, 'Z', 1234);
        assert!(!is(zombie.path(), 42, 1234), "the init exited");
        let err = start_time(proc.path(), 7).unwrap_err().to_string();
        assert!(err.contains("/7/stat"), "{err}");
    }

    #[test]
    fn this_process_is_itself() {
        let me = std::process::id() as i32;
        let start = start_time(Path::new("/proc"), me).unwrap();
        assert!(is(Path::new("/proc"), me, start));
        assert!(!is(Path::new("/proc"), me, start + 1));
    }
}
