//! Locating and checking the busybox binary every rootfs is made from.
//!
//! Bundles must run in an empty rootfs, so busybox has to be statically
//! linked: Debian's `busybox-static` package ships such a binary at
//! `/bin/busybox`. `CNFBOX_BUSYBOX` points at another one.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::debug;

/// Environment variable naming the busybox binary to use.
pub const BUSYBOX_ENV: &str = "CNFBOX_BUSYBOX";
/// Where Debian's `busybox-static` installs busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// ELF program header type of the dynamic loader request (`PT_INTERP`,
/// elf(5)); a statically linked executable has none.
const PT_INTERP: u32 = 3;

/// Errors while locating or inspecting busybox.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error(
        "busybox not found at {path}: install Debian's `busybox-static` package \
         (apt-get install busybox-static) or set {BUSYBOX_ENV}"
    )]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading ELF headers of busybox at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "busybox at {path} is not a statically linked ELF executable ({reason}): \
         install Debian's `busybox-static` package (apt-get install busybox-static) \
         or set {BUSYBOX_ENV}"
    )]
    NotStatic { path: PathBuf, reason: &'static str },
    #[error("running `{path} --list`")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path} --list` failed with {status}")]
    ListStatus {
        path: PathBuf,
        status: std::process::ExitStatus,
    },
}

/// A statically linked busybox binary, checked on construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busybox {
    path: PathBuf,
}

impl Busybox {
    /// The busybox named by `CNFBOX_BUSYBOX`, or `/bin/busybox`.
    pub fn locate() -> Result<Self, BusyboxError> {
        let path = std::env::var_os(BUSYBOX_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX));
        Self::at(path)
    }

    /// The busybox at `path`, which must be a statically linked ELF file.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self, BusyboxError> {
        let path = path.into();
        check_static(&path)?;
        debug!(path = %path.display(), "using busybox");
        Ok(Self { path })
    }

    /// Path of the binary on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applet names this busybox was built with (`busybox --list`).
    pub fn applets(&self) -> Result<Vec<String>, BusyboxError> {
        let out = Command::new(&self.path)
            .arg("--list")
            .output()
            .map_err(|source| BusyboxError::List {
                path: self.path.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(BusyboxError::ListStatus {
                path: self.path.clone(),
                status: out.status,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            // An applet name is a plain file name; anything else would
            // escape /bin when joined.
            .filter(|a| !a.is_empty() && !a.contains('/') && *a != "." && *a != "..")
            .map(str::to_owned)
            .collect())
    }
}

/// Checks that `path` is an ELF executable without a `PT_INTERP` header.
fn check_static(path: &Path) -> Result<(), BusyboxError> {
    let mut file = File::open(path).map_err(|source| BusyboxError::Missing {
        path: path.to_owned(),
        source,
    })?;
    let read_err = |source| BusyboxError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    // Program headers sit near the start; 64 KiB covers any sane layout.
    file.by_ref()
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    match has_interp(&bytes) {
        Ok(false) => Ok(()),
        Ok(true) => Err(BusyboxError::NotStatic {
            path: path.to_owned(),
            reason: "it requests a dynamic loader",
        }),
        Err(reason) => Err(BusyboxError::NotStatic {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Whether the ELF image in `b` has a `PT_INTERP` program header (elf(5)).
fn has_interp(b: &[u8]) -> Result<bool, &'static str> {
    if b.len() < 0x34 || &b[..4] != b"\x7fELF" {
        return Err("no ELF header");
    }
    let is64 = match b[4] {
        1 => false,
        2 => true,
        _ => return Err("unknown ELF class"),
    };
    let le = match b[5] {
        1 => true,
        2 => false,
        _ => return Err("unknown ELF byte order"),
    };
    let u16_at = |o: usize| -> Option<u64> {
        let s: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    };
    let u32_at = |o: usize| -> Option<u64> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    };
    let u64_at = |o: usize| -> Option<u64> {
        let s: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    };
    let header = if is64 {
        (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    } else {
        (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = header else {
        return Err("truncated ELF header");
    };
    for i in 0..phnum {
        let off = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or("bad program headers")?;
        let p_type = u32_at(off).ok_or("program headers beyond the first 64 KiB")?;
        if p_type == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_busybox_is_static() {
        let bb = Busybox::locate().expect("busybox-static must be installed for tests");
        let applets = bb.applets().expect("busybox --list");
        assert!(applets.iter().any(|a| a == "sh"), "{applets:?}");
        assert!(applets.iter().any(|a| a == "sleep"), "{applets:?}");
    }

    #[test]
    fn dynamic_executable_is_rejected_with_package_hint() {
        // /bin/ls is dynamically linked on Debian.
        let err = Busybox::at("/bin/ls").expect_err("dynamic ls must be rejected");
        let msg = err.to_string();
        assert!(msg.contains("busybox-static"), "{msg}");
        assert!(msg.contains("/bin/ls"), "{msg}");
    }

    #[test]
    fn missing_binary_names_package() {
        let err = Busybox::at("/nonexistent/busybox").expect_err("missing");
        assert!(matches!(err, BusyboxError::Missing { .. }));
        assert!(err.to_string().contains("busybox-static"));
    }

    #[test]
    fn non_elf_is_rejected() {
        assert_eq!(has_interp(b"#!/bin/sh\n"), Err("no ELF header"));
    }
}
