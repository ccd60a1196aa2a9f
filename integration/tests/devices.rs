//! Device nodes for user-namespaced pods (`linux.devices`): cnfbox makes
//! each node on the host by number, owned through the pod's mapping, and
//! binds it at the entry's path. Pod root creates a KVM VM and a tap,
//! a node at a path the host lacks works, the device cgroup still decides,
//! `fileMode`/`uid`/`gid` decide for non-root uids, `[devices] allow`
//! bounds what may be given, host users cannot reach the host-side nodes,
//! and nothing is left after delete.

mod common;
mod device_rules;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_nothing_left, assert_one_line_error, can_run, mount_base_of, Env};
use serde_json::{json, Value};

const KVM: (i64, i64) = (10, 232);

/// Appends `[devices] allow = RULES` to the environment's config.
fn allow(env: &Env, rules: &[&str]) {
    let path = env.config.as_ref().expect("env has a config");
    let mut text = std::fs::read_to_string(path).unwrap();
    let quoted: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    text.push_str(&format!("\n[devices]\nallow = [{}]\n", quoted.join(", ")));
    std::fs::write(path, text).unwrap();
}

fn device(path: &str, (major, minor): (i64, i64), mode: u32, uid: u32, gid: u32) -> Value {
    json!({ "path": path, "type": "c", "major": major, "minor": minor,
            "fileMode": mode, "uid": uid, "gid": gid })
}

fn cgroup_allow((major, minor): (i64, i64)) -> Value {
    json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" })
}

/// A bundle running `script` with the `devopen` helper in `/bin`, the
/// given `linux.devices` and extra `linux.resources.devices` rules.
fn bundle(
    env: &Env,
    name: &str,
    script: &str,
    devices: Vec<Value>,
    rules: Vec<Value>,
    caps: Option<&str>,
) -> test_bundles::Bundle {
    let helper = test_bundles::helpers::build(test_bundles::helpers::DEVOPEN, env.tmp.path())
        .expect("build devopen");
    // The report is on stdout; a helper's failure is what the test reads.
    let script = format!("{script}; true");
    let b = env.bundle(name, |b| {
        let b = b
            .args(["/bin/sh".to_string(), "-c".to_string(), script])
            .modify(move |s| {
                let mut doc = serde_json::to_value(&*s).unwrap();
                doc["linux"]["devices"] = Value::Array(devices);
                doc["linux"]["resources"]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .extend(rules);
                *s = serde_json::from_value(doc).unwrap();
            });
        match caps {
            Some(c) => b.annotation("cnfbox.io/capabilities", c),
            None => b,
        }
    });
    std::fs::copy(&helper, b.rootfs.join("bin/devopen")).unwrap();
    b
}

