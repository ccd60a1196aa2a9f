//! Sysctls whose values are ids, made to fit the pod's user namespace.
//!
//! containerd 2.x sets `net.ipv4.ping_group_range = "0 2147483647"` on
//! every sandbox (`enable_unprivileged_icmp`, on by default). In a network
//! namespace owned by the pod's user namespace the kernel accepts only
//! groups that namespace maps (`ipv4_ping_group_range` in
//! net/ipv4/sysctl_net_ipv4.c), so the write failed and with it every
//! RunPodSandbox. cnfbox, which chose the mapping, narrows the range to the
//! groups the pod has: the same groups may ping as the caller meant.

use oci_spec::runtime::Spec;

/// The ICMP-socket group range.
pub const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";

/// A sysctl value that cannot be given to the pod.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("linux.sysctl {PING_GROUP_RANGE} = {value:?}: expected two group ids \"LOW HIGH\"")]
    Malformed { value: String },
    #[error("linux.sysctl {PING_GROUP_RANGE} = {value:?}: none of these groups is mapped in the pod's user namespace (gids {first}-{last})")]
    Unmapped {
        value: String,
        first: u32,
        last: u32,
    },
}

/// Narrows the id-valued sysctls of `spec` to the groups `gid` maps
/// (ids as the pod sees them).
pub fn fit_to_mapping(spec: &mut Spec, gid: &idmap::Mapping) -> Result<(), SysctlError> {
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let Some(mut sysctl) = linux.sysctl().clone() else {
        return Ok(());
    };
    let Some(value) = sysctl.get(PING_GROUP_RANGE) else {
        return Ok(());
    };
    let first = gid.container_id();
    // A mapping's size is at least 1 and ends within u32.
    let last = first + (gid.size() - 1);
    let fitted = fit_range(value, first, last)?;
    if fitted != *value {
        tracing::debug!(from = %value, to = %fitted, "{PING_GROUP_RANGE} narrowed to the pod's groups");
        sysctl.insert(PING_GROUP_RANGE.to_string(), fitted);
        linux.set_sysctl(Some(sysctl));
    }
    Ok(())
}

/// `"LOW HIGH"` intersected with `first..=last`. `LOW > HIGH` (nobody may
/// ping, the kernel's default "1 0") is kept as it is when both are mapped.
fn fit_range(value: &str, first: u32, last: u32) -> Result<String, SysctlError> {
    let malformed = || SysctlError::Malformed {
        value: value.to_string(),
    };
    let ids: Vec<u32> = value
        .split_whitespace()
        .map(|s| s.parse::<u32>().map_err(|_| malformed()))
        .collect::<Result<_, _>>()?;
    let [low, high] = ids[..] else {
        return Err(malformed());
    };
    let mapped = |id: u32| (first..=last).contains(&id);
    if low > high {
        if mapped(low) && mapped(high) {
            return Ok(format!("{low} {high}"));
        }
        // Nobody may ping: say it with ids the pod has.
        return Ok(format!("{} {}", first + 1.min(last - first), first));
    }
    let (low, high) = (low.max(first), high.min(last));
    if low > high {
        return Err(SysctlError::Unmapped {
            value: value.to_string(),
            first,
            last,
        });
    }
    Ok(format!("{low} {high}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_default_narrows_to_the_pods_groups() {
        assert_eq!(fit_range("0 2147483647", 0, 65535).unwrap(), "0 65535");
        assert_eq!(fit_range("  100   200 ", 0, 65535).unwrap(), "100 200");
        assert_eq!(
            fit_range("1000 4294967295", 0, 65535).unwrap(),
            "1000 65535"
        );
    }

    #[test]
    fn disabled_stays_disabled() {
        assert_eq!(fit_range("1 0", 0, 65535).unwrap(), "1 0");
        assert_eq!(fit_range("4294967295 0", 0, 65535).unwrap(), "1 0");
    }

    #[test]
    fn bad_values_are_named() {
        for v in ["", "0", "0 1 2", "a b", "-1 5"] {
            let err = fit_range(v, 0, 65535).unwrap_err().to_string();
            assert!(
                err.contains(PING_GROUP_RANGE) && err.contains("LOW HIGH"),
                "{v:?}: {err}"
            );
        }
        let err = fit_range("70000 80000", 0, 65535).unwrap_err().to_string();
        assert!(
            err.contains("70000 80000") && err.contains("0-65535"),
            "{err}"
        );
    }

    #[test]
    fn spec_is_rewritten_only_when_needed() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_sysctl(Some(
            [(PING_GROUP_RANGE.to_string(), "0 2147483647".to_string())].into(),
        ));
        spec.set_linux(Some(linux));
        let m = idmap::Mapping::new(0, 1 << 31, 65536).unwrap();
        fit_to_mapping(&mut spec, &m).unwrap();
        let got = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(got[PING_GROUP_RANGE], "0 65535");
        let mut plain = Spec::default();
        fit_to_mapping(&mut plain, &m).unwrap();
        assert_eq!(plain, Spec::default());
    }
}
