//! The pod profile: a private user namespace per pod on its own host ID
//! range, an id-mapped rootfs (nothing chowned), pod members joining the
//! sandbox's namespaces, and kubelet's mappings registered or refused.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;
use test_bundles::Scenario;

const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// uid, gid and mode of every file under `dir`, to compare before/after.
fn ownership(dir: &Path) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.insert(e.path().display().to_string(), (m.uid(), m.gid(), m.mode()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Entries of `before` whose owner or mode changed, or that vanished.
fn changed(
    before: &BTreeMap<String, (u32, u32, u32)>,
    after: &BTreeMap<String, (u32, u32, u32)>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v:?} -> {:?}", after.get(k)))
        .collect()
}

fn kv(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {stdout}"))
        .to_string()
}

#[test]
fn standalone_container_gets_its_own_range_and_an_idmapped_rootfs() {
    if !can_run("pod userns") {
        return;
    }
    let env = Env::new();
    let probe = "cat /bin/cnfbox-check >/dev/null; /bin/cnfbox-check; \
                 echo owner=$(stat -c %u:%g /bin/busybox); touch /tmp/x && echo write=ok";
    let bundle = env.bundle("solo", |b| b.args(["/bin/sh", "-c", probe]));
    let before = ownership(&bundle.rootfs);
    let id = env.id("solo");
    env.create(&bundle, &id);
    let held = env
        .allocator()
        .show(&id)
        .unwrap()
        .expect("range allocated at create");
    let host = held.mapping.uid.host_id();
    assert!(host >= 65536);
    assert_eq!(held.mapping.uid.size(), 65536);
    // The view is attached before start and is id-mapped.
    let views = common::mount_points_of(&id);
    assert_eq!(views.len(), 1, "{views:?}");
    let view = &views[0];
    assert!(
        common::mounts_mentioning(view.to_str().unwrap())
            .iter()
            .any(|l| l.contains("idmapped")),
        "no id-mapped rootfs view at {}",
        view.display()
    );
    env.ok(&["start", &id]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
    let diff = changed(&before, &ownership(&bundle.rootfs));
    assert!(diff.is_empty(), "the bundle on disk was modified: {diff:?}");

    // The same, seen from inside (run in the foreground to read stdout).
    let id = env.id("solo-run");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let uid_map = kv(&stdout, "uid_map");
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields[0], "0");
    assert_eq!(fields[2], "65536");
    assert!(
        fields[1].parse::<u64>().unwrap() >= 1 << 31,
        "range from the test pool: {uid_map}"
    );
    assert_eq!(kv(&stdout, "gid_map"), uid_map, "uids and gids alike");
    assert_eq!(
        kv(&stdout, "owner"),
        "0:0",
        "image files owned by container root"
    );
    assert_eq!(kv(&stdout, "write"), "ok");
    assert!(
        kv(&stdout, "mountinfo_root").contains("idmapped"),
        "{stdout}"
    );
    assert_nothing_left(&env, &id);
    let diff = changed(&before, &ownership(&bundle.rootfs));
    assert!(diff.is_empty(), "the bundle on disk was modified: {diff:?}");
    // A file written by container root lands on disk as uid 0, not as the
    // pod's host uid.
    let written = fs::metadata(bundle.rootfs.join("tmp/x")).expect("file written inside");
    assert_eq!((written.uid(), written.gid()), (0, 0));
}

#[test]
fn two_pods_get_disjoint_ranges_and_ranges_are_freed() {
    if !can_run("two pods") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let (a, b) = (env.id("poda"), env.id("podb"));
    env.create(&bundle, &a);
    env.create(&bundle, &b);
    let alloc = env.allocator();
    let ra = alloc.show(&a).unwrap().unwrap().mapping.uid.host_range();
    let rb = alloc.show(&b).unwrap().unwrap().mapping.uid.host_range();
    assert!(
        ra.end() <= rb.start() || rb.end() <= ra.start(),
        "{ra:?} overlaps {rb:?}"
    );
    // The kernel agrees: each init's uid_map is its pod's range.
    for (id, r) in [(&a, ra), (&b, rb)] {
        let pid = env.state(id)["pid"].as_i64().unwrap();
        let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        let f: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(f, ["0", &r.start().to_string(), "65536"], "{id}");
        // The init runs as nobody on the host: its pod's root.
        let st = fs::metadata(format!("/proc/{pid}")).unwrap();
        assert_eq!(st.uid(), r.start(), "{id}'s root is host uid {}", r.start());
    }
    // The kernel keeps the pods apart: pod a's host uid may not signal pod
    // b's init, while b's own uid may (the control).
    let pid_b = env.state(&b)["pid"].as_i64().unwrap().to_string();
    let kill_as = |uid: u32| {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "kill",
                "-0",
                &pid_b,
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("setpriv from util-linux")
    };
    assert!(
        !kill_as(ra.start()).success(),
        "pod a's uid signalled pod b"
    );
    assert!(kill_as(rb.start()).success(), "control: pod b's own uid");
    env.ok(&["delete", "--force", &a]);
    env.ok(&["delete", "--force", &b]);
    assert_nothing_left(&env, &a);
    assert_nothing_left(&env, &b);
    assert!(alloc.list().unwrap().is_empty());
}

#[test]
fn members_join_the_sandbox_namespaces() {
    if !can_run("pod members") {
        return;
    }
    let env = Env::new();
    let pod = env.id("pod");
    let sb = env.bundle("sandbox", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "sandbox")
    });
    let member_bundle = env.bundle("member", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "container")
    });
    // A member before its sandbox is refused, leaving nothing.
    let early = env.id("early");
    let out = env.run(&["create", "-b", member_bundle.dir.to_str().unwrap(), &early]);
    assert_one_line_error(&out, &["no running sandbox", &pod]);
    assert_nothing_left(&env, &early);

    env.create(&sb, &pod);
    let member = env.id("member");
    env.create(&member_bundle, &member);
    let ns = |id: &str, kind: &str| {
        let pid = env.state(id)["pid"].as_i64().unwrap();
        fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
    };
    assert_eq!(ns(&pod, "user"), ns(&member, "user"));
    assert_eq!(ns(&pod, "net"), ns(&member, "net"));
    assert_ne!(ns(&pod, "mnt"), ns(&member, "mnt"));
    assert_ne!(
        ns(&pod, "user"),
        fs::read_link("/proc/self/ns/user").unwrap()
    );
    let alloc = env.allocator();
    assert_eq!(
        alloc.list().unwrap().len(),
        1,
        "members reuse the pod's range"
    );

    env.ok(&["delete", "--force", &member]);
    assert!(
        alloc.show(&pod).unwrap().is_some(),
        "deleting a member keeps the range"
    );
    assert!(common::mount_points_of(&member).is_empty());
    env.ok(&["delete", "--force", &pod]);
    assert_nothing_left(&env, &pod);
}

