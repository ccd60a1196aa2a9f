//! cnfbox pods through containerd's CRI: a Rust CRI client (`k8s-cri` over
//! tonic) on a private containerd 1.6 with two runtime handlers, `cnfbox`
//! (`io.containerd.cnfbox.v2`) and `runc`, and a CNI bridge network of the
//! test's own (unique bridge name and subnet, removed after).
//!
//! CRI creates each pod's network namespace in the host user namespace and
//! runs CNI in it; cnfbox adopts it (runtime/src/adopt.rs): the pod gets a
//! network namespace of its own user namespace with CNI's eth0 moved in.

mod common;
mod cri;
mod cri_node;

use std::path::Path;
use std::process::Command;

use cri_node::{cgroups_named, cri_node, uid_map, CriNode};
use k8s_cri::v1::{
    security_profile::ProfileType, ContainerFilter, ContainerState, ContainerStatsRequest,
    ContainerStatusRequest, CreateContainerRequest, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, ListContainersRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxStatusRequest, SecurityProfile, StartContainerRequest,
    UpdateContainerResourcesRequest,
};

const MACVLAN: &str = "ip link add cnfmv0 link eth0 type macvlan mode bridge && echo macvlan=ok";

#[test]
fn cri_pods_on_cnfbox_and_runc() {
    let Some(mut n) = cri_node("cri_pods_on_cnfbox_and_runc") else {
        return;
    };
    // A cnfbox pod with NET_ADMIN, one without, a runc pod.
    let a = n
        .run_pod("net", "cnfbox", &[("cnfbox.io/capabilities", "NET_ADMIN")])
        .unwrap_or_else(|e| panic!("RunPodSandbox cnfbox: {e}\n{}", n.log_tail()));
    let b = n
        .run_pod("plain", "cnfbox", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox cnfbox: {e}\n{}", n.log_tail()));
    let r = n
        .run_pod("runc", "runc", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox runc: {e}\n{}", n.log_tail()));
    let ca = n.start_container(&a, "c");
    let cb = n.start_container(&b, "c");
    let cr = n.start_container(&r, "c");
    assert_eq!(n.shims(), 2, "one cnfbox shim per cnfbox pod");

    // id: root inside, everywhere.
    for c in [&ca, &cb, &cr] {
        let (code, out, _) = n.exec(c, &["id", "-u"]);
        assert_eq!((code, out.trim()), (0, "0"), "id -u in {c}");
    }
    // uid_map: cnfbox pods on disjoint pool ranges, runc on the identity.
    let (_, ma, _) = n.exec(&ca, &["cat", "/proc/self/uid_map"]);
    let (_, mb, _) = n.exec(&cb, &["cat", "/proc/self/uid_map"]);
    let (_, mr, _) = n.exec(&cr, &["cat", "/proc/self/uid_map"]);
    let (ia, oa, la) = uid_map(&ma);
    let (ib, ob, lb) = uid_map(&mb);
    assert_eq!((ia, ib), (0, 0));
    assert!(oa >= 1 << 31 && ob >= 1 << 31, "pool ranges: {ma} {mb}");
    assert!(
        oa + la <= ob || ob + lb <= oa,
        "ranges overlap: {ma} / {mb}"
    );
    assert_eq!(uid_map(&mr), (0, 0, 4_294_967_295), "runc: host ids: {mr}");

    // CNI's eth0 is in every pod (adopted into the cnfbox pods' own netns).
    for c in [&ca, &cb, &cr] {
        let (code, out, err) = n.exec(c, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert_eq!(code, 0, "eth0 in {c}: {out} {err}");
        assert!(out.contains("inet 10."), "eth0 address in {c}: {out}");
    }
    // NET_ADMIN acts on the pod's own netns only where granted.
    let (code, out, err) = n.exec(&ca, &["/bin/sh", "-c", MACVLAN]);
    assert_eq!(
        (code, out.trim()),
        (0, "macvlan=ok"),
        "with NET_ADMIN: {err}"
    );
    let (code, _, _) = n.exec(&cb, &["/bin/sh", "-c", MACVLAN]);
    assert_ne!(code, 0, "macvlan without cnfbox.io/capabilities");
    let (code, _, _) = n.exec(&cr, &["/bin/sh", "-c", MACVLAN]);
    assert_ne!(code, 0, "macvlan in a runc pod without NET_ADMIN");

    // ContainerStatus and ListContainers.
    let status =
        n.rt.block_on(n.client.container_status(ContainerStatusRequest {
            container_id: ca.clone(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    let listed =
        n.rt.block_on(n.client.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: a.id.clone(),
                ..Default::default()
            }),
        }))
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ca);

    // UpdateContainerResources reaches the shim's Update (cnfbox update):
    // the container's memory cgroup gets the new limit.
    let limit: i64 = 96 << 20;
    n.rt.block_on(
        n.client
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: ca.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: limit,
                    ..Default::default()
                }),
                ..Default::default()
            }),
    )
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.log_tail()));
    let verbose =
        n.rt.block_on(n.client.container_status(ContainerStatusRequest {
            container_id: ca.clone(),
            verbose: true,
        }))
        .expect("ContainerStatus verbose")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(verbose.info.get("info").expect("info")).expect("info JSON");
    let pid = info["pid"].as_u64().expect("pid");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    // The limit file: v1's memory hierarchy here, cgroup v2's memory.max on
    // a unified host (the VM lane).
    let limit_file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let p = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("cgroup v2 line");
        format!("/sys/fs/cgroup{p}/memory.max")
    } else {
        let mem = cg
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))
            .expect("memory cgroup");
        format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes")
    };
    let got = std::fs::read_to_string(&limit_file).expect(&limit_file);
    assert_eq!(got.trim(), limit.to_string(), "limit after Update");
    // ContainerStats reads the shim's Stats (cgroup v1 metrics, or v2 on a
    // unified host).
    let stats =
        n.rt.block_on(n.client.container_stats(ContainerStatsRequest {
            container_id: ca.clone(),
        }))
        .unwrap_or_else(|e| panic!("ContainerStats: {e}"))
        .into_inner()
        .stats
        .expect("stats");
    let ws = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(ws > 0, "memory working set from the shim's metrics: {ws}");

    assert_eq!(n.held_ranges().len(), 2, "ranges: {:?}", n.held_ranges());
    assert!(
        !cgroups_named(&ca).is_empty(),
        "the running container's cgroup is where the leak check looks"
    );
    for p in [&a, &b, &r] {
        n.remove_pod(p);
    }
    assert!(
        n.held_ranges().is_empty(),
        "ranges left: {:?}",
        n.held_ranges()
    );
    assert_eq!(n.shims(), 0, "shims left");
    for id in [&a.id, &b.id, &ca, &cb] {
        let m = n.mounts(id);
        assert!(m.is_empty(), "mounts of {id} left: {m:#?}");
        let cg = cgroups_named(id);
        assert!(cg.is_empty(), "cgroups of {id} left: {cg:?}");
    }
    n.stop();
}

