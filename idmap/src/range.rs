//! Half-open host ID ranges and the uid/gid mappings built from them.
//!
//! Every range here is `[start, end)` with `end = start + size` computed by
//! `checked_add` in `u32`. The kernel refuses an extent whose end wraps
//! (`map_write()` in kernel/user_namespace.c checks
//! `first + count <= first`), so the largest usable end is `u32::MAX` and the
//! ID `u32::MAX` (`(uid_t)-1`, "no change" for `chown(2)`) is never handed out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Host IDs `0..65536` belong to the host (system users, the nobody/nogroup
/// pair, the UIDs of real people): no pod range may include any of them.
pub const HOST_RESERVED_END: u32 = 65_536;

/// The unit of per-pod ranges: kubelet hands each pod 65536 IDs
/// (`pkg/kubelet/userns`), so ranges and pools are multiples of it.
pub const ID_BLOCK: u32 = 65_536;

/// Errors in range arithmetic and range syntax.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    /// A range of size zero holds no ID and is always a mistake.
    #[error("ID range starting at {start} has size 0")]
    Empty { start: u32 },
    /// `start + size` does not fit below `u32::MAX`.
    #[error("ID range {start}+{size} overflows u32 (end must be <= {max})", max = u32::MAX)]
    Overflow { start: u32, size: u32 },
    /// Text that should read `START:SIZE`.
    #[error("ID range {text:?} is not START:SIZE with decimal numbers")]
    Syntax { text: String },
    /// A size that should be a multiple of 65536.
    #[error("size {size} is not a positive multiple of {block}", block = ID_BLOCK)]
    NotBlockMultiple { size: u32 },
    /// A mapping that gives a container ID range past `u32::MAX`.
    #[error("container IDs {container_id}+{size} overflow u32")]
    ContainerOverflow { container_id: u32, size: u32 },
}

/// A non-empty half-open range of IDs `[start, start + size)`.
///
/// The fields are private so that every value in the program has passed the
/// overflow check in [`IdRange::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct IdRange {
    start: u32,
    size: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: u32,
    size: u32,
}

impl TryFrom<RawRange> for IdRange {
    type Error = RangeError;
    fn try_from(raw: RawRange) -> Result<Self, Self::Error> {
        IdRange::new(raw.start, raw.size)
    }
}

impl From<IdRange> for RawRange {
    fn from(r: IdRange) -> Self {
        RawRange {
            start: r.start,
            size: r.size,
        }
    }
}

impl IdRange {
    /// A range of `size` IDs from `start`; refuses size 0 and any end past
    /// `u32::MAX`.
    pub fn new(start: u32, size: u32) -> Result<Self, RangeError> {
        if size == 0 {
            return Err(RangeError::Empty { start });
        }
        start
            .checked_add(size)
            .ok_or(RangeError::Overflow { start, size })?;
        Ok(IdRange { start, size })
    }

    /// First ID of the range.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Number of IDs in the range (never 0).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// One past the last ID. Cannot overflow: checked in [`IdRange::new`].
    pub fn end(&self) -> u32 {
        // The constructor proved `start + size <= u32::MAX`.
        self.start.wrapping_add(self.size)
    }

    /// Whether `id` lies in the range.
    pub fn contains(&self, id: u32) -> bool {
        self.start <= id && id < self.end()
    }

    /// Whether the two ranges share at least one ID.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        self.start < other.end() && other.start < self.end()
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &IdRange) -> bool {
        self.start <= other.start && other.end() <= self.end()
    }

    /// Whether any ID of the range is a host ID below 65536.
    pub fn touches_host_reserved(&self) -> bool {
        self.start < HOST_RESERVED_END
    }

    /// The sub-range `[start + offset, start + offset + size)`, if it fits.
    pub fn sub_range(&self, offset: u32, size: u32) -> Option<IdRange> {
        let start = self.start.checked_add(offset)?;
        let sub = IdRange::new(start, size).ok()?;
        self.contains_range(&sub).then_some(sub)
    }
}

impl fmt::Display for IdRange {
    /// `START:SIZE`, the form of `/etc/subuid` and of the config file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.size)
    }
}

impl FromStr for IdRange {
    type Err = RangeError;
    /// Parses `START:SIZE` (decimal, no signs, no spaces).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || RangeError::Syntax {
            text: text.to_owned(),
        };
        let (start, size) = text.split_once(':').ok_or_else(syntax)?;
        let start = parse_decimal_u32(start).ok_or_else(syntax)?;
        let size = parse_decimal_u32(size).ok_or_else(syntax)?;
        IdRange::new(start, size)
    }
}

