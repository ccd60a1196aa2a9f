//! Namespaced capabilities: with `cnfbox.io/capabilities: NET_ADMIN`, pod
//! root configures links, bridges, addresses and routes in the pod's own
//! network namespace; the host's is untouched. Without it, the same command
//! fails with EPERM. Capabilities outside the allowlist, or NET_ADMIN
//! without a private network namespace, are refused.

mod common;

use std::process::Command;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;
use test_bundles::Scenario;

const NET_SCRIPT: &str = r#"
grep CapEff /proc/self/status | tr -d '\t ' | tr ':' '='
ip link add cnfv0 type veth peer cnfp0 2>/dev/null && ip link add cnfv1 type veth peer cnfp1 2>/dev/null && echo veth=ok || echo veth=fail
ip link add cnfbr0 type bridge 2>/dev/null && echo bridge=ok || echo bridge=fail
ip link set cnfv0 master cnfbr0 2>/dev/null && echo enslave=ok || echo enslave=fail
ip link add cnfm0 link cnfv1 type macvlan mode bridge 2>/dev/null && echo macvlan=ok || echo macvlan=fail
ip addr add 10.77.0.1/24 dev cnfbr0 2>/dev/null && ip link set cnfbr0 up 2>/dev/null && echo addr=ok || echo addr=fail
ip route add 10.78.0.0/24 dev cnfbr0 2>/dev/null && echo route=ok || echo route=fail
if out=$(ip link add link cnfv1 name cnfv1.10 type vlan id 10 2>&1); then echo vlan=ok; else echo "vlan=$out"; fi
ip link add cnfplain type bridge 2>&1 | sed 's/^/plain_err=/'
if mknod /tmp/blk b 254 0 2>/dev/null; then echo mknod=ok; else echo mknod=denied; fi
if insmod /bin/busybox 2>/dev/null; then echo insmod=ok; else echo insmod=denied; fi
if [ -e /proc/$HOST_PID ]; then echo hostpid=visible; else echo hostpid=hidden; fi
echo sysnet=$(ls /sys/class/net | tr '\n' ,)
echo links=$(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | tr '\n' ,)
"#;

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip(8) from iproute2");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