#[test]
fn cri_bad_input_names_the_problem_and_leaves_nothing() {
    let Some(mut n) = cri_node("cri_bad_input_names_the_problem_and_leaves_nothing") else {
        return;
    };
    for (ann, value, needle) in [
        (
            "cnfbox.io/capabilities",
            "NET_ADMIN,CAP_NOT_A_THING",
            "NOT_A_THING",
        ),
        ("cnfbox.io/numa-node", "97", "97"),
    ] {
        let err = match n.run_pod("bad", "cnfbox", &[(ann, value)]) {
            Ok(p) => panic!("{ann}={value} was accepted (pod {})", p.id),
            Err(e) => e.message().to_owned(),
        };
        assert!(
            err.contains(needle),
            "{ann}={value}: error does not name it: {err}"
        );
        assert!(
            err.contains(ann),
            "{ann}={value}: error does not name the annotation: {err}"
        );
        assert!(
            n.held_ranges().is_empty(),
            "range left: {:?}",
            n.held_ranges()
        );
        assert_eq!(n.shims(), 0, "shim left after {ann}={value}");
        let m = n.mounts("cnfbox");
        assert!(m.is_empty(), "cnfbox mounts left: {m:#?}");
    }
    n.stop();
}

/// Pids of Go runc shims serving this containerd.
fn runc_shims(n: &CriNode) -> usize {
    let dir = n.cd().dir().expect("dir").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let c = String::from_utf8_lossy(&c);
            c.contains("containerd-shim-runc-v2") && c.contains(&dir)
        })
        .count()
}

