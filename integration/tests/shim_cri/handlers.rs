//! Pods on the `cnfbox` and `runc` handlers side by side, and containerd's
//! `io.containerd.runc.v2` runtime type pointed at cnfbox.

use std::path::Path;

use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatsRequest, ContainerStatusRequest,
    LinuxContainerResources, ListContainersRequest, UpdateContainerResourcesRequest,
};

use crate::cri_node::{cgroups_named, cri_node, uid_map, CriNode};

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
