//! The host's console and the other numbers of libcgroups' default device
//! set, reached through a node the pod was not given: one in the image
//! (made here with mknod(2) in the rootfs before create, as containerd's
//! unpacker makes one from a tar entry) or a `linux.devices` entry.
//! libcgroups allows `c 5:1`, `c 5:0`, `c 5:2` and `c 136:*` after the
//! spec's rules whatever they say; the device cgroup knows only numbers.
//!
//! - `c 5:1` is the host's console from any node: EPERM unless
//!   `[devices] allow` names it, also after an `update`;
//! - `c 5:0` is the caller's controlling terminal: ENXIO in a pod without
//!   one, from a stray node as from the pod's own `/dev/tty`;
//! - `c 5:2` opens the devpts at `pts` beside the node: ENOENT or ENODEV
//!   from a stray node, while the pod's own `/dev/ptmx` opens;
//! - `c 136:*` outside a devpts is EIO.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use serde_json::json;

use super::{edit, kv};
use crate::common::{assert_nothing_left, can_run, Env};

const CONSOLE: (u64, u64) = (5, 1);

/// Appends `[devices] allow = RULES` to the environment's config.
fn allow(env: &Env, rules: &[&str]) {
    let path = env.config.as_ref().expect("env has a config");
    let mut text = std::fs::read_to_string(path).unwrap();
    let quoted: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    text.push_str(&format!("\n[devices]\nallow = [{}]\n", quoted.join(", ")));
    std::fs::write(path, text).unwrap();
}

/// A bundle running `script` with `devopen` in `/bin` and the image char
/// nodes `nodes` (path in the rootfs, major, minor), mode 0666.
fn bundle(
    env: &Env,
    name: &str,
    script: &str,
    nodes: &[(&str, (u64, u64))],
    tweak: impl FnOnce(test_bundles::BundleBuilder) -> test_bundles::BundleBuilder,
) -> test_bundles::Bundle {
    let helper = test_bundles::helpers::build(test_bundles::helpers::DEVOPEN, env.tmp.path())
        .expect("build devopen");
    // The report is on stdout; a helper's failure is what the test reads.
    let script = format!("{script}; true");
    let b = env.bundle(name, |b| tweak(b.args(["/bin/sh", "-c", &script])));
    std::fs::copy(&helper, b.rootfs.join("bin/devopen")).unwrap();
    for (path, (major, minor)) in nodes {
        let at = b.rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        mknod(
            &at,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", at.display()));
        // mknod obeys the umask.
        std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }
    b
}

/// `cnfbox run`; asserts success and that nothing is left; returns stdout.
fn run(env: &Env, b: &test_bundles::Bundle, name: &str) -> String {
    let id = env.id(name);
    let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(env, &id);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether host root can open the host's console here (a host without
/// one gives ENODEV whatever the cgroup says).
fn host_console_opens(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test} (allowed case): host root cannot open /dev/console: {e}");
            false
        }
    }
}

#[test]
fn an_image_console_node_gives_eperm() {
    if !can_run("image console node") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "imgcons",
        "/bin/devopen open /image/console | sed s/^/img_/",
        &[("/image/console", CONSOLE)],
        |b| b,
    );
    let out = run(&env, &b, "imgcons");
    assert_eq!(kv(&out, "img_open"), "EPERM", "{out}");
}

#[test]
fn a_linux_devices_console_entry_gives_eperm_without_an_allow_entry() {
    if !can_run("linux.devices console") {
        return;
    }
    let script = "/bin/devopen open /dev/hostconsole | sed s/^/entry_/";
    // The spec's own rule allowing it does not count: only the operator's
    // config does.
    let tweak = |b: test_bundles::BundleBuilder| {
        b.modify(edit(|d| {
            d["linux"]["devices"] = json!([{"path": "/dev/hostconsole", "type": "c",
                "major": 5, "minor": 1, "fileMode": 438, "uid": 0, "gid": 0}]);
            d["linux"]["resources"]["devices"]
                .as_array_mut()
                .unwrap()
                .push(json!({"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"}));
        }))
    };
    let env = Env::new();
    let b = bundle(&env, "entcons", script, &[], tweak);
    let out = run(&env, &b, "entcons");
    assert_eq!(kv(&out, "entry_open"), "EPERM", "{out}");

    // The setting that gives it back.
    if !host_console_opens("linux.devices console") {
        return;
    }
    let env = Env::new();
    allow(&env, &["c 5:1"]);
    let b = bundle(&env, "entconsok", script, &[], tweak);
    let out = run(&env, &b, "entconsok");
    assert_eq!(
        kv(&out, "entry_open"),
        "ok",
        "[devices] allow \"c 5:1\": {out}"
    );
}

#[test]
fn a_stray_tty_node_reaches_no_terminal_but_the_pods_own() {
    if !can_run("stray tty node") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "imgtty",
        "/bin/devopen open /image/tty | sed s/^/img_/; /bin/devopen open /dev/tty | sed s/^/own_/",
        &[("/image/tty", (5, 0))],
        |b| b,
    );
    let out = run(&env, &b, "imgtty");
    // The init called setsid(2): no controlling terminal, through any node.
    assert_eq!(kv(&out, "img_open"), "ENXIO", "{out}");
    assert_eq!(kv(&out, "own_open"), "ENXIO", "{out}");
}

#[test]
fn a_stray_ptmx_node_reaches_no_devpts_but_the_pods_own() {
    if !can_run("stray ptmx node") {
        return;
    }
    let env = Env::new();
    let b = bundle(
        &env,
        "imgptmx",
        "/bin/devopen open /image/ptmx | sed s/^/img_/; \
         /bin/devopen open /image/d/ptmx | sed s/^/dir_/; \
         /bin/devopen open /image/pts0 | sed s/^/pts_/; \
         /bin/devopen open /dev/ptmx | sed s/^/own_/",
        &[
            ("/image/ptmx", (5, 2)),
            ("/image/d/ptmx", (5, 2)),
            ("/image/pts0", (136, 0)),
        ],
        |b| b,
    );
    std::fs::create_dir(b.rootfs.join("image/d/pts")).unwrap();
    assert!(Path::new(&b.rootfs.join("image/d/pts")).is_dir());
    let out = run(&env, &b, "imgptmx");
    // Nothing mounted at `pts` beside it: no devpts instance at all.
    assert_eq!(kv(&out, "img_open"), "ENOENT", "{out}");
    // A `pts` that is a plain directory (ENODEV, or ENOENT when its dentry
    // is not cached: the kernel only looks in the dcache).
    let dir = kv(&out, "dir_open");
    assert!(dir == "ENODEV" || dir == "ENOENT", "{out}");
    // A pty slave's number means nothing outside its devpts.
    assert_eq!(kv(&out, "pts_open"), "EIO", "{out}");
    // The pod's own pty multiplexer still works.
    assert_eq!(kv(&out, "own_open"), "ok", "{out}");
}
