//! Secondary interfaces: OCI 1.3 `linux.netDevices` and the
//! `cnfbox.io/interfaces` annotation.
//!
//! The machine's real interfaces are never touched: every test makes a
//! throwaway network namespace that plays the host (its own bridge as the
//! trunk, veth pairs as the devices handed over) and runs `cnfbox` in it
//! with `nsenter --net` (`ip netns exec` would remount /sys and hide the
//! cgroups from the runtime).

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{assert_nothing_left, assert_one_line_error, can_run, cnfbox_bin, Env};
use serde_json::json;
use test_bundles::{Bundle, Scenario};

/// A network namespace playing the host, deleted on drop.
struct HostNs {
    name: String,
    /// Short tag for device names (IFNAMSIZ is 16).
    tag: String,
}

impl HostNs {
    fn new(test: &str) -> Self {
        let tag = format!("{}", std::process::id() % 100_000);
        let name = format!("cnfbox-{test}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip(8) from iproute2");
        assert!(st.success(), "ip netns add {name}");
        let ns = Self { name, tag };
        // No IPv6 link-local addresses: they appear and lose their
        // `tentative` flag on their own and would make snapshots differ.
        ns.sh("ip link set lo up; for f in all default; do \
             echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6 2>/dev/null || true; done");
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a shell script in the namespace; asserts it succeeds.
    fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(["sh", "-ec", script])
            .output()
            .expect("nsenter(1)");
        assert!(
            out.status.success(),
            "in {}: {script}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -o link` and `ip -o addr` without the counters that move on
    /// their own: what must be exactly as before after a refused create.
    fn snapshot(&self) -> String {
        self.sh("ip -o link; ip -o addr")
    }

    /// Link names in the namespace.
    fn links(&self) -> Vec<String> {
        self.sh("ip -o link")
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `cnfbox` inside the host namespace, with the environment's config.
fn cnfbox(env: &Env, ns: &HostNs) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg(cnfbox_bin())
        .env("CNFBOX_CONFIG", env.config.as_ref().expect("env config"))
        .arg("--root")
        .arg(&env.root)
        .stdin(Stdio::null());
    cmd
}

fn run(env: &Env, ns: &HostNs, args: &[&str]) -> Output {
    cnfbox(env, ns).args(args).output().expect("spawn cnfbox")
}

fn ok(env: &Env, ns: &HostNs, args: &[&str]) -> String {
    let out = run(env, ns, args);
    assert!(
        out.status.success(),
        "cnfbox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `create` without holding the init's stdio; returns the output's stderr.
fn create(env: &Env, ns: &HostNs, bundle: &Bundle, id: &str) -> Output {
    let err = env.tmp.path().join(format!("{id}.create.err"));
    let status = cnfbox(env, ns)
        .args(["create", "--bundle"])
        .arg(&bundle.dir)
        .arg(id)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .status()
        .expect("spawn cnfbox create");
    Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

fn create_ok(env: &Env, ns: &HostNs, bundle: &Bundle, id: &str) {
    let out = create(env, ns, bundle, id);
    assert!(
        out.status.success(),
        "create {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Appends `text` to the environment's config.toml.
fn configure(env: &Env, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(env.config.as_ref().expect("env config"))
        .expect("open test config");
    f.write_all(text.as_bytes()).expect("write test config");
}

/// A sleeping pod with NET_ADMIN and the given annotation value.
fn pod_bundle(env: &Env, name: &str, interfaces: Option<&str>) -> Bundle {
    let interfaces = interfaces.map(str::to_string);
    env.bundle(name, move |b| {
        let b = b
            .scenario(&Scenario::Sleep)
            .annotation("cnfbox.io/capabilities", "NET_ADMIN");
        match interfaces {
            Some(v) => b.annotation("cnfbox.io/interfaces", v),
            None => b,
        }
    })
}

/// `linux.netDevices` entries `host -> name` added to a pod bundle.
fn with_net_devices(env: &Env, name: &str, devices: serde_json::Value) -> Bundle {
    env.bundle(name, move |b| {
        b.scenario(&Scenario::Sleep)
            .annotation("cnfbox.io/capabilities", "NET_ADMIN")
            .modify(move |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["netDevices"] = devices;
                *s = serde_json::from_value(d).unwrap();
            })
    })
}

fn exec(env: &Env, ns: &HostNs, id: &str, script: &str) -> String {
    ok(env, ns, &["exec", id, "sh", "-c", script])
}

fn start(env: &Env, ns: &HostNs, id: &str) {
    ok(env, ns, &["start", id]);
}

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
    // busybox's ip has no -d: look with the host's iproute2 through the pin.
    let links = in_netns(&pin_of(&env, &ids[0]), "ip -d -o link show data0");
    assert!(
        links.contains("macvlan") && links.contains("mode bridge"),
        "{links}"
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
fn refusals_name_device_and_rule_and_change_nothing() {
    if !can_run("attachment refusals") {
        return;
    }
    let ns = HostNs::new("bad");
    let env = Env::new();
    let t = &ns.tag;
    let (vf, peer, mgmt, trunk) = (
        format!("vf{t}"),
        format!("pe{t}"),
        format!("mg{t}"),
        format!("tr{t}"),
    );
    ns.sh(&format!(
        "ip link add {vf} type veth peer name {peer}; ip addr add 10.215.0.1/24 dev {vf}; ip link set {vf} up; \
         ip link add {mgmt} type bridge; ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    // `lo` is an allowed parent only so that the kernel refuses a macvlan
    // on it midway (macvlan needs an Ethernet lower device): the undo path.
    configure(
        &env,
        "[network]\nmovable = [\"vf*\"]\nparents = [\"tr*\", \"lo\"]\nmax_attachments = 3\n",
    );

    // A pod holding vf: the "already attached" case, and its namespace must
    // not change either.
    let holder = env.id("holder");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "holder", Some(&format!("f0=move:{vf}"))),
        &holder,
    );
    let holder_pin = pin_of(&env, &holder);
    let holder_links = in_netns(&holder_pin, "ip -o link; ip -o addr");
    let before = ns.snapshot();

    let cases: Vec<(&str, Bundle, Vec<String>)> = vec![
        (
            "parent",
            pod_bundle(&env, "parent", Some(&format!("d0=macvlan:{mgmt}"))),
            vec![mgmt.clone(), "[network] parents".into(), "tr*".into()],
        ),
        (
            "notmovable",
            pod_bundle(&env, "notmovable", Some(&format!("f0=move:{mgmt}"))),
            vec![mgmt.clone(), "[network] movable".into()],
        ),
        (
            "missing",
            pod_bundle(&env, "missing", Some(&format!("f0=move:vfnone{t}"))),
            vec![format!("no host device vfnone{t}")],
        ),
        (
            "inuse",
            pod_bundle(
                &env,
                "inuse",
                Some(&format!("d0=macvlan:{trunk},f1=move:{vf}")),
            ),
            vec![vf.clone(), format!("already attached to pod {holder}")],
        ),
        (
            "clash",
            pod_bundle(
                &env,
                "clash",
                Some(&format!("d0=macvlan:{trunk},lo=macvlan:{trunk}")),
            ),
            vec!["already has an interface named lo".into()],
        ),
        (
            "duplicate",
            pod_bundle(
                &env,
                "duplicate",
                Some(&format!("d0=macvlan:{trunk},d0=macvlan:{trunk}:vepa")),
            ),
            vec!["interface name d0 is also asked for".into()],
        ),
        (
            "toomany",
            pod_bundle(
                &env,
                "toomany",
                Some(&format!(
                    "a=macvlan:{trunk},b=macvlan:{trunk},c=macvlan:{trunk},d=macvlan:{trunk}"
                )),
            ),
            vec!["4 interfaces".into(), "max_attachments = 3".into()],
        ),
        (
            "syntax",
            pod_bundle(&env, "syntax", Some("d0=tap:x")),
            vec![
                "unknown attachment kind \"tap\"".into(),
                "cnfbox.io/interfaces".into(),
            ],
        ),
        (
            "midway",
            pod_bundle(
                &env,
                "midway",
                Some(&format!("d0=macvlan:{trunk},x0=macvlan:lo")),
            ),
            vec!["create macvlan child of lo".into(), "x0=macvlan:lo".into()],
        ),
        (
            "hostnet",
            env.bundle("hostnet", {
                let trunk = trunk.clone();
                move |b| {
                    b.scenario(&Scenario::Sleep)
                        .annotation("cnfbox.io/interfaces", format!("d0=macvlan:{trunk}"))
                        .modify(|s| {
                            let mut d = serde_json::to_value(&*s).unwrap();
                            d["linux"]["namespaces"]
                                .as_array_mut()
                                .unwrap()
                                .retain(|n| n["type"] != "network");
                            *s = serde_json::from_value(d).unwrap();
                        })
                }
            }),
            vec!["no network namespace of its own".into()],
        ),
    ];
    for (name, bundle, needles) in cases {
        let id = env.id(name);
        let out = create(&env, &ns, &bundle, &id);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let err = assert_one_line_error(&out, &needles);
        eprintln!("{name}: {err}");
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}: the host namespace changed");
        assert_eq!(
            in_netns(&holder_pin, "ip -o link; ip -o addr"),
            holder_links,
            "{name}: the other pod's namespace changed"
        );
    }

    // A move that succeeded is undone when a later step fails: vf goes
    // back with its address. (The holder gives it up first.)
    ok(&env, &ns, &["delete", "--force", &holder]);
    assert_nothing_left(&env, &holder);
    let before = ns.snapshot();
    let id = env.id("undo");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "undo", Some(&format!("f0=move:{vf},x0=macvlan:lo"))),
        &id,
    );
    assert_one_line_error(&out, &["create macvlan child of lo"]);
    assert_nothing_left(&env, &id);
    assert_eq!(
        ns.snapshot(),
        before,
        "the moved device came back as it was"
    );
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

/// The pin cnfbox keeps of container `id`'s pod network namespace.
fn pin_of(env: &Env, id: &str) -> PathBuf {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root.join(id).join("cnfbox.json")).unwrap())
            .unwrap();
    PathBuf::from(
        meta["network"]["pod_pin"]
            .as_str()
            .expect("pod_pin in cnfbox.json"),
    )
}

fn in_netns(path: &std::path::Path, script: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["sh", "-ec", script])
        .output()
        .expect("nsenter(1)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    assert!(d.contains("vlan") && d.contains("id 100"), "{d}");
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
}

#[test]
fn features_lists_net_devices() {
    let out = Command::new(cnfbox_bin())
        .arg("features")
        .output()
        .expect("spawn cnfbox");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["linux"]["netDevices"]["enabled"], true, "{v}");
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

#[test]
fn two_pods_racing_for_one_device_one_wins() {
    if !can_run("attachment race") {
        return;
    }
    let ns = HostNs::new("race");
    let env = Env::new();
    let (vf, peer) = (format!("vf{}", ns.tag), format!("pe{}", ns.tag));
    ns.sh(&format!("ip link add {vf} type veth peer name {peer}"));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.snapshot();
    let bundles: Vec<Bundle> = (0..2)
        .map(|i| pod_bundle(&env, &format!("race{i}"), Some(&format!("fh0=move:{vf}"))))
        .collect();
    let ids: Vec<String> = (0..2).map(|i| env.id(&format!("race{i}"))).collect();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (env, ns, b, id) = (&env, &ns, &bundles[i], &ids[i]);
                s.spawn(move || create(env, ns, b, id))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one pod gets {vf}: {outs:?}");
    let lost = 1 - won[0];
    let err = assert_one_line_error(&outs[lost], &[&vf]);
    assert!(
        err.contains(&format!("already attached to pod {}", ids[won[0]])),
        "{err}"
    );
    assert_nothing_left(&env, &ids[lost]);
    ok(&env, &ns, &["delete", "--force", &ids[won[0]]]);
    assert_nothing_left(&env, &ids[won[0]]);
    assert_eq!(ns.snapshot(), before);
}

/// The init pid of container `id`.
fn pid_of(env: &Env, ns: &HostNs, id: &str) -> i64 {
    let s: serde_json::Value = serde_json::from_str(&ok(env, ns, &["state", id])).unwrap();
    s["pid"].as_i64().expect("pid in state")
}

/// Runs `script` (the host's sh and iproute2) as pod root: in the pod's
/// user namespace (uid 0 there, no capability on the host) and its
/// network namespace. With `tun`, a private mount namespace puts that
/// node (a world-usable `/dev/net/tun`, as a pod granted it has one) on
/// `/dev/net/tun` first.
fn as_pod_root(pid: i64, script: &str, tun: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-ec",
        r#"[ -z "$1" ] || mount --bind "$1" /dev/net/tun; exec nsenter -t "$2" --user --net sh -ec "$3""#,
        "sh",
    ]);
    cmd.arg(tun.map(|p| p.as_os_str()).unwrap_or_default())
        .arg(pid.to_string())
        .arg(script);
    let out = cmd.output().expect("unshare(1) and nsenter(1)");
    assert!(
        out.status.success(),
        "as pod root: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_impostor_in_a_moved_devices_place_is_not_given_back() {
    if !can_run("impostor of a moved device") {
        return;
    }
    let ns = HostNs::new("imp");
    let env = Env::new();
    let t = &ns.tag;
    let (va, pa, vb, pb) = (
        format!("vfa{t}"),
        format!("pea{t}"),
        format!("vfb{t}"),
        format!("peb{t}"),
    );
    ns.sh(&format!(
        "ip link add {va} type veth peer name {pa}; ip link add {vb} type veth peer name {pb}; \
         ip addr add 10.216.0.1/24 dev {va}; ip addr add 10.216.1.1/24 dev {vb}"
    ));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let id = env.id("imp");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "imp", Some(&format!("fh0=move:{va},fh1=move:{vb}"))),
        &id,
    );
    start(&env, &ns, &id);
    let pid = pid_of(&env, &ns, &id);
    let index = |name: &str| -> String {
        as_pod_root(pid, &format!("ip -o link show {name} | cut -d: -f1"), None)
            .trim()
            .to_string()
    };
    let (ia, ib) = (index("fh0"), index("fh1"));
    let tun = env.tmp.path().join("tun");
    let st = Command::new("mknod")
        .args(["-m", "0666"])
        .arg(&tun)
        .args(["c", "10", "200"])
        .status()
        .expect("mknod(1)");
    assert!(st.success(), "mknod {}", tun.display());
    // Pod root (NET_ADMIN in its own namespaces only) replaces both moved
    // veths with devices of its own under the same names and indexes, with
    // the same MAC addresses. fh0: a persistent tap (handed to the host it
    // would stay there), made in a network namespace of pod root's own
    // until the kernel gives it fh0's index there, and moved in once fh0
    // is deleted (a device keeps its index when it is free). fh1: a veth,
    // the same kind, whose peer stays in the pod.
    as_pod_root(
        pid,
        &format!(
            "mac() {{ ip -o link show $1 | sed 's|.*link/ether \\([^ ]*\\).*|\\1|'; }}; \
             ma=$(mac fh0); mb=$(mac fh1); \
             ip link del fh0; ip link del fh1; \
             unshare --net sh -ec 'i=0; while :; do ip tuntap add dev t$i mode tap; \
                 [ \"$(ip -o link show t$i | cut -d: -f1)\" = {ia} ] && break; i=$((i+1)); done; \
                 ip link set t$i netns {pid} name fh0'; \
             ip link set fh0 address $ma; \
             ip link add fh1 index {ib} address $mb type veth peer name x1; \
             ip addr add 10.216.0.66/24 dev fh0; ip addr add 10.216.1.66/24 dev fh1"
        ),
        Some(&tun),
    );
    assert_eq!(
        index("fh0"),
        ia,
        "the impostor took the moved device's index"
    );
    assert_eq!(index("fh1"), ib);
    // Deleting a veth inside took its host peer with it.
    assert!(!ns.links().contains(&pa), "{:?}", ns.links());

    let log = env.tmp.path().join("delete.log");
    // A plain delete of the stopped pod: an impostor is no reason to keep it.
    ok(&env, &ns, &["kill", &id, "KILL"]);
    for _ in 0..200 {
        let s: serde_json::Value = serde_json::from_str(&ok(&env, &ns, &["state", &id])).unwrap();
        if s["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let out = run(&env, &ns, &["--log", log.to_str().unwrap(), "delete", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&env, &id);
    let links = ns.links();
    assert!(
        !links.contains(&va) && !links.contains(&vb),
        "the host got a pod's impostor under a moved device's name: {links:?}\n{}",
        ns.sh("ip -d -o link; ip -o addr")
    );
    assert_eq!(links, vec!["lo".to_string()], "{}", ns.sh("ip -d -o link"));
    assert!(
        !ns.sh("ip -o addr").contains("10.216."),
        "no address came back"
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    for (name, host) in [("fh0", &va), ("fh1", &vb)] {
        assert!(
            log.lines()
                .any(|l| l.contains("not the device that was moved in")
                    && l.contains(&format!("interface=\"{name}\""))
                    && l.contains(host.as_str())),
            "a warning names {name} and {host}: {log}"
        );
    }
}

#[test]
fn a_veth_whose_peer_goes_in_too_or_a_bridge_cannot_be_moved() {
    if !can_run("unverifiable moves") {
        return;
    }
    let ns = HostNs::new("unv");
    let env = Env::new();
    let t = &ns.tag;
    let (va, vb, br) = (format!("vfa{t}"), format!("vfb{t}"), format!("vfbr{t}"));
    ns.sh(&format!(
        "ip link add {va} type veth peer name {vb}; ip link add {br} type bridge"
    ));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.snapshot();
    for (name, value, dev) in [
        ("pair", format!("a=move:{va},b=move:{vb}"), va.clone()),
        ("bridge", format!("a=move:{br}"), br.clone()),
    ] {
        let id = env.id(name);
        let out = create(&env, &ns, &pod_bundle(&env, name, Some(&value)), &id);
        assert_one_line_error(&out, &[&dev, "cannot be moved", "could not tell it from"]);
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}");
    }
}

/// Replaces the `[network]` section of the environment's config.
fn set_network(env: &Env, section: &str) {
    let path = env.config.as_ref().expect("env config");
    let text = std::fs::read_to_string(path).expect("read test config");
    let keep = text.split("[network]").next().unwrap_or("").to_string();
    std::fs::write(path, format!("{keep}{section}")).expect("write test config");
}

#[test]
fn passthru_and_vlan_ids_need_the_parents_allowance() {
    if !can_run("parent settings") {
        return;
    }
    let ns = HostNs::new("pt");
    let env = Env::new();
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    let before = ns.snapshot();
    let cfg = env.config.clone().unwrap();
    let cfg = cfg.to_str().unwrap();

    // By default (a plain pattern): no passthru, no VLANs; refused before
    // any link is made, so this runs without 8021q too.
    set_network(&env, "[network]\nparents = [\"tr*\"]\n");
    let cases = [
        (
            "pt",
            format!("d0=macvlan:{trunk}:passthru"),
            "macvlan mode passthru",
            "passthru = true",
        ),
        (
            "vl",
            format!("v7=vlan:{trunk}:7"),
            "VLAN id 7",
            "vlans there: none",
        ),
    ];
    for (name, value, what, hint) in &cases {
        let id = env.id(name);
        let out = create(&env, &ns, &pod_bundle(&env, name, Some(value)), &id);
        let iface = value.split('=').next().unwrap();
        assert_one_line_error(
            &out,
            &[
                &format!("interface {iface}"),
                what,
                &format!("on parent {trunk}"),
                "[network] parents entry \"tr*\"",
                cfg,
                hint,
            ],
        );
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}");
    }

    // Allowed per parent: passthru works, VLAN ids outside the list do not.
    set_network(
        &env,
        "[network]\nparents = [{ name = \"tr*\", passthru = true, vlans = [\"100-199\"] }]\n",
    );
    let id = env.id("ptok");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "ptok", Some(&format!("d0=macvlan:{trunk}:passthru"))),
        &id,
    );
    let d = in_netns(&pin_of(&env, &id), "ip -d -o link show d0");
    assert!(d.contains("macvlan") && d.contains("mode passthru"), "{d}");
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);

    let id = env.id("vl200");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "vl200", Some(&format!("v200=vlan:{trunk}:200"))),
        &id,
    );
    assert_one_line_error(
        &out,
        &[
            "interface v200",
            "VLAN id 200",
            &trunk,
            "vlans there: 100-199",
        ],
    );
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
    // An id inside the list gets past the policy to the kernel.
    let id = env.id("vl150");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "vl150", Some(&format!("v150=vlan:{trunk}:150"))),
        &id,
    );
    if out.status.success() {
        ok(&env, &ns, &["delete", "--force", &id]);
    } else {
        let err = assert_one_line_error(&out, &["create VLAN sub-interface (8021q) of"]);
        eprintln!("SKIP an allowed VLAN id on this kernel (no 8021q): {err}");
    }
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
}

