//! `cnfbox setup` and `cnfbox ranges`: giving cnfbox an ID pool and showing
//! which pod owns which host IDs, against a private /etc and ledger.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_nothing_left, assert_one_line_error, can_run, cnfbox_bin, Env};
use serde_json::{json, Value};
use test_bundles::{Bundle, Scenario};

fn etc_args<'a>(etc: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ranges", "--etc", etc];
    v.extend_from_slice(rest);
    v
}

/// A private /etc with cnfbox set up, and an allocator on the same ledger.
fn set_up(env: &Env) -> (String, idmap::Allocator) {
    let etc = env.tmp.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    // Another owner already holds a range: setup must avoid it. `filler`
    // holds everything from there to this environment's own slice, so the
    // pool setup picks is the slice: a ledger on the node hands out only
    // IDs no other live ledger does (`idmap::registry`), and tests run
    // side by side.
    let filler = env.pool().0 - 165_536;
    let subid = format!("builder:100000:65536\nfiller:165536:{filler}\n");
    fs::write(etc.join("subuid"), &subid).unwrap();
    fs::write(etc.join("subgid"), &subid).unwrap();
    let ledger = env.tmp.path().join("ledger");
    let etc_s = etc.to_str().unwrap().to_string();
    let args = [
        "setup",
        "--etc",
        &etc_s,
        "--pool-size",
        "655360",
        "--ledger-dir",
        ledger.to_str().unwrap(),
        "--format",
        "json",
    ];
    let first: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    let subuid = fs::read_to_string(etc.join("subuid")).unwrap();
    let config = fs::read_to_string(etc.join("cnfbox/config.toml")).unwrap();
    // Idempotent: a second run changes nothing.
    let second: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    assert_eq!(second["subuid"], "unchanged", "{second}");
    assert_eq!(second["config"], "unchanged", "{second}");
    assert_eq!(first["uid_pool"], second["uid_pool"]);
    assert_eq!(fs::read_to_string(etc.join("subuid")).unwrap(), subuid);
    assert_eq!(
        fs::read_to_string(etc.join("cnfbox/config.toml")).unwrap(),
        config
    );
    let line = subuid
        .lines()
        .find(|l| l.starts_with("cnfbox:"))
        .expect("cnfbox subuid line");
    let start: u64 = line.split(':').nth(1).unwrap().parse().unwrap();
    assert!(
        start >= 65536,
        "pool must avoid host IDs below 65536: {line}"
    );
    assert!(
        start >= 165536 || start + 655360 <= 100000,
        "pool overlaps builder's range: {line}"
    );
    // kubelet gets a pool of its own, the same in subuid and subgid, clear
    // of cnfbox's and builder's: kubelet's user-namespace allocator picks
    // from it instead of from every ID above 65536.
    let kubelet = |text: &str| -> (u64, u64) {
        let l: Vec<&str> = text.lines().filter(|l| l.starts_with("kubelet:")).collect();
        assert_eq!(l.len(), 1, "one kubelet entry: {text}");
        let f: Vec<u64> = l[0]
            .split(':')
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        (f[0], f[1])
    };
    let (ks, kn) = kubelet(&subuid);
    assert_eq!(
        kubelet(&fs::read_to_string(etc.join("subgid")).unwrap()),
        (ks, kn)
    );
    assert!(
        ks % 65536 == 0 && kn % 65536 == 0 && kn >= 110 * 65536,
        "{ks}:{kn}"
    );
    assert!(
        ks >= start + 655360 || ks + kn <= start,
        "kubelet's pool {ks}:{kn} overlaps cnfbox's {line}"
    );
    assert!(ks >= 165536, "kubelet's pool overlaps builder's: {ks}:{kn}");
    assert_eq!(first["kubelet_pool"]["start"], ks, "{first}");

    let etc_root = idmap::EtcRoot::new(&etc);
    let cfg = idmap::Config::load_from(&etc_root.default_config(), true).unwrap();
    let alloc = idmap::Allocator::from_config(&cfg, &etc_root).unwrap();
    (etc_s, alloc)
}

