//! What a pod's CRI config reaches: refused input named, seccomp and
//! sysctls, the sandbox's network namespace path.

use std::process::Command;

use k8s_cri::v1::{
    security_profile::ProfileType, LinuxContainerConfig, LinuxContainerSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxStatusRequest, SecurityProfile,
};

use crate::cri;
use crate::cri_node::cri_node;

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