#[test]
fn a_forged_containerd_sandbox_id_in_a_crio_spec_joins_nothing() {
    if !can_run("forged membership under CRI-O") {
        return;
    }
    const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
    const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
    let env = Env::new();
    // The victim: a CRI-O pod's sandbox (infra) container.
    let victim = env.id("victim");
    let vb = env.bundle("victim", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(CRIO_SANDBOX_ID, victim.clone())
            .annotation(CRIO_CONTAINER_TYPE, "sandbox")
    });
    env.create(&vb, &victim);
    // The tenant's pod carries containerd's keys naming the victim as pod
    // annotations; CRI-O copies them into every container's spec, beside
    // its own keys.
    let tenant = env.id("tenant");
    let forged = |b: test_bundles::BundleBuilder, kind: &str| {
        b.scenario(&Scenario::Sleep)
            .annotation(CRIO_SANDBOX_ID, tenant.clone())
            .annotation(CRIO_CONTAINER_TYPE, kind.to_string())
            .annotation(SANDBOX_ID, victim.clone())
            .annotation(CONTAINER_TYPE, "container")
    };
    let tb = env.bundle("tenant", |b| forged(b, "sandbox"));
    env.create(&tb, &tenant);
    let member = env.id("member");
    let mb = env.bundle("member", |b| forged(b, "container"));
    env.create(&mb, &member);
    let pid = |id: &str| env.state(id)["pid"].as_i64().unwrap();
    let ns = |id: &str, kind: &str| fs::read_link(format!("/proc/{}/ns/{kind}", pid(id))).unwrap();
    let uid_map = |id: &str| fs::read_to_string(format!("/proc/{}/uid_map", pid(id))).unwrap();
    for kind in ["user", "net"] {
        assert_ne!(
            ns(&member, kind),
            ns(&victim, kind),
            "{kind}: the member joined the victim's pod"
        );
        assert_ne!(
            ns(&tenant, kind),
            ns(&victim, kind),
            "{kind}: the tenant's sandbox joined the victim's pod"
        );
        assert_eq!(
            ns(&member, kind),
            ns(&tenant, kind),
            "{kind}: the member is in its own pod"
        );
    }
    assert_ne!(uid_map(&member), uid_map(&victim));
    assert_ne!(uid_map(&tenant), uid_map(&victim));
    assert_eq!(uid_map(&member), uid_map(&tenant));
    let alloc = env.allocator();
    assert!(
        alloc.show(&tenant).unwrap().is_some(),
        "the tenant's pod has its own range"
    );
    assert_eq!(alloc.list().unwrap().len(), 2, "two pods, two ranges");
    for id in [&member, &tenant, &victim] {
        env.ok(&["delete", "--force", id]);
        assert_nothing_left(&env, id);
    }
}

