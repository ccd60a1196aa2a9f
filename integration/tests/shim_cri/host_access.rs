//! What a pod may see of the host: its namespaces (refused, then run
//! under the opt-in), host-to-container mount propagation and recursive
//! read-only mounts, host devices.

use std::path::Path;
use std::process::Command;

use k8s_cri::v1::{
    CreateContainerRequest, LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, StartContainerRequest,
};

use crate::common;
use crate::cri;
use crate::cri_node::{cri_node, uid_map, CriNode};

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
