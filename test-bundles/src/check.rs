//! Parsing the output of `/bin/cnfbox-check` (see `scripts/cnfbox-check.sh`).

/// The key=value report printed by the checker, in output order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    entries: Vec<(String, String)>,
}

impl CheckReport {
    /// Parses checker output; lines without `=` are ignored.
    pub fn parse(output: &str) -> Self {
        let entries = output
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { entries }
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value for `key`, in output order (`mountinfo`, `cgroup`, ...).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A capability mask (`CapEff`, `CapBnd`, ...) as a number.
    pub fn cap_mask(&self, key: &str) -> Option<u64> {
        self.get(key)
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    }

    /// Whether the report ran to its last line (`end=ok`).
    pub fn is_complete(&self) -> bool {
        self.get("end") == Some("ok")
    }

    /// The `error=` lines: sources the checker could not read.
    pub fn errors(&self) -> Vec<&str> {
        self.all("error").collect()
    }

    /// All entries in output order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_keys_and_masks() {
        let r = CheckReport::parse(
            "pid=1\nCapEff=00000000a80425fb\nmountinfo=a b\nmountinfo=c=d\nnoise\nend=ok\n",
        );
        assert_eq!(r.get("pid"), Some("1"));
        assert_eq!(r.cap_mask("CapEff"), Some(0xa80425fb));
        assert_eq!(r.all("mountinfo").collect::<Vec<_>>(), ["a b", "c=d"]);
        assert!(r.is_complete());
        assert!(r.errors().is_empty());
    }
}
