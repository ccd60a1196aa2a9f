//! A host device moved into a pod: driven inside, and given back to the
//! namespace it came from on delete, also after the init died or while
//! its host name is taken.

use super::*;

#[test]
fn a_moved_device_is_driven_inside_and_comes_back() {
    if !can_run("moved device") {
        return;
    }
    let ns = HostNs::new("mvd");
    let env = Env::new();
    let (vf, peer) = (format!("vf{}", ns.tag), format!("pe{}", ns.tag));
    ns.sh(&format!(
        "ip link add {vf} type veth peer name {peer}; \
         ip addr add 10.214.0.1/24 dev {vf}; ip link set {vf} up; \
         ip addr add 10.214.0.2/24 dev {peer}; ip link set {peer} up"
    ));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.sh(&format!("ip -o addr show {vf}"));

    let bundle = with_net_devices(&env, "move", json!({ vf.clone(): { "name": "fh0" } }));
    let id = env.id("move");
    create_ok(&env, &ns, &bundle, &id);
    start(&env, &ns, &id);
    assert!(
        !ns.links().contains(&vf),
        "{vf} left the host: {:?}",
        ns.links()
    );
    // Renamed, addresses kept, and pod root drives it (NET_ADMIN in the
    // pod's user namespace owns the pod's network namespace).
    let inside = exec(
        &env,
        &ns,
        &id,
        "ip -o addr show fh0; ip link set fh0 mtu 1400 && ip addr add 10.214.0.9/24 dev fh0 && echo driven=ok; \
         for i in 1 2 3 4 5; do ping -c 1 -W 1 10.214.0.2 >/dev/null && { echo ping=reply; exit 0; }; done; echo ping=none",
    );
    assert!(inside.contains("inet 10.214.0.1/24"), "{inside}");
    assert!(inside.contains("driven=ok"), "{inside}");
    assert!(inside.contains("ping=reply"), "{inside}");
    // Pod root may rename it; it still goes back under its host name.
    exec(
        &env,
        &ns,
        &id,
        "ip link set fh0 down && ip link set fh0 name fh9",
    );
    let text = ok(&env, &ns, &["inspect", &id]);
    assert!(
        text.contains(&format!(
            "interface fh0 <- move:{vf} (linux.netDevices.{vf})"
        )),
        "{text}"
    );

    // delete --force of the running pod gives it back under its own name.
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert!(ns.links().contains(&vf), "{vf} is back: {:?}", ns.links());
    let after = ns.sh(&format!("ip -o addr show {vf}"));
    assert_eq!(after, before, "{vf} has its host addresses again");
    assert!(
        !after.contains("10.214.0.9"),
        "the pod's address went with the pod"
    );
}

#[test]
fn devices_come_back_after_the_init_died() {
    if !can_run("give back after init death") {
        return;
    }
    let ns = HostNs::new("dead");
    let env = Env::new();
    let (vf, peer) = (format!("vf{}", ns.tag), format!("pe{}", ns.tag));
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {vf} type veth peer name {peer}; ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    configure(
        &env,
        "[network]\nmovable = [\"vf*\"]\nparents = [\"tr*\"]\n",
    );
    let before = ns.snapshot();
    let bundle = pod_bundle(
        &env,
        "dead",
        Some(&format!("fh0=move:{vf},d0=macvlan:{trunk}:private")),
    );
    let id = env.id("dead");
    create_ok(&env, &ns, &bundle, &id);
    start(&env, &ns, &id);
    ok(&env, &ns, &["kill", &id, "KILL"]);
    for _ in 0..200 {
        let s: serde_json::Value = serde_json::from_str(&ok(&env, &ns, &["state", &id])).unwrap();
        if s["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    // Without cnfbox's pin the pod's namespace would be gone and a veth
    // destroyed with it; a plain delete gives it back.
    ok(&env, &ns, &["delete", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before, "the host namespace is as before");
}

#[test]
fn a_taken_host_name_blocks_delete_until_it_is_free() {
    if !can_run("give back onto a taken name") {
        return;
    }
    let ns = HostNs::new("taken");
    let env = Env::new();
    let (vf, peer) = (format!("vf{}", ns.tag), format!("pe{}", ns.tag));
    ns.sh(&format!("ip link add {vf} type veth peer name {peer}"));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.snapshot();
    let id = env.id("taken");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "taken", Some(&format!("fh0=move:{vf}"))),
        &id,
    );
    // Someone on the host takes the name meanwhile.
    ns.sh(&format!("ip link add {vf} type bridge"));
    let out = run(&env, &ns, &["delete", &id]);
    assert_one_line_error(&out, &[&id, &vf, "cannot give fh0 back", "is taken there"]);
    assert!(env.root.join(&id).exists(), "the pod stays for a retry");
    ns.sh(&format!("ip link del {vf}"));
    ok(&env, &ns, &["delete", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before, "{vf} is back once its name is free");
}

#[test]
fn devices_go_back_to_the_namespace_they_came_from() {
    if !can_run("give back to the recorded host side") {
        return;
    }
    let ns = HostNs::new("side");
    let env = Env::new();
    let (vf, peer) = (format!("vf{}", ns.tag), format!("pe{}", ns.tag));
    ns.sh(&format!("ip link add {vf} type veth peer name {peer}"));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.snapshot();
    let id = env.id("side");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "side", Some(&format!("fh0=move:{vf}"))),
        &id,
    );
    // Deleted from the machine's own namespace: the device still returns
    // to the test's namespace it was taken from, not to where cnfbox runs.
    let out = env.run(&["delete", "--force", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
    assert!(
        !std::path::Path::new("/sys/class/net").join(&vf).exists(),
        "{vf} must not land in the machine's namespace"
    );
}
