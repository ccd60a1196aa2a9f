//! One gzipped tar layer made from a directory, with both of its digests.
//!
//! The tar is deterministic (sorted entries, owner root, fixed mtime) so
//! the same busybox always gives the same image digests.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};

use super::ImageError;

/// Modification time of every layer entry (the epoch: reproducible).
const LAYER_MTIME: u64 = 0;

/// A compressed layer blob and its digests.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// The gzipped tar: the blob.
    pub blob: Vec<u8>,
    /// Hex sha256 of `blob`: the layer digest in the manifest.
    pub digest_hex: String,
    /// Hex sha256 of the uncompressed tar: the diff_id in the config.
    pub diff_id_hex: String,
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The wrapped writer and the hex sha256 of everything written.
    pub(crate) fn finish(self) -> (W, String) {
        (self.inner, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}"); // writing to a String cannot fail
        s
    })
}

/// Hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Tars and gzips the tree at `root` (paths relative to it).
pub(crate) fn layer_from_dir(root: &Path) -> Result<Layer, ImageError> {
    let write_err = |source| ImageError::WriteLayer {
        root: root.to_owned(),
        source,
    };
    let gz = GzEncoder::new(HashingWriter::new(Vec::new()), Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    tar.follow_symlinks(false);
    let mut entries = Vec::new();
    collect(root, Path::new(""), &mut entries)?;
    for rel in &entries {
        append(&mut tar, root, rel)?;
    }
    let (gz, diff_id_hex) = tar.into_inner().map_err(write_err)?.finish();
    let (blob, digest_hex) = gz.finish().map_err(write_err)?.finish();
    Ok(Layer {
        blob,
        digest_hex,
        diff_id_hex,
    })
}

/// Every path under `root/rel`, parents before children, sorted by name.
fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let dir = root.join(rel);
    let read_err = |source| ImageError::ReadRootfs {
        path: dir.clone(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let is_dir = fs::symlink_metadata(root.join(&child))
            .map_err(|source| ImageError::ReadRootfs {
                path: root.join(&child),
                source,
            })?
            .is_dir();
        out.push(child.clone());
        if is_dir {
            collect(root, &child, out)?;
        }
    }
    Ok(())
}

fn append<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<(), ImageError> {
    let path = root.join(rel);
    let read_err = |source| ImageError::ReadRootfs {
        path: path.clone(),
        source,
    };
    let write_err = |source| ImageError::WriteLayer {
        root: root.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(&path).map_err(read_err)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(LAYER_MTIME);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(read_err)?;
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, rel, &target).map_err(write_err)
    } else if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        tar.append_data(&mut h, rel, io::empty()).map_err(write_err)
    } else if ft.is_file() {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        let file = File::open(&path).map_err(read_err)?;
        tar.append_data(&mut h, rel, file).map_err(write_err)
    } else {
        Err(ImageError::UnsupportedFile { path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layer_digests_match_and_are_reproducible() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("bin")).expect("mkdir");
        fs::write(tmp.path().join("bin/a"), "a").expect("write");
        std::os::unix::fs::symlink("a", tmp.path().join("bin/b")).expect("symlink");
        let l1 = layer_from_dir(tmp.path()).expect("layer");
        let l2 = layer_from_dir(tmp.path()).expect("layer");
        assert_eq!(l1.digest_hex, l2.digest_hex);
        assert_eq!(l1.digest_hex, sha256_hex(&l1.blob));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&l1.blob[..])
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(l1.diff_id_hex, sha256_hex(&tar));
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["bin", "bin/a", "bin/b"]);
    }
}
