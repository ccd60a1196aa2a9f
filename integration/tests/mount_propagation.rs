//! Recursive read-only volumes and mount propagation as Kubernetes asks
//! for them through containerd's CRI: `rro` (readOnly with
//! recursiveReadOnly), `rslave` + `rootfsPropagation: rslave`
//! (HostToContainer) and `rshared` (Bidirectional).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{all_caps, assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::{json, Value};

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A tmpfs mounted at `dir` (mode 1777), unmounted (recursively) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path, shared: bool) -> Self {
        fs::create_dir_all(dir).unwrap();
        sh(&format!(
            "mount -t tmpfs -o mode=1777 cnfbox-it {}",
            dir.display()
        ));
        if shared {
            sh(&format!("mount --make-shared {}", dir.display()));
        }
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn bundle(
    env: &Env,
    name: &str,
    src: &Path,
    args: &[&str],
    opts: &[&str],
    patch: impl FnOnce(&mut Value) + 'static,
) -> test_bundles::Bundle {
    let src = src.to_str().unwrap().to_string();
    let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    env.bundle(name, move |b| {
        b.args(args).modify(move |s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            d["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/data", "type": "bind", "source": src, "options": opts
            }));
            patch(&mut d);
            *s = serde_json::from_value(d).unwrap();
        })
    })
}

const WRITES: &str = "touch /data/top 2>/dev/null && echo top=rw || echo top=ro; \
                      touch /data/sub/deep 2>/dev/null && echo sub=rw || echo sub=ro";

