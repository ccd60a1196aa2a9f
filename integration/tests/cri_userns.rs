//! kubelet user namespaces (`hostUsers: false`) through containerd 2.x's
//! CRI: a pod sandbox with `NamespaceMode_POD` and kubelet's mappings, as
//! kubelet sends it, on both cnfbox handlers.
//!
//! containerd 2.x then pins a user namespace of those mappings (it owns the
//! pod's network namespace), gives the sandbox its path, adds `uidmap=` /
//! `gidmap=` to the overlay rootfs mount and per-mount mappings to every
//! bind of the pod. containerd 1.x knows none of this: these tests skip
//! there (`CNFBOX_CONTAINERD_BIN` selects containerd 2.1.9, as
//! `scripts/test.sh` does).

mod common;
mod cri;
mod cri_node;

use std::os::unix::fs::MetadataExt;

use cri_node::{cri_node, uid_map, CriNode, Pod};
use k8s_cri::v1::{
    IdMapping, LinuxContainerConfig, LinuxContainerSecurityContext, Mount, NamespaceMode,
    NamespaceOption, StatusRequest, UserNamespace,
};

/// Host IDs for kubelet-style mappings: the last blocks of the test
/// environment's own slice (above 2^31, never another live test's), as
/// kubelet picks multiples of 65536 from its own subuid range.
fn kubelet_block(n: &CriNode, k: u32) -> u32 {
    let cfg = std::fs::read_to_string(n.env.config.as_ref().expect("config")).expect("config");
    let pool = cfg
        .lines()
        .find_map(|l| l.strip_prefix("pool = \""))
        .and_then(|v| v.trim_end_matches('"').split_once(':'))
        .expect("pool line");
    let start: u64 = pool.0.parse().expect("pool start");
    let size: u64 = pool.1.parse().expect("pool size");
    u32::try_from(start + size - u64::from(k + 1) * 65536).expect("u32 host id")
}

fn userns(mode: NamespaceMode, host: u32) -> NamespaceOption {
    let map = |h| IdMapping {
        host_id: h,
        container_id: 0,
        length: 65536,
    };
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(UserNamespace {
            mode: mode as i32,
            uids: if mode == NamespaceMode::Pod {
                vec![map(host)]
            } else {
                vec![]
            },
            gids: if mode == NamespaceMode::Pod {
                vec![map(host)]
            } else {
                vec![]
            },
        }),
        ..Default::default()
    }
}

/// RunPodSandbox of `name` on `handler` with the user namespace options
/// kubelet sends.
fn run_userns_pod(
    n: &mut CriNode,
    name: &str,
    handler: &str,
    ns: &NamespaceOption,
) -> Result<Pod, tonic::Status> {
    let config = n.pod_config_with(name, ns.clone());
    n.run_pod_config(config, handler)
}