#[test]
fn cri_runc_v2_runtime_type_runs_cnfbox() {
    let Some(mut n) = cri_node("cri_runc_v2_runtime_type_runs_cnfbox") else {
        return;
    };
    // Configuration B: runtime_type io.containerd.runc.v2, runtime_path to
    // the cnfbox shim, runc options naming cnfbox as the binary. Debian's
    // containerd 1.6.20 ignores runtime_path for CRI (containerd issue
    // #8207) and starts containerd-shim-runc-v2, which then drives cnfbox
    // through BinaryName: the pod is a cnfbox pod either way.
    let p = n
        .run_pod("viarunc", "cnfbox-runc", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox cnfbox-runc: {e}\n{}", n.log_tail()));
    let c = n.start_container(&p, "c");
    let (ours, go) = (n.shims(), runc_shims(&n));
    eprintln!("configuration B: {ours} cnfbox shim(s), {go} runc shim(s) serve the pod");
    assert_eq!(ours + go, 1, "one shim serves the pod");
    if n.cd().version().starts_with('2') {
        // containerd 2.x honours runtime_path: the cnfbox shim serves it.
        assert_eq!(
            ours,
            1,
            "containerd {}: runtime_path ignored",
            n.cd().version()
        );
    }
    let (code, out, err) = n.exec(&c, &["cat", "/proc/self/uid_map"]);
    assert_eq!(code, 0, "ExecSync through the Go runc shim: {err}");
    assert!(
        uid_map(&out).1 >= 1 << 31,
        "exec'd process in the pod userns: {out}"
    );
    // And the init's, read from the host.
    let status =
        n.rt.block_on(n.client.container_status(ContainerStatusRequest {
            container_id: c.clone(),
            verbose: true,
        }))
        .expect("ContainerStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info JSON");
    let pid = info["pid"].as_u64().expect("init pid");
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    let (inside, outside, _) = uid_map(&map);
    assert_eq!(inside, 0);
    assert!(
        outside >= 1 << 31,
        "cnfbox ran it (a pool range, not host root): {map}"
    );
    assert_eq!(n.held_ranges().len(), 1);
    n.remove_pod(&p);
    assert!(
        n.held_ranges().is_empty(),
        "range left: {:?}",
        n.held_ranges()
    );
    assert_eq!(n.shims() + runc_shims(&n), 0, "shim left");
    n.stop();
}

/// Through CRI, on whichever containerd runs the test (1.6 or 2.x):
/// ExecSync into a container with `seccompProfile: RuntimeDefault` runs
/// under the profile (`Seccomp: 2`; `unshare(CLONE_NEWUSER)`, which it
/// denies without CAP_SYS_ADMIN, fails), for cnfbox as for runc; and the
/// sandbox's `net.ipv4.ping_group_range = "0 2147483647"` (containerd 2.x's
/// default, turned on here for 1.6 too) reaches a cnfbox pod narrowed to
/// the pod's 65536 groups, where it used to fail RunPodSandbox.
#[test]
fn cri_exec_seccomp_and_icmp_sysctl() {
    let Some(mut n) = cri_node("cri_exec_seccomp_and_icmp_sysctl") else {
        return;
    };
    let probe = "grep ^Seccomp: /proc/self/status | tr -d '\\t '; \
                 if unshare -U /bin/true 2>/dev/null; then echo unshare=ok; else echo unshare=denied; fi; \
                 echo range=$(tr '\\t' ' ' < /proc/sys/net/ipv4/ping_group_range)";
    for handler in ["cnfbox", "runc"] {
        let pod = n
            .run_pod(&format!("sec-{handler}"), handler, &[])
            .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", n.log_tail()));
        for profile in [ProfileType::RuntimeDefault, ProfileType::Unconfined] {
            let mut config = cri::sleep_container(&format!("{profile:?}").to_lowercase());
            config.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    seccomp: Some(SecurityProfile {
                        profile_type: profile as i32,
                        ..Default::default()
                    }),
                    // As kubelet sets them (no shareProcessNamespace).
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let c = n.start_config(&pod, config);
            let (code, out, err) = n.exec(&c, &["/bin/sh", "-c", probe]);
            assert_eq!(code, 0, "{handler} {profile:?}: {err}");
            let lines: Vec<&str> = out.lines().collect();
            let want = match profile {
                ProfileType::RuntimeDefault => ["Seccomp:2", "unshare=denied"],
                _ => ["Seccomp:0", "unshare=ok"],
            };
            assert_eq!(lines[..2], want, "{handler} {profile:?}: {out}");
            let range = if handler == "cnfbox" {
                "range=0 65535"
            } else {
                "range=0 2147483647"
            };
            assert_eq!(lines[2], range, "{handler}: {out}");
        }
        n.remove_pod(&pod);
    }
    n.finish();
}

/// containerd keeps using the sandbox network namespace path it recorded
/// (`/var/run/netns/cni-...`): port-forward dials `127.0.0.1:PORT` in it
/// and CNI's DEL runs there at pod stop. cnfbox adopts the CNI namespace's
/// links into the pod's own; the path then shows the pod's namespace, so a
/// client entering it as containerd's port-forward does reaches the pod's
/// loopback listener, and after the pod is removed the bridge has no port
/// of the pod left.
#[test]
fn cri_sandbox_netns_path_reaches_the_pod() {
    let Some(mut n) = cri_node("cri_sandbox_netns_path_reaches_the_pod") else {
        return;
    };
    let pod = n
        .run_pod("portfwd", "cnfbox", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.log_tail()));
    let mut config = cri::sleep_container("listener");
    config.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "while true; do echo pong | nc -l -p 18080; done".into(),
    ];
    let c = n.start_config(&pod, config);
    let status =
        n.rt.block_on(n.client.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        }))
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info JSON");
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|ns| ns["type"] == "network"))
        .and_then(|ns| ns["path"].as_str())
        .unwrap_or_else(|| panic!("no netns path in the sandbox info: {info}"))
        .to_string();
    // The path lives in containerd's mount namespace.
    let cd_pid = n.cd().pid().to_string();
    let in_netns = |args: &[&str]| {
        Command::new("nsenter")
            .args(["--target", &cd_pid, "--mount", "--", "nsenter"])
            .arg(format!("--net={netns}"))
            .args(args)
            .output()
            .expect("nsenter")
    };
    let dial = || {
        in_netns(&[
            "busybox",
            "sh",
            "-c",
            "echo ping | busybox nc -w 2 127.0.0.1 18080",
        ])
    };
    let mut got = String::new();
    for _ in 0..100 {
        got = String::from_utf8_lossy(&dial().stdout).into_owned();
        if got.trim() == "pong" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(got.trim(), "pong", "the pod's listener through {netns}");
    // The pod's eth0 is what the path shows too (CNI DEL will find it).
    let links = String::from_utf8_lossy(&in_netns(&["ip", "-o", "link"]).stdout).into_owned();
    assert!(links.contains("eth0"), "eth0 through {netns}: {links}");
    let _ = c;
    n.remove_pod(&pod);
    let ports: Vec<_> = std::fs::read_dir(format!("/sys/class/net/{}/brif", n.bridge))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        ports.is_empty(),
        "bridge ports left after the pod: {ports:?}"
    );
    let gone = Command::new("nsenter")
        .args(["--target", &cd_pid, "--mount", "--", "test", "-e", &netns])
        .status()
        .expect("nsenter test");
    assert!(!gone.success(), "{netns} left");
    assert!(
        n.held_ranges().is_empty(),
        "ranges left: {:?}",
        n.held_ranges()
    );
    n.stop();
}