/// Parses a plain decimal `u32`: digits only, no sign, no whitespace, no
/// `0x`. `str::parse` would accept a leading `+`.
pub(crate) fn parse_decimal_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks that `size` is a positive multiple of [`ID_BLOCK`].
pub fn check_block_multiple(size: u32) -> Result<u32, RangeError> {
    if size == 0 || size % ID_BLOCK != 0 {
        return Err(RangeError::NotBlockMultiple { size });
    }
    Ok(size)
}

/// Rounds `value` up to a multiple of `align` (`align > 0`); `None` on
/// overflow.
pub(crate) fn align_up(value: u32, align: u32) -> Option<u32> {
    let rem = value.checked_rem(align)?;
    if rem == 0 {
        Some(value)
    } else {
        value.checked_add(align - rem)
    }
}

/// One line of a `uid_map` / `gid_map`: container IDs
/// `[container_id, container_id + size)` are host IDs
/// `[host_id, host_id + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawMapping", into = "RawMapping")]
pub struct Mapping {
    container_id: u32,
    host: IdRange,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    container_id: u32,
    host_id: u32,
    size: u32,
}

impl TryFrom<RawMapping> for Mapping {
    type Error = RangeError;
    fn try_from(raw: RawMapping) -> Result<Self, Self::Error> {
        Mapping::new(raw.container_id, raw.host_id, raw.size)
    }
}

impl From<Mapping> for RawMapping {
    fn from(m: Mapping) -> Self {
        RawMapping {
            container_id: m.container_id,
            host_id: m.host.start(),
            size: m.host.size(),
        }
    }
}

impl Mapping {
    /// A mapping line; both the container and the host side must fit in u32.
    pub fn new(container_id: u32, host_id: u32, size: u32) -> Result<Self, RangeError> {
        let host = IdRange::new(host_id, size)?;
        container_id
            .checked_add(size)
            .ok_or(RangeError::ContainerOverflow { container_id, size })?;
        Ok(Mapping { container_id, host })
    }

    /// Container root (0) mapped onto `host`.
    pub fn from_root(host: IdRange) -> Self {
        Mapping {
            container_id: 0,
            host,
        }
    }

    /// First container-side ID.
    pub fn container_id(&self) -> u32 {
        self.container_id
    }

    /// First host-side ID.
    pub fn host_id(&self) -> u32 {
        self.host.start()
    }

    /// Number of IDs mapped.
    pub fn size(&self) -> u32 {
        self.host.size()
    }

    /// The host IDs this mapping uses.
    pub fn host_range(&self) -> IdRange {
        self.host
    }

    /// The line as the kernel wants it in `/proc/PID/uid_map`.
    pub fn to_proc_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id(), self.size())
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{}+{}",
            self.container_id,
            self.host_id(),
            self.size()
        )
    }
}

/// The uid and gid mappings of one pod's user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodMapping {
    /// The `uid_map` line.
    pub uid: Mapping,
    /// The `gid_map` line.
    pub gid: Mapping,
}

impl PodMapping {
    /// The same mapping for uids and gids.
    pub fn symmetric(m: Mapping) -> Self {
        PodMapping { uid: m, gid: m }
    }
}

impl fmt::Display for PodMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_u32() {
        assert!(IdRange::new(u32::MAX, 1).is_err());
        let last = IdRange::new(u32::MAX - 1, 1).expect("last usable id");
        assert_eq!(last.end(), u32::MAX);
        assert!(!last.contains(u32::MAX));
        assert!(IdRange::new(0, u32::MAX).is_ok());
        assert_eq!(
            IdRange::new(1, u32::MAX),
            Err(RangeError::Overflow {
                start: 1,
                size: u32::MAX
            })
        );
        assert_eq!(IdRange::new(7, 0), Err(RangeError::Empty { start: 7 }));
    }

    #[test]
    fn half_open_overlap() {
        let a = IdRange::new(100, 10).expect("range");
        let b = IdRange::new(110, 10).expect("range");
        let c = IdRange::new(109, 1).expect("range");
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c));
        assert!(!b.overlaps(&c));
        assert!(a.contains(109) && !a.contains(110));
    }

    #[test]
    fn parse_strict() {
        assert_eq!(
            "100000:65536".parse::<IdRange>(),
            IdRange::new(100_000, 65_536)
        );
        for bad in [
            "", ":", "1:", ":1", "+1:2", "1:2:3", " 1:2", "0x10:2", "1:0",
        ] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn align() {
        assert_eq!(align_up(0, 65_536), Some(0));
        assert_eq!(align_up(1, 65_536), Some(65_536));
        assert_eq!(align_up(u32::MAX, 65_536), None);
    }

    #[test]
    fn mapping_container_overflow() {
        assert!(Mapping::new(u32::MAX - 5, 100_000, 10).is_err());
        let m = Mapping::new(0, 100_000, 65_536).expect("mapping");
        assert_eq!(m.to_proc_line(), "0 100000 65536\n");
    }
}
