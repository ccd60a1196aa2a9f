//! Pods exchanging traffic over one trunk: macvlan children and VLAN
//! sub-interfaces of a bridge in the host namespace.

use super::*;

#[test]
fn macvlan_pods_exchange_traffic_over_one_trunk() {
    if !can_run("macvlan pods") {
        return;
    }
    let ns = HostNs::new("mv");
    let env = Env::new();
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    configure(&env, "[network]\nparents = [\"tr*\"]\n");
    let before = ns.snapshot();

    let mut ids = Vec::new();
    for (i, mode) in [(1, "bridge"), (2, "bridge")] {
        let b = pod_bundle(
            &env,
            &format!("mv{i}"),
            Some(&format!("data0=macvlan:{trunk}:{mode}")),
        );
        let id = env.id(&format!("mv{i}"));
        create_ok(&env, &ns, &b, &id);
        start(&env, &ns, &id);
        exec(
            &env,
            &ns,
            &id,
            &format!("ip addr add 10.213.0.{i}/24 dev data0 && ip link set data0 up"),
        );
        ids.push(id);
    }
    // The children live only in the pods: the host side is as it was.
    assert_eq!(ns.links(), vec!["lo".to_string(), trunk.clone()]);
    // busybox's ip has no -d: look with the host's iproute2 through the
    // pins. The pod holds a veth; the macvlan is in its relay namespace.
    let links = in_netns(&pin_of(&env, &ids[0]), "ip -d -o link show data0");
    assert!(links.contains("veth"), "{links}");
    let relay = in_netns(&relay_pin_of(&env, &ids[0]), "ip -d -o link show h0");
    assert!(
        relay.contains("macvlan") && relay.contains("mode bridge"),
        "{relay}"
    );
    let ping = exec(
        &env,
        &ns,
        &ids[0],
        "for i in 1 2 3 4 5; do ping -c 1 -W 1 10.213.0.2 >/dev/null && { echo reply; exit 0; }; done; echo none",
    );
    assert_eq!(ping.trim(), "reply", "pod 1 reaches pod 2 over the trunk");
    pins_are_root_only(&pin_of(&env, &ids[0]));

    let inspect = ok(&env, &ns, &["inspect", &ids[1], "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["interfaces"][0]["name"], "data0", "{inspect}");
    assert_eq!(v["interfaces"][0]["kind"], "macvlan", "{inspect}");
    assert_eq!(
        v["interfaces"][0]["host_device"],
        trunk.as_str(),
        "{inspect}"
    );
    assert!(
        v["interfaces"][0]["origin"]
            .as_str()
            .unwrap()
            .contains("cnfbox.io/interfaces"),
        "{inspect}"
    );

    for id in &ids {
        ok(&env, &ns, &["delete", "--force", id]);
        assert_nothing_left(&env, id);
    }
    let after = ns.snapshot();
    assert_eq!(after, before, "the host namespace is as before");
}

/// A pod's namespace pins are in a root-only directory: another host user
/// cannot open one and so hold the pod's namespace (and the devices moved
/// into it) past delete.
fn pins_are_root_only(pin: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(pin.parent().unwrap()).unwrap();
    assert_eq!(
        (dir.mode() & 0o7777, dir.uid(), dir.gid()),
        (0o700, 0, 0),
        "the directory of {}",
        pin.display()
    );
    // Control: host root opens it.
    assert!(
        std::fs::File::open(pin).is_ok(),
        "control: {}",
        pin.display()
    );
    let held = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["sh", "-c", &format!("exec 3< {}", pin.display())])
        .stderr(Stdio::null())
        .status()
        .expect("setpriv from util-linux");
    assert!(
        !held.success(),
        "nobody opened the pod's pin {}",
        pin.display()
    );
}

#[test]
fn vlan_sub_interface_where_the_kernel_has_8021q() {
    if !can_run("vlan attachment") {
        return;
    }
    let ns = HostNs::new("vlan");
    let env = Env::new();
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    let probe = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "ip", "link", "add", "link", &trunk, "name", "probe.7", "type", "vlan", "id", "7",
        ])
        .output()
        .expect("nsenter(1)");
    configure(
        &env,
        "[network]\nparents = [{ name = \"tr*\", vlans = [100] }]\n",
    );
    if !probe.status.success() {
        eprintln!(
            "SKIP vlan attachment: this kernel cannot make VLAN sub-interfaces (no 8021q): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        // What can be checked here: the kernel's refusal is a clear error
        // and leaves both sides as they were.
        let before = ns.snapshot();
        let id = env.id("novlan");
        let bundle = pod_bundle(&env, "novlan", Some(&format!("v100=vlan:{trunk}:100")));
        let out = create(&env, &ns, &bundle, &id);
        assert_one_line_error(
            &out,
            &["v100=vlan", "create VLAN sub-interface (8021q) of", &trunk],
        );
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before);
        return;
    }
    ns.sh("ip link del probe.7");
    let before = ns.snapshot();
    let id = env.id("vlan");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "vlan", Some(&format!("v100=vlan:{trunk}:100"))),
        &id,
    );
    start(&env, &ns, &id);
    let d = in_netns(&pin_of(&env, &id), "ip -d -o link show v100");
    assert!(d.contains("veth"), "{d}");
    let d = in_netns(&relay_pin_of(&env, &id), "ip -d -o link show h0");
    assert!(d.contains("vlan") && d.contains("id 100"), "{d}");
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
}