/// Pods asking for the host's network namespace (CRI NamespaceMode NODE)
/// and privileged containers: refused with a CRI error naming the field
/// and `[pods] host_namespaces`, nothing left; then, with
/// `host_namespaces = "host-userns"` in the shim's config, run in the
/// host's user namespace as under runc (identity uid_map, no range).
#[test]
fn cri_host_namespaces_refused_then_run_under_the_opt_in() {
    use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext};
    let Some(mut n) = cri_node("cri_host_namespaces_refused_then_run_under_the_opt_in") else {
        return;
    };
    let node_net = NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let pod_config = |n: &CriNode, name: &str, ns: Option<NamespaceOption>, privileged: bool| {
        let mut config = n.pod_config(name, &[]);
        // kubelet sets no hostname for a host-network pod (the host's UTS
        // namespace is the pod's; runc refuses a hostname there too).
        if ns
            .as_ref()
            .is_some_and(|o| o.network == NamespaceMode::Node as i32)
        {
            config.hostname = String::new();
        }
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: ns,
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let run_on = |n: &mut CriNode, config: &PodSandboxConfig, handler: &str| {
        n.run_pod_config(config.clone(), handler)
    };
    let run = |n: &mut CriNode, config: &PodSandboxConfig| run_on(n, config, "cnfbox");
    let container = |name: &str, ns: Option<NamespaceOption>, privileged: bool| {
        let mut config = cri::sleep_container(name);
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: ns,
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let nothing_left = |n: &CriNode, what: &str| {
        assert!(
            n.held_ranges().is_empty(),
            "{what}: range left: {:?}",
            n.held_ranges()
        );
        assert_eq!(n.shims(), 0, "{what}: shim left");
        let m = n.mounts("cnfbox");
        assert!(m.is_empty(), "{what}: cnfbox mounts left: {m:#?}");
    };

    // Refused by default: hostNetwork at RunPodSandbox.
    let config = pod_config(&n, "hostnet", Some(node_net.clone()), false);
    let err = match run(&mut n, &config) {
        Ok(p) => panic!("a host-network pod was accepted (pod {})", p.id),
        Err(e) => e.message().to_owned(),
    };
    for needle in [
        "linux.namespaces",
        "no network namespace",
        "[pods]",
        "host_namespaces",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    nothing_left(&n, "hostnet refused");
    // A privileged container (its pod's sandbox must be privileged too): the
    // sandbox runs, the container is refused when its task is created.
    let config = pod_config(&n, "priv", None, true);
    let pod = run(&mut n, &config).unwrap_or_else(|e| panic!("privileged sandbox: {e}"));
    let id =
        n.rt.block_on(n.client.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(container("priv", None, true)),
            sandbox_config: Some(pod.config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    let err = match n
        .rt
        .block_on(n.client.start_container(StartContainerRequest {
            container_id: id.clone(),
        })) {
        Ok(_) => panic!("a privileged container was started"),
        Err(e) => e.message().to_owned(),
    };
    for needle in [
        "process.capabilities.bounding",
        "privileged",
        "[pods]",
        "host_namespaces",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    n.remove_pod(&pod);
    nothing_left(&n, "privileged refused");

    // The opt-in, read by the shim's cnfbox at its next create.
    let path = n.env.config.clone().expect("config");
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(
        &path,
        format!("{text}[pods]\nhost_namespaces = \"host-userns\"\n"),
    )
    .expect("write config");
    let host_net = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    // runc, side by side: the same host-network pod.
    let config = pod_config(&n, "hostnet-runc", Some(node_net.clone()), false);
    let runc = run_on(&mut n, &config, "runc")
        .unwrap_or_else(|e| panic!("hostnet on runc: {e}\n{}", n.log_tail()));
    let c = n.start_config(&runc, container("c", Some(node_net.clone()), false));
    let (code, out, err) = n.exec(
        &c,
        &[
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; readlink /proc/self/ns/net",
        ],
    );
    assert_eq!(code, 0, "runc: {err}");
    assert_eq!(uid_map(&out), (0, 0, 4294967295), "runc: {out}");
    assert!(out.contains(&*host_net.to_string_lossy()), "runc: {out}");
    n.remove_pod(&runc);
    let config = pod_config(&n, "hostnet", Some(node_net.clone()), false);
    let hostnet =
        run(&mut n, &config).unwrap_or_else(|e| panic!("hostnet opt-in: {e}\n{}", n.log_tail()));
    let c = n.start_config(&hostnet, container("c", Some(node_net.clone()), false));
    let (code, out, err) = n.exec(
        &c,
        &[
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; readlink /proc/self/ns/net",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        uid_map(&out),
        (0, 0, 4294967295),
        "host user namespace: {out}"
    );
    assert!(
        out.contains(&*host_net.to_string_lossy()),
        "the host's network namespace {}: {out}",
        host_net.display()
    );
    assert!(
        n.held_ranges().is_empty(),
        "no range: {:?}",
        n.held_ranges()
    );
    let config = pod_config(&n, "priv", None, true);
    let pod = run(&mut n, &config).unwrap_or_else(|e| panic!("privileged sandbox: {e}"));
    let c = n.start_config(&pod, container("priv", None, true));
    let (code, out, err) = n.exec(
        &c,
        &[
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; grep CapEff /proc/self/status",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        uid_map(&out),
        (0, 0, 4294967295),
        "host user namespace: {out}"
    );
    let full = format!("{:016x}", common::bounding_mask());
    assert!(out.contains(&full), "every capability ({full}): {out}");
    n.remove_pod(&pod);
    n.remove_pod(&hostnet);
    nothing_left(&n, "opt-in pods removed");
    n.stop();
}

/// Through CRI, cnfbox and runc side by side: a hostPath on a shared mount
/// (with a submount) as `mountPropagation: HostToContainer` shows a mount
/// the host makes after the start; as `readOnly` + `recursiveReadOnly`
/// (containerd 2.x: the runtime must list `rro` in its features) it is
/// read-only down to the submount; the host's submounts survive the pods.
#[test]
fn cri_host_to_container_propagation_and_recursive_read_only() {
    use k8s_cri::v1::{Mount, MountPropagation};
    let Some(mut n) = cri_node("cri_host_to_container_propagation_and_recursive_read_only") else {
        return;
    };
    let v2 = n.cd().version().starts_with('2');
    let dir = n.env.tmp.path().join("hostpath");
    std::fs::create_dir_all(&dir).expect("hostpath dir");
    let d = dir.display().to_string();
    // containerd runs in a mount namespace of its own (private): the
    // hostPath's mounts are made there, where its shims and cnfbox run.
    let cd_pid = n.cd().pid().to_string();
    let in_cd = |cmd: &str| {
        let st = Command::new("nsenter")
            .args(["-t", &cd_pid, "-m", "--", "sh", "-c", cmd])
            .status()
            .expect("nsenter");
        assert!(st.success(), "in containerd's mount namespace: {cmd}");
    };
    in_cd(&format!(
        "mount -t tmpfs -o mode=1777 hostpath {d} && mount --make-shared {d} && \
         mkdir {d}/sub {d}/late && mount -t tmpfs -o mode=1777 hostpath-sub {d}/sub"
    ));
    // containerd 2.1.9 asks only runc-type handlers for their features
    // and dereferences the missing ones of an `io.containerd.cnfbox.v2`
    // handler when a mount asks for recursiveReadOnly (a nil-pointer panic
    // in its CRI's withMounts): on 2.x rro is asked of configuration B
    // (`cnfbox-runc`, whose shim's -info lists `rro`) and of runc.
    let handlers: &[&str] = if v2 {
        &["cnfbox", "cnfbox-runc", "runc"]
    } else {
        &["cnfbox", "runc"]
    };
    for &handler in handlers {
        let rro = v2 && handler != "cnfbox";
        let pod = n
            .run_pod(&format!("prop-{handler}"), handler, &[])
            .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", n.log_tail()));
        let mut config = cri::sleep_container("c");
        // As kubelet sets them (no shareProcessNamespace).
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        config.mounts = vec![
            Mount {
                container_path: "/h2c".into(),
                host_path: d.clone(),
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
            Mount {
                container_path: "/ro".into(),
                host_path: d.clone(),
                readonly: true,
                recursive_read_only: rro,
                ..Default::default()
            },
        ];
        let c = n.start_config(&pod, config);
        in_cd(&format!(
            "mount -t tmpfs hostpath-late {d}/late && echo from-host > {d}/late/marker"
        ));
        let (code, out, err) = n.exec(&c, &["cat", "/h2c/late/marker"]);
        assert_eq!(
            (code, out.trim()),
            (0, "from-host"),
            "{handler}: HostToContainer: {err}"
        );
        let probe = "touch /ro/top 2>/dev/null && echo top=rw || echo top=ro; \
                     touch /ro/sub/deep 2>/dev/null && echo sub=rw || echo sub=ro";
        let (_, out, _) = n.exec(&c, &["/bin/sh", "-c", probe]);
        let want_sub = if rro { "sub=ro" } else { "sub=rw" };
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["top=ro", want_sub],
            "{handler}: readOnly (recursive: {rro})"
        );
        n.remove_pod(&pod);
        in_cd(&format!("umount {d}/late"));
        let mounts =
            std::fs::read_to_string(format!("/proc/{cd_pid}/mountinfo")).expect("mountinfo");
        assert!(
            mounts.contains(&format!(" {d}/sub ")),
            "{handler}: the hostPath's submount was unmounted by the pod's removal"
        );
    }
    in_cd(&format!("umount -R -l {d}"));
    n.finish();
}

/// Through CRI: CreateContainer's `devices` (what kubelet's device plugins
/// and CDI produce) reach a cnfbox container as `linux.devices` with
/// containerd's cgroup allow rules; cnfbox makes the nodes, owned by pod
/// root as the host's nodes are by host root, so pod root opens them, also
/// at a container path the host lacks. Nothing is left after the pod goes.
#[test]
fn cri_devices_reach_a_cnfbox_pod() {
    let Some(mut n) = cri_node("cri_devices_reach_a_cnfbox_pod") else {
        return;
    };
    for dev in ["/dev/net/tun", "/dev/kvm"] {
        if !Path::new(dev).exists() {
            eprintln!("SKIP cri_devices_reach_a_cnfbox_pod: this host has no {dev}");
            n.stop();
            return;
        }
    }
    let config = n.env.config.clone().expect("config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[devices]\nallow = [\"c 10:232\"]\n");
    std::fs::write(&config, text).unwrap();
    let pod = n
        .run_pod("devices", "cnfbox", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.log_tail()));
    let mut c = cri::sleep_container("devices");
    c.devices = vec![
        k8s_cri::v1::Device {
            host_path: "/dev/net/tun".into(),
            container_path: "/dev/net/tun".into(),
            permissions: "rwm".into(),
        },
        k8s_cri::v1::Device {
            host_path: "/dev/kvm".into(),
            container_path: "/dev/cnf/kvm0".into(),
            permissions: "rwm".into(),
        },
    ];
    let id = n.start_config(&pod, c);
    let probe = "for d in /dev/net/tun /dev/cnf/kvm0; do \
                   echo $d=$(stat -c %u:%g:%a $d):$(if exec 3<>$d; then echo open; else echo denied; fi); \
                 done";
    let (code, out, err) = n.exec(&id, &["/bin/sh", "-c", probe]);
    assert_eq!(code, 0, "{err}");
    // The host's nodes are root's, mode 0600: pod root's own here.
    assert!(out.contains("/dev/net/tun=0:0:600:open"), "{out}{err}");
    assert!(out.contains("/dev/cnf/kvm0=0:0:600:open"), "{out}{err}");
    assert!(
        !n.mounts("/devices/").is_empty(),
        "no device tmpfs on the host"
    );
    n.remove_pod(&pod);
    let left = n.mounts("/devices/");
    assert!(left.is_empty(), "device tmpfs left: {left:?}");
    assert!(
        n.held_ranges().is_empty(),
        "ranges left: {:?}",
        n.held_ranges()
    );
    n.stop();
}
