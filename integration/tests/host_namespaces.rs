//! Pods asking for the host's network, PID or IPC namespace, or to be
//! privileged: refused by default with a line naming the field and
//! `[pods] host_namespaces`, and run in the host's user namespace (as
//! under runc) when that setting is `host-userns`.

mod common;

use common::{all_caps, assert_nothing_left, assert_one_line_error, bounding_mask, can_run, Env};
use serde_json::{json, Value};

fn drop_ns(d: &mut Value, typ: &str) {
    d["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != typ);
}

fn set_ns_path(d: &mut Value, typ: &str, path: &str) {
    for n in d["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == typ {
            n["path"] = json!(path);
        }
    }
}

/// containerd's privileged shape: every capability in every set, no masked
/// or readonly paths.
fn privileged(d: &mut Value) {
    let all = json!(all_caps());
    for set in ["bounding", "effective", "permitted"] {
        d["process"]["capabilities"][set] = all.clone();
    }
    d["linux"]["maskedPaths"] = json!([]);
    d["linux"]["readonlyPaths"] = json!([]);
}

type Patch = fn(&mut Value);

/// The hostile specs: what containerd's CRI writes for NamespaceMode NODE,
/// namespace paths to the host's own, privileged and ALL capabilities.
fn cases() -> Vec<(&'static str, Patch, &'static [&'static str])> {
    vec![
        (
            "hostnet",
            |d| drop_ns(d, "network"),
            &["linux.namespaces", "no network namespace"],
        ),
        (
            "hostpid",
            |d| drop_ns(d, "pid"),
            &["linux.namespaces", "no pid namespace"],
        ),
        (
            "hostipc",
            |d| drop_ns(d, "ipc"),
            &["linux.namespaces", "no ipc namespace"],
        ),
        (
            "netpath",
            |d| set_ns_path(d, "network", "/proc/self/ns/net"),
            &[
                "linux.namespaces",
                "/proc/self/ns/net",
                "host's network namespace",
            ],
        ),
        (
            "pidpath",
            |d| set_ns_path(d, "pid", "/proc/self/ns/pid"),
            &["linux.namespaces", "/proc/self/ns/pid"],
        ),
        (
            "privileged",
            privileged,
            &["process.capabilities.bounding", "privileged"],
        ),
        (
            "allcaps",
            |d| d["process"]["capabilities"]["bounding"] = json!(all_caps()),
            &["process.capabilities.bounding", "every capability"],
        ),
    ]
}

fn hostile(env: &Env, name: &str, args: &[&str], patch: Patch) -> test_bundles::Bundle {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    env.bundle(name, move |b| {
        b.args(args).modify(move |s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            patch(&mut d);
            *s = serde_json::from_value(d).unwrap();
        })
    })
}

#[test]
fn host_namespaces_and_privileged_are_refused_naming_the_setting() {
    if !can_run("host namespaces refused") {
        return;
    }
    let env = Env::new();
    for (name, patch, needles) in cases() {
        let bundle = hostile(&env, name, &["/bin/true"], patch);
        let id = env.id(name);
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        let mut all: Vec<&str> = needles.to_vec();
        all.extend(["[pods]", "host_namespaces = \"host-userns\"", "is refused"]);
        let err = assert_one_line_error(&out, &all);
        eprintln!("{name}: {err}");
        assert_nothing_left(&env, &id);
    }
    assert!(
        env.allocator().list().unwrap().is_empty(),
        "no range was allocated for a refused pod"
    );
}

#[test]
fn an_unknown_host_namespaces_value_is_a_config_error() {
    if !can_run("host namespaces config") {
        return;
    }
    let env = Env::new();
    let config = env.config.clone().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    for (bad, needle) in [
        ("[pods]\nhost_namespaces = \"yes\"\n", "unknown variant"),
        (
            "[pods]\nhost_namespace = \"host-userns\"\n",
            "host_namespace",
        ),
    ] {
        std::fs::write(&config, format!("{text}{bad}")).unwrap();
        let bundle = hostile(&env, "badcfg", &["/bin/true"], |d| drop_ns(d, "network"));
        let id = env.id("badcfg");
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert_one_line_error(&out, &["[pods]", needle, config.to_str().unwrap()]);
        assert_nothing_left(&env, &id);
        std::fs::remove_dir_all(&bundle.dir).unwrap();
    }
}