#[test]
fn the_network_lock_is_private_to_root() {
    if !can_run("network lock") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ns = HostNs::new("lock");
    let env = Env::new();
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    configure(&env, "[network]\nparents = [\"tr*\"]\n");
    // Traversable like /run, and a lock an older cnfbox left 0644.
    std::fs::set_permissions(env.tmp.path(), PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::create_dir(&env.root).unwrap();
    std::fs::set_permissions(&env.root, PermissionsExt::from_mode(0o755)).unwrap();
    let lock = env.root.join(".network.lock");
    std::fs::write(&lock, "").unwrap();
    std::fs::set_permissions(&lock, PermissionsExt::from_mode(0o644)).unwrap();
    let nobody_flock = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["flock", "--nonblock", "--exclusive"])
            .arg(&lock)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .expect("setpriv and flock from util-linux")
    };
    // Control: that is what a host user could hold forever.
    assert!(
        nobody_flock().status.success(),
        "control: nobody locks a 0644 lock"
    );

    let id = env.id("lock");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "lock", Some(&format!("d0=macvlan:{trunk}"))),
        &id,
    );
    let m = std::fs::metadata(&lock).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o600, 0),
        "{}",
        lock.display()
    );
    let out = nobody_flock();
    assert!(
        !out.status.success(),
        "nobody opened and locked {}",
        lock.display()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);

    // A state root others may write to (and plant a lock in) is refused.
    std::fs::set_permissions(&env.root, PermissionsExt::from_mode(0o777)).unwrap();
    let id = env.id("lockdir");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "lockdir", Some(&format!("d0=macvlan:{trunk}"))),
        &id,
    );
    std::fs::set_permissions(&env.root, PermissionsExt::from_mode(0o755)).unwrap();
    assert_one_line_error(
        &out,
        &[
            env.root.to_str().unwrap(),
            "writable by group or others",
            "network lock",
        ],
    );
    assert_nothing_left(&env, &id);
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
        let d = in_netns(&pin_of(&env, &id), "ip -d -o link show v100");
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
