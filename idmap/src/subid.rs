//! `/etc/subuid` and `/etc/subgid`, read as shadow-utils reads them.
//!
//! Format (subuid(5)): one `OWNER:START:COUNT` per line, where OWNER is a
//! user name or a numeric uid, and one owner may have several lines. We also
//! skip blank lines and `#` comments. Unlike shadow-utils, which keeps an
//! unparsable line and silently ignores it (`subordinate_parse()` returns
//! NULL), a bad line here is an error naming `file:line`: this file decides
//! which host IDs are someone else's, and a line we cannot read might be
//! exactly the range we are about to hand out.

use std::io;
use std::path::{Path, PathBuf};

use crate::range::{parse_decimal_u32, IdRange, RangeError};

/// Errors reading a subordinate ID file or `/etc/passwd`.
#[derive(Debug, thiserror::Error)]
pub enum SubIdError {
    /// `read(2)` of the file failed.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The line does not have exactly three `:`-separated fields.
    #[error("{path}:{line}: expected OWNER:START:COUNT, found {fields} field(s)")]
    FieldCount {
        path: PathBuf,
        line: usize,
        fields: usize,
    },
    /// The owner field is empty or holds whitespace or control characters.
    #[error("{path}:{line}: invalid owner {owner:?}")]
    Owner {
        path: PathBuf,
        line: usize,
        owner: String,
    },
    /// START or COUNT is not a plain decimal u32.
    #[error("{path}:{line}: {field} {text:?} is not a decimal number below 2^32")]
    Number {
        path: PathBuf,
        line: usize,
        field: &'static str,
        text: String,
    },
    /// START:COUNT is empty or runs past u32::MAX.
    #[error("{path}:{line}: bad range")]
    Range {
        path: PathBuf,
        line: usize,
        #[source]
        source: RangeError,
    },
    /// The owner has several ranges that do not touch; a pool must be one
    /// contiguous range.
    #[error(
        "{path}: owner {owner} has disjoint ranges {ranges}; cnfbox needs one contiguous \
         range: merge them into one line or set [idmap] pool in the config"
    )]
    Disjoint {
        path: PathBuf,
        owner: String,
        ranges: String,
    },
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubIdEntry {
    /// User name or numeric uid, as written.
    pub owner: String,
    /// The subordinate IDs.
    pub range: IdRange,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// Who an entry belongs to: a name and, when `/etc/passwd` knows it, the uid
/// that numeric entries use for the same user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The user name, e.g. `cnfbox`.
    pub name: String,
    /// Its uid, if the user exists.
    pub uid: Option<u32>,
}

impl Owner {
    /// The owner `name`, with its uid looked up in `passwd`.
    pub fn lookup(name: &str, passwd: &Path) -> Result<Self, SubIdError> {
        Ok(Owner {
            name: name.to_owned(),
            uid: passwd_uid(passwd, name)?,
        })
    }

    /// Whether an entry's owner field names this owner.
    pub fn matches(&self, field: &str) -> bool {
        if field == self.name {
            return true;
        }
        match (self.uid, parse_decimal_u32(field)) {
            (Some(uid), Some(n)) => uid == n,
            _ => false,
        }
    }
}

/// A parsed subordinate ID file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubIdFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its entries in file order.
    pub entries: Vec<SubIdEntry>,
}

