//! Pod root against a shared trunk (issue 25): with NET_ADMIN and NET_RAW
//! in its own namespaces, a pod holding `macvlan:trunk` tries to receive
//! what a gateway sends another pod, to raise the trunk's promiscuity, to
//! carry a VLAN it was not given, both ways, and to send as the gateway.

use std::io::{BufRead, BufReader};
use std::process::Child;

use super::hostile::pid_of;
use super::*;

/// Raw frames through `AF_PACKET`: `sniff IFACE END [MARKERS...]` prints
/// `ready` once bound, then, when a frame holding `END` arrives, the
/// markers it saw; `send IFACE DST VLAN [src=MAC] PAYLOAD...` sends one
/// frame each (`VLAN` 0: untagged; ethertype 0x88b5, local experimental;
/// from the interface's own address unless `src=` says otherwise).
const FRAMES: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[2], 0))
if sys.argv[1] == "sniff":
    end, markers, seen = sys.argv[3].encode(), sys.argv[4:], set()
    s.settimeout(120)
    print("ready", flush=True)
    while True:
        try:
            d = s.recv(65535)
        except socket.timeout:
            print("timeout waiting for", sys.argv[3]); break
        seen |= {m for m in markers if m.encode() in d}
        if end in d:
            print(" ".join(sorted(seen)) or "none"); break
else:
    dst = bytes.fromhex(sys.argv[3].replace(":", ""))
    src = s.getsockname()[4]
    vlan = int(sys.argv[4])
    tag = b"\x81\x00" + vlan.to_bytes(2, "big") if vlan else b""
    payloads = sys.argv[5:]
    if payloads and payloads[0].startswith("src="):
        src = bytes.fromhex(payloads.pop(0)[4:].replace(":", ""))
    for p in payloads:
        s.send(dst + src + tag + b"\x88\xb5" + p.encode().ljust(60, b"."))
"#;

const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";

/// `nsenter` into the pod of init `pid` as pod root, running `argv`.
fn as_pod_root_cmd(pid: i64, argv: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "--user", "--net"])
        .args(argv);
    cmd
}

fn netns_cmd(ns: &std::path::Path, argv: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.display())).args(argv);
    cmd
}

/// Starts a sniffer and waits until it is bound.
fn sniffer(mut cmd: Command, iface: &str, end: &str, markers: &[&str]) -> Child {
    cmd.args(["/usr/bin/python3", "-c", FRAMES, "sniff", iface, end])
        .args(markers)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("python3 (Debian's) for raw frames");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "sniffer on {iface}");
    child
}

fn seen(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sniffer failed");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!text.starts_with("timeout"), "{text}");
    text
}

fn send(mut cmd: Command, iface: &str, dst: &str, vlan: u16, payloads: &[&str]) {
    let out = cmd
        .args(["/usr/bin/python3", "-c", FRAMES, "send", iface, dst])
        .arg(vlan.to_string())
        .args(payloads)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "send on {iface}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(show: &str) -> String {
    show.split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {show}"))
        .to_string()
}

/// `promiscuity N allmulti N` of a link, from `ip -d link show`.
fn flags(ns: &HostNs, dev: &str) -> String {
    let show = ns.sh(&format!("ip -d -o link show {dev}"));
    let words: Vec<&str> = show.split_whitespace().collect();
    let count = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .map(|i| words[i + 1])
            .unwrap_or("-")
            .to_string()
    };
    format!(
        "promiscuity {} allmulti {}",
        count("promiscuity"),
        count("allmulti")
    )
}