#[test]
fn features_advertise_rro_and_an_rro_volume_is_read_only_all_the_way_down() {
    if !can_run("rro") {
        return;
    }
    let env = Env::new();
    let features: Value = serde_json::from_str(&env.ok(&["features"])).unwrap();
    let options = features["mountOptions"].as_array().unwrap();
    for o in [
        "rro",
        "rrw",
        "rnosuid",
        "rnodev",
        "rnoexec",
        "rnosymfollow",
        "idmap",
    ] {
        assert!(options.iter().any(|v| v == o), "{o} in {options:?}");
    }
    assert_eq!(
        features["linux"]["mountExtensions"]["idmap"]["enabled"],
        json!(true)
    );
    // The volume has a submount (another filesystem under it).
    let src = env.tmp.path().join("rro-src");
    let _top = Tmpfs::new(&src, false);
    let _sub = Tmpfs::new(&src.join("sub"), false);
    for (opt, want_sub) in [("rro", "ro"), ("ro", "rw")] {
        let b = bundle(
            &env,
            &format!("rro-{opt}"),
            &src,
            &["/bin/sh", "-c", WRITES],
            &["rbind", opt],
            |_| {},
        );
        let id = env.id(opt);
        let out = env.run(&["run", "-b", b.dir.to_str().unwrap(), &id]);
        assert!(out.status.success(), "{opt}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(kv(&stdout, "top"), "ro", "{opt}: {stdout}");
        // With plain `ro` only the top mount is read-only (the control);
        // `rro` reaches the submount too.
        assert_eq!(kv(&stdout, "sub"), want_sub, "{opt}: {stdout}");
        assert_nothing_left(&env, &id);
    }
    assert!(!src.join("sub/deep").exists() || fs::remove_file(src.join("sub/deep")).is_ok());
}

#[test]
fn host_to_container_propagation_shows_a_later_host_mount_inside() {
    if !can_run("rslave") {
        return;
    }
    let env = Env::new();
    let src = env.tmp.path().join("h2c-src");
    // A hostPath on a shared mount, as kubelet's volumes are on a systemd
    // host (this machine's / is private).
    let _vol = Tmpfs::new(&src, true);
    fs::create_dir(src.join("late")).unwrap();
    // What containerd's CRI writes for mountPropagation: HostToContainer.
    let b = bundle(
        &env,
        "h2c",
        &src,
        &["/bin/sleep", "1000"],
        &["rbind", "rprivate", "rslave"],
        |d| d["linux"]["rootfsPropagation"] = json!("rslave"),
    );
    let id = env.id("h2c");
    env.create(&b, &id);
    env.ok(&["start", &id]);
    let _late = Tmpfs::new(&src.join("late"), false);
    fs::write(src.join("late/marker"), "from-host").unwrap();
    let out = env.ok(&["exec", &id, "/bin/cat", "/data/late/marker"]);
    assert_eq!(
        out.trim(),
        "from-host",
        "the host's later mount is seen inside"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

/// Name, bind options, rootfsPropagation, what the error must name.
type RefusalCase = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Vec<&'static str>,
);

#[test]
fn bidirectional_propagation_is_refused_in_a_pods_user_namespace() {
    if !can_run("rshared") {
        return;
    }
    let env = Env::new();
    let src = env.tmp.path().join("bidi-src");
    let _vol = Tmpfs::new(&src, true);
    let cases: Vec<RefusalCase> = vec![
        (
            "mount-rshared",
            &["rbind", "rshared"],
            Some("rslave"),
            vec!["mounts[", "(/data)", "\"rshared\""],
        ),
        (
            "mount-shared",
            &["rbind", "shared"],
            None,
            vec!["mounts[", "\"shared\""],
        ),
        (
            "rootfs-rshared",
            &["rbind"],
            Some("rshared"),
            vec!["linux.rootfsPropagation", "\"rshared\""],
        ),
    ];
    for (name, opts, rootfs, needles) in cases {
        let rootfs = rootfs.map(str::to_string);
        let b = bundle(&env, name, &src, &["/bin/true"], opts, move |d| {
            if let Some(r) = rootfs {
                d["linux"]["rootfsPropagation"] = json!(r);
            }
        });
        let id = env.id(name);
        let out = env.run(&["create", "-b", b.dir.to_str().unwrap(), &id]);
        let mut all = needles.clone();
        all.extend(["Bidirectional", "[pods] host_namespaces"]);
        let err = assert_one_line_error(&out, &all);
        eprintln!("{name}: {err}");
        assert_nothing_left(&env, &id);
    }
    assert!(env.allocator().list().unwrap().is_empty());
}

#[test]
fn bidirectional_works_for_a_privileged_container_in_the_hosts_user_namespace() {
    if !can_run("rshared host userns") {
        return;
    }
    let env = Env::new();
    let config = env.config.clone().unwrap();
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("{text}[pods]\nhost_namespaces = \"host-userns\"\n"),
    )
    .unwrap();
    let src = env.tmp.path().join("bidi-host-src");
    let _vol = Tmpfs::new(&src, true);
    fs::create_dir(src.join("in")).unwrap();
    let b = bundle(
        &env,
        "bidi-host",
        &src,
        &["/bin/sleep", "1000"],
        &["rbind", "rshared"],
        move |d| {
            d["linux"]["rootfsPropagation"] = json!("rshared");
            // Every capability cnfbox holds: privileged.
            for set in ["bounding", "effective", "permitted"] {
                d["process"]["capabilities"][set] = json!(all_caps());
            }
        },
    );
    let id = env.id("bidi-host");
    env.create(&b, &id);
    env.ok(&["start", &id]);
    env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "mount -t tmpfs from-pod /data/in && echo x > /data/in/made-inside",
    ]);
    let seen = fs::read_to_string(src.join("in/made-inside"));
    env.ok(&["delete", "--force", &id]);
    let _ = Command::new("umount")
        .arg("-l")
        .arg(src.join("in"))
        .status();
    assert_eq!(
        seen.map(|s| s.trim().to_string()).ok().as_deref(),
        Some("x"),
        "the container's mount propagated to the host"
    );
    assert_nothing_left(&env, &id);
}

fn mounted(path: &Path) -> bool {
    let want = path.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

#[test]
fn deleting_a_container_leaves_the_hostpaths_submounts_mounted() {
    if !can_run("hostPath submounts survive delete") {
        return;
    }
    let env = Env::new();
    let src = env.tmp.path().join("keep-src");
    // A shared hostPath (systemd makes / shared) with a submount of its
    // own, and one the host makes while the pod runs.
    let _vol = Tmpfs::new(&src, true);
    let _before = Tmpfs::new(&src.join("before"), false);
    fs::create_dir(src.join("during")).unwrap();
    for (name, opts) in [
        ("keep-rslave", &["rbind", "rslave"][..]),
        ("keep-plain", &["rbind", "rw"][..]),
    ] {
        let b = bundle(&env, name, &src, &["/bin/sleep", "1000"], opts, |_| {});
        let id = env.id(name);
        env.create(&b, &id);
        env.ok(&["start", &id]);
        let during = Tmpfs::new(&src.join("during"), false);
        env.ok(&["delete", "--force", &id]);
        assert!(
            mounted(&src.join("before")),
            "{name}: the host's submount was unmounted by the container's delete"
        );
        assert!(
            mounted(&src.join("during")),
            "{name}: the host's later mount was unmounted by the container's delete"
        );
        drop(during);
        assert_nothing_left(&env, &id);
    }
}
