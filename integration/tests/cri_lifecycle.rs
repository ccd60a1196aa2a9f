//! Pod behaviours kubelet relies on, through CRI, cnfbox and runc side by
//! side, on whichever containerd the harness runs (Debian's 1.6.20, or
//! 2.1.9 with `CNFBOX_CONTAINERD_BIN`, as `scripts/test.sh` does both):
//! unprivileged ICMP for a non-root pod user under containerd's
//! `ping_group_range`, and a shared-PID pod whose main process is killed.

mod common;
mod cri;
mod cri_node;

use cri_node::{cri_node, CriNode, Pod};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, Int64Value, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
};

fn shared_pid() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod whose containers share one PID namespace (`shareProcessNamespace`).
fn run_shared_pid_pod(n: &mut CriNode, name: &str, handler: &str) -> Pod {
    let config = n.pod_config_with(name, shared_pid());
    n.run_pod_config(config, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", n.log_tail()))
}

fn state_of(n: &mut CriNode, id: &str) -> ContainerState {
    let s =
        n.rt.block_on(n.client.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status");
    ContainerState::try_from(s.state).expect("state")
}

/// Host pids whose command line (NULs as spaces, trimmed) contains
/// `needle`, with that command line.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_owned();
            c.contains(needle).then_some((pid, c))
        })
        .collect()
}

/// containerd sets `net.ipv4.ping_group_range` on every sandbox (2.x by
/// default, `enable_unprivileged_icmp`); cnfbox narrows it to the pod's
/// mapped gids. Either way a pod user without capabilities (uid and gid
/// 1000) pings over an ICMP datagram socket.
#[test]
fn cri_non_root_pod_user_pings() {
    let Some(mut n) = cri_node("cri_non_root_pod_user_pings") else {
        return;
    };
    let v = n.cd().version();
    // busybox's ping opens only raw sockets: a static helper does the
    // unprivileged ICMP echo, mounted in from the host.
    let helpers = n.env.tmp.path().join("helpers");
    std::fs::create_dir(&helpers).expect("helper dir");
    std::fs::set_permissions(
        &helpers,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod helper dir");
    test_bundles::helpers::build(test_bundles::helpers::ICMPECHO, &helpers).expect("icmpecho");
    for handler in ["cnfbox", "runc"] {
        let pod = n
            .run_pod(&format!("ping-{handler}"), handler, &[])
            .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", n.log_tail()));
        let mut config = cri::sleep_container("pinger");
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 1000 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        config.mounts = vec![Mount {
            container_path: "/helpers".into(),
            host_path: helpers.to_string_lossy().into_owned(),
            readonly: true,
            ..Default::default()
        }];
        let c = n.start_config(&pod, config);
        let probe = "echo id=$(id -u):$(id -g); \
                     echo range=$(tr '\\t' ' ' < /proc/sys/net/ipv4/ping_group_range); \
                     grep ^CapEff: /proc/self/status | tr -d '\\t '; \
                     /helpers/icmpecho";
        let (code, out, err) = n.exec(&c, &["/bin/sh", "-c", probe]);
        assert_eq!(code, 0, "{handler}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id=1000:1000", "{handler}: {out}");
        assert_eq!(lines[2], "CapEff:0000000000000000", "{handler}: {out}");
        let range = lines[1];
        if range == "range=1 0" {
            // containerd 1.6 sets no ping_group_range: ICMP stays closed
            // to unprivileged users under either runtime.
            assert!(v.starts_with('1'), "containerd {v} must open ICMP");
            assert!(lines[3].starts_with("icmp=socket:"), "{handler}: {out}");
        } else {
            assert_eq!(
                lines[3], "icmp=ok",
                "{handler}: the pod user pings: {out} {err}"
            );
        }
        n.remove_pod(&pod);
    }
    assert!(
        n.held_ranges().is_empty(),
        "ranges left: {:?}",
        n.held_ranges()
    );
    n.stop();
}

/// In a pod sharing one PID namespace, a container's main process is
/// killed while a child it started lives on: the shim kills what is left
/// in the container (as containerd's runc shim does), the container is
/// EXITED, no process of it is left, and the pod stops and is removed
/// (before the fix the orphan held the output pipe and containerd 2.x's
/// StopPodSandbox waited on it until it timed out).
#[test]
fn cri_shared_pid_pod_stops_when_its_main_process_is_killed() {
    let Some(mut n) = cri_node("cri_shared_pid_pod_stops_when_its_main_process_is_killed") else {
        return;
    };
    for handler in ["cnfbox", "runc"] {
        let marker = format!("{}{}", 40_000 + std::process::id() % 20_000, handler.len());
        let pod = run_shared_pid_pod(&mut n, &format!("spid-{handler}"), handler);
        let mut config = cri::sleep_container("main");
        config.command = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo $$ > /tmp/main.pid; sleep {marker} & wait"),
        ];
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(shared_pid()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = n.start_config(&pod, config);
        // The orphan-to-be is up before its parent dies. The kill comes
        // from the host: an exec'd killer is in the container's cgroup and
        // would die with the leftovers.
        let child = format!("sleep {marker}");
        while processes_with(&child).iter().all(|(_, c)| *c != child) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let main: Vec<u32> = processes_with(&child)
            .into_iter()
            .filter(|(_, c)| c.contains("main.pid"))
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(main.len(), 1, "{handler}: the main process: {main:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(main[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the main process");
        while state_of(&mut n, &c) == ContainerState::ContainerRunning {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(
            state_of(&mut n, &c),
            ContainerState::ContainerExited,
            "{handler}"
        );
        // The shim reaps the leftover before it reports the exit.
        let left: Vec<_> = processes_with(&child)
            .into_iter()
            .filter(|(_, c)| *c == child)
            .collect();
        assert!(left.is_empty(), "{handler}: the orphan lives on: {left:?}");
        n.remove_pod(&pod);
    }
    n.finish();
}
