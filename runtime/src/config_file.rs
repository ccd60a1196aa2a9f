//! `config.toml`, read once per command.
//!
//! Several parsers take their own section of the same file (the ID pool,
//! `[pods]`, `[capabilities]`, `[devices]`, `[network]`, `[numa]`); each
//! used to read it again. They read it through [`read_to_string`], which
//! reads each path once per process and hands out the same text (or the
//! same error) afterwards: one command sees one version of the file.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What one read gave: the text, or the error (kind and errno; an
/// `io::Error` cannot be cloned).
type Read = Result<Arc<str>, (io::ErrorKind, Option<i32>)>;

static READS: Mutex<Option<HashMap<PathBuf, Read>>> = Mutex::new(None);

/// The text of `path`, read on the first call for it in this process.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut reads = READS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let read = reads
        .get_or_insert_with(HashMap::new)
        .entry(path.to_path_buf())
        .or_insert_with(|| {
            std::fs::read_to_string(path)
                .map(Arc::from)
                .map_err(|e| (e.kind(), e.raw_os_error()))
        });
    match read {
        Ok(text) => Ok(text.to_string()),
        Err((kind, Some(errno))) => {
            debug_assert_eq!(io::Error::from_raw_os_error(*errno).kind(), *kind);
            Err(io::Error::from_raw_os_error(*errno))
        }
        Err((kind, None)) => Err(io::Error::from(*kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_path_once_and_keeps_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[pods]\n").unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "[pods]\n");
        // Changed or removed after the first read: the command keeps the
        // version it read.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "[pods]\n");
        let missing = dir.path().join("missing.toml");
        for _ in 0..2 {
            let err = read_to_string(&missing).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
    }
}
