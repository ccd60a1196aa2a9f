use super::*;
use oci_spec::runtime::{LinuxBuilder, LinuxDeviceBuilder};

fn entry(path: &str, typ: LinuxDeviceType, major: i64, minor: i64) -> LinuxDeviceBuilder {
    LinuxDeviceBuilder::default()
        .path(PathBuf::from(path))
        .typ(typ)
        .major(major)
        .minor(minor)
}

fn spec_with(devices: Vec<LinuxDeviceBuilder>) -> Spec {
    let mut spec = Spec::default();
    let devices: Vec<_> = devices.into_iter().map(|d| d.build().unwrap()).collect();
    spec.set_linux(Some(
        LinuxBuilder::default().devices(devices).build().unwrap(),
    ));
    spec
}

fn policy(allow: &[&str]) -> (tempfile::TempDir, Policy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let rules: Vec<String> = allow.iter().map(|r| format!("{r:?}")).collect();
    fs::write(&path, format!("[devices]\nallow = [{}]\n", rules.join(","))).unwrap();
    let p = Policy::load(&path).unwrap();
    (dir, p)
}

#[test]
fn plans_allowed_entries_with_defaults() {
    let (_d, p) = policy(&["c 10:232"]);
    let spec = spec_with(vec![
        entry("/dev/kvm", LinuxDeviceType::C, 10, 232)
            .file_mode(0o600u32)
            .gid(1000u32),
        entry("/dev/null", LinuxDeviceType::C, 1, 3),
        entry("/dev/net/tun", LinuxDeviceType::C, 10, 200),
        entry("/dev/cnf/fifo", LinuxDeviceType::P, 0, 0),
    ]);
    let planned = plan(&spec, &p).unwrap();
    // /dev/null is libcontainer's own.
    assert_eq!(planned.len(), 3);
    assert_eq!(
        planned[0],
        Planned {
            index: 0,
            path: "/dev/kvm".into(),
            typ: 'c',
            major: 10,
            minor: 232,
            mode: 0o600,
            uid: 0,
            gid: 1000,
        }
    );
    assert_eq!(planned[1].index, 2);
    assert_eq!(planned[1].mode, DEFAULT_MODE);
    assert_eq!(planned[2].typ, 'p');
}

#[test]
fn refuses_what_the_policy_does_not_allow() {
    let (_d, p) = policy(&["c 10:232"]);
    let spec = spec_with(vec![entry(
        "/dev/loop-control",
        LinuxDeviceType::C,
        10,
        237,
    )]);
    let e = plan(&spec, &p).unwrap_err().to_string();
    assert!(
        e.starts_with("linux.devices[0] (/dev/loop-control): device c 10:237 is not allowed"),
        "{e}"
    );
    assert!(
        e.contains("c 10:232") && e.contains("[devices] allow"),
        "{e}"
    );
    // Block devices need their own rule.
    let spec = spec_with(vec![entry("/dev/vda", LinuxDeviceType::B, 254, 0)]);
    assert!(matches!(
        plan(&spec, &p),
        Err(DevicesError::NotAllowed { index: 0, .. })
    ));
}

#[test]
fn refuses_bad_entries() {
    let (_d, p) = policy(&["a *:*"]);
    let cases = [
        (entry("/tmp/kvm", LinuxDeviceType::C, 10, 232), "under /dev"),
        (entry("/dev/../etc/x", LinuxDeviceType::C, 10, 232), ".."),
        (entry("/dev/all", LinuxDeviceType::A, 0, 0), "type \"a\""),
        (
            entry("/dev/big", LinuxDeviceType::C, 4096, 0),
            "out of range",
        ),
        (
            entry("/dev/neg", LinuxDeviceType::C, 10, -1),
            "out of range",
        ),
        (
            entry("/dev/suid", LinuxDeviceType::C, 10, 232).file_mode(0o4666u32),
            "fileMode 4666",
        ),
        (
            entry("/dev/null", LinuxDeviceType::C, 10, 232),
            "libcontainer's own c 1:3",
        ),
    ];
    for (e, want) in cases {
        let err = plan(&spec_with(vec![e]), &p).unwrap_err().to_string();
        assert!(err.starts_with("linux.devices[0]"), "{err}");
        assert!(err.contains(want), "{err} lacks {want:?}");
    }
    let spec = spec_with(vec![
        entry("/dev/kvm", LinuxDeviceType::C, 10, 232),
        entry("/dev/kvm", LinuxDeviceType::C, 10, 232),
    ]);
    let err = plan(&spec, &p).unwrap_err().to_string();
    assert!(
        err.contains("linux.devices[1]") && err.contains("[0]"),
        "{err}"
    );
}

#[test]
fn owners_map_through_the_pod_range() {
    let mapping = idmap::PodMapping::symmetric(idmap::Mapping::new(0, 200_000, 65_536).unwrap());
    let (_d, p) = policy(&["c 10:232"]);
    let spec = spec_with(vec![
        entry("/dev/kvm", LinuxDeviceType::C, 10, 232).gid(1000u32),
        entry("/dev/kvm1", LinuxDeviceType::C, 10, 232)
            .uid(65_535u32)
            .gid(0u32),
    ]);
    let planned = plan(&spec, &p).unwrap();
    assert_eq!(
        owners(&planned, &mapping).unwrap(),
        vec![(200_000, 201_000), (265_535, 200_000)]
    );
    let spec = spec_with(vec![
        entry("/dev/kvm", LinuxDeviceType::C, 10, 232).uid(65_536u32)
    ]);
    let err = owners(&plan(&spec, &p).unwrap(), &mapping)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "linux.devices[0] (/dev/kvm): uid 65536 is not mapped by the pod's user namespace"
    );
    let shifted = idmap::Mapping::new(1, 300_000, 10).unwrap();
    assert_eq!(to_host(&shifted, 0), None);
    assert_eq!(to_host(&shifted, 1), Some(300_000));
    assert_eq!(to_host(&shifted, 10), Some(300_009));
    assert_eq!(to_host(&shifted, 11), None);
}
