//! Races and hostile parties: two pods for one device, pod root putting
//! an impostor in a moved device's place, another host user against the
//! network lock.

use super::*;

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
pub(super) fn pid_of(env: &Env, ns: &HostNs, id: &str) -> i64 {
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

    // A state root others may write to (and plant a lock in) is refused,
    // by every command now (`commands::check_root`), before the lock.
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
            "state root",
        ],
    );
    assert_nothing_left(&env, &id);
}
