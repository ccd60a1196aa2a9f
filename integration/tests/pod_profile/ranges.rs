//! Host ID ranges: one per pod or standalone container (with an
//! id-mapped rootfs, nothing chowned), disjoint and freed; kubelet's
//! mappings registered or refused; no pool; the host user namespace only
//! under the config's opt-in.

use super::*;

/// uid, gid and mode of every file under `dir`, to compare before/after.
fn ownership(dir: &Path) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.insert(e.path().display().to_string(), (m.uid(), m.gid(), m.mode()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Entries of `before` whose owner or mode changed, or that vanished.
fn changed(
    before: &BTreeMap<String, (u32, u32, u32)>,
    after: &BTreeMap<String, (u32, u32, u32)>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v:?} -> {:?}", after.get(k)))
        .collect()
}

fn kv(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {stdout}"))
        .to_string()
}

#[test]
fn standalone_container_gets_its_own_range_and_an_idmapped_rootfs() {
    if !can_run("pod userns") {
        return;
    }
    let env = Env::new();
    let probe = "cat /bin/cnfbox-check >/dev/null; /bin/cnfbox-check; \
                 echo owner=$(stat -c %u:%g /bin/busybox); touch /tmp/x && echo write=ok";
    let bundle = env.bundle("solo", |b| b.args(["/bin/sh", "-c", probe]));
    let before = ownership(&bundle.rootfs);
    let id = env.id("solo");
    env.create(&bundle, &id);
    let held = env
        .allocator()
        .show(&id)
        .unwrap()
        .expect("range allocated at create");
    let host = held.mapping.uid.host_id();
    assert!(host >= 65536);
    assert_eq!(held.mapping.uid.size(), 65536);
    // The view is attached before start and is id-mapped.
    let views = common::mount_points_of(&id);
    assert_eq!(views.len(), 1, "{views:?}");
    let view = &views[0];
    assert!(
        common::mounts_mentioning(view.to_str().unwrap())
            .iter()
            .any(|l| l.contains("idmapped")),
        "no id-mapped rootfs view at {}",
        view.display()
    );
    env.ok(&["start", &id]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
    let diff = changed(&before, &ownership(&bundle.rootfs));
    assert!(diff.is_empty(), "the bundle on disk was modified: {diff:?}");

    // The same, seen from inside (run in the foreground to read stdout).
    let id = env.id("solo-run");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let uid_map = kv(&stdout, "uid_map");
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields[0], "0");
    assert_eq!(fields[2], "65536");
    assert!(
        fields[1].parse::<u64>().unwrap() >= 1 << 31,
        "range from the test pool: {uid_map}"
    );
    assert_eq!(kv(&stdout, "gid_map"), uid_map, "uids and gids alike");
    assert_eq!(
        kv(&stdout, "owner"),
        "0:0",
        "image files owned by container root"
    );
    assert_eq!(kv(&stdout, "write"), "ok");
    assert!(
        kv(&stdout, "mountinfo_root").contains("idmapped"),
        "{stdout}"
    );
    assert_nothing_left(&env, &id);
    let diff = changed(&before, &ownership(&bundle.rootfs));
    assert!(diff.is_empty(), "the bundle on disk was modified: {diff:?}");
    // A file written by container root lands on disk as uid 0, not as the
    // pod's host uid.
    let written = fs::metadata(bundle.rootfs.join("tmp/x")).expect("file written inside");
    assert_eq!((written.uid(), written.gid()), (0, 0));
}

#[test]
fn two_pods_get_disjoint_ranges_and_ranges_are_freed() {
    if !can_run("two pods") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let (a, b) = (env.id("poda"), env.id("podb"));
    env.create(&bundle, &a);
    env.create(&bundle, &b);
    let alloc = env.allocator();
    let ra = alloc.show(&a).unwrap().unwrap().mapping.uid.host_range();
    let rb = alloc.show(&b).unwrap().unwrap().mapping.uid.host_range();
    assert!(
        ra.end() <= rb.start() || rb.end() <= ra.start(),
        "{ra:?} overlaps {rb:?}"
    );
    // The kernel agrees: each init's uid_map is its pod's range.
    for (id, r) in [(&a, ra), (&b, rb)] {
        let pid = env.state(id)["pid"].as_i64().unwrap();
        let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        let f: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(f, ["0", &r.start().to_string(), "65536"], "{id}");
        // The init runs as nobody on the host: its pod's root.
        let st = fs::metadata(format!("/proc/{pid}")).unwrap();
        assert_eq!(st.uid(), r.start(), "{id}'s root is host uid {}", r.start());
    }
    // The kernel keeps the pods apart: pod a's host uid may not signal pod
    // b's init, while b's own uid may (the control).
    let pid_b = env.state(&b)["pid"].as_i64().unwrap().to_string();
    let kill_as = |uid: u32| {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "kill",
                "-0",
                &pid_b,
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("setpriv from util-linux")
    };
    assert!(
        !kill_as(ra.start()).success(),
        "pod a's uid signalled pod b"
    );
    assert!(kill_as(rb.start()).success(), "control: pod b's own uid");
    env.ok(&["delete", "--force", &a]);
    env.ok(&["delete", "--force", &b]);
    assert_nothing_left(&env, &a);
    assert_nothing_left(&env, &b);
    assert!(alloc.list().unwrap().is_empty());
}

#[test]
fn kubelet_mappings_are_registered_or_refused() {
    if !can_run("kubelet mappings") {
        return;
    }
    let env = Env::new();
    let with_userns = |name: &str, host: u64| {
        env.bundle(name, move |b| {
            b.scenario(&Scenario::Sleep).modify(move |s| {
                let mut doc = serde_json::to_value(&*s).unwrap();
                doc["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}));
                let m = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
                doc["linux"]["uidMappings"] = m.clone();
                doc["linux"]["gidMappings"] = m;
                *s = serde_json::from_value(doc).unwrap();
            })
        })
    };
    // kubelet's choice, outside cnfbox's pool: registered and kept.
    let kube_host: u64 = 3_000_000_000;
    let kb = with_userns("kube", kube_host);
    let k = env.id("kube");
    env.create(&kb, &k);
    let pid = env.state(&k)["pid"].as_i64().unwrap();
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().nth(1).unwrap(),
        kube_host.to_string()
    );
    let entry = env.allocator().show(&k).unwrap().expect("registered");
    assert_eq!(u64::from(entry.mapping.uid.host_id()), kube_host);

    // Another pod asking for an overlapping range is refused.
    let clash = with_userns("clash", kube_host + 4096);
    let c = env.id("clash");
    let out = env.run(&["create", "-b", clash.dir.to_str().unwrap(), &c]);
    assert_one_line_error(&out, &[&c, "refused"]);
    assert_nothing_left(&env, &c);
    // Host IDs below 65536 are refused.
    let low = with_userns("low", 1000);
    let l = env.id("low");
    let out = env.run(&["create", "-b", low.dir.to_str().unwrap(), &l]);
    assert_one_line_error(&out, &[&l, "refused"]);
    assert_nothing_left(&env, &l);

    env.ok(&["delete", "--force", &k]);
    assert_nothing_left(&env, &k);
}

#[test]
fn no_pool_is_a_clear_error() {
    if !can_run("no pool") {
        return;
    }
    let mut env = Env::new();
    let missing = env.tmp.path().join("absent.toml");
    env.config = Some(missing);
    let bundle = env.bundle("nopool", |b| b.scenario(&Scenario::True));
    let id = env.id("nopool");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["absent.toml"]);
    env.config = None;
    assert_nothing_left(&env, &id);
}