fn list(env: &Env, etc: &str) -> Vec<Value> {
    serde_json::from_str(&env.ok(&etc_args(etc, &["--format", "json", "list"]))).unwrap()
}

#[test]
fn setup_list_show_release_gc() {
    if !can_run("ranges") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    assert!(list(&env, &etc).is_empty());

    let a = alloc.allocate("pod-a").unwrap();
    let b = alloc.allocate("pod-b").unwrap();
    let l = list(&env, &etc);
    assert_eq!(l.len(), 2);
    let (ua, ub) = (&l[0]["uid"], &l[1]["uid"]);
    assert_eq!(l[0]["pod"], "pod-a");
    assert_eq!(ua["host_start"], a.uid.host_id());
    assert_eq!(ub["host_start"], b.uid.host_id());
    assert_eq!(ua["size"], 65536);
    assert!(
        ua["host_end"].as_u64() <= ub["host_start"].as_u64(),
        "ranges overlap: {ua} {ub}"
    );
    let text = env.ok(&etc_args(&etc, &["show", "pod-b"]));
    assert!(
        text.contains("pod-b") && text.contains(&b.uid.host_id().to_string()),
        "{text}"
    );

    env.ok(&etc_args(&etc, &["release", "pod-a"]));
    let out = env.run(&etc_args(&etc, &["show", "pod-a"]));
    assert_one_line_error(&out, &["pod-a", "holds no host ID range"]);
    let out = env.run(&etc_args(&etc, &["release", "pod-a"]));
    assert_one_line_error(&out, &["pod-a"]);

    // pod-b was just granted: within the grace period gc keeps it.
    env.ok(&etc_args(&etc, &["gc"]));
    assert_eq!(list(&env, &etc).len(), 1);
    let freed: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "gc", "--grace", "0"])))
            .unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0]["pod"], "pod-b");
    assert!(list(&env, &etc).is_empty());
    // The freed range is handed out again.
    assert_eq!(alloc.allocate("pod-c").unwrap(), a);
}

#[test]
fn corrupt_ledger_stops_everything_until_repair() {
    if !can_run("ranges repair") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    alloc.allocate("pod-x").unwrap();
    let ledger = alloc.ledger().path();
    let mut raw = fs::read(&ledger).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x20;
    fs::write(&ledger, &raw).unwrap();

    let out = env.run(&etc_args(&etc, &["list"]));
    assert_one_line_error(&out, &[ledger.to_str().unwrap()]);
    assert!(
        alloc.allocate("pod-y").is_err(),
        "allocation must stop on a corrupt ledger"
    );

    // No live container holds pod-x, so the rebuilt ledger is empty and the
    // corrupt file is kept for inspection.
    let rebuilt: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "repair"]))).unwrap();
    assert!(rebuilt.is_empty(), "{rebuilt:?}");
    assert!(list(&env, &etc).is_empty());
    let kept = fs::read_dir(ledger.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(kept, "the corrupt ledger is kept beside the new one");
    assert!(alloc.allocate("pod-y").is_ok());
}

#[test]
fn no_pool_says_how_to_set_one_up() {
    if !can_run("ranges without pool") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let etc = env.tmp.path().join("empty-etc");
    fs::create_dir_all(&etc).unwrap();
    let out = env.run(&etc_args(etc.to_str().unwrap(), &["list"]));
    let err = assert_one_line_error(&out, &["cnfbox setup"]);
    assert!(
        !Path::new(&etc).join("cnfbox").exists(),
        "{err}: nothing written"
    );
    let out = env.run(&etc_args(
        etc.to_str().unwrap(),
        &["--format", "yaml", "list"],
    ));
    assert_one_line_error(&out, &["--format"]);
}