const PROBE: &str = "echo uidmap=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'); \
                     echo net=$(readlink /proc/self/ns/net); echo pid=$(readlink /proc/self/ns/pid); \
                     echo ipc=$(readlink /proc/self/ns/ipc); \
                     echo capeff=$(grep CapEff /proc/self/status | cut -f2)";

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn with_host_userns_they_run_in_the_hosts_user_namespace_as_under_runc() {
    if !can_run("host namespaces allowed") {
        return;
    }
    let env = Env::new();
    let config = env.config.clone().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}[pods]\nhost_namespaces = \"host-userns\"\n"),
    )
    .unwrap();
    let full_caps = format!("{:016x}", bounding_mask());
    for (name, patch, _) in cases() {
        let bundle = hostile(&env, name, &["/bin/sh", "-c", PROBE], patch);
        let id = env.id(name);
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert_eq!(
            kv(&stdout, "uidmap"),
            "0 0 4294967295",
            "{name}: the host's user namespace: {stdout}"
        );
        let expect_host = |kind: &str, yes: bool| {
            let inside = kv(&stdout, kind);
            assert_eq!(
                inside == host_ns(kind),
                yes,
                "{name}: {kind} namespace {inside} (host's {})",
                host_ns(kind)
            );
        };
        match name {
            "hostnet" | "netpath" => expect_host("net", true),
            "hostpid" | "pidpath" => expect_host("pid", true),
            "hostipc" => expect_host("ipc", true),
            _ => {
                expect_host("net", false);
                expect_host("pid", false);
                if name == "privileged" {
                    assert_eq!(kv(&stdout, "capeff"), full_caps, "{name}: {stdout}");
                }
            }
        }
        assert_nothing_left(&env, &id);
    }
    // exec into a privileged container keeps its capabilities (containerd
    // builds the exec's process from the container's spec).
    let bundle = hostile(&env, "privexec", &["/bin/sleep", "100"], privileged);
    let id = env.id("privexec");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let out = env.ok(&["exec", &id, "/bin/sh", "-c", PROBE]);
    assert_eq!(kv(&out, "capeff"), full_caps, "exec: {out}");
    assert_eq!(kv(&out, "uidmap"), "0 0 4294967295", "exec: {out}");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert!(
        env.allocator().list().unwrap().is_empty(),
        "no range for host-userns pods"
    );
}

/// A namespace path that is not the host's own but belongs to the host's
/// user namespace (another process's, made by host root): the pod could
/// not join it; the error names the namespace and the path (it was a bare
/// EACCES from inside libcontainer's init).
#[test]
fn a_namespace_path_owned_by_the_hosts_user_namespace_is_named() {
    if !can_run("host-owned namespace paths") {
        return;
    }
    let env = Env::new();
    let mut holder = std::process::Command::new("unshare")
        .args(["--ipc", "--uts", "--mount", "sleep", "1000"])
        .spawn()
        .expect("unshare(1)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = holder.id();
    // Wait until unshare has exec'd sleep in its new namespaces.
    for _ in 0..500 {
        let mine = std::fs::read_link("/proc/self/ns/ipc").unwrap();
        if std::fs::read_link(format!("/proc/{pid}/ns/ipc")).is_ok_and(|l| l != mine) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Ok(Some(status)) = holder.try_wait() {
        panic!("unshare --ipc --uts --mount exited: {status}");
    }
    let _holder = Kill(holder);
    for (typ, ns) in [("ipc", "ipc"), ("uts", "uts"), ("mount", "mnt")] {
        let path = format!("/proc/{pid}/ns/{ns}");
        let p = path.clone();
        let bundle = env.bundle(typ, move |b| {
            b.args(["/bin/true"]).modify(move |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                set_ns_path(&mut d, typ, &p);
                *s = serde_json::from_value(d).unwrap();
            })
        });
        let id = env.id(typ);
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert_one_line_error(
            &out,
            &[
                &format!("linux.namespaces: {typ} path {path}"),
                "belongs to the host's user namespace",
            ],
        );
        assert_nothing_left(&env, &id);
    }
    assert!(env.allocator().list().unwrap().is_empty());
}