/// `cnfbox run` in the foreground; asserts success and that nothing of
/// the container is left; returns its stdout.
fn run(env: &Env, b: &test_bundles::Bundle, name: &str) -> String {
    let id = env.id(name);
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(env, &id);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn have(path: &str, test: &str) -> bool {
    if !Path::new(path).exists() {
        eprintln!("SKIP {test}: this host has no {path}");
        return false;
    }
    true
}

#[test]
fn pod_root_creates_a_kvm_vm() {
    if !can_run("kvm") || !have("/dev/kvm", "kvm") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:232"]);
    let script = "echo owner=$(stat -c %u:%g:%a /dev/kvm); /bin/devopen kvm /dev/kvm";
    let b = bundle(
        &env,
        "kvm",
        script,
        vec![device("/dev/kvm", KVM, 0o600, 0, 0)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let out = run(&env, &b, "kvm");
    assert_eq!(kv(&out, "owner"), "0:0:600", "{out}");
    assert_eq!(kv(&out, "open"), "ok", "{out}");
    assert_eq!(kv(&out, "vm"), "ok", "KVM_CREATE_VM as pod root: {out}");
}

#[test]
fn a_node_at_a_path_the_host_lacks_works() {
    if !can_run("kvm at /dev/cnf/kvm0") || !have("/dev/kvm", "kvm at /dev/cnf/kvm0") {
        return;
    }
    assert!(!Path::new("/dev/cnf/kvm0").exists());
    let env = Env::new();
    allow(&env, &["c 10:*"]);
    let b = bundle(
        &env,
        "kvm0",
        "/bin/devopen kvm /dev/cnf/kvm0",
        vec![device("/dev/cnf/kvm0", KVM, 0o600, 0, 0)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let out = run(&env, &b, "kvm0");
    assert_eq!(kv(&out, "vm"), "ok", "{out}");
}

#[test]
fn the_node_is_made_by_number_never_by_host_path() {
    if !can_run("node by number") || !have("/dev/kvm", "node by number") {
        return;
    }
    // An entry at the path of the host's /dev/kvm with the numbers of
    // /dev/null gets a null: the host's node at that path plays no part.
    let env = Env::new();
    let b = bundle(
        &env,
        "bynumber",
        "echo dev=$(stat -c %t:%T /dev/kvm); echo data=$(head -c 4 /dev/kvm | wc -c)",
        vec![device("/dev/kvm", (1, 3), 0o666, 0, 0)],
        vec![],
        None,
    );
    let out = run(&env, &b, "bynumber");
    assert_eq!(kv(&out, "dev"), "1:3", "{out}");
    assert_eq!(kv(&out, "data"), "0", "{out}");
}

#[test]
fn pod_root_with_net_admin_makes_a_tap_in_the_pod_netns() {
    if !can_run("tun") || !have("/dev/net/tun", "tun") {
        return;
    }
    let env = Env::new();
    // c 10:200 is in containerd's default set: no [devices] rule needed.
    let script = "/bin/devopen tap /dev/net/tun cnftap0; \
        echo links=$(ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' ,)";
    let b = bundle(
        &env,
        "tun",
        script,
        vec![device("/dev/net/tun", (10, 200), 0o666, 0, 0)],
        vec![],
        Some("NET_ADMIN"),
    );
    let out = run(&env, &b, "tun");
    assert_eq!(kv(&out, "tap"), "ok", "TUNSETIFF as pod root: {out}");
    assert!(kv(&out, "links").contains("cnftap0"), "{out}");
    let host = Command::new("ip")
        .args(["link", "show", "cnftap0"])
        .output()
        .unwrap();
    assert!(!host.status.success(), "the tap is on the host");
}

#[test]
fn vhost_net_opens() {
    if !can_run("vhost-net") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:238"]);
    let b = bundle(
        &env,
        "vhost",
        "/bin/devopen open /dev/vhost-net",
        vec![device("/dev/vhost-net", (10, 238), 0o600, 0, 0)],
        vec![cgroup_allow((10, 238))],
        None,
    );
    let out = run(&env, &b, "vhost");
    let open = kv(&out, "open");
    if (open == "ENODEV" || open == "ENXIO") && !Path::new("/sys/class/misc/vhost-net").exists() {
        eprintln!("SKIP vhost-net: this kernel has no vhost_net driver (open gave {open}); the node itself was made and bound");
        return;
    }
    assert_eq!(open, "ok", "{out}");
}

#[test]
fn a_device_outside_the_allowlist_is_refused() {
    if !can_run("device refused") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "refused",
        "true",
        vec![device("/dev/kvm", KVM, 0o600, 0, 0)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let id = env.id("refused");
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert_one_line_error(
        &out,
        &["linux.devices[0] (/dev/kvm)", "c 10:232", "[devices] allow"],
    );
    assert_nothing_left(&env, &id);
    // /dev/mem and a disk, asked for by a hostile bundle, at paths of
    // their own.
    for (entry, dev) in [
        (device("/dev/cnf/mem", (1, 1), 0o666, 0, 0), "c 1:1"),
        (
            json!({ "path": "/dev/cnf/sda", "type": "b", "major": 8, "minor": 0 }),
            "b 8:0",
        ),
    ] {
        let path = entry["path"].as_str().unwrap().to_string();
        let b = bundle(
            &env,
            &format!("refused-{}", &dev[..1]),
            "true",
            vec![entry],
            vec![],
            None,
        );
        let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
        assert_one_line_error(
            &out,
            &[
                &format!("linux.devices[0] ({path})"),
                dev,
                "[devices] allow",
            ],
        );
        assert_nothing_left(&env, &id);
    }
    // A malformed rule names itself.
    allow(&env, &["c 10"]);
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["[devices] allow \"c 10\""]);
    assert_nothing_left(&env, &id);
}

#[test]
fn without_a_cgroup_allow_rule_the_node_cannot_be_opened() {
    if !can_run("device cgroup") || !have("/dev/kvm", "device cgroup") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:232"]);
    // The spec's rules stay "deny all": the node is made, not usable.
    let b = bundle(
        &env,
        "nocg",
        "/bin/devopen kvm /dev/kvm",
        vec![device("/dev/kvm", KVM, 0o666, 0, 0)],
        vec![],
        None,
    );
    let out = run(&env, &b, "nocg");
    assert_eq!(kv(&out, "open"), "EPERM", "{out}");
}

#[test]
fn file_mode_uid_and_gid_decide_for_non_root_uids() {
    if !can_run("device ownership") || !have("/dev/kvm", "device ownership") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:232"]);
    let script = "echo owner=$(stat -c %u:%g:%a /dev/kvm); \
        /bin/devopen open /dev/kvm 1000 1000 | sed s/^/u1000_/; \
        /bin/devopen open /dev/kvm 1001 1001 | sed s/^/u1001_/; \
        /bin/devopen open /dev/kvm 1001 1001 1000 | sed s/^/u1001g1000_/; \
        /bin/devopen open /dev/kvm 0 0 | sed s/^/root_/";
    let b = bundle(
        &env,
        "owner",
        script,
        vec![device("/dev/kvm", KVM, 0o060, 0, 1000)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let out = run(&env, &b, "owner");
    assert_eq!(kv(&out, "owner"), "0:1000:60", "{out}");
    assert_eq!(kv(&out, "u1000_open"), "ok", "group 1000 may: {out}");
    assert_eq!(kv(&out, "u1001_open"), "EACCES", "others may not: {out}");
    assert_eq!(kv(&out, "u1001g1000_open"), "ok", "{out}");
    // Mode 0060: the owner (pod root) has no bits, and pod root's
    // CAP_DAC_OVERRIDE over its own nodes lets it open anyway, as on a
    // host; root is not the point here, uids 1000 and 1001 are.
    assert_eq!(kv(&out, "root_open"), "ok", "{out}");
}

/// The host-side node of container `id` and its tmpfs, from `inspect`.
fn host_node(env: &Env, id: &str) -> (PathBuf, u32, u32, String) {
    let v: Value = serde_json::from_str(&env.ok(&["inspect", id, "--format", "json"])).unwrap();
    let d = &v["containers"][0]["devices"][0];
    (
        PathBuf::from(d["host_path"].as_str().expect("inspect lists the device")),
        d["host_uid"].as_u64().unwrap() as u32,
        d["host_gid"].as_u64().unwrap() as u32,
        format!(
            "{} -> [{}, {})",
            v["host_uids"]["container_id"],
            v["host_uids"]["host_start"],
            v["host_uids"]["host_end"]
        ),
    )
}

#[test]
fn host_users_cannot_reach_the_host_side_nodes() {
    if !can_run("host-side device nodes") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:232"]);
    // Mode 0666 so that only the tmpfs root stands between a host user
    // and the node.
    let b = bundle(
        &env,
        "hostside",
        "sleep 100000",
        vec![device("/dev/cnf/kvm0", KVM, 0o666, 0, 0)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let id = env.id("hostside");
    env.create(&b, &id);
    let (node, uid, gid, uids) = host_node(&env, &id);
    let base = mount_base_of(&env.root).unwrap();
    assert_eq!(node.parent().unwrap(), base.join("devices").join(&id));
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(&node).unwrap();
    assert_eq!(m.rdev(), nix::sys::stat::makedev(10, 232));
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (uid, gid, 0o666));
    assert!(uids.starts_with(&format!("0 -> [{uid}, ")), "{uids}");
    let dir = std::fs::metadata(node.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (uid, 0o700));
    // Mounted nosuid,noexec without nodev for the init to bind the nodes;
    // once it has, the host's copy is nodev too (the container's copies
    // keep dev: the other tests open their nodes).
    let mounts = common::mounts_mentioning(&format!("devices/{id}"));
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(mounts[0].contains(flag), "{flag}: {mounts:?}");
    }
    let text = env.ok(&["inspect", &id]);
    assert!(
        text.contains(&format!(
            "device /dev/cnf/kvm0 c 10:232 mode 0666 host owner {uid}:{gid}"
        )),
        "{text}"
    );
    // The attack: an unprivileged host user opens the node.
    let attack = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("/bin/sh")
        .arg("-c")
        .arg(format!("exec 3<>{}", node.display()))
        .output()
        .expect("setpriv(1) from util-linux");
    assert!(
        !attack.status.success(),
        "host user 65534 opened the pod's node {}",
        node.display()
    );
    assert!(
        String::from_utf8_lossy(&attack.stderr).contains("Permission denied"),
        "{attack:?}"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert!(!node.parent().unwrap().exists());
}

#[test]
fn a_failed_create_leaves_no_device_tmpfs() {
    if !can_run("failed create with devices") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 10:232"]);
    // libcontainer fails the create after the nodes were made: the
    // process's cwd does not exist.
    let b = bundle(
        &env,
        "failed",
        "true",
        vec![device("/dev/kvm", KVM, 0o600, 0, 0)],
        vec![cgroup_allow(KVM)],
        None,
    );
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(&b.config_path).unwrap()).unwrap();
    spec["process"]["args"] = json!(["/no/such/binary"]);
    std::fs::write(&b.config_path, spec.to_string()).unwrap();
    let id = env.id("failed");
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/binary"),
        "failed for another reason than the missing binary: {out:?}"
    );
    assert_nothing_left(&env, &id);
    let base = mount_base_of(&env.root).unwrap();
    assert!(!base.join("devices").join(&id).exists());
}

/// VFIO's container node (misc 10:196).
const VFIO_CONTAINER: (i64, i64) = (10, 196);

/// The VFIO group node of the lane's vfio-pci device (`CNFBOX_VM_VFIO`, a
/// PCI address set by `scripts/vm-guest.sh`): its path, numbers and the
/// device's address.
fn lane_vfio_group(test: &str) -> Option<(String, (i64, i64), String)> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let Some(dev) = std::env::var_os("CNFBOX_VM_VFIO") else {
        eprintln!(
            "SKIP {test}: runs in the VM lane only (bash scripts/vm-test.sh binds an emulated \
             NIC behind QEMU's IOMMU to vfio-pci; this host has no IOMMU group)"
        );
        return None;
    };
    let dev = dev.to_string_lossy().into_owned();
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{dev}/iommu_group"))
        .unwrap_or_else(|e| panic!("{dev}: no IOMMU group: {e}"));
    let group = link.file_name().unwrap().to_string_lossy().into_owned();
    let path = format!("/dev/vfio/{group}");
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(meta.file_type().is_char_device(), "{path}");
    let rdev = meta.rdev();
    let nums = (
        i64::from(nix::sys::stat::major(rdev) as u32),
        i64::from(nix::sys::stat::minor(rdev) as u32),
    );
    Some((path, nums, dev))
}

/// DPDK's use of an SR-IOV VF, on the VM lane's e1000e bound to vfio-pci
/// behind QEMU's emulated IOMMU: pod root opens `/dev/vfio/vfio` and the
/// group's node (made by number, owned by pod root), attaches the group,
/// sets the type1 IOMMU, maps a page for DMA and gets the device's fd.
/// Without `[devices] allow` for vfio's major, the create is refused;
/// without the group's cgroup rule, its open gives EPERM (the lane's
/// cgroup v2: libcgroups' eBPF device program). (type1 refuses
/// `VFIO_SET_IOMMU` with EPERM where the IOMMU cannot remap interrupts:
/// the lane's vIOMMU has `intremap=on`.)
///
/// No-IOMMU mode (`/dev/vfio/noiommu-N`) is not what this tests: Debian's
/// kernels are built without `CONFIG_VFIO_NOIOMMU`, and where it exists the
/// kernel refuses to open a no-IOMMU group without `CAP_SYS_RAWIO` in the
/// initial user namespace, which pod root never has.
#[test]
fn vfio_pod_root_uses_a_vfio_group() {
    if !can_run("vfio") {
        return;
    }
    let Some((group, nums, dev)) = lane_vfio_group("vfio") else {
        return;
    };
    let env = Env::new();
    let (major, minor) = nums;
    let script = format!(
        "echo owner=$(stat -c %u:%g:%a {group}); /bin/devopen vfio {group} /dev/vfio/vfio {dev}"
    );
    let devices = vec![
        device("/dev/vfio/vfio", VFIO_CONTAINER, 0o666, 0, 0),
        device(&group, nums, 0o600, 0, 0),
    ];
    let rules = vec![cgroup_allow(VFIO_CONTAINER), cgroup_allow(nums)];

    // Only the container node allowed: the group is refused by name.
    allow(&env, &["c 10:196"]);
    let b = bundle(
        &env,
        "vfio-refused",
        &script,
        devices.clone(),
        rules.clone(),
        None,
    );
    let id = env.id("vfio-refused");
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert_one_line_error(
        &out,
        &[
            &format!("linux.devices[1] ({group})"),
            &format!("c {major}:{minor}"),
            "[devices] allow",
        ],
    );
    assert_nothing_left(&env, &id);

    // `allow` appends a second [devices] table: start from a fresh config.
    let env = Env::new();
    allow(&env, &["c 10:196", &format!("c {major}:*")]);
    // The device cgroup still decides: without the group's rule, EPERM.
    let b = bundle(
        &env,
        "vfio-nocg",
        &script,
        devices.clone(),
        vec![cgroup_allow(VFIO_CONTAINER)],
        None,
    );
    let out = run(&env, &b, "vfio-nocg");
    assert_eq!(kv(&out, "container"), "ok", "{out}");
    assert_eq!(kv(&out, "open"), "EPERM", "{out}");
    let b = bundle(&env, "vfio", &script, devices, rules, None);
    let out = run(&env, &b, "vfio");
    assert_eq!(kv(&out, "owner"), "0:0:600", "{out}");
    for key in ["container", "open", "attach", "iommu", "dma", "device"] {
        assert_eq!(kv(&out, key), "ok", "{key}: {out}");
    }
    assert_eq!(kv(&out, "viable"), "yes", "{out}");
    let regions: u32 = kv(&out, "regions").parse().unwrap_or(0);
    assert!(regions > 0, "{out}");
}