impl SubIdFile {
    /// Reads and parses `path`; a missing file has no entries.
    pub fn load(path: &Path) -> Result<Self, SubIdError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SubIdFile {
                path: path.to_owned(),
                entries: Vec::new(),
            }),
            Err(source) => Err(SubIdError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text of a file; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SubIdError> {
        let mut entries = Vec::new();
        for (idx, raw) in text.split('\n').enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            entries.push(parse_line(path, line, raw)?);
        }
        Ok(SubIdFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// Entries of `owner`.
    pub fn owned_by<'a>(&'a self, owner: &'a Owner) -> impl Iterator<Item = &'a SubIdEntry> {
        self.entries.iter().filter(|e| owner.matches(&e.owner))
    }

    /// The first entry of anybody but `owner` that overlaps `range`.
    pub fn foreign_overlap(&self, owner: &Owner, range: &IdRange) -> Option<&SubIdEntry> {
        self.entries
            .iter()
            .find(|e| !owner.matches(&e.owner) && e.range.overlaps(range))
    }

    /// The owner's ranges merged into one; `None` if it has none, an error if
    /// they are disjoint.
    pub fn contiguous_range(&self, owner: &Owner) -> Result<Option<IdRange>, SubIdError> {
        let mut ranges: Vec<IdRange> = self.owned_by(owner).map(|e| e.range).collect();
        ranges.sort();
        let mut merged: Vec<IdRange> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                // Touching or overlapping: extend. `max` of two valid ends is
                // a valid end, so the new range cannot overflow.
                Some(last) if r.start() <= last.end() => {
                    let end = last.end().max(r.end());
                    *last = IdRange::new(last.start(), end - last.start()).map_err(|source| {
                        SubIdError::Range {
                            path: self.path.clone(),
                            line: 0,
                            source,
                        }
                    })?;
                }
                _ => merged.push(r),
            }
        }
        match merged.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(SubIdError::Disjoint {
                path: self.path.clone(),
                owner: owner.name.clone(),
                ranges: many
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

fn parse_line(path: &Path, line: usize, raw: &str) -> Result<SubIdEntry, SubIdError> {
    let fields: Vec<&str> = raw.split(':').collect();
    let [owner, start, count] = fields.as_slice() else {
        return Err(SubIdError::FieldCount {
            path: path.to_owned(),
            line,
            fields: fields.len(),
        });
    };
    if owner.is_empty()
        || owner
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(SubIdError::Owner {
            path: path.to_owned(),
            line,
            owner: (*owner).to_owned(),
        });
    }
    let number = |field: &'static str, text: &str| {
        parse_decimal_u32(text).ok_or_else(|| SubIdError::Number {
            path: path.to_owned(),
            line,
            field,
            text: text.to_owned(),
        })
    };
    let start = number("START", start)?;
    let count = number("COUNT", count)?;
    let range = IdRange::new(start, count).map_err(|source| SubIdError::Range {
        path: path.to_owned(),
        line,
        source,
    })?;
    Ok(SubIdEntry {
        owner: (*owner).to_owned(),
        range,
        line,
    })
}

/// The uid of `name` in a passwd(5) file, if present. Malformed lines of
/// other users are skipped: passwd is not ours to police, and numeric
/// subuid owners only need the entry for `name`.
fn passwd_uid(passwd: &Path, name: &str) -> Result<Option<u32>, SubIdError> {
    let text = match std::fs::read_to_string(passwd) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SubIdError::Read {
                path: passwd.to_owned(),
                source,
            })
        }
    };
    Ok(text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name))
            .then(|| f.nth(1).and_then(parse_decimal_u32))
            .flatten()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SubIdFile, SubIdError> {
        SubIdFile::parse(Path::new("/etc/subuid"), text)
    }

    #[test]
    fn comments_blank_and_several_lines() {
        let f = parse("# header\n\nroot:100000:65536\n  # indented\ncnfbox:200000:65536\ncnfbox:265536:65536\n")
            .expect("parse");
        assert_eq!(f.entries.len(), 3);
        let owner = Owner {
            name: "cnfbox".into(),
            uid: None,
        };
        assert_eq!(
            f.contiguous_range(&owner).expect("contiguous"),
            Some(IdRange::new(200_000, 131_072).expect("range"))
        );
    }

    #[test]
    fn numeric_owner_matches_uid() {
        let f = parse("999:300000:65536\n").expect("parse");
        let owner = Owner {
            name: "cnfbox".into(),
            uid: Some(999),
        };
        assert_eq!(f.owned_by(&owner).count(), 1);
        let other = Owner {
            name: "cnfbox".into(),
            uid: None,
        };
        assert_eq!(f.owned_by(&other).count(), 0);
    }

    #[test]
    fn garbage_names_file_and_line() {
        let err = parse("root:100000:65536\ngarbage\n").expect_err("garbage");
        assert_eq!(
            err.to_string(),
            "/etc/subuid:2: expected OWNER:START:COUNT, found 1 field(s)"
        );
        let err = parse("a:1:2:3\n").expect_err("4 fields");
        assert!(matches!(err, SubIdError::FieldCount { fields: 4, .. }));
        let err = parse("a:0x10:2\n").expect_err("hex");
        assert!(err.to_string().contains("START \"0x10\""), "{err}");
        let err = parse("a:10:-2\n").expect_err("negative");
        assert!(matches!(err, SubIdError::Number { field: "COUNT", .. }));
        let err = parse("a:10:0\n").expect_err("zero");
        assert!(matches!(err, SubIdError::Range { line: 1, .. }));
        let err = parse("a:4294967295:1\n").expect_err("overflow");
        assert!(matches!(err, SubIdError::Range { .. }));
        let err = parse("a b:1:2\n").expect_err("space");
        assert!(matches!(err, SubIdError::Owner { .. }));
        let err = parse("a:1:2\r\n").expect_err("CR");
        assert!(matches!(err, SubIdError::Number { .. }));
    }

    #[test]
    fn disjoint_owner_ranges_refused() {
        let f = parse("cnfbox:200000:65536\ncnfbox:400000:65536\n").expect("parse");
        let owner = Owner {
            name: "cnfbox".into(),
            uid: None,
        };
        let err = f.contiguous_range(&owner).expect_err("disjoint");
        assert!(
            err.to_string().contains("200000:65536, 400000:65536"),
            "{err}"
        );
    }
}
