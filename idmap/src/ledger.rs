//! The on-disk ledger of granted ranges, its lock, and its format.
//!
//! Format (text, strict, one record per line):
//!
//! ```text
//! cnfbox-idmap-ledger v2
//! generation 42
//! entries 2
//! allocated 1700000000 0:1048576:65536 0:1048576:65536 /run/cnfbox pod-a
//! registered 1700000001 0:2000000:65536 0:2000000:65536 /run/containerd/cnfbox/k8s.io pod b
//! sha256 <64 hex digits of SHA-256 over every byte before this line>
//! ```
//!
//! An entry is `ORIGIN CREATED UID_MAP GID_MAP ROOT POD`, each map
//! `CONTAINER:HOST:SIZE`; ROOT is the state root of the runtime holding the
//! pod (a pod is identified by root and id), percent-encoded so that it has
//! no space (`%XX` for every byte outside `A-Za-z0-9/._+,:@=-`), or `-` for
//! none; the pod id is the rest of the line (pod ids have no control
//! characters, so no newline). The format is compact on purpose: at 65534
//! pods the whole ledger is rewritten and parsed on every change.
//!
//! A `v1` ledger (no ROOT field) is still read, its entries with no root;
//! the next write stores it as `v2`.
//!
//! Any deviation (flipped byte, truncation, unknown key, overlapping ranges,
//! trailing data) is reported as [`LedgerError::Corrupt`] with the path and
//! line; the ledger is never reset behind the operator's back, because an
//! empty ledger would hand out IDs that live pods still use.
//!
//! Concurrency: every operation opens `lock` afresh and takes `flock(2)` on
//! it (a new open file description per operation, so threads of one process
//! exclude each other too). The kernel drops the lock when its holder dies,
//! even by SIGKILL, and the holder only ever replaces the ledger by an atomic
//! rename ([`crate::fsutil::write_atomic`]), so a crash at any instant leaves
//! either the old or the new ledger.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::fsutil::{write_atomic, AtomicWriteError};
use crate::range::{parse_decimal_u32, Mapping, PodMapping};
use crate::state::{Origin, PodEntry, State};

/// Name of the ledger file in the ledger directory.
pub const LEDGER_FILE: &str = "ledger";
/// Name of the lock file in the ledger directory.
pub const LOCK_FILE: &str = "lock";
const MAGIC: &str = "cnfbox-idmap-ledger v2";
const MAGIC_V1: &str = "cnfbox-idmap-ledger v1";
/// ROOT of an entry that recorded none.
const NO_ROOT: &str = "-";
const TRAILER: &str = "sha256 ";

/// Errors of the ledger store, each naming the file it acted on.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// `mkdir -p` of the ledger directory.
    #[error("creating ledger directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `open(O_CREAT)` of the lock file.
    #[error("opening lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `flock(2)` on the lock file.
    #[error("flock({mode}) on {path}")]
    Lock {
        path: PathBuf,
        mode: &'static str,
        #[source]
        source: Errno,
    },
    /// `read(2)` of the ledger.
    #[error("reading ledger {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The ledger fails its checksum or strict parse.
    #[error(
        "ledger {path} is corrupt at line {line}: {reason}; allocation is stopped so that no \
         host ID is granted twice; run `cnfbox ranges repair` to rebuild it from the live \
         containers"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Replacing the ledger file.
    #[error("writing ledger {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: AtomicWriteError,
    },
    /// A write was attempted under a shared lock (a bug in the caller).
    #[error("writing ledger {path} under a shared lock")]
    SharedLockWrite { path: PathBuf },
    /// `rename(2)` of a corrupt ledger aside before a repair.
    #[error("moving corrupt ledger {from} to {to}")]
    Quarantine {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Shared (readers) or exclusive (writers) lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// `LOCK_SH`: list and show.
    Shared,
    /// `LOCK_EX`: every change.
    Exclusive,
}

