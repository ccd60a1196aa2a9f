//! Faults: nothing lost, nothing leaked. `cnfbox create` killed at each
//! step, a full disk under the state root and under the ledger, and 200
//! create/start/delete cycles, 8 at a time. Every check lists what is left
//! for this test's own ids (other tests run on this machine at once).
//! `journal`: create failed or killed at each journal step, undone by the
//! one teardown.

#[path = "../common/mod.rs"]
mod common;
mod journal;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{assert_nothing_left, can_run, cgroup_dirs_named, Env};
use serde_json::json;
use test_bundles::Scenario;

/// The failpoints of `create`, in order (runtime/src/failpoint.rs).
const STEPS: &[&str] = &[
    "create:before-range",
    "create:after-range",
    "create:after-mounts",
    "create:after-hugepages",
    "create:after-devices",
    "create:after-stage",
    "create:after-init",
    "create:after-state",
];

/// A bundle with a bind-mounted volume, so a create also attaches a volume
/// view, a device (c 1:3 at a path of its own, so cnfbox makes the node on
/// a tmpfs of the container's), and (where the kernel has 2 MiB hugepages) a hugepage limit, so it
/// also makes a hugetlb cgroup and a hugetlbfs.
fn bundle_with_volume(env: &Env, name: &str, scenario: &Scenario) -> test_bundles::Bundle {
    bundle_with_volume_in(env, name, scenario, None)
}

/// [`bundle_with_volume`], as a container of pod `(pod, kind)`.
fn bundle_with_volume_in(
    env: &Env,
    name: &str,
    scenario: &Scenario,
    pod: Option<(&str, &str)>,
) -> test_bundles::Bundle {
    let hugepages = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    let vol = env.tmp.path().join(format!("{name}-vol"));
    fs::create_dir_all(&vol).unwrap();
    let vol_s = vol.to_str().unwrap().to_string();
    env.bundle(name, |b| {
        let b = match pod {
            Some((pod, kind)) => b.in_pod(pod, kind),
            None => b,
        };
        b.scenario(scenario).modify(move |s| {
            let mut doc = serde_json::to_value(&*s).unwrap();
            doc["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/data", "type": "bind", "source": vol_s, "options": ["rbind", "rw"]
            }));
            doc["linux"]["devices"] = json!([{
                "path": "/dev/cnf/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666
            }]);
            if hugepages {
                doc["linux"]["resources"]["hugepageLimits"] =
                    json!([{ "pageSize": "2MB", "limit": 2 << 20 }]);
            }
            *s = serde_json::from_value(doc).unwrap();
        })
    })
}