#[test]
fn kubelet_mappings_are_registered_or_refused() {
    if !can_run("kubelet mappings") {
        return;
    }
    let env = Env::new();
    let with_userns = |name: &str, host: u64| {
        env.bundle(name, move |b| {
            b.scenario(&Scenario::Sleep).modify(move |s| {
                let mut doc = serde_json::to_value(&*s).unwrap();
                doc["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}));
                let m = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
                doc["linux"]["uidMappings"] = m.clone();
                doc["linux"]["gidMappings"] = m;
                *s = serde_json::from_value(doc).unwrap();
            })
        })
    };
    // kubelet's choice, outside cnfbox's pool: registered and kept.
    let kube_host: u64 = 3_000_000_000;
    let kb = with_userns("kube", kube_host);
    let k = env.id("kube");
    env.create(&kb, &k);
    let pid = env.state(&k)["pid"].as_i64().unwrap();
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().nth(1).unwrap(),
        kube_host.to_string()
    );
    let entry = env.allocator().show(&k).unwrap().expect("registered");
    assert_eq!(u64::from(entry.mapping.uid.host_id()), kube_host);

    // Another pod asking for an overlapping range is refused.
    let clash = with_userns("clash", kube_host + 4096);
    let c = env.id("clash");
    let out = env.run(&["create", "-b", clash.dir.to_str().unwrap(), &c]);
    assert_one_line_error(&out, &[&c, "refused"]);
    assert_nothing_left(&env, &c);
    // Host IDs below 65536 are refused.
    let low = with_userns("low", 1000);
    let l = env.id("low");
    let out = env.run(&["create", "-b", low.dir.to_str().unwrap(), &l]);
    assert_one_line_error(&out, &[&l, "refused"]);
    assert_nothing_left(&env, &l);

    env.ok(&["delete", "--force", &k]);
    assert_nothing_left(&env, &k);
}

