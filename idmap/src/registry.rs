//! One ledger per pool on a node.
//!
//! A ledger only knows the ranges it handed out. Two configs naming the
//! same (or overlapping) pools with different `ledger_dir`s would each
//! hand out the same host IDs to a live pod. Every allocator made from a
//! config registers its ledger and pools in a node-wide directory
//! ([`NODE_DIR`], root's alone) and is refused while another ledger
//! registered for IDs its pools overlap holds a range. The registry's
//! lock is held until the allocation is on disk, so two ledgers cannot
//! both find the other empty and hand out the same IDs. A registration
//! whose ledger is gone or empty (a removed test root, a ledger moved
//! away, a config no longer used) stands in no one's way.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Pools;
use crate::fsutil::{write_atomic, AtomicWriteError};
use crate::range::IdRange;

/// Where the node's ledgers are registered: on tmpfs, since what matters
/// is which configs hand out IDs to pods of this boot.
pub const NODE_DIR: &str = "/run/cnfbox/ledgers";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("create ledger registry {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock ledger registry {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read ledger registry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write ledger registration {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: AtomicWriteError,
    },
    /// Another ledger hands out IDs these pools overlap.
    #[error(
        "ledger {ledger} (uid pool {uid}, gid pool {gid}) overlaps ledger {other} (uid pool \
         {other_uid}, gid pool {other_gid}), registered in {registration}: two ledgers would \
         give live pods the same host IDs; use one config (one ledger_dir) per pool, or disjoint \
         pools (remove {other} if nothing uses it any more)"
    )]
    Overlap {
        ledger: PathBuf,
        uid: IdRange,
        gid: IdRange,
        other: PathBuf,
        other_uid: IdRange,
        other_gid: IdRange,
        registration: PathBuf,
    },
}

/// One ledger's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub ledger: PathBuf,
    pub uid: IdRange,
    pub gid: IdRange,
}

/// The registry directory.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The node's registry ([`NODE_DIR`]).
    pub fn node() -> Self {
        Self::at(NODE_DIR)
    }

    /// A registry in `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file_of(&self, ledger: &Path) -> PathBuf {
        let hash = Sha256::digest(ledger.as_os_str().as_encoded_bytes());
        let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// Registers `ledger` for `pools`, unless another ledger that still
    /// exists is registered for overlapping IDs (`check`).
    /// The returned lock is to be held until what the ledger hands out is
    /// on disk.
    pub fn claim(
        &self,
        ledger: &Path,
        pools: &Pools,
    ) -> Result<nix::fcntl::Flock<fs::File>, RegistryError> {
        let lock = self.lock()?;
        let (mine, current) = self.scan(ledger, pools, true)?;
        let file = self.file_of(&mine.ledger);
        if current.as_ref() != Some(&mine) {
            let body = serde_json::to_vec(&mine).expect("a registration serializes");
            write_atomic(&file, &body, 0o600).map_err(|source| RegistryError::Write {
                path: file.clone(),
                source,
            })?;
            tracing::info!(ledger = %mine.ledger.display(), uid = %mine.uid, gid = %mine.gid, registration = %file.display(), "ledger registered");
        }
        Ok(lock)
    }

    /// What `ledger` would register for `pools`, or the registration of
    /// another existing ledger whose IDs overlap them; registers nothing
    /// (`cnfbox setup` asks before it writes a config).
    pub fn check(&self, ledger: &Path, pools: &Pools) -> Result<Registration, RegistryError> {
        self.scan(ledger, pools, false).map(|(mine, _)| mine)
    }

    /// One pass over the registrations: what `ledger` would register for
    /// `pools` and what it has registered now, or the registration of
    /// another existing ledger that holds a range and whose IDs overlap.
    /// With `prune` (under the lock), the registrations whose ledger
    /// directory is gone are removed on the way, so the registry holds
    /// about one file per ledger in use.
    fn scan(
        &self,
        ledger: &Path,
        pools: &Pools,
        prune: bool,
    ) -> Result<(Registration, Option<Registration>), RegistryError> {
        let ledger = fs::canonicalize(ledger).unwrap_or_else(|_| ledger.to_path_buf());
        let mut current = None;
        for (path, other) in self.entries()? {
            if other.ledger == ledger {
                current = Some(other);
                continue;
            }
            if !other.ledger.is_dir() {
                if prune {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let overlaps = other.uid.overlaps(&pools.uid) || other.gid.overlaps(&pools.gid);
            if overlaps && holds_ranges(&other.ledger) {
                return Err(RegistryError::Overlap {
                    ledger,
                    uid: pools.uid,
                    gid: pools.gid,
                    other: other.ledger,
                    other_uid: other.uid,
                    other_gid: other.gid,
                    registration: path,
                });
            }
        }
        let mine = Registration {
            ledger,
            uid: pools.uid,
            gid: pools.gid,
        };
        Ok((mine, current))
    }

    /// Every readable registration (an unreadable one is skipped: it
    /// registers nothing).
    fn entries(&self) -> Result<Vec<(PathBuf, Registration)>, RegistryError> {
        let read = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        Ok(read
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let r = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
                Some((p, r))
            })
            .collect())
    }

    /// The registry's lock (flock(2) on `.lock`), creating the directory
    /// root's alone.
    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, RegistryError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| RegistryError::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
        let path = self.dir.join(".lock");
        let err = |source| RegistryError::Lock {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(err)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| err(e.into()))
    }
}

/// Whether the ledger in `dir` holds a range; one that cannot be read
/// counts as holding some.
fn holds_ranges(dir: &Path) -> bool {
    let Ok(ledger) = crate::ledger::Ledger::open(dir) else {
        return true;
    };
    let state = ledger
        .lock(crate::ledger::LockMode::Shared)
        .and_then(|lock| lock.load());
    !state.is_ok_and(|s| s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(start: u32, size: u32) -> Pools {
        let r = IdRange::new(start, size).unwrap();
        Pools {
            uid: r,
            gid: r,
            range_size: 65536,
        }
    }

    #[test]
    fn a_second_ledger_on_an_overlapping_pool_is_refused_while_the_first_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::at(tmp.path().join("reg"));
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let pool = pools(1 << 20, 1 << 20);
        drop(reg.claim(&a, &pool).unwrap());
        drop(reg.claim(&a, &pool).expect("the same ledger again"));
        reg.claim(&b, &pools(3 << 19, 1 << 20))
            .expect("the first ledger holds no range yet");
        // The first ledger hands out a range.
        crate::alloc::Allocator::new(&a, pool)
            .unwrap()
            .allocate("p1")
            .unwrap();
        let err = reg.claim(&b, &pools(3 << 19, 1 << 20)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&*b.to_string_lossy()) && text.contains(&*a.to_string_lossy()),
            "{text}"
        );
        assert!(reg.check(&b, &pool).is_err(), "check says the same");
        drop(
            reg.claim(&b, &pools(2 << 20, 1 << 20))
                .expect("a disjoint pool"),
        );
        // The first ledger's directory goes: its registration is stale.
        fs::remove_dir_all(&a).unwrap();
        let c = tmp.path().join("c");
        fs::create_dir(&c).unwrap();
        drop(reg.claim(&c, &pool).expect("over a stale registration"));
        let files = fs::read_dir(tmp.path().join("reg"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(
            files, 2,
            "the stale registration of a was pruned (b and c stay)"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(tmp.path().join("reg"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
