//! The device rules with systemd's cgroup layout on cgroup v2. With
//! `--systemd-cgroup` libcgroups' systemd manager (patched,
//! vendor/libcgroups/NOTE.md) attaches the same eBPF program as the
//! cgroupfs manager, to the scope systemd made, below a slice systemd may
//! give a device program of its own.
//!
//! - `a_parent_program_and_the_containers_both_decide` needs no systemd: a
//!   cgroup directory stands in for the slice, with a program attached as
//!   systemd attaches one (`BPF_F_ALLOW_MULTI`), and the container's cgroup
//!   below it stands in for the scope. An open needs both programs to allow
//!   it: the parent's denial holds against the container's allow rule, and
//!   a parent allowing everything does not loosen the container's rules.
//! - `systemd_scope_*` run the real `--systemd-cgroup` path and skip where
//!   systemd does not run (`/run/systemd/system`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};
use serde_json::Value;

use super::{edit_spec, layout, plain_device};
use crate::common::{assert_nothing_left, can_run, Env};
use crate::{allow, bundle, cgroup_allow, device, kv};

fn rule(allow: bool, typ: LinuxDeviceType, nums: Option<(i64, i64)>) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access("rwm");
    if let Some((major, minor)) = nums {
        b = b.major(major).minor(minor);
    }
    b.build().expect("device rule")
}

/// A cgroup directory at the top of the v2 hierarchy standing in for a
/// systemd slice; removed (with what is left below it) when dropped.
struct Slice {
    dir: PathBuf,
}

impl Slice {
    fn new(name: &str) -> Self {
        let dir = Path::new("/sys/fs/cgroup").join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Slice { dir }
    }

    /// Attaches a device program built from `rules` (libcgroups' v2 code,
    /// `BPF_F_ALLOW_MULTI`, replacing the slice's previous one) from a
    /// child: libcgroups raises the loading process's `RLIMIT_MEMLOCK`.
    fn attach(&self, rules: Vec<LinuxDeviceCgroup>) {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only builds and attaches the program (no lock
        // another thread of the harness could hold is needed by more than
        // malloc, which glibc resets in the child) and leaves with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = match libcgroups::v2::devices::Devices::apply_devices(
                    &self.dir,
                    &Some(rules),
                ) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("attach a device program to the stand-in slice: {e}");
                        1
                    }
                };
                // SAFETY: ends the forked child without running the
                // parent's atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "attach the stand-in slice's program"
                );
            }
        }
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_parent_program_and_the_containers_both_decide() {
    const T: &str = "device rules below a slice's program";
    if !can_run(T) {
        return;
    }
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("SKIP {T}: /sys/fs/cgroup is not cgroup v2 (the device program is v2's)");
        return;
    }
    let Some((path, nums)) = plain_device(T) else {
        return;
    };
    let env = Env::new();
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1)]);
    let slice = Slice::new(&format!("cnfbox-it-{}.slice", env.id("sd")));
    let script = format!(
        "/bin/devopen open {path} | sed s/^/dev_/; /bin/devopen open /dev/null | sed s/^/null_/"
    );
    // Runs the bundle in `<slice>/cnfbox-<id>.scope`, as systemd names a
    // container's scope; checks the scope is gone after.
    let run_in_scope = |name: &str, rules: Vec<Value>| {
        let b = bundle(
            &env,
            name,
            &script,
            vec![device(path, nums, 0o666, 0, 0)],
            rules,
            None,
        );
        let id = env.id(name);
        let scope = slice.dir.join(format!("cnfbox-{id}.scope"));
        let cgroups_path = format!(
            "/{}",
            scope.strip_prefix("/sys/fs/cgroup").unwrap().display()
        );
        edit_spec(&b, |doc| {
            doc["linux"]["cgroupsPath"] = Value::String(cgroups_path)
        });
        let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_left(&env, &id);
        assert!(!scope.exists(), "{} left after run", scope.display());
        text
    };

    // The slice allows everything (systemd's DevicePolicy=auto with an
    // allow list that covers it): what the container allows opens...
    slice.attach(vec![rule(true, LinuxDeviceType::A, None)]);
    let out = run_in_scope("both", vec![cgroup_allow(nums)]);
    assert_eq!(
        kv(&out, "dev_open"),
        "ok",
        "slice allows, scope allows: {out}"
    );
    assert_eq!(kv(&out, "null_open"), "ok", "{out}");
    // ...and what it does not allow stays denied.
    let out = run_in_scope("scopedeny", vec![]);
    assert_eq!(
        kv(&out, "dev_open"),
        "EPERM",
        "slice allows, scope denies: {out}"
    );
    assert_eq!(kv(&out, "null_open"), "ok", "{out}");

    // The slice denies the node: the container's allow rule cannot undo it.
    slice.attach(vec![
        rule(true, LinuxDeviceType::A, None),
        rule(false, LinuxDeviceType::C, Some(nums)),
    ]);
    let out = run_in_scope("slicedeny", vec![cgroup_allow(nums)]);
    assert_eq!(
        kv(&out, "dev_open"),
        "EPERM",
        "slice denies, scope allows: {out}"
    );
    assert_eq!(kv(&out, "null_open"), "ok", "{out}");
}