/// Whether this kernel makes VLAN sub-interfaces (8021q), probed on `dev`
/// in `ns`; prints a loud skip line when not.
fn kernel_has_8021q(test: &str, ns: &HostNs, dev: &str) -> bool {
    let probe = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "sh",
            "-c",
            &format!("ip link add link {dev} name probe.7 type vlan id 7 && ip link del probe.7"),
        ])
        .output()
        .expect("nsenter(1)");
    if !probe.status.success() {
        eprintln!(
            "SKIP {test}: this kernel cannot make VLAN sub-interfaces (no 8021q; the VM lane has it): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    probe.status.success()
}

/// Pings `addr` from pod `id` (a few tries: links come up asynchronously).
fn pod_pings(env: &Env, ns: &HostNs, id: &str, addr: &str) -> String {
    exec(
        env,
        ns,
        id,
        &format!(
            "for i in 1 2 3 4 5 6 7 8; do ping -c 1 -W 1 {addr} >/dev/null && {{ echo reply; exit 0; }}; done; echo none"
        ),
    )
    .trim()
    .to_string()
}

#[test]
fn vlan_pods_exchange_traffic_on_one_trunk_and_pod_root_tags_a_moved_one() {
    if !can_run("vlan traffic") {
        return;
    }
    let ns = HostNs::new("vlt");
    let env = Env::new();
    let t = &ns.tag;
    // The trunk: a switch (bridge, no VLAN filtering: tagged frames pass
    // as they are) with two ports; each pod's VLAN 100 sits on the far end
    // of one port's cable. A third cable's end is moved into a pod whole.
    let (sw, p1, p2) = (format!("sw{t}"), format!("tp{t}a"), format!("tp{t}b"));
    let (vf, peer) = (format!("vf{t}"), format!("pe{t}"));
    ns.sh(&format!(
        "ip link add {sw} type bridge; ip link set {sw} up; \
         for p in {p1} {p2}; do ip link add $p type veth peer name s$p; \
           ip link set s$p master {sw}; ip link set s$p up; ip link set $p up; done; \
         ip link add {vf} type veth peer name {peer}; ip link set {peer} up"
    ));
    if !kernel_has_8021q("vlan traffic", &ns, &p1) {
        return;
    }
    configure(
        &env,
        "[network]\nparents = [{ name = \"tp*\", vlans = [100] }]\nmovable = [\"vf*\"]\n",
    );
    let before = ns.snapshot();

    let mut ids = Vec::new();
    for (i, port) in [(1, &p1), (2, &p2)] {
        let b = pod_bundle(
            &env,
            &format!("vl{i}"),
            Some(&format!("v100=vlan:{port}:100")),
        );
        let id = env.id(&format!("vl{i}"));
        create_ok(&env, &ns, &b, &id);
        start(&env, &ns, &id);
        exec(
            &env,
            &ns,
            &id,
            &format!("ip addr add 10.215.0.{i}/24 dev v100 && ip link set v100 up"),
        );
        let d = in_netns(&relay_pin_of(&env, &id), "ip -d -o link show h0");
        assert!(d.contains("vlan protocol 802.1Q id 100"), "{d}");
        ids.push(id);
    }
    assert_eq!(
        pod_pings(&env, &ns, &ids[0], "10.215.0.2"),
        "reply",
        "pod 1 reaches pod 2 over VLAN 100 of the trunk"
    );
    // The frames on the cable are tagged: untagged, the host side's port
    // end sees nothing of the pods' subnet.
    let host_side = ns.sh(&format!("ip -o addr show {p1}; ip -o addr show {p2}"));
    assert!(!host_side.contains("10.215."), "{host_side}");

    // Pod root (NET_ADMIN in its own user namespace) tags VLAN 200 on a
    // device moved into the pod; the host side tags its cable end too.
    let bundle = with_net_devices(&env, "vlmove", json!({ vf.clone(): { "name": "fh0" } }));
    let id = env.id("vlmove");
    create_ok(&env, &ns, &bundle, &id);
    start(&env, &ns, &id);
    ns.sh(&format!(
        "ip link add link {peer} name {peer}.200 type vlan id 200; \
         ip addr add 10.216.0.1/24 dev {peer}.200; ip link set {peer}.200 up"
    ));
    let inside = exec(
        &env,
        &ns,
        &id,
        "ip link set fh0 up && ip link add link fh0 name fh0.200 type vlan id 200 && \
         ip addr add 10.216.0.2/24 dev fh0.200 && ip link set fh0.200 up && echo tagged=ok",
    );
    assert!(inside.contains("tagged=ok"), "{inside}");
    assert_eq!(
        pod_pings(&env, &ns, &id, "10.216.0.1"),
        "reply",
        "the pod's own VLAN 200 reaches the host side's"
    );
    // Back down as it came, so the host side compares equal after delete.
    exec(&env, &ns, &id, "ip link set fh0 down");
    ids.push(id);
    ns.sh(&format!("ip link del {peer}.200"));

    for id in &ids {
        ok(&env, &ns, &["delete", "--force", id]);
        assert_nothing_left(&env, id);
    }
    // The pod's fh0.200 went with the pod; vf is back, as it was. (The
    // kernel reports the peer of a veth end that was away as operstate
    // DOWN rather than LOWERLAYERDOWN: the same down link.)
    let same = |s: String| s.replace("state LOWERLAYERDOWN", "state DOWN");
    assert_eq!(
        same(ns.snapshot()),
        same(before),
        "the host namespace is as before"
    );
}