/// A sleep container in `pod` with kubelet's namespace options and a
/// hostPath volume at `/vol`.
fn start_userns_container(
    n: &mut CriNode,
    pod: &Pod,
    ns: &NamespaceOption,
    host_path: &str,
) -> String {
    let mut config = cri::sleep_container("main");
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(ns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    // kubelet gives a userns pod's volumes the pod's mappings.
    let ids = ns.userns_options.as_ref().expect("userns");
    config.mounts = vec![Mount {
        container_path: "/vol".into(),
        host_path: host_path.into(),
        uid_mappings: ids.uids.clone(),
        gid_mappings: ids.gids.clone(),
        ..Default::default()
    }];
    n.start_config(pod, config)
}

fn skip_unless_containerd2(n: CriNode, test: &str) -> Option<CriNode> {
    let v = n.cd().version();
    if v.starts_with('1') {
        eprintln!(
            "SKIP {test}: containerd {v} has no CRI user namespaces; run with \
             CNFBOX_CONTAINERD_BIN=<containerd 2.x bin dir> (scripts/containerd2.sh)"
        );
        n.stop();
        return None;
    }
    Some(n)
}

/// `hostUsers: false` on containerd 2.x: the handler advertises user
/// namespaces where containerd asks (configuration B), and a pod with
/// kubelet's mappings runs with exactly those mappings on both cnfbox
/// handlers; the ledger lists them; a second pod whose
/// mapping overlaps a live one is refused; a hostPath volume keeps host
/// ownership (root-owned on the host is root inside, what pod root writes
/// is the host's uid 0 on disk, as with runc's id-mapped binds).
#[test]
fn cri_kubelet_userns_pod_runs_with_kubelets_mappings() {
    let test = "cri_kubelet_userns_pod_runs_with_kubelets_mappings";
    let Some(n) = cri_node(test) else {
        return;
    };
    let Some(mut n) = skip_unless_containerd2(n, test) else {
        return;
    };
    let status =
        n.rt.block_on(n.client.status(StatusRequest { verbose: false }))
            .expect("Status")
            .into_inner();
    let userns_of = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features.as_ref())
            .is_some_and(|f| f.user_namespaces)
    };
    // What README's handler table reports, per containerd version.
    for h in &status.runtime_handlers {
        eprintln!(
            "containerd {}: handler {:?} features {:?}",
            n.cd().version(),
            h.name,
            h.features
        );
    }
    assert!(
        userns_of("cnfbox-runc"),
        "configuration B must advertise user namespaces: {:?}",
        status.runtime_handlers
    );
    // Debian's runc 1.1.5 has no id-mapped mounts (`features` lacks
    // mountExtensions.idmap): containerd 2.x refuses userns pods on it, so
    // runc is no reference here.
    assert!(
        !userns_of("runc"),
        "runc 1.1.5: {:?}",
        status.runtime_handlers
    );

    let vol = n.env.tmp.path().join("vol");
    std::fs::create_dir(&vol).expect("volume dir");
    std::fs::write(vol.join("host-file"), "x").expect("host file");
    let vol_s = vol.to_string_lossy().into_owned();
    for (k, handler) in ["cnfbox-runc", "cnfbox"].iter().enumerate() {
        let host = kubelet_block(&n, k as u32);
        let ns = userns(NamespaceMode::Pod, host);
        let pod = run_userns_pod(&mut n, &format!("kuser-{k}"), handler, &ns)
            .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", n.log_tail()));
        let c = start_userns_container(&mut n, &pod, &ns, &vol_s);
        let (code, out, err) = n.exec(&c, &["cat", "/proc/self/uid_map", "/proc/self/gid_map"]);
        assert_eq!(code, 0, "{handler}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{handler}: one uid and one gid line: {out}");
        assert_eq!(
            uid_map(lines[0]),
            (0, u64::from(host), 65536),
            "{handler} uid_map"
        );
        assert_eq!(
            uid_map(lines[1]),
            (0, u64::from(host), 65536),
            "{handler} gid_map"
        );
        let probe = "stat -c %u:%g /vol/host-file && touch /vol/from-pod-$HOSTNAME && \
                     echo written";
        let (code, out, err) = n.exec(&c, &["/bin/sh", "-c", probe]);
        assert_eq!(code, 0, "{handler}: {err}{out}");
        assert_eq!(
            out.lines().next(),
            Some("0:0"),
            "{handler}: host root's file: {out}"
        );
        let written = std::fs::read_dir(&vol)
            .expect("vol")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("from-pod-"))
            .expect("the pod's file on the host");
        let meta = written.metadata().expect("meta");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{handler}: pod root's file on the host keeps the volume's owner"
        );
        std::fs::remove_file(written.path()).expect("rm");
        {
            let held = n.held_ranges();
            assert!(
                held.iter().any(|r| r.contains(&host.to_string())),
                "{handler}: the ledger lists kubelet's mapping {host}: {held:?}"
            );
            // Another pod with a mapping overlapping the live one.
            let clash = userns(NamespaceMode::Pod, host + 65536 / 2);
            let err = run_userns_pod(&mut n, &format!("kclash-{k}"), handler, &clash)
                .map(|p| p.id)
                .expect_err("an overlapping mapping must be refused");
            assert!(
                err.message().contains("overlap"),
                "{handler}: the error names the overlap: {}",
                err.message()
            );
        }
        n.remove_pod(&pod);
    }
    n.finish();
}

/// `[idmap] mode = "kubelet"`: cnfbox follows the CRI as runc does. A pod
/// kubelet runs with `hostUsers: true` (`NamespaceMode_NODE`) is in the
/// host's user namespace; a `hostUsers: false` one gets exactly kubelet's
/// mapping, host IDs below 65536 included (refused in the default
/// `always` mode, where every pod of the handler gets a range of its own).
#[test]
fn cri_kubelet_mode_follows_the_cri() {
    let test = "cri_kubelet_mode_follows_the_cri";
    let Some(n) = cri_node(test) else {
        return;
    };
    let Some(mut n) = skip_unless_containerd2(n, test) else {
        return;
    };
    let handler = "cnfbox-runc";
    let low = userns(NamespaceMode::Pod, 0);
    // The default mode refuses a mapping onto the host's own IDs.
    let err = run_userns_pod(&mut n, "klow-always", handler, &low)
        .map(|p| p.id)
        .expect_err("always mode must refuse host IDs below 65536");
    assert!(
        err.message().contains("65536") || err.message().contains("reserved"),
        "names the reserved IDs: {}",
        err.message()
    );
    let config = n.env.config.clone().expect("config");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[idmap]\n", "[idmap]\nmode = \"kubelet\"\n"),
    )
    .expect("write config");

    let vol = n.env.tmp.path().join("kvol");
    std::fs::create_dir(&vol).expect("volume dir");
    let vol_s = vol.to_string_lossy().into_owned();
    let node = userns(NamespaceMode::Node, 0);
    let block = kubelet_block(&n, 0);
    for (name, ns, want) in [
        ("knode", &node, (0, 0, 4_294_967_295)),
        (
            "kpod",
            &userns(NamespaceMode::Pod, block),
            (0, u64::from(block), 65536),
        ),
        ("klow", &low, (0, 0, 65536)),
    ] {
        let pod = run_userns_pod(&mut n, name, handler, ns)
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", n.log_tail()));
        let c = start_userns_container(&mut n, &pod, ns, &vol_s);
        let (code, out, err) = n.exec(&c, &["cat", "/proc/self/uid_map"]);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(uid_map(&out), want, "{name}: {out}");
        let held = n.held_ranges();
        match name {
            "kpod" => assert!(
                held.iter().any(|r| r.contains(&block.to_string())),
                "{name}: kubelet's mapping is recorded: {held:?}"
            ),
            _ => assert!(held.is_empty(), "{name}: nothing recorded: {held:?}"),
        }
        n.remove_pod(&pod);
    }
    n.finish();
}
