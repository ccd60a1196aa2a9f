//! Kubelet's cpuset through CRI places a cnfbox container on its NUMA node
//! with no annotation (`[numa] align = "auto"`, issue 26): CreateContainer's
//! `cpuset_cpus` on one node binds the container's memory there (the
//! `numa_maps` policy of its processes), and an UpdateContainerResources
//! (the CPU Manager reconciling) that moves the CPUs to another node is
//! refused saying the container is not re-bound. On this host (one node)
//! the move cannot happen and an update within the node is checked; the
//! VM lane (two nodes) checks the refused move.
//!
//! The container's `oom_score_adj` (0, CRI's default) is below the floor
//! containerd gave its shim with `CAP_SYS_RESOURCE` in the VM lane: the
//! ExecSyncs here failed with EACCES until `cnfbox exec` wrote the score
//! before joining the pod's user namespace (as every exec into a kubelet
//! Guaranteed pod, -997, would have).

use k8s_cri::v1::{LinuxContainerResources, UpdateContainerResourcesRequest};

use crate::cri;
use crate::cri_node::cri_node;

fn node_cpus(node: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))
        .unwrap_or_default();
    text.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse().unwrap_or(0)..=b.parse().unwrap_or(0)).collect::<Vec<u32>>(),
            None => vec![p.parse().unwrap_or(0)],
        })
        .collect()
}

#[test]
fn kubelets_cpuset_binds_a_cri_container_to_its_node() {
    let Some(mut n) = cri_node("kubelets_cpuset_binds_a_cri_container_to_its_node") else {
        return;
    };
    let two = !node_cpus(1).is_empty();
    let (node, cpu) = if two {
        (1, node_cpus(1)[0])
    } else {
        (0, *node_cpus(0).last().expect("node 0 has CPUs"))
    };
    let pod = n
        .run_pod("numa", "cnfbox", &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", n.log_tail()));
    let mut config = cri::sleep_container("pinned");
    config.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpuset_cpus: cpu.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = n.start_config(&pod, config);
    let (code, out, err) = n.exec(
        &c,
        &[
            "/bin/sh",
            "-c",
            "head -n1 /proc/self/numa_maps | cut -d' ' -f2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("bind:{node}"), "memory policy of {c}");

    let update = |n: &mut crate::cri_node::CriNode, cpus: String| {
        n.rt.block_on(
            n.client
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: c.clone(),
                    linux: Some(LinuxContainerResources {
                        cpuset_cpus: cpus,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
        )
    };
    if two {
        let other = node_cpus(0)[0];
        let err = update(&mut n, other.to_string())
            .expect_err("an update moving the CPUs to node 0 must be refused");
        let msg = err.message().to_string();
        assert!(
            msg.contains("refused") && msg.contains("NUMA node 1") && msg.contains("not re-bound"),
            "{msg}"
        );
    } else {
        eprintln!("SKIP refused CPU move: one NUMA node here (the VM lane checks it)");
        update(&mut n, cpu.to_string())
            .unwrap_or_else(|e| panic!("UpdateContainerResources within the node: {e}"));
    }
    let (_, out, _) = n.exec(
        &c,
        &[
            "/bin/sh",
            "-c",
            "head -n1 /proc/self/numa_maps | cut -d' ' -f2",
        ],
    );
    assert_eq!(
        out.trim(),
        format!("bind:{node}"),
        "still bound after the update"
    );
    n.remove_pod(&pod);
    // No range or shim left; containerd stops.
    n.finish();
}