#[test]
fn host_user_namespace_only_when_the_config_allows_it() {
    if !can_run("host userns") {
        return;
    }
    let env = Env::new();
    let script = "cat /proc/self/uid_map";
    let host = env.bundle("host", |b| {
        b.args(["/bin/sh", "-c", script])
            .annotation("cnfbox.io/userns", "host")
    });
    let id = env.id("hostns");
    let out = env.run(&["run", "-b", host.dir.to_str().unwrap(), &id]);
    let config = env.config.clone().unwrap();
    assert_one_line_error(
        &out,
        &[
            "host's user namespace",
            "allow_host_userns",
            config.to_str().unwrap(),
        ],
    );
    assert_nothing_left(&env, &id);

    // Allowed by config: no range, no id-mapped rootfs, the host's uid_map.
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("allow_host_userns = true\n");
    fs::write(&config, text).unwrap();
    let out = env.run(&["run", "-b", host.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    let map = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    assert!(env.allocator().list().unwrap().is_empty());
    assert_nothing_left(&env, &id);

    // Namespaced capabilities still need a private user namespace.
    let netadmin = env.bundle("hostcap", |b| {
        b.scenario(&Scenario::True)
            .annotation("cnfbox.io/userns", "host")
            .annotation("cnfbox.io/capabilities", "NET_ADMIN")
    });
    let id = env.id("hostcap");
    let out = env.run(&["create", "-b", netadmin.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["CAP_NET_ADMIN", "private user namespace"]);
    assert_nothing_left(&env, &id);
}