#[test]
fn repair_rebuilds_from_live_container_records() {
    if !can_run("ranges repair from containers") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    let held = alloc.allocate("live-pod").unwrap();
    alloc.allocate("gone-pod").unwrap();
    // A container of live-pod, as `create` records it (pod and mapping in
    // the record its journal holds); gone-pod has no container left.
    let record = serde_json::json!({
        "bundle": "/b", "rootfs": "/b/rootfs", "cgroup_path": "/cnfbox/c", "systemd": false,
        "pod": "live-pod", "mapping": held,
    });
    let dir = env.root.join(".journal");
    fs::create_dir_all(&dir).unwrap();
    let journal = serde_json::json!({ "id": "c-of-live-pod", "steps": [], "record": record });
    let file = dir.join("c-of-live-pod.json");
    fs::write(&file, journal.to_string()).unwrap();
    fs::write(alloc.ledger().path(), b"truncated").unwrap();

    let rebuilt: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "repair"]))).unwrap();
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(rebuilt[0]["pod"], "live-pod");
    assert_eq!(rebuilt[0]["uid"]["host_start"], held.uid.host_id());
    // The live pod keeps its range (it is recorded with its state root); a
    // new pod never gets it.
    let root = fs::canonicalize(&env.root).unwrap();
    assert_eq!(rebuilt[0]["root"], root.to_str().unwrap());
    assert_eq!(alloc.allocate_in(Some(&root), "live-pod").unwrap(), held);
    let other = alloc.allocate("new-pod").unwrap();
    assert_ne!(other.uid.host_id(), held.uid.host_id());
    // gc spares the pod that still has a container.
    let freed: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "gc", "--grace", "0"])))
            .unwrap();
    assert!(freed.iter().all(|e| e["pod"] != "live-pod"), "{freed:?}");
    let out = env.run(&etc_args(&etc, &["release", "live-pod"]));
    assert_one_line_error(&out, &["live-pod", "still has containers"]);
    fs::remove_file(&file).unwrap();
}

/// A state root beside the environment's, on the environment's ledger (as
/// the CLI's `/run/cnfbox` and the shim's `/run/containerd/cnfbox/<ns>`
/// share the host's). Its containers are force-deleted on drop.
struct Root<'a> {
    env: &'a Env,
    path: PathBuf,
}

impl<'a> Root<'a> {
    fn new(env: &'a Env, path: PathBuf) -> Self {
        fs::create_dir_all(&path).unwrap();
        Root { env, path }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(cnfbox_bin());
        cmd.env("CNFBOX_CONFIG", self.env.config.as_ref().unwrap())
            .arg("--root")
            .arg(&self.path)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("spawn cnfbox")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cnfbox --root {} {args:?}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `create` + `start`, without holding the detached init's stdio.
    fn start(&self, bundle: &Bundle, id: &str) {
        let err = self.env.tmp.path().join(format!("{id}.err"));
        let status = self
            .command()
            .args(["create", "--bundle"])
            .arg(&bundle.dir)
            .arg(id)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "create {id}: {}",
            fs::read_to_string(&err).unwrap()
        );
        self.ok(&["start", id]);
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    /// Kills the container's init and waits until it is stopped.
    fn kill_init(&self, id: &str) {
        self.ok(&["kill", id, "KILL"]);
        for _ in 0..400 {
            if self.state(id)["status"] == "stopped" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("{id} never stopped");
    }

    /// The range the ledger holds for pod `pod` of this root.
    fn held(&self, pod: &str) -> Option<idmap::PodMapping> {
        let key = fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let e = self.env.allocator().show_in(Some(&key), pod).unwrap()?;
        assert_eq!(e.root.as_deref(), Some(key.as_path()), "{e:?}");
        Some(e.mapping)
    }

    fn gc(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["ranges", "--format", "json", "gc", "--grace", "0"]))
            .unwrap()
    }
}

impl Drop for Root<'_> {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let _ = self.run(&["delete", "--force", &name]);
                }
            }
        }
        if let Some(base) = common::mount_base_of(&self.path) {
            for kind in ["rootfs", "volumes", "ns", "hugepages"] {
                let _ = fs::remove_dir(base.join(kind));
            }
            let _ = fs::remove_dir(base);
        }
    }
}

fn disjoint(a: idmap::PodMapping, b: idmap::PodMapping) -> bool {
    !a.uid.host_range().overlaps(&b.uid.host_range())
        && !a.gid.host_range().overlaps(&b.gid.host_range())
}