/// The ledger directory.
#[derive(Clone, Debug)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// Uses `dir` (created with mode 0700 if missing) for the ledger and lock.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| LedgerError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        Ok(Ledger { dir })
    }

    /// The ledger file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(LEDGER_FILE)
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Blocks until the lock is held in `mode`.
    pub fn lock(&self, mode: LockMode) -> Result<LedgerLock<'_>, LedgerError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| LedgerError::OpenLock {
                path: path.clone(),
                source,
            })?;
        let (arg, name) = match mode {
            LockMode::Shared => (FlockArg::LockShared, "LOCK_SH"),
            LockMode::Exclusive => (FlockArg::LockExclusive, "LOCK_EX"),
        };
        let flock = Flock::lock(file, arg).map_err(|(_, source)| LedgerError::Lock {
            path,
            mode: name,
            source,
        })?;
        Ok(LedgerLock {
            ledger: self,
            mode,
            _flock: flock,
        })
    }
}

/// A held ledger lock; reading and writing the ledger go through it.
#[derive(Debug)]
pub struct LedgerLock<'a> {
    ledger: &'a Ledger,
    mode: LockMode,
    _flock: Flock<File>,
}

impl LedgerLock<'_> {
    /// Reads and verifies the ledger. A missing file is an empty ledger (the
    /// first run); an empty or damaged one is [`LedgerError::Corrupt`].
    pub fn load(&self) -> Result<State, LedgerError> {
        let path = self.ledger.path();
        match std::fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(LedgerError::Read { path, source }),
        }
    }

    /// Durably replaces the ledger with `state`, bumping its generation.
    pub fn store(&self, state: &mut State) -> Result<(), LedgerError> {
        let path = self.ledger.path();
        if self.mode != LockMode::Exclusive {
            return Err(LedgerError::SharedLockWrite { path });
        }
        state.generation = state.generation.wrapping_add(1);
        let bytes = encode(state);
        write_atomic(&path, &bytes, 0o600).map_err(|source| LedgerError::Write {
            path: path.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), generation = state.generation, pods = state.len(), "ledger written");
        Ok(())
    }

    /// Renames the current ledger aside (for a repair), returning where it
    /// went, or `None` if there was none.
    pub fn quarantine(&self, suffix: &str) -> Result<Option<PathBuf>, LedgerError> {
        let from = self.ledger.path();
        if self.mode != LockMode::Exclusive {
            return Err(LedgerError::SharedLockWrite { path: from });
        }
        let to = self.ledger.dir.join(format!("{LEDGER_FILE}.{suffix}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Quarantine { from, to, source }),
        }
    }
}

/// Serialises `state` in the ledger format.
pub fn encode(state: &State) -> Vec<u8> {
    // About 80 bytes per entry with 64-digit sandbox ids.
    let mut out = String::with_capacity(64 + state.len() * 96);
    let _infallible = write!(
        out,
        "{MAGIC}\ngeneration {}\nentries {}\n",
        state.generation,
        state.len()
    );
    for e in state.entries() {
        let (u, g) = (e.mapping.uid, e.mapping.gid);
        // `fmt::Write` for String never fails.
        let _infallible = writeln!(
            out,
            "{} {} {}:{}:{} {}:{}:{} {} {}",
            e.origin,
            e.created,
            u.container_id(),
            u.host_id(),
            u.size(),
            g.container_id(),
            g.host_id(),
            g.size(),
            e.root
                .as_deref()
                .map_or_else(|| NO_ROOT.to_owned(), encode_root),
            e.pod
        );
    }
    let sum = hex(&Sha256::digest(out.as_bytes()));
    out.push_str(TRAILER);
    out.push_str(&sum);
    out.push('\n');
    out.into_bytes()
}