fn run_script(env: &Env, name: &str, caps: Option<&str>) -> String {
    let bundle = env.bundle(name, |b| {
        let b = b
            .args(["/bin/sh", "-c", NET_SCRIPT])
            .env("HOST_PID", std::process::id().to_string());
        match caps {
            Some(c) => b.annotation("cnfbox.io/capabilities", c),
            None => b,
        }
    });
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{name}: {out:?}");
    assert_nothing_left(env, &id);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn net_admin_acts_on_the_pod_netns_only() {
    if !can_run("NET_ADMIN") {
        return;
    }
    let env = Env::new();
    let before = host_links();
    let out = run_script(&env, "netadmin", Some("NET_ADMIN"));
    let cap_eff = u64::from_str_radix(&kv(&out, "CapEff"), 16).unwrap();
    assert_ne!(cap_eff & (1 << 12), 0, "CAP_NET_ADMIN effective: {out}");
    for key in ["veth", "bridge", "enslave", "macvlan", "addr", "route"] {
        assert_eq!(kv(&out, key), "ok", "{key} inside the pod: {out}");
    }
    let vlan = kv(&out, "vlan");
    if vlan.contains("not supported") {
        eprintln!("SKIP vlan sub-interface: this kernel has no 8021q support ({vlan})");
    } else {
        assert_eq!(vlan, "ok", "{out}");
    }
    assert_eq!(
        kv(&out, "mknod"),
        "denied",
        "no block devices in a user namespace"
    );
    // The pod sees only its own links, never the host's.
    let inside: Vec<&str> = kv(&out, "links")
        .leak()
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    for l in &inside {
        assert!(
            *l == "lo" || l.starts_with("cnf") || l.starts_with("veth"),
            "unexpected link {l} inside: {inside:?}"
        );
    }
    // /sys is mounted for the pod's network namespace.
    let sysnet = kv(&out, "sysnet");
    assert!(sysnet.contains("cnfbr0") && sysnet.contains("lo"), "{out}");
    for l in before.iter().filter(|l| *l != "lo") {
        assert!(
            !sysnet.split(',').any(|s| s == l),
            "host link {l} in the pod's /sys: {sysnet}"
        );
    }
    // And the host's links are exactly as before.
    assert_eq!(host_links(), before, "the host's links changed");
}

#[test]
fn without_the_annotation_ip_link_add_is_eperm() {
    if !can_run("no NET_ADMIN") {
        return;
    }
    let env = Env::new();
    let out = run_script(&env, "plain", None);
    let cap_eff = u64::from_str_radix(&kv(&out, "CapEff"), 16).unwrap();
    assert_eq!(cap_eff & (1 << 12), 0);
    assert_eq!(kv(&out, "veth"), "fail", "{out}");
    assert_eq!(kv(&out, "bridge"), "fail", "{out}");
    assert!(
        kv(&out, "plain_err").contains("Operation not permitted"),
        "{out}"
    );
}

#[test]
fn refusals_name_the_capability_and_leave_nothing() {
    if !can_run("capability refusals") {
        return;
    }
    let env = Env::new();
    let cases: Vec<(&str, test_bundles::Bundle, Vec<&str>)> = vec![
        (
            "sysadmin",
            env.bundle("sysadmin", |b| {
                b.scenario(&Scenario::True)
                    .annotation("cnfbox.io/capabilities", "NET_ADMIN,SYS_ADMIN")
            }),
            vec!["CAP_SYS_ADMIN", "not allowed"],
        ),
        (
            "bogus",
            env.bundle("bogus", |b| {
                b.scenario(&Scenario::True)
                    .annotation("cnfbox.io/capabilities", "WARP_DRIVE")
            }),
            vec!["unknown capability", "WARP_DRIVE"],
        ),
        (
            "speccap",
            env.bundle("speccap", |b| {
                b.scenario(&Scenario::True).modify(|s| {
                    let mut d = serde_json::to_value(&*s).unwrap();
                    d["process"]["capabilities"]["bounding"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("CAP_SYS_MODULE"));
                    *s = serde_json::from_value(d).unwrap();
                })
            }),
            vec!["process.capabilities.bounding", "CAP_SYS_MODULE"],
        ),
        (
            "hostnet",
            env.bundle("hostnet", |b| {
                b.scenario(&Scenario::True)
                    .annotation("cnfbox.io/capabilities", "NET_ADMIN")
                    .modify(|s| {
                        let mut d = serde_json::to_value(&*s).unwrap();
                        d["linux"]["namespaces"]
                            .as_array_mut()
                            .unwrap()
                            .retain(|n| n["type"] != "network");
                        *s = serde_json::from_value(d).unwrap();
                    })
            }),
            // The host's network namespace is refused before capabilities
            // are looked at ([pods] host_namespaces, `host_ns`).
            vec!["no network namespace", "[pods]"],
        ),
    ];
    for (name, bundle, needles) in cases {
        let id = env.id(name);
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert_one_line_error(&out, &needles);
        assert_nothing_left(&env, &id);
    }
    assert!(
        env.allocator().list().unwrap().is_empty(),
        "no range left allocated"
    );
}

#[test]
fn a_host_owned_netns_path_is_refused_clearly() {
    if !can_run("host-owned netns") {
        return;
    }
    let env = Env::new();
    let name = format!("cnfbox-it-{}", std::process::id());
    let st = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add");
    let path = format!("/run/netns/{name}");
    let p2 = path.clone();
    let bundle = env.bundle("hostnetns", move |b| {
        b.scenario(&Scenario::True).modify(move |s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            for n in d["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "network" {
                    n["path"] = json!(p2);
                }
            }
            *s = serde_json::from_value(d).unwrap();
        })
    });
    let id = env.id("hostnetns");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    assert_one_line_error(&out, &[&path, "host's user namespace"]);
    assert_nothing_left(&env, &id);
}