/// True where `--systemd-cgroup` can run; otherwise a loud skip.
fn systemd_runs(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    if !Path::new("/run/systemd/system").is_dir() {
        eprintln!("SKIP {test}: systemd is not running here (no /run/systemd/system)");
        return false;
    }
    true
}

/// `cnfbox --systemd-cgroup run`: the rules hold in the scope systemd made.
#[test]
fn systemd_scope_rules_decide_what_opens() {
    const T: &str = "--systemd-cgroup device rules";
    if !systemd_runs(T) {
        return;
    }
    let Some((path, nums)) = plain_device(T) else {
        return;
    };
    let env = Env::new();
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1)]);
    let script = format!(
        "/bin/devopen open {path} | sed s/^/dev_/; /bin/devopen open /dev/null | sed s/^/null_/; \
         echo zero=$(head -c 4 /dev/zero | wc -c)"
    );
    let run = |name: &str, rules: Vec<Value>| {
        let b = bundle(
            &env,
            name,
            &script,
            vec![device(path, nums, 0o666, 0, 0)],
            rules,
            None,
        );
        let id = env.id(name);
        let out = env.run(&[
            "--systemd-cgroup",
            "run",
            "-b",
            b.dir.to_str().unwrap(),
            &id,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_left(&env, &id);
        let scope = Path::new("/sys/fs/cgroup/system.slice").join(format!("cnfbox-{id}.scope"));
        assert!(!scope.exists(), "{} left after run", scope.display());
        text
    };
    let at = layout();
    let out = run("sdrule", vec![cgroup_allow(nums)]);
    assert_eq!(
        kv(&out, "dev_open"),
        "ok",
        "{at}, systemd, allow rule: {out}"
    );
    assert_eq!(kv(&out, "null_open"), "ok", "{at}, systemd: {out}");
    assert_eq!(kv(&out, "zero"), "4", "{at}, systemd: {out}");
    let out = run("sdnorule", vec![]);
    assert_eq!(
        kv(&out, "dev_open"),
        "EPERM",
        "{at}, systemd, no rule: {out}"
    );
    assert_eq!(kv(&out, "null_open"), "ok", "{at}, systemd: {out}");
}

const NO_DRIVER: &str = "/dev/cnfbox-nodriver";

/// `update` of a systemd-managed container keeps its device rules; the
/// init's `RLIMIT_MEMLOCK` is the runtime's.
#[test]
fn systemd_scope_rules_survive_update() {
    const T: &str = "--systemd-cgroup device rules update";
    if !systemd_runs(T) {
        return;
    }
    let Some((path, nums)) = plain_device(T) else {
        return;
    };
    let env = Env::new();
    // A node of a major no driver has (240, "local/experimental use",
    // Documentation/admin-guide/devices.txt) and no rule: EPERM while the
    // program denies it, ENXIO were it let through to the driver lookup.
    allow(&env, &[&format!("c {}:{}", nums.0, nums.1), "c 240:0"]);
    // The container checks before and after the update and reports in
    // its /tmp/report (`cnfbox exec` is no way in: see below).
    let script = format!(
        "r=/tmp/report; check() {{ \
           /bin/devopen open {path} | sed s/^/$1_dev_/ >> $r; \
           /bin/devopen open {NO_DRIVER} | sed s/^/$1_nodriver_/ >> $r; \
           /bin/devopen open /dev/null | sed s/^/$1_null_/ >> $r; echo $1=done >> $r; }}; \
         check before; while [ ! -e /tmp/go ]; do sleep 1; done; check after; \
         /bin/sleep {}",
        1 << 30
    );
    let b = bundle(
        &env,
        "sdupd",
        &script,
        vec![
            device(path, nums, 0o666, 0, 0),
            device(NO_DRIVER, (240, 0), 0o666, 0, 0),
        ],
        vec![cgroup_allow(nums)],
        None,
    );
    let id = env.id("sdupd");
    // Detached: its init holds what stdio `create` gets, so not `env.run`.
    env.create_with(&["--systemd-cgroup"], &b, &id);
    let pid = env.state(&id)["pid"].as_i64().expect("init pid");
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let scope = format!("/system.slice/cnfbox-{id}.scope");
    assert!(
        own.lines().any(|l| l.ends_with(&scope)),
        "not in systemd's scope: {own}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .expect("getrlimit");
    let shown = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let memlock = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        memlock.get(3..5),
        Some(&[shown(soft).as_str(), shown(hard).as_str()][..]),
        "init's RLIMIT_MEMLOCK: {limits}"
    );
    env.ok(&["start", &id]);
    // The init reports through /tmp/report; `cnfbox exec` is checked on
    // its own below.
    let report = b.rootfs.join("tmp/report");
    let wait = |key: &str| loop {
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        if text.contains(&format!("{key}=done\n")) {
            return text;
        }
        assert_ne!(env.state(&id)["status"], "stopped", "stopped early: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = wait("before");
    assert_eq!(
        kv(&out, "before_dev_open"),
        "ok",
        "systemd, allow rule: {out}"
    );
    assert_eq!(
        kv(&out, "before_nodriver_open"),
        "EPERM",
        "systemd, no rule: {out}"
    );
    assert_eq!(kv(&out, "before_null_open"), "ok", "systemd: {out}");
    // `cnfbox exec` into the pod (own user namespace) with the systemd
    // driver: it joins the pod's user namespace first, and libcgroups used
    // to take it for a rootless caller and look for a session bus. Its
    // process is held by the scope's rules as the init is.
    // devopen exits non-zero when the open fails: its report is the answer.
    let exec_open = |dev: &str| {
        let out = env.run(&["exec", &id, "/bin/devopen", "open", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("cnfbox: error"), "exec {dev}: {err}");
        kv(&text, "open")
    };
    assert_eq!(exec_open(path), "ok", "exec, allow rule");
    assert_eq!(exec_open(NO_DRIVER), "EPERM", "exec, no rule");
    env.ok(&["update", "--pids-limit", "99", &id]);
    std::fs::write(b.rootfs.join("tmp/go"), "").unwrap();
    let out = wait("after");
    assert_eq!(
        kv(&out, "after_dev_open"),
        "ok",
        "systemd, after update: {out}"
    );
    assert_eq!(
        kv(&out, "after_nodriver_open"),
        "EPERM",
        "systemd, after update: {out}"
    );
    assert_eq!(
        kv(&out, "after_null_open"),
        "ok",
        "systemd, after update: {out}"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    let dir = Path::new("/sys/fs/cgroup").join(scope.trim_start_matches('/'));
    assert!(!dir.exists(), "{} left after delete", dir.display());
}