/// Parses and verifies ledger bytes; `path` is for messages.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<State, LedgerError> {
    let corrupt = |line: usize, reason: String| LedgerError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let Some(content) = bytes.strip_suffix(b"\n") else {
        return Err(corrupt(1, "missing final newline (truncated?)".into()));
    };
    let Some(split) = content.iter().rposition(|&b| b == b'\n') else {
        return Err(corrupt(1, "no checksum line (truncated?)".into()));
    };
    let (body, trailer) = (&bytes[..=split], &content[split + 1..]);
    let trailer_line = body.iter().filter(|&&b| b == b'\n').count() + 1;
    let Some(want) = trailer.strip_prefix(TRAILER.as_bytes()) else {
        return Err(corrupt(
            trailer_line,
            "last line is not the sha256 checksum (truncated?)".into(),
        ));
    };
    let got = hex(&Sha256::digest(body));
    if want != got.as_bytes() {
        return Err(corrupt(
            trailer_line,
            format!(
                "checksum mismatch: recorded {}, computed {got}",
                String::from_utf8_lossy(want)
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| corrupt(1, format!("not UTF-8: {e}")))?;
    let mut lines = text.lines();
    let with_root = match lines.next() {
        Some(MAGIC) => true,
        Some(MAGIC_V1) => false,
        _ => {
            return Err(corrupt(
                1,
                format!("first line is neither {MAGIC:?} nor {MAGIC_V1:?}"),
            ))
        }
    };
    let mut header = |n: usize, key: &str| -> Result<u64, LedgerError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(key))
            .and_then(|v| v.strip_prefix(' '))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(n, format!("expected `{key} N`")))
    };
    let generation = header(2, "generation")?;
    let count = header(3, "entries")?;
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        entries.push(parse_entry(line, with_root).map_err(|reason| corrupt(i + 4, reason))?);
    }
    if u64::try_from(entries.len()).ok() != Some(count) {
        return Err(corrupt(
            3,
            format!("header says {count} entries, found {}", entries.len()),
        ));
    }
    State::from_entries(generation, entries).map_err(|(i, c)| corrupt(i + 4, c.to_string()))
}

fn parse_entry(line: &str, with_root: bool) -> Result<PodEntry, String> {
    let mut f = line.splitn(if with_root { 6 } else { 5 }, ' ');
    let mut field = |name: &str| {
        f.next()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("missing {name}"))
    };
    let origin = match field("origin")? {
        "allocated" => Origin::Allocated,
        "registered" => Origin::Registered,
        other => return Err(format!("unknown origin {other:?}")),
    };
    let created = field("created")?;
    let created = (created.bytes().all(|b| b.is_ascii_digit()))
        .then(|| created.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| format!("bad created time {created:?}"))?;
    let uid = parse_map(field("uid map")?)?;
    let gid = parse_map(field("gid map")?)?;
    let root = match with_root {
        true => decode_root(field("state root")?)?,
        false => None,
    };
    let pod = field("pod id")?;
    if pod.chars().any(char::is_control) {
        return Err("control character in pod id".into());
    }
    Ok(PodEntry {
        root,
        pod: pod.to_owned(),
        origin,
        created,
        mapping: PodMapping { uid, gid },
    })
}

/// The state roots named by the entries of the ledger at `path`, read
/// line by line without the checksum: what `ranges repair` of a corrupt
/// ledger still learns from it. Unreadable lines are skipped.
pub fn salvage_roots(path: &Path) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut roots: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter_map(|f| decode_root(f).ok().flatten())
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Whether byte `b` stands for itself in an encoded root.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/._+,:@=-".contains(&b)
}

/// A state root as one space-free field: `%XX` for every other byte.
fn encode_root(root: &Path) -> String {
    let bytes = root.as_os_str().as_encoded_bytes();
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _infallible = write!(out, "%{b:02x}");
        }
    }
    out
}

/// The inverse of [`encode_root`], strict: an absolute path, lowercase
/// escapes, and nothing escaped that need not be (one spelling per root).
fn decode_root(text: &str) -> Result<Option<PathBuf>, String> {
    use std::os::unix::ffi::OsStringExt;
    if text == NO_ROOT {
        return Ok(None);
    }
    let bad = |why: &str| format!("bad state root {text:?}: {why}");
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or_else(|| bad("short escape"))?;
                let lower = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
                if !hex.iter().all(lower) {
                    return Err(bad("escape is not two lowercase hex digits"));
                }
                let hex = std::str::from_utf8(hex).map_err(|_| bad("escape"))?;
                let b = u8::from_str_radix(hex, 16).map_err(|_| bad("escape"))?;
                if plain(b) {
                    return Err(bad("escaped byte that needs no escape"));
                }
                out.push(b);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad("unescaped byte")),
        }
    }
    if out.first() != Some(&b'/') {
        return Err(bad("not an absolute path"));
    }
    Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(out))))
}

fn parse_map(text: &str) -> Result<Mapping, String> {
    let bad = || format!("bad map {text:?}, want CONTAINER:HOST:SIZE");
    let mut it = text.split(':').map(parse_decimal_u32);
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Some(c)), Some(Some(h)), Some(Some(n)), None) => {
            Mapping::new(c, h, n).map_err(|e| format!("{}: {e}", bad()))
        }
        _ => Err(bad()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests;
