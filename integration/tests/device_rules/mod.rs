//! The device cgroup decides what a node cnfbox made may do, on cgroup v1
//! (the host lane, `devices.allow`) and on cgroup v2 (the VM lane,
//! libcgroups' eBPF device program): a node with an allow rule opens, the
//! same node without one gives EPERM, also when the spec's rules do not
//! start with "deny all" or the spec has no `linux.resources` at all;
//! containerd's default set (`/dev/null`, `/dev/zero`) opens either way;
//! `update` keeps the rules and never gives back the console cnfbox
//! withholds; the init's `RLIMIT_MEMLOCK` is the runtime's.

mod systemd;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use serde_json::Value;

use super::{allow, bundle, cgroup_allow, device, kv, run, KVM, VFIO_CONTAINER};
use crate::common::{can_run, Env};

/// A char device pod root may open with no capability, as this machine
/// has it: `/dev/kvm` on the host, VFIO's container node in the VM lane
/// (whose TCG guest has no `/dev/kvm`).
fn plain_device(test: &str) -> Option<(&'static str, (i64, i64))> {
    for (path, nums) in [("/dev/kvm", KVM), ("/dev/vfio/vfio", VFIO_CONTAINER)] {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let rdev = meta.rdev();
        let have = (
            i64::from(nix::sys::stat::major(rdev) as u32),
            i64::from(nix::sys::stat::minor(rdev) as u32),
        );
        if meta.file_type().is_char_device() && have == nums {
            return Some((path, nums));
        }
    }
    eprintln!("SKIP {test}: this host has neither /dev/kvm nor /dev/vfio/vfio");
    None
}

fn layout() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else {
        "cgroup v1"
    }
}

/// Rewrites the bundle's config.json with `f`.
fn edit_spec(b: &test_bundles::Bundle, f: impl FnOnce(&mut Value)) {
    let path = b.dir.join("config.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut doc);
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn cgroup_rules_decide_what_opens() {
    if !can_run("cgroup rules") {
        return;
    }
    let Some((path, nums)) = plain_device("cgroup rules") else {
        return;
    };
    let env = Env::new();
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1)]);
    let script = format!(
        "/bin/devopen open {path} | sed s/^/dev_/; /bin/devopen open /dev/null | sed s/^/null_/; \
         echo zero=$(head -c 4 /dev/zero | wc -c)"
    );
    let nodes = || vec![device(path, nums, 0o666, 0, 0)];
    let at = layout();

    let b = bundle(
        &env,
        "rule",
        &script,
        nodes(),
        vec![cgroup_allow(nums)],
        None,
    );
    let out = run(&env, &b, "rule");
    assert_eq!(kv(&out, "dev_open"), "ok", "{at}, allow rule: {out}");
    assert_eq!(kv(&out, "null_open"), "ok", "{at}: {out}");
    assert_eq!(kv(&out, "zero"), "4", "{at}: {out}");

    // The bundle's rules are "deny all" only.
    let b = bundle(&env, "norule", &script, nodes(), vec![], None);
    let out = run(&env, &b, "norule");
    assert_eq!(kv(&out, "dev_open"), "EPERM", "{at}, no rule: {out}");
    assert_eq!(kv(&out, "null_open"), "ok", "{at}: {out}");
    assert_eq!(kv(&out, "zero"), "4", "{at}: {out}");

    // No "deny all" first: a new v1 cgroup would start from its parent's
    // `a *:* rwm`.
    let b = bundle(&env, "nodeny", &script, nodes(), vec![], None);
    edit_spec(&b, |doc| {
        doc["linux"]["resources"]["devices"] = Value::Array(vec![])
    });
    let out = run(&env, &b, "nodeny");
    assert_eq!(kv(&out, "dev_open"), "EPERM", "{at}, no deny-all: {out}");
    assert_eq!(kv(&out, "null_open"), "ok", "{at}: {out}");

    // No `linux.resources`: libcontainer would apply no cgroup setting.
    let b = bundle(&env, "nores", &script, nodes(), vec![], None);
    edit_spec(&b, |doc| {
        doc["linux"].as_object_mut().unwrap().remove("resources");
    });
    let out = run(&env, &b, "nores");
    assert_eq!(kv(&out, "dev_open"), "EPERM", "{at}, no resources: {out}");
    assert_eq!(kv(&out, "null_open"), "ok", "{at}: {out}");
}

