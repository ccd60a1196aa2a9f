//! Pod members: containers and execs joining the sandbox's namespaces, a
//! forged sandbox id joining nothing, a sandbox joining the user namespace
//! containerd pinned, and what `inspect` shows an operator.

use super::*;

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
    // Numbers, not a preformatted string.
    assert_eq!(
        v["host_uids"]["host_start"],
        held.mapping.uid.host_id(),
        "{v}"
    );
    assert_eq!(
        v["host_gids"]["host_start"],
        held.mapping.gid.host_id(),
        "{v}"
    );
    assert_eq!(v["host_uids"]["size"], held.mapping.uid.size(), "{v}");
    assert!(
        v["containers"][0]["created"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
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