#[test]
fn pod_root_cannot_sniff_other_pods_change_the_trunk_or_carry_other_vlans() {
    if !can_run("pod root against a shared trunk") {
        return;
    }
    let ns = HostNs::new("trk");
    let gw = HostNs::new("trkgw");
    let env = Env::new();
    let t = &ns.tag;
    let (trunk, port, gw_end) = (format!("tr{t}"), format!("gw{t}"), format!("gwp{t}"));
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up; \
         ip link add {port} type veth peer name {gw_end}; \
         ip link set {port} master {trunk} up; ip link set {gw_end} netns {}",
        gw.path().display()
    ));
    gw.sh(&format!("ip link set {gw_end} up"));
    configure(
        &env,
        "[network]\nparents = [{ name = \"tr*\", vlans = [100] }]\n",
    );
    let mut pods = Vec::new();
    for name in ["trka", "trkb"] {
        let id = env.id(name);
        create_ok(
            &env,
            &ns,
            &pod_bundle(&env, name, Some(&format!("data0=macvlan:{trunk}:bridge"))),
            &id,
        );
        start(&env, &ns, &id);
        exec(&env, &ns, &id, "ip link set data0 up");
        let pid = pid_of(&env, &ns, &id);
        let show = String::from_utf8(
            as_pod_root_cmd(pid, &["ip", "-o", "link", "show", "data0"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        pods.push((id, pid, mac(&show)));
    }
    let (a, b) = (&pods[0], &pods[1]);
    let before = flags(&ns, &trunk);

    // The attack, as the review ran it: source mode with the gateway's
    // address, promiscuous and all-multicast. Whether each step is refused
    // or not, what follows must hold.
    let gw_mac = mac(&gw.sh(&format!("ip -o link show {gw_end}")));
    let attack = as_pod_root_cmd(
        a.1,
        &[
            "sh",
            "-c",
            &format!(
                "ip link set data0 type macvlan mode source; \
                 ip link set data0 type macvlan macaddr add {gw_mac}; \
                 ip link set data0 promisc on; ip link set data0 allmulticast on; \
                 ip link set data0 up; ip -d link show data0"
            ),
        ],
    )
    .output()
    .unwrap();
    eprintln!(
        "attack:\n{}{}",
        String::from_utf8_lossy(&attack.stdout),
        String::from_utf8_lossy(&attack.stderr)
    );
    assert_eq!(
        flags(&ns, &trunk),
        before,
        "pod root changed the host trunk's flags"
    );

    // Into the pods: a frame for pod B, a VLAN 300 frame for pod A.
    let markers = ["to-b", "vlan-in"];
    let sniff_a = sniffer(as_pod_root_cmd(a.1, &[]), "data0", "end-gw", &markers);
    let sniff_b = sniffer(as_pod_root_cmd(b.1, &[]), "data0", "end-gw", &markers);
    let at_gw = || netns_cmd(&gw.path(), &[]);
    send(at_gw(), &gw_end, &b.2, 0, &["to-b"]);
    send(at_gw(), &gw_end, &a.2, 300, &["vlan-in"]);
    send(at_gw(), &gw_end, BROADCAST, 0, &["end-gw"]);
    let (in_a, in_b) = (seen(sniff_a), seen(sniff_b));
    assert_eq!(in_b, "to-b", "control: pod B gets its frame");
    assert_eq!(
        in_a, "none",
        "pod A received a frame for pod B or a VLAN it was not given"
    );

    // Out of pod A: untagged (control) and tagged with VLAN 300 and 100.
    // Where the kernel has 8021q (the VM lane), also through a VLAN
    // device pod root stacks on its interface.
    let stacked = as_pod_root_cmd(
        a.1,
        &[
            "sh",
            "-c",
            "ip link add link data0 name d300 type vlan id 300 && ip link set d300 up",
        ],
    )
    .output()
    .unwrap();
    if !stacked.status.success() {
        eprintln!(
            "SKIP a VLAN device stacked on the pod's interface: no 8021q here (the VM lane has it): {}",
            String::from_utf8_lossy(&stacked.stderr).trim()
        );
    }
    let sniff_gw = sniffer(at_gw(), &gw_end, "end-a", &["from-a", "vlan-out", "spoof"]);
    let from_a = || as_pod_root_cmd(a.1, &[]);
    send(from_a(), "data0", BROADCAST, 0, &["from-a"]);
    // Speaking as the gateway (or any other address) on the trunk.
    let spoofed = format!("src={gw_mac}");
    send(from_a(), "data0", BROADCAST, 0, &[&spoofed, "spoof"]);
    send(from_a(), "data0", BROADCAST, 300, &["vlan-out"]);
    send(from_a(), "data0", BROADCAST, 100, &["vlan-out"]);
    if stacked.status.success() {
        send(from_a(), "d300", BROADCAST, 0, &["vlan-out"]);
    }
    send(from_a(), "data0", BROADCAST, 0, &["end-a"]);
    assert_eq!(
        seen(sniff_gw),
        "from-a",
        "the trunk carries pod A's untagged frame from its own address, no tagged or spoofed one"
    );
    assert_eq!(flags(&ns, &trunk), before);

    for (id, ..) in &pods {
        ok(&env, &ns, &["delete", "--force", id]);
        assert_nothing_left(&env, id);
    }
    assert_eq!(
        ns.links(),
        vec!["lo".to_string(), trunk.clone(), port.clone()],
        "{}",
        ns.sh("ip -d -o link")
    );
}