/// Pod root (with NET_ADMIN in its own namespaces, as the default policy
/// allows) cannot lift its device rules on
/// cgroup v2 by detaching the device program from its cgroup (issue 25,
/// "not demonstrated"): querying a cgroup's programs and taking one by id
/// need the capability in the host's user namespace, so pod root has no
/// program fd to detach. The node without a
/// rule still gives EPERM afterwards.
#[test]
fn pod_root_cannot_detach_the_device_program() {
    const T: &str = "detaching the v2 device program";
    if !can_run(T) {
        return;
    }
    if layout() != "cgroup v2" {
        eprintln!("SKIP {T}: /sys/fs/cgroup is not cgroup v2 here (the device program is v2's; the VM lane runs it)");
        return;
    }
    let Some((path, nums)) = plain_device(T) else {
        return;
    };
    let env = Env::new();
    // The node is allowed by policy; only its cgroup rule is missing.
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1)]);
    let script = format!(
        "/bin/devopen detach /sys/fs/cgroup | sed s/^/bpf_/; \
         /bin/devopen open {path} | sed s/^/dev_/"
    );
    let b = bundle(
        &env,
        "detach",
        &script,
        vec![device(path, nums, 0o666, 0, 0)],
        vec![],
        Some("NET_ADMIN"),
    );
    let out = run(&env, &b, "detach");
    assert_eq!(
        kv(&out, "bpf_cgroup"),
        "ok",
        "the pod sees its cgroup: {out}"
    );
    // Querying and taking a program by id need the capability on the host.
    for step in ["query", "getfd"] {
        assert_eq!(kv(&out, &format!("bpf_{step}")), "EPERM", "{step}: {out}");
    }
    // So pod root holds no program fd to detach (the kernel answers EBADF
    // for whatever fd it passes).
    for step in ["detach", "detach_any"] {
        let got = kv(&out, &format!("bpf_{step}"));
        assert!(!got.is_empty() && got != "ok", "{step}: {out}");
    }
    assert_eq!(kv(&out, "dev_open"), "EPERM", "the rule held: {out}");
}

/// libcgroups' v2 manager builds the device program again on `update`,
/// from resources that carry no device rules.
#[test]
fn cgroup_rules_survive_update() {
    if !can_run("cgroup rules update") {
        return;
    }
    let Some((path, nums)) = plain_device("cgroup rules update") else {
        return;
    };
    let env = Env::new();
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1)]);
    let b = bundle(
        &env,
        "upd",
        &format!("/bin/sleep {}", 1 << 30),
        vec![device(path, nums, 0o666, 0, 0)],
        vec![cgroup_allow(nums)],
        None,
    );
    let id = env.id("upd");
    env.create(&b, &id);
    env.ok(&["start", &id]);
    // devopen exits non-zero when the open fails: its report is the answer.
    let open = |what: &str| {
        let out = env.run(&["exec", &id, "/bin/devopen", "open", what]);
        kv(&String::from_utf8_lossy(&out.stdout), "open")
    };
    let at = layout();
    assert_eq!(open(path), "ok", "{at}, before update");
    env.ok(&["update", "--pids-limit", "99", &id]);
    assert_eq!(open(path), "ok", "{at}, after update");
    assert_eq!(open("/dev/null"), "ok", "{at}, after update");
    // Rules in an update are ignored (as runc's update does).
    let res = env.tmp.path().join("res.json");
    std::fs::write(
        &res,
        r#"{"pids":{"limit":98},"devices":[{"allow":false,"access":"rwm"}]}"#,
    )
    .unwrap();
    env.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert_eq!(open(path), "ok", "{at}, after update --resources");
    env.ok(&["delete", "--force", &id]);
}

/// libcgroups' apply allows the console again at every `update` (v1) or
/// detaches cnfbox's program that denies it (v2): the pod is frozen until
/// cnfbox denies it again, and thawed afterwards unless it was paused.
#[test]
fn the_console_stays_denied_after_update() {
    if !can_run("console after update") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "consupd",
        &format!("/bin/sleep {}", 1 << 30),
        vec![device("/dev/hostconsole", (5, 1), 0o666, 0, 0)],
        vec![],
        None,
    );
    let id = env.id("consupd");
    env.create(&b, &id);
    env.ok(&["start", &id]);
    let open = |what: &str| {
        let out = env.run(&["exec", &id, "/bin/devopen", "open", what]);
        kv(&String::from_utf8_lossy(&out.stdout), "open")
    };
    let at = layout();
    assert_eq!(open("/dev/hostconsole"), "EPERM", "{at}, before update");
    env.ok(&["update", "--pids-limit", "99", &id]);
    assert_eq!(
        env.state(&id)["status"],
        "running",
        "{at}: thawed after update"
    );
    assert_eq!(open("/dev/hostconsole"), "EPERM", "{at}, after update");
    assert_eq!(open("/dev/null"), "ok", "{at}, after update");
    env.ok(&["pause", &id]);
    env.ok(&["update", "--pids-limit", "98", &id]);
    assert_eq!(env.state(&id)["status"], "paused", "{at}: still paused");
    env.ok(&["resume", &id]);
    assert_eq!(
        open("/dev/hostconsole"),
        "EPERM",
        "{at}, after a paused update"
    );
    env.ok(&["delete", "--force", &id]);
}

/// libcgroups sets `RLIMIT_MEMLOCK` to 128 MiB before it loads the v2
/// device program, in the process the init is forked from.
#[test]
fn cgroup_rules_leave_memlock_as_it_was() {
    if !can_run("cgroup rules memlock") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "memlock",
        "echo soft=$(ulimit -S -l); echo hard=$(ulimit -H -l)",
        vec![],
        vec![],
        None,
    );
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .expect("getrlimit");
    let shell = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            (v / 1024).to_string()
        }
    };
    let out = run(&env, &b, "memlock");
    assert_eq!(kv(&out, "soft"), shell(soft), "{}: {out}", layout());
    assert_eq!(kv(&out, "hard"), shell(hard), "{}: {out}", layout());
}