/// `cnfbox create` with stdio away from the test; returns its exit status.
fn create_with(
    env: &Env,
    bundle: &Path,
    id: &str,
    failpoint: Option<&str>,
) -> std::process::ExitStatus {
    let mut cmd = env.command();
    cmd.args(["create", "-b"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(step) = failpoint {
        cmd.env("CNFBOX_FAILPOINT", step);
    }
    cmd.status().expect("spawn cnfbox create")
}

/// `cnfbox create` whose stderr is captured through a file: a pipe would be
/// held open by the detached init of a create that succeeds.
fn create_output(env: &Env, bundle: &Path, id: &str) -> std::process::Output {
    let err_path = env.tmp.path().join(format!("{id}.err"));
    let status = env
        .command()
        .args(["create", "-b"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .status()
        .expect("spawn cnfbox create");
    std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: fs::read(&err_path).unwrap(),
    }
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The init pid libcontainer recorded for `id`, if it got that far.
fn recorded_pid(env: &Env, id: &str) -> Option<i32> {
    let raw = fs::read(env.root.join(id).join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// What a killed create left: state dir, staged spec, cgroup, mounts, range.
fn leftovers(env: &Env, id: &str) -> Vec<String> {
    let mut left = Vec::new();
    if env.root.join(id).exists() {
        left.push("state dir".into());
    }
    if fs::read_dir(env.root.join(".staging"))
        .map(|d| d.count() > 0)
        .unwrap_or(false)
    {
        left.push("staged spec".into());
    }
    if !cgroup_dirs_named(id).is_empty() {
        left.push("cgroup".into());
    }
    let mounts = common::mounts_mentioning(id).len();
    if mounts > 0 {
        left.push(format!("{mounts} mounts"));
    }
    if env.allocator().show(id).unwrap().is_some() {
        left.push("range".into());
    }
    left
}

/// `delete --force` alone leaves nothing of `id`, its range included (the
/// create journal's teardown); `ranges gc --grace 0` then succeeds and the
/// ledger reads back without it.
fn recover_and_check(env: &Env, id: &str) {
    env.ok(&["delete", "--force", id]);
    assert_nothing_left(env, id);
    assert!(
        env.allocator().show(id).unwrap().is_none(),
        "delete --force left the range of {id}"
    );
    env.ok(&["ranges", "gc", "--grace", "0"]);
    let listed = env.ok(&["ranges", "list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("ledger lists as JSON");
    assert!(
        !listed.contains(id),
        "ledger still names {id} after gc: {v}"
    );
}

#[test]
fn create_killed_at_each_step_is_recovered_by_delete_force_and_gc() {
    if !can_run("killed create") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "killed", &Scenario::Sleep);
    for step in STEPS {
        let id = env.id(&format!("kill-{}", step.trim_start_matches("create:")));
        let status = create_with(&env, &bundle.dir, &id, Some(step));
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{step}: create was not killed at its failpoint ({status:?})"
        );
        let left = leftovers(&env, &id);
        let init = recorded_pid(&env, &id);
        eprintln!("killed at {step}: left {left:?}, init {init:?}");
        recover_and_check(&env, &id);
        if let Some(pid) = init {
            // Reparented and reaped by the host's init once killed.
            for _ in 0..200 {
                if !alive(pid) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(!alive(pid), "{step}: init {pid} still runs");
        }
        // The same id creates and deletes cleanly afterwards.
        assert!(
            create_with(&env, &bundle.dir, &id, None).success(),
            "{step}: re-create"
        );
        env.ok(&["delete", "--force", &id]);
        assert_nothing_left(&env, &id);
    }
    assert!(env.allocator().list().unwrap().is_empty());
}

/// SIGKILL from outside while libcontainer builds the container: the
/// moment its cgroup appears (between the failpoints around `build`).
#[test]
fn create_killed_when_its_cgroup_appears_is_recovered() {
    if !can_run("killed at cgroup") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("cgkill", |b| b.scenario(&Scenario::Sleep));
    let mut hits = 0;
    for _ in 0..10 {
        let id = env.id("cgkill");
        let mut child = env
            .command()
            .args(["create", "-b", bundle.dir.to_str().unwrap(), &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if !cgroup_dirs_named(&id).is_empty() {
                let _ = child.kill();
                hits += 1;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::yield_now();
        }
        let status = child.wait().unwrap();
        eprintln!(
            "killed at cgroup: {status:?}, left {:?}",
            leftovers(&env, &id)
        );
        recover_and_check(&env, &id);
    }
    eprintln!("cgroup kill landed during create {hits}/10 times");
    assert!(hits > 0, "never saw the cgroup before create finished");
}

/// libcontainer's clones of a killed create (its intermediate process, the
/// init before its exec) outlive it and go on making the container's
/// cgroup. `delete --force` kills them before it removes anything: here a
/// stand-in, named as libcontainer names them and holding the container's
/// state-lock file open as a clone of the create does, started after a
/// create killed once its init was made. (The real ones are gone a moment
/// after the create dies, too soon to catch every time; a `delete --force`
/// that raced one left a freezer cgroup behind.)
#[test]
fn delete_force_kills_what_a_killed_create_left_running() {
    if !can_run("killed create's clones") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "clones", &Scenario::Sleep);
    let id = env.id("clones");
    let status = create_with(&env, &bundle.dir, &id, Some("create:after-init"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "create was not killed: {status:?}"
    );
    let lock = env.root.join(".locks").join(&id);
    assert!(
        lock.is_file(),
        "the create made no state lock {}",
        lock.display()
    );
    let name = "youki:[1:INTER]";
    let mut clone = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3<'{}'; printf '%s' '{name}' > /proc/self/comm; read x",
            lock.display()
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", clone.id());
    while fs::read_to_string(&comm).unwrap_or_default().trim() != name {
        assert!(
            clone.try_wait().unwrap().is_none(),
            "the stand-in exited early"
        );
        std::thread::yield_now();
    }
    recover_and_check(&env, &id);
    let gone = clone.try_wait().unwrap();
    let status = match gone {
        Some(s) => s,
        None => {
            let _ = clone.kill();
            let _ = clone.wait();
            panic!(
                "delete --force left the killed create's clone {} running",
                clone.id()
            );
        }
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the clone ended otherwise: {status:?}"
    );
}

/// A small tmpfs mounted at `path` for the test; unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn new(path: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0711").as_str()),
        )
        .expect("mount test tmpfs");
        Self(path)
    }

    /// Fills the filesystem (writes until ENOSPC), then frees `pages`
    /// pages of it.
    fn fill(&self, pages: usize) {
        use std::io::Write;
        let chunk = vec![0u8; 4096];
        let mut reserve = fs::File::create(self.0.join("reserve")).unwrap();
        for _ in 0..pages {
            reserve.write_all(&chunk).unwrap();
        }
        let mut f = fs::File::create(self.0.join("filler")).unwrap();
        while f.write_all(&chunk).is_ok() {}
        drop(reserve);
        fs::remove_file(self.0.join("reserve")).unwrap();
    }

    fn unfill(&self) {
        fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The state root on a full tmpfs with 0 to 15 pages left: the create
/// fails wherever the space runs out (staged spec, libcontainer's state,
/// cnfbox's record) with one line naming the cause, and leaves nothing; or,
/// given enough room, it succeeds.
#[test]
fn full_disk_under_the_state_root_is_a_clear_error() {
    if !can_run("state disk full") {
        return;
    }
    let mut env = Env::new();
    let disk = SmallFs::new(env.tmp.path().join("small-state"), "512k");
    env.root = disk.0.join("state");
    fs::create_dir_all(&env.root).unwrap();
    let bundle = env.bundle("full", |b| b.scenario(&Scenario::Sleep));
    let (mut failed, mut created) = (0, 0);
    for pages in 0..16 {
        disk.fill(pages);
        let id = env.id("full");
        let out = create_output(&env, &bundle.dir, &id);
        if out.status.success() {
            created += 1;
            disk.unfill();
            env.ok(&["delete", "--force", &id]);
        } else {
            failed += 1;
            let err = common::assert_one_line_error(&out, &[&id]);
            eprintln!("{pages} pages free: {}", err.trim());
            assert!(
                err.contains("No space left on device"),
                "{pages} pages free: the error says why: {err}"
            );
            disk.unfill();
        }
        assert_nothing_left(&env, &id);
    }
    eprintln!("state root full: {failed} creates refused, {created} fitted");
    assert!(failed > 0);
    env.ok(&["ranges", "gc", "--grace", "0"]);
    drop(env);
    drop(disk);
}

#[test]
fn full_disk_under_the_ledger_keeps_the_previous_ledger() {
    if !can_run("ledger disk full") {
        return;
    }
    let env = Env::new();
    let ledger = env.tmp.path().join("ledger");
    let disk = SmallFs::new(ledger.clone(), "64k");
    let bundle = env.bundle("ledgerfull", |b| b.scenario(&Scenario::Sleep));
    let first = env.id("before-full");
    env.create(&bundle, &first);
    let before = env.ok(&["ranges", "list", "--format", "json"]);
    assert!(before.contains(&first));
    disk.fill(0);
    let second = env.id("while-full");
    let out = create_output(&env, &bundle.dir, &second);
    let err = common::assert_one_line_error(&out, &[&second]);
    assert!(
        err.contains("No space left on device") && err.contains(ledger.to_str().unwrap()),
        "the error names the ledger and the cause: {err}"
    );
    assert_nothing_left(&env, &second);
    // The previous ledger is intact: same entries, still loads.
    assert_eq!(env.ok(&["ranges", "list", "--format", "json"]), before);
    // Freeing the pod needs a ledger write too: refused, nothing lost.
    let out = env.run(&["delete", "--force", &first]);
    let err = common::assert_one_line_error(&out, &[&first, "No space left on device"]);
    assert!(err.contains(ledger.to_str().unwrap()), "{err}");
    assert_eq!(env.ok(&["ranges", "list", "--format", "json"]), before);
    disk.unfill();
    env.ok(&["delete", "--force", &first]);
    env.ok(&["ranges", "gc", "--grace", "0"]);
    assert_nothing_left(&env, &first);
    assert!(env.allocator().list().unwrap().is_empty());
    drop(env);
    drop(disk);
}

/// The fds of `pid` once it runs the container's program.
fn init_fds(pid: i64) -> Vec<i32> {
    for _ in 0..500 {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().contains("busybox") {
            let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            v.sort();
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("init {pid} never exec'd the container's program");
}

/// This process's fds that point under `dir` (other tests run in the same
/// process at once, so a plain count would be theirs too).
fn open_fds_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .collect()
}

#[test]
fn two_hundred_cycles_eight_at_a_time_leak_nothing() {
    if !can_run("200 cycles") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "cycles", &Scenario::Sleep);
    let ids: Vec<String> = (0..200).map(|_| env.id("cyc")).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(25) {
            let (env, bundle) = (&env, &bundle);
            s.spawn(move || {
                for id in chunk {
                    assert!(
                        create_with(env, &bundle.dir, id, None).success(),
                        "create {id}"
                    );
                    env.ok(&["start", id]);
                    let pid = env.state(id)["pid"].as_i64().unwrap();
                    assert_eq!(init_fds(pid), [0, 1, 2], "{id}: fds reaching the init");
                    env.ok(&["delete", "--force", id]);
                }
            });
        }
    });
    let mut leaks = Vec::new();
    for id in &ids {
        if env.root.join(id).exists() {
            leaks.push(format!("{id}: state dir"));
        }
        if !cgroup_dirs_named(id).is_empty() {
            leaks.push(format!("{id}: cgroup"));
        }
        if !common::mount_points_of(id).is_empty() {
            leaks.push(format!("{id}: view"));
        }
    }
    let root = env.root.to_str().unwrap().to_string();
    let tag_mounts: Vec<String> = common::mounts_mentioning("cyc-")
        .into_iter()
        .filter(|m| ids.iter().any(|id| m.contains(id.as_str())))
        .collect();
    leaks.extend(tag_mounts);
    let held = env.allocator().list().unwrap();
    leaks.extend(held.iter().map(|e| format!("range {e:?}")));
    leaks.extend(
        processes_mentioning(&root)
            .into_iter()
            .map(|p| format!("process {p} still mentions {root}")),
    );
    let staged = fs::read_dir(env.root.join(".staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    if staged > 0 {
        leaks.push(format!("{staged} staged specs"));
    }
    assert!(leaks.is_empty(), "leaked after 200 cycles: {leaks:?}");
    let held = open_fds_under(env.tmp.path());
    assert!(held.is_empty(), "the test process still holds {held:?}");
}

/// A pod member's create killed at each step: `delete --force` removes the
/// member's leftovers (its namespace pin included) and keeps the pod's range,
/// which its sandbox still holds.
#[test]
fn member_create_killed_at_each_step_keeps_the_pods_range() {
    if !can_run("killed member create") {
        return;
    }
    let env = Env::new();
    let pod = env.id("kpod");
    let annotated = |name: &str, kind: &'static str| {
        let pod = pod.clone();
        env.bundle(name, move |b| {
            b.scenario(&Scenario::Sleep).in_pod(pod, kind).modify(|s| {
                // A device node, made on a tmpfs of the member's own.
                let mut doc = serde_json::to_value(&*s).unwrap();
                doc["linux"]["devices"] = json!([{
                    "path": "/dev/cnf/null", "type": "c", "major": 1, "minor": 3
                }]);
                *s = serde_json::from_value(doc).unwrap();
            })
        })
    };
    let sandbox = annotated("ksandbox", "sandbox");
    let member = annotated("kmember", "container");
    env.create(&sandbox, &pod);
    let range = env.allocator().show(&pod).unwrap().expect("sandbox range");
    // A member allocates no range, and this one asks for no hugepages.
    let skipped = ["create:after-range", "create:after-hugepages"];
    for step in STEPS.iter().filter(|s| !skipped.contains(s)) {
        let id = env.id(&format!("kmem-{}", step.trim_start_matches("create:")));
        let status = create_with(&env, &member.dir, &id, Some(step));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{step}: {status:?}");
        eprintln!("member killed at {step}: left {:?}", leftovers(&env, &id));
        env.ok(&["delete", "--force", &id]);
        env.ok(&["ranges", "gc", "--grace", "0"]);
        assert_nothing_left(&env, &id);
        assert_eq!(
            env.allocator().show(&pod).unwrap().map(|e| e.mapping),
            Some(range.mapping),
            "{step}: the pod's range changed"
        );
    }
    env.ok(&["delete", "--force", &pod]);
    env.ok(&["ranges", "gc", "--grace", "0"]);
    assert_nothing_left(&env, &pod);
}

/// Half-created states made by hand, as a crash between two syscalls could
/// leave them: only a state dir, only a staged spec (of a dead create),
/// only a range. `delete --force` and `ranges gc` clear each.
#[test]
fn delete_force_clears_a_lone_state_dir_staged_spec_or_range() {
    if !can_run("lone leftovers") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("lone", |b| b.scenario(&Scenario::Sleep));
    // Only a state dir (libcontainer made it, then the process died).
    let id = env.id("lone-dir");
    fs::create_dir_all(env.root.join(&id)).unwrap();
    fs::write(env.root.join(&id).join("junk"), "x").unwrap();
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    // Only a staged spec of a create whose pid is gone (pid_max + 1 never
    // exists), naming the id as a standalone pod with a range.
    let id = env.id("lone-stage");
    env.allocator().allocate(&id).unwrap();
    let stage = env.root.join(".staging").join(format!("{id}.4194305"));
    fs::create_dir_all(&stage).unwrap();
    fs::copy(&bundle.config_path, stage.join("config.json")).unwrap();
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    // Only a range: delete --force has nothing to find, gc frees it.
    let id = env.id("lone-range");
    env.allocator().allocate(&id).unwrap();
    env.ok(&["delete", "--force", &id]);
    assert!(
        env.allocator().show(&id).unwrap().is_some(),
        "no record says whose it is"
    );
    env.ok(&["ranges", "gc", "--grace", "0"]);
    assert_nothing_left(&env, &id);
    // A staged spec whose create still runs (this test's own pid) is not
    // touched.
    let id = env.id("live-stage");
    let live = env
        .root
        .join(".staging")
        .join(format!("{id}.{}", std::process::id()));
    fs::create_dir_all(&live).unwrap();
    env.ok(&["delete", "--force", &id]);
    assert!(live.exists(), "a running create's staged spec was removed");
    fs::remove_dir_all(&live).unwrap();
}