/// Two state roots and a shim-style `.../containerd/cnfbox/<ns>` root side
/// by side on one ledger: the same container id in two roots gets two
/// ranges, `ranges gc --grace 0` in every root (and in the CLI's default
/// root) frees no live range, not even one whose container has stopped,
/// and deleting the id in one root leaves the other's range alone.
/// Before ranges recorded their root, gc in root B freed every pod of the
/// other roots, and the second create of the id got the first one's range.
#[test]
fn two_roots_and_a_shim_root_keep_their_live_ranges_apart() {
    if !can_run("ranges in several state roots") {
        return;
    }
    let env = Env::new();
    let a = Root::new(&env, env.root.clone());
    let b = Root::new(&env, env.tmp.path().join("root-b"));
    let shim = Root::new(&env, env.tmp.path().join("run/containerd/cnfbox/k8s.io"));
    let bundle = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("same");
    a.start(&bundle, &id);
    shim.start(&bundle, &id);
    let (ra, rs) = (
        a.held(&id).expect("a's range"),
        shim.held(&id).expect("shim's range"),
    );
    assert!(
        disjoint(ra, rs),
        "the same id in two roots shares {ra} / {rs}"
    );
    let pid = |r: &Root, id: &str| r.state(id)["pid"].as_i64().unwrap();
    let uid_map = |p: i64| fs::read_to_string(format!("/proc/{p}/uid_map")).unwrap();
    assert!(uid_map(pid(&shim, &id)).contains(&rs.uid.host_id().to_string()));

    // a's container stops: no process is left in its user namespace, but
    // its record still holds the range.
    a.kill_init(&id);
    for r in [&b, &a, &shim] {
        let freed = r.gc();
        assert!(
            freed.is_empty(),
            "gc in {} freed {freed:?}",
            r.path.display()
        );
    }
    let plain = Command::new(cnfbox_bin())
        .env("CNFBOX_CONFIG", env.config.as_ref().unwrap())
        .args(["ranges", "--format", "json", "gc", "--grace", "0"])
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let freed: Vec<Value> = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(freed.is_empty(), "gc in the default root freed {freed:?}");
    assert_eq!((a.held(&id), shim.held(&id)), (Some(ra), Some(rs)));
    // `ranges release` in the wrong root finds nothing of the id there.
    let out = b.run(&["ranges", "release", &id]);
    assert_one_line_error(&out, &[&id, "holds no host ID range"]);

    // Deleting the id in the shim root frees the shim pod's range only.
    shim.ok(&["delete", "--force", &id]);
    assert_eq!(shim.held(&id), None);
    assert_eq!(a.held(&id), Some(ra));
    a.ok(&["delete", &id]);
    assert_eq!(a.held(&id), None);
    assert!(env.allocator().list().unwrap().is_empty());
}

/// kubelet's mapping (a spec's own uidMappings, registered) that overlaps
/// a live cnfbox range is refused with one line naming both pods, their
/// state roots and both ranges; nothing is left.
#[test]
fn an_overlapping_kubelet_mapping_is_refused_naming_both() {
    if !can_run("overlapping registration") {
        return;
    }
    let env = Env::new();
    let a = Root::new(&env, env.root.clone());
    let shim = Root::new(&env, env.tmp.path().join("run/containerd/cnfbox/k8s.io"));
    let plain = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let cnf = env.id("cnf");
    a.start(&plain, &cnf);
    let held = a.held(&cnf).unwrap();
    let host = u64::from(held.uid.host_id()) + 4096;
    let kube = env.bundle("kube", move |b| {
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
    });
    let k = env.id("kube");
    let out = shim.run(&["create", "-b", kube.dir.to_str().unwrap(), &k]);
    let a_root = fs::canonicalize(&a.path).unwrap();
    let shim_root = fs::canonicalize(&shim.path).unwrap();
    assert_one_line_error(
        &out,
        &[
            &format!("pod {k}"),
            shim_root.to_str().unwrap(),
            &host.to_string(),
            &format!("held by pod {cnf}"),
            a_root.to_str().unwrap(),
            &held.uid.host_id().to_string(),
        ],
    );
    assert_eq!(shim.held(&k), None);
    assert!(!shim.path.join(&k).exists());
    a.ok(&["delete", "--force", &cnf]);
    assert_nothing_left(&env, &cnf);
}