#[test]
fn no_pool_is_a_clear_error() {
    if !can_run("no pool") {
        return;
    }
    let mut env = Env::new();
    let missing = env.tmp.path().join("absent.toml");
    env.config = Some(missing);
    let bundle = env.bundle("nopool", |b| b.scenario(&Scenario::True));
    let id = env.id("nopool");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["absent.toml"]);
    env.config = None;
    assert_nothing_left(&env, &id);
}

#[test]
fn exec_joins_the_pod_user_namespace() {
    if !can_run("exec userns") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("execns");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let init_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let init_ns = fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let out = env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "cat /proc/self/uid_map; readlink /proc/self/ns/user; stat -c owner=%u /bin/busybox",
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        init_map.split_whitespace().collect::<Vec<_>>(),
        "{out}"
    );
    assert_eq!(lines.next().unwrap(), init_ns.to_str().unwrap(), "{out}");
    assert_eq!(lines.next().unwrap(), "owner=0", "{out}");
    // A detached exec too: its process runs as the pod's host uid.
    let pidfile = env.tmp.path().join("exec.pid");
    let st = env
        .command()
        .args([
            "exec",
            "--detach",
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
            "/bin/sleep",
            "30",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let epid: i64 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let host_uid = fs::metadata(format!("/proc/{epid}")).unwrap().uid();
    let range_start: u32 = init_map.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        host_uid, range_start,
        "exec'd root is the pod's host uid, not host root"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn inspect_shows_the_pod_for_an_operator() {
    if !can_run("inspect") {
        return;
    }
    let env = Env::new();
    let pod = env.id("ipod");
    let sb = env.bundle("sandbox", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "sandbox")
            .annotation("cnfbox.io/capabilities", "NET_ADMIN")
    });
    let mb = env.bundle("member", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "container")
    });
    env.create(&sb, &pod);
    let member = env.id("imember");
    env.create(&mb, &member);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--format", "json", &member])).unwrap();
    assert_eq!(v["pod"], pod.as_str());
    let held = env.allocator().show(&pod).unwrap().unwrap();
    let uids = v["host_uids"].as_str().unwrap();
    assert!(
        uids.contains(&held.mapping.uid.host_id().to_string()),
        "{v}"
    );
    let cs = v["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["id"], pod.as_str());
    assert_eq!(cs[0]["sandbox"], true);
    assert!(cs[0]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_NET_ADMIN")));
    assert!(!cs[1]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_NET_ADMIN")));
    assert_eq!(cs[0]["namespaces"]["user"], cs[1]["namespaces"]["user"]);
    assert!(!cs[0]["namespaces"]["user"]
        .as_str()
        .unwrap()
        .contains("(host)"));
    assert!(cs[1]["idmapped_mounts"][0]
        .as_str()
        .unwrap()
        .starts_with("rootfs"));
    let text = env.ok(&["inspect", &pod]);
    assert!(
        text.contains(&format!("sandbox {pod}")) && text.contains(&format!("container {member}")),
        "{text}"
    );
    let out = env.run(&["inspect", "no-such-pod"]);
    assert_one_line_error(&out, &["no-such-pod"]);
    env.ok(&["delete", "--force", &member]);
    env.ok(&["delete", "--force", &pod]);
    assert_nothing_left(&env, &pod);
}

#[test]
fn host_user_namespace_only_when_the_config_allows_it() {
    if !can_run("host userns") {
        return;
    }
    let env = Env::new();
    let script = "cat /proc/self/uid_map";
    let host = env.bundle("host", |b| {
        b.args(["/bin/sh", "-c", script])
            .annotation("cnfbox.io/userns", "host")
    });
    let id = env.id("hostns");
    let out = env.run(&["run", "-b", host.dir.to_str().unwrap(), &id]);
    let config = env.config.clone().unwrap();
    assert_one_line_error(
        &out,
        &[
            "host's user namespace",
            "allow_host_userns",
            config.to_str().unwrap(),
        ],
    );
    assert_nothing_left(&env, &id);

    // Allowed by config: no range, no id-mapped rootfs, the host's uid_map.
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("allow_host_userns = true\n");
    fs::write(&config, text).unwrap();
    let out = env.run(&["run", "-b", host.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    let map = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    assert!(env.allocator().list().unwrap().is_empty());
    assert_nothing_left(&env, &id);

    // Namespaced capabilities still need a private user namespace.
    let netadmin = env.bundle("hostcap", |b| {
        b.scenario(&Scenario::True)
            .annotation("cnfbox.io/userns", "host")
            .annotation("cnfbox.io/capabilities", "NET_ADMIN")
    });
    let id = env.id("hostcap");
    let out = env.run(&["create", "-b", netadmin.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["CAP_NET_ADMIN", "private user namespace"]);
    assert_nothing_left(&env, &id);
}

/// containerd 2.x gives a kubelet user-namespace sandbox the path of a
/// user namespace it pinned (kubelet's mappings): the sandbox joins it and
/// the ledger records the mappings the kernel holds for it. A spec whose
/// mappings differ from that namespace's is refused, and so is a user
/// namespace path on a container that is no CRI sandbox.
#[test]
fn a_sandbox_joins_the_user_namespace_containerd_pinned() {
    if !can_run("joined sandbox user namespace") {
        return;
    }
    let env = Env::new();
    let host: u64 = 3_000_131_072;
    // The pinned namespace: a process in a fresh user namespace that host
    // root maps as containerd does.
    let mut holder = std::process::Command::new("unshare")
        .args(["-U", "sleep", "1000"])
        .spawn()
        .expect("unshare");
    let ns = format!("/proc/{}/ns/user", holder.id());
    while fs::read_link(&ns).ok() == fs::read_link("/proc/self/ns/user").ok() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for f in ["uid_map", "gid_map"] {
        fs::write(
            format!("/proc/{}/{f}", holder.id()),
            format!("0 {host} 65536"),
        )
        .unwrap();
    }
    let with_path = |name: &str, spec_host: u64, sandbox: bool| {
        let ns = ns.clone();
        env.bundle(name, move |b| {
            b.scenario(&Scenario::Sleep).modify(move |s| {
                let mut doc = serde_json::to_value(&*s).unwrap();
                doc["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user", "path": ns}));
                let m = json!([{"containerID": 0, "hostID": spec_host, "size": 65536}]);
                doc["linux"]["uidMappings"] = m.clone();
                doc["linux"]["gidMappings"] = m;
                if sandbox {
                    doc["annotations"] = json!({CONTAINER_TYPE: "sandbox"});
                }
                *s = serde_json::from_value(doc).unwrap();
            })
        })
    };
    let bad = with_path("differs", host + 65536, true);
    let d = env.id("differs");
    let out = env.run(&["create", "-b", bad.dir.to_str().unwrap(), &d]);
    assert_one_line_error(&out, &["differs from the mappings", &ns]);
    assert_nothing_left(&env, &d);

    let plain = with_path("plain", host, false);
    let p = env.id("plain");
    let out = env.run(&["create", "-b", plain.dir.to_str().unwrap(), &p]);
    assert_one_line_error(&out, &["user namespace path", "sandbox"]);
    assert_nothing_left(&env, &p);

    let good = with_path("joined", host, true);
    let j = env.id("joined");
    env.create(&good, &j);
    let pid = env.state(&j)["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        fs::read_link(&ns).unwrap(),
        "the sandbox is in the pinned user namespace"
    );
    let entry = env.allocator().show(&j).unwrap().expect("registered");
    assert_eq!(u64::from(entry.mapping.uid.host_id()), host);
    env.ok(&["delete", "--force", &j]);
    assert_nothing_left(&env, &j);
    let _ = holder.kill();
    let _ = holder.wait();
}
