//! One shim per pod, and the pod across a killed shim and a containerd
//! restart.

use super::*;

#[test]
fn containers_of_one_pod_share_one_shim() {
    let Some(n) = node("containers_of_one_pod_share_one_shim") else {
        return;
    };
    let pod = n.env.id("pod");
    let member = n.env.id("member");
    let sandbox_ann = format!("io.kubernetes.cri.sandbox-id={pod}");
    n.run_detached(
        &pod,
        &[
            "--annotation",
            &sandbox_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        &["/bin/sleep", "100000"],
    );
    n.run_detached(
        &member,
        &[
            "--annotation",
            &sandbox_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=container",
        ],
        &["/bin/sleep", "100000"],
    );
    assert_eq!(n.shims().len(), 1, "one shim for the pod: {:?}", n.shims());
    let uid_map = |id: &str| {
        n.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "m",
            id,
            "cat",
            "/proc/self/uid_map",
        ])
    };
    assert_eq!(
        uid_map(&pod),
        uid_map(&member),
        "the member shares the pod's range"
    );
    n.remove(&member);
    assert_eq!(n.shims().len(), 1, "the pod's shim stays for the sandbox");
    n.remove(&pod);
    n.assert_nothing_left(&member);
    n.assert_nothing_left(&pod);
    n.cd.stop().expect("stop containerd");
}

/// Issue 25: a CRI-O spec (CRI-O's keys name the container's own pod)
/// carrying containerd's `io.kubernetes.cri.sandbox-id` with another pod's
/// id, as a CRI-O pod annotation puts it there. The runtime reads CRI-O's
/// keys only; the shim must group by the same rule and not hand the
/// container the victim pod's shim.
#[test]
fn a_forged_containerd_sandbox_id_in_a_crio_spec_gets_its_own_shim() {
    let Some(n) = node("a_forged_containerd_sandbox_id_in_a_crio_spec_gets_its_own_shim") else {
        return;
    };
    let victim = n.env.id("victim");
    let tenant = n.env.id("tenant");
    let victim_ann = format!("{}={victim}", cnfbox_annotations::CRI_SANDBOX_ID);
    n.run_detached(
        &victim,
        &[
            "--annotation",
            &victim_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        &["/bin/sleep", "100000"],
    );
    let own = format!("{}={tenant}", cnfbox_annotations::CRIO_SANDBOX_ID);
    let kind = format!("{}=sandbox", cnfbox_annotations::CRIO_CONTAINER_TYPE);
    n.run_detached(
        &tenant,
        &[
            "--annotation",
            &victim_ann,
            "--annotation",
            &own,
            "--annotation",
            &kind,
        ],
        &["/bin/sleep", "100000"],
    );
    let shims = n.shims();
    n.remove(&tenant);
    n.remove(&victim);
    n.assert_nothing_left(&tenant);
    n.assert_nothing_left(&victim);
    n.cd.stop().expect("stop containerd");
    assert_eq!(
        shims.len(),
        2,
        "the tenant's container was handed the victim pod's shim: {shims:?}"
    );
}

#[test]
fn killed_shim_is_cleaned_up_by_a_fresh_shim_delete() {
    let Some(n) = node("killed_shim_is_cleaned_up_by_a_fresh_shim_delete") else {
        return;
    };
    let id = n.env.id("orphan");
    n.run_detached(&id, &[], &["/bin/sleep", "100000"]);
    let shims = n.shims();
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    // containerd sees the shim go and runs `containerd-shim-cnfbox-v2 delete`.
    for _ in 0..400 {
        if n.task_status(&id).is_none() && n.env.allocator().show(&id).expect("ledger").is_none() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = n.ctr(&["tasks", "delete", "-f", &id]);
    n.ctr_ok(&["containers", "rm", &id]);
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}

#[test]
fn pods_survive_a_containerd_restart() {
    let Some(mut n) = node("pods_survive_a_containerd_restart") else {
        return;
    };
    let id = n.env.id("survive");
    n.run_detached(&id, &[], &["/bin/sleep", "100000"]);
    let shims = n.shims();
    n.cd.restart().expect("restart containerd");
    n.wait_task(&id, "RUNNING");
    assert_eq!(n.shims(), shims, "the same shim serves after the restart");
    let out = n.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "after",
        &id,
        "echo",
        "still-here",
    ]);
    assert_eq!(out.trim(), "still-here");
    n.remove(&id);
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}