/// A tenant that kills its pod's pause process gets the sandbox deleted
/// while the members run on: the range stays with the pod until its last
/// container is deleted, and a pod created in between gets another range.
/// Before, deleting the sandbox freed the range and the next pod got the
/// running member's host uids.
#[test]
fn deleting_the_sandbox_keeps_the_range_until_the_last_member_goes() {
    if !can_run("sandbox deleted under its members") {
        return;
    }
    let env = Env::new();
    let root = Root::new(&env, env.root.clone());
    let pod = env.id("spod");
    let annotated = |name: &str, kind: &'static str| {
        let pod = pod.clone();
        env.bundle(name, move |b| {
            b.scenario(&Scenario::Sleep).in_pod(pod, kind)
        })
    };
    let (sandbox, member) = (annotated("sb", "sandbox"), annotated("mem", "container"));
    root.start(&sandbox, &pod);
    let m = env.id("smem");
    root.start(&member, &m);
    let range = root.held(&pod).expect("pod range");

    root.kill_init(&pod);
    root.ok(&["delete", &pod]);
    assert_eq!(root.state(&m)["status"], "running");
    assert_eq!(
        root.held(&pod),
        Some(range),
        "the sandbox's delete freed the member's range"
    );
    // gc agrees: the member's record (and its process) hold it.
    assert!(root.gc().is_empty());
    let other = env.id("next");
    let plain = env.bundle("plain", |b| b.scenario(&Scenario::Sleep));
    root.start(&plain, &other);
    let next = root.held(&other).unwrap();
    assert!(
        disjoint(next, range),
        "a new pod got the running member's range {range}"
    );
    root.ok(&["delete", "--force", &other]);

    root.ok(&["delete", "--force", &m]);
    assert_eq!(
        root.held(&pod),
        None,
        "the last container's delete frees the range"
    );
    assert_nothing_left(&env, &m);
    assert_nothing_left(&env, &pod);
}

/// A caller that removes its `--root` strands nothing: gc frees the range
/// of a pod whose state root is gone and whose processes are gone, keeps
/// one whose root is gone but whose container still runs (a process in a
/// user namespace mapped on the range), and keeps a live root's. Before,
/// the first range was never freed by a gc in its (gone) root, and a gc
/// in another root freed all three.
#[test]
fn gc_reclaims_a_removed_roots_range_only_when_nothing_runs_on_it() {
    if !can_run("gc of a removed state root") {
        return;
    }
    let env = Env::new();
    let live = Root::new(&env, env.root.clone());
    let dead = Root::new(&env, env.tmp.path().join("dead-root"));
    let running = Root::new(&env, env.tmp.path().join("running-root"));
    let bundle = env.bundle("sleep", |b| b.scenario(&Scenario::Sleep));
    let (l, d, r) = (env.id("live"), env.id("dead"), env.id("running"));
    live.start(&bundle, &l);
    dead.start(&bundle, &d);
    running.start(&bundle, &r);
    let (rl, rd, rr) = (
        live.held(&l).unwrap(),
        dead.held(&d).unwrap(),
        running.held(&r).unwrap(),
    );
    dead.kill_init(&d);
    // Both roots disappear (moved away, so that the test can clean up).
    let moved = |root: &Root| {
        let to = root.path.with_extension("moved");
        fs::rename(&root.path, &to).unwrap();
        to
    };
    let dead_base = common::mount_base_of(&dead.path).expect("dead root's mount base");
    let (dead_to, running_to) = (moved(&dead), moved(&running));
    assert!(!common::mount_points_of(&d).is_empty());
    let freed = live.gc();
    // What the dead pod left mounted goes with its range (issue 25), and
    // its root's mount base with it; the running pod's views stay.
    assert_eq!(common::mount_points_of(&d), Vec::<PathBuf>::new());
    assert!(!dead_base.exists(), "{}", dead_base.display());
    assert!(!common::mount_points_of(&r).is_empty());
    let back = |from: &Path, root: &Root| fs::rename(from, &root.path).unwrap();
    back(&dead_to, &dead);
    back(&running_to, &running);
    let freed: Vec<(u64, &str)> = freed
        .iter()
        .map(|e| {
            (
                e["uid"]["host_start"].as_u64().unwrap(),
                e["pod"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        freed,
        [(u64::from(rd.uid.host_id()), d.as_str())],
        "{rl} {rr}"
    );
    assert_eq!((live.held(&l), running.held(&r)), (Some(rl), Some(rr)));
    assert_eq!(dead.held(&d), None);
    dead.ok(&["delete", &d]);
    running.ok(&["delete", "--force", &r]);
    live.ok(&["delete", "--force", &l]);
    assert!(env.allocator().list().unwrap().is_empty());
}

/// Two configs naming one pool with two ledgers would give two live pods
/// the same host IDs (issue 25): the second ledger is refused while the
/// first exists, by the runtime and by `setup`.
#[test]
fn a_second_ledger_on_the_same_pool_is_refused() {
    if !can_run("a second ledger on one pool") {
        return;
    }
    let env = Env::new();
    let first = env.id("first");
    env.create(
        &env.bundle("first", |b| b.scenario(&Scenario::Sleep)),
        &first,
    );
    let (start, size) = env.pool();
    let ledger = env.tmp.path().join("ledger");
    let second_ledger = env.tmp.path().join("ledger2");
    let second = env.tmp.path().join("second.toml");
    fs::write(
        &second,
        format!(
            "[idmap]\npool = \"{start}:{size}\"\nledger_dir = \"{}\"\n",
            second_ledger.display()
        ),
    )
    .unwrap();
    let id = env.id("second");
    let bundle = env.bundle("second", |b| b.scenario(&Scenario::Sleep));
    // The init keeps stdout: only the status is waited for.
    let create_second = || {
        let err = env.tmp.path().join("second.err");
        let status = env
            .command()
            .env("CNFBOX_CONFIG", &second)
            .args(["create", "-b", bundle.dir.to_str().unwrap(), &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: fs::read(&err).unwrap_or_default(),
        }
    };
    let out = create_second();
    assert_one_line_error(
        &out,
        &[
            &second_ledger.display().to_string(),
            "overlaps ledger",
            &ledger.display().to_string(),
        ],
    );
    assert_nothing_left(&env, &id);
    assert!(
        env.allocator().show(&id).unwrap().is_none(),
        "no range in the first ledger"
    );

    // setup over an /etc whose cnfbox entry is that pool, with another
    // ledger: refused, no config written.
    let etc = env.tmp.path().join("etc2");
    fs::create_dir_all(&etc).unwrap();
    let line = format!("cnfbox:{start}:{size}\n");
    fs::write(etc.join("subuid"), &line).unwrap();
    fs::write(etc.join("subgid"), &line).unwrap();
    let out = env
        .command()
        .env_remove("CNFBOX_CONFIG")
        .args(["setup", "--etc", etc.to_str().unwrap(), "--ledger-dir"])
        .arg(&second_ledger)
        .output()
        .unwrap();
    assert_one_line_error(&out, &["overlaps ledger", &ledger.display().to_string()]);
    assert!(!etc.join("cnfbox/config.toml").exists());

    // Control: with the first ledger gone, its registration is stale.
    env.ok(&["delete", "--force", &first]);
    env.allocator().release(&first).unwrap();
    fs::remove_dir_all(&ledger).unwrap();
    let out = create_second();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .command()
        .env("CNFBOX_CONFIG", &second)
        .args(["delete", "--force", &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `setup --help` says which config file it writes and how to choose where
/// the pool starts.
#[test]
fn setup_help_names_the_config_and_the_pool_start() {
    if !can_run("setup --help") {
        return;
    }
    let env = Env::new();
    let help = env.ok(&["setup", "--help"]);
    for needle in [
        "CNFBOX_CONFIG",
        "Where the pool starts",
        "pool = \"1073741824:67108864\"",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
