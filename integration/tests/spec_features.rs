//! The spec's seccomp profile, masked and read-only paths, rlimits,
//! no_new_privileges, capabilities, hostname and sysctls take effect, as
//! seen from inside the container.

mod common;

use std::collections::HashMap;
use std::fs;

use common::{can_run, Env};
use serde_json::{json, Value};

const PROBE: &str = r#"
echo hostname=$(hostname)
echo nofile=$(ulimit -n)
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd|CapPrm):' /proc/self/status | tr -d '\t ' | tr ':' '='
if mkdir /tmp/probe-dir 2>/dev/null; then echo mkdir=ok; else echo mkdir=denied; fi
echo kcore_bytes=$(head -c 64 /proc/kcore 2>/dev/null | wc -c)
if echo 1 > /proc/sysrq-trigger 2>/dev/null; then echo sysrq=written; else echo sysrq=denied; fi
if echo x > /proc/sys/kernel/domainname 2>/dev/null; then echo procsys=written; else echo procsys=denied; fi
echo ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
echo firmware=$(ls /sys/firmware 2>/dev/null | wc -l)
"#;

fn report(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn run_probe(env: &Env, name: &str, patch: impl FnOnce(&mut Value)) -> HashMap<String, String> {
    let bundle = env.bundle(name, |b| b.args(["/bin/sh", "-c", PROBE]));
    let mut doc: Value = serde_json::from_slice(&fs::read(&bundle.config_path).unwrap()).unwrap();
    patch(&mut doc);
    fs::write(&bundle.config_path, doc.to_string()).unwrap();
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{name}: {out:?}");
    common::assert_nothing_left(env, &id);
    report(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn spec_settings_take_effect_inside() {
    if !can_run("spec settings") {
        return;
    }
    let env = Env::new();
    // A new netns copies the host's IPv4 conf: the spec asks for the value
    // the host does not have, so both probes' checks can fail.
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .expect("read the host's ip_forward")
        .trim()
        .to_owned();
    let set_forward = if host_forward == "1" { "0" } else { "1" };
    let r = run_probe(&env, "hardened", |d| {
        d["hostname"] = json!("cnf-probe");
        d["process"]["noNewPrivileges"] = json!(true);
        d["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 777}]);
        let caps = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        d["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps
        });
        d["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": set_forward});
        d["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    assert_eq!(r["hostname"], "cnf-probe");
    assert_eq!(r["nofile"], "777");
    assert_eq!(r["NoNewPrivs"], "1");
    assert_eq!(r["Seccomp"], "2", "filter mode");
    assert_eq!(r["mkdir"], "denied", "seccomp rule applies");
    // CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10.
    let want = format!("{:016x}", (1u64 << 5) | (1u64 << 10));
    assert_eq!(r["CapEff"], want);
    assert_eq!(r["CapBnd"], want);
    assert_eq!(r["CapPrm"], want);
    assert_eq!(
        r["ip_forward"], set_forward,
        "sysctl set in the container's netns (the host's is {host_forward})"
    );
    assert_eq!(r["kcore_bytes"], "0", "masked /proc/kcore reads empty");
    assert_eq!(r["sysrq"], "denied", "read-only /proc/sysrq-trigger");
    assert_eq!(r["procsys"], "denied", "read-only /proc/sys");
    assert_eq!(r["firmware"], "0", "masked /sys/firmware is empty");

    // The same probe without those settings: the checks can fail.
    let r = run_probe(&env, "plain", |d| {
        d["process"]["noNewPrivileges"] = json!(false);
        d["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
    });
    assert_eq!(r["NoNewPrivs"], "0");
    assert_eq!(r["Seccomp"], "0");
    assert_eq!(r["mkdir"], "ok");
    assert_eq!(r["nofile"], "1024");
    assert_eq!(
        r["ip_forward"], host_forward,
        "a fresh netns copies the host's IPv4 conf"
    );
    assert_ne!(r["CapEff"], want);
}

#[test]
fn features_and_spec_commands() {
    if !can_run("features/spec") {
        return;
    }
    let env = Env::new();
    let f: Value = serde_json::from_str(&env.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    assert!(f["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_NET_ADMIN")));

    let dir = env.tmp.path().join("specdir");
    fs::create_dir(&dir).unwrap();
    env.ok(&["spec", "--bundle", dir.to_str().unwrap()]);
    let spec: Value = serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(spec["ociVersion"].as_str().unwrap().starts_with("1."));
    assert_eq!(spec["root"]["path"], "rootfs");
    let out = env.run(&["spec", "--bundle", dir.to_str().unwrap()]);
    common::assert_one_line_error(&out, &["config.json", "exists"]);
}

#[test]
fn update_changes_the_cgroup() {
    if !can_run("update") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("upd", |b| b.scenario(&test_bundles::Scenario::Sleep));
    let id = env.id("upd");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    env.ok(&["update", "--pids-limit", "42", &id]);
    let ev: Value = serde_json::from_str(env.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 42, "{ev}");
    let res = env.tmp.path().join("res.json");
    fs::write(
        &res,
        r#"{"pids":{"limit":77},"memory":{"limit":268435456}}"#,
    )
    .unwrap();
    env.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    let ev: Value = serde_json::from_str(env.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 77, "{ev}");
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 268435456u64, "{ev}");
    fs::write(&res, r#"{"pids":{"limit":"lots"}}"#).unwrap();
    let out = env.run(&["update", "--resources", res.to_str().unwrap(), &id]);
    common::assert_one_line_error(&out, &["pids.limit"]);
    env.ok(&["delete", "--force", &id]);
}

/// What an exec'd process sees of its own confinement.
const EXEC_PROBE: &str = r#"
echo uid=$(id -u)
echo nofile=$(ulimit -n)
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapPrm|CapBnd):' /proc/self/status | tr -d '\t ' | tr ':' '='
if mkdir /tmp/exec-probe-$$ 2>/dev/null; then echo mkdir=ok; rmdir /tmp/exec-probe-$$; else echo mkdir=denied; fi
"#;

/// `Cap*` lines of the container's init, read from the host.
fn init_caps(env: &Env, id: &str) -> HashMap<String, String> {
    let pid = env.state(id)["pid"].as_i64().expect("init pid");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("init status");
    report(&status.replace([':', '\t'], "=").replace("==", "="))
        .into_iter()
        .filter(|(k, _)| k.starts_with("Cap"))
        .map(|(k, v)| (k, v.trim_start_matches('=').to_string()))
        .collect()
}

/// A running `sleep` container with the spec `patch` makes; its id.
fn sleeper(env: &Env, name: &str, patch: impl FnOnce(&mut Value)) -> String {
    let bundle = env.bundle(name, |b| b.args(["/bin/sleep", "600"]));
    let mut doc: Value = serde_json::from_slice(&fs::read(&bundle.config_path).unwrap()).unwrap();
    patch(&mut doc);
    fs::write(&bundle.config_path, doc.to_string()).unwrap();
    let id = env.id(name);
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    id
}

/// Every process `cnfbox exec` starts runs under the container's seccomp
/// filter (libcontainer 0.7's exec drops it: the process ran with
/// `Seccomp: 0` and the blocked syscall worked), whether it is built from
/// flags or given as a process file (containerd's way), as root or not,
/// with or without `noNewPrivileges`, in a pod user namespace or the
/// host's; the capabilities it ends with are the container's.
#[test]
fn exec_runs_under_the_containers_seccomp_filter() {
    if !can_run("exec seccomp") {
        return;
    }
    let env = Env::new();
    let config = env.config.clone().unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("allow_host_userns = true\n");
    fs::write(&config, text).unwrap();
    let seccomp = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let process_file = env.tmp.path().join("exec-process.json");
    for (name, host_userns, nnp) in [
        ("pod", false, false),
        ("pod-nnp", false, true),
        ("hostns", true, false),
    ] {
        let id = sleeper(&env, name, |d| {
            d["linux"]["seccomp"] = seccomp.clone();
            d["process"]["noNewPrivileges"] = json!(nnp);
            d["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 777}]);
            if host_userns {
                d["annotations"]["cnfbox.io/userns"] = json!("host");
            }
        });
        let init = init_caps(&env, &id);
        // From flags (kubectl exec through runc-style callers), as the
        // spec's user and as another one; and from a process file.
        fs::write(
            &process_file,
            json!({
                "args": ["/bin/sh", "-c", EXEC_PROBE], "cwd": "/",
                "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"],
                "noNewPrivileges": nnp,
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL", "CAP_CHOWN"],
                    "permitted": ["CAP_KILL", "CAP_CHOWN"]
                }
            })
            .to_string(),
        )
        .unwrap();
        let runs: [(&str, Vec<&str>); 3] = [
            ("flags", vec!["exec", &id, "/bin/sh", "-c", EXEC_PROBE]),
            (
                "flags as 1000",
                vec![
                    "exec",
                    "--user",
                    "1000:1000",
                    &id,
                    "/bin/sh",
                    "-c",
                    EXEC_PROBE,
                ],
            ),
            (
                "process file",
                vec!["exec", "-p", process_file.to_str().unwrap(), &id],
            ),
        ];
        for (how, args) in runs {
            let r = report(&env.ok(&args));
            let what = format!("{name}, {how}: {r:?}");
            assert_eq!(r["Seccomp"], "2", "{what}");
            assert_eq!(r["mkdir"], "denied", "{what}");
            assert_eq!(r["NoNewPrivs"], if nnp { "1" } else { "0" }, "{what}");
            // CAP_SYS_ADMIN (bit 21), held only to load the filter, is gone.
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                let bits = u64::from_str_radix(&r[set], 16).expect("cap bits");
                assert_eq!(bits & (1 << 21), 0, "{what}: {set}");
            }
            match how {
                "flags" => {
                    assert_eq!(r["uid"], "0", "{what}");
                    assert_eq!(r["nofile"], "777", "the spec's rlimits: {what}");
                    for set in ["CapEff", "CapPrm", "CapBnd"] {
                        assert_eq!(r[set], init[set], "{what}: {set} as the init's");
                    }
                }
                "flags as 1000" => {
                    assert_eq!(r["uid"], "1000", "{what}");
                    assert_eq!(r["CapEff"], "0000000000000000", "{what}");
                    assert_eq!(r["CapPrm"], "0000000000000000", "{what}");
                }
                _ => {
                    // CAP_CHOWN = 0, CAP_KILL = 5.
                    assert_eq!(r["CapEff"], "0000000000000021", "{what}");
                    assert_eq!(r["CapPrm"], "0000000000000021", "{what}");
                }
            }
        }
        env.ok(&["delete", "--force", &id]);
        common::assert_nothing_left(&env, &id);
    }

    // Control: without a profile the same exec is unconfined, so the
    // checks above can fail.
    let id = sleeper(&env, "plain", |_| {});
    let r = report(&env.ok(&[
        "exec",
        "--user",
        "1000:1000",
        &id,
        "/bin/sh",
        "-c",
        EXEC_PROBE,
    ]));
    assert_eq!(r["Seccomp"], "0", "{r:?}");
    assert_eq!(r["mkdir"], "ok", "{r:?}");
    env.ok(&["delete", "--force", &id]);
    common::assert_nothing_left(&env, &id);
}

/// An exec leaves nothing in the container's state directory: its process
/// file (which holds the environment) is private while it exists, and
/// libcontainer's per-exec notify socket is removed.
#[test]
fn exec_leaves_no_files_and_keeps_the_state_private() {
    if !can_run("exec files") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let id = sleeper(&env, "files", |_| {});
    let dir = env.root.join(&id);
    let names = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = names();
    for i in 0..5 {
        let out = env.ok(&["exec", "--env", &format!("SECRET={i}"), &id, "/bin/true"]);
        assert_eq!(out, "");
    }
    // A detached exec: its notify socket is spent once it has started.
    env.ok(&["exec", "--detach", &id, "/bin/true"]);
    env.ok(&["exec", &id, "/bin/true"]);
    let after = names();
    let extra: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        extra.iter().all(|n| n.starts_with("tenant-notify-")) && extra.len() <= 1,
        "left in {}: {extra:?} (before: {before:?})",
        dir.display()
    );
    assert!(
        !after.iter().any(|n| n.starts_with("exec-process")),
        "{after:?}"
    );
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    let kept = dir.join("bundle/config.json");
    let mode = fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} after execs", kept.display());
    env.ok(&["delete", "--force", &id]);
    common::assert_nothing_left(&env, &id);
}

/// containerd 2.x's default sandbox sysctl `net.ipv4.ping_group_range =
/// "0 2147483647"` used to fail every pod create (the kernel accepts only
/// groups the pod's user namespace maps); cnfbox narrows it to the pod's
/// groups, and a non-root pod user can then ping over an ICMP socket. A
/// range with no mapped group is refused naming the sysctl.
#[test]
fn ping_group_range_fits_the_pods_groups() {
    if !can_run("ping_group_range") {
        return;
    }
    let env = Env::new();
    let helper = test_bundles::helpers::build(test_bundles::helpers::ICMPECHO, env.tmp.path())
        .expect("build icmpecho");
    let script = "echo range=$(cat /proc/sys/net/ipv4/ping_group_range | tr '\\t' ' '); \
                  ip link set lo up; /bin/icmpecho 1000 1000";
    let run = |name: &str, range: &str| {
        let bundle = env.bundle(name, |b| {
            // NET_ADMIN to bring the pod's loopback up (CRI pods get it up).
            b.args(["/bin/sh", "-c", script])
                .annotation("cnfbox.io/capabilities", "NET_ADMIN")
                .modify({
                    let range = range.to_string();
                    move |s| {
                        let mut linux = s.linux().clone().unwrap_or_default();
                        linux.set_sysctl(Some(
                            [("net.ipv4.ping_group_range".to_string(), range)].into(),
                        ));
                        s.set_linux(Some(linux));
                    }
                })
        });
        fs::copy(&helper, bundle.rootfs.join("bin/icmpecho")).unwrap();
        let id = env.id(name);
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        (id, out)
    };
    let (id, out) = run("icmp", "0 2147483647");
    assert!(out.status.success(), "{out:?}");
    let r = report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["range"], "0 65535", "{r:?}");
    assert_eq!(r["icmp"], "ok", "{r:?}");
    common::assert_nothing_left(&env, &id);

    // Control: the kernel's default keeps gid 1000 from pinging.
    let (id, out) = run("noicmp", "1 0");
    let r = report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["icmp"], "socket:Permission denied", "{out:?}");
    common::assert_nothing_left(&env, &id);

    let (id, out) = run("unmapped", "70000 80000");
    common::assert_one_line_error(&out, &["net.ipv4.ping_group_range", "70000 80000"]);
    common::assert_nothing_left(&env, &id);
}

/// `memory.oom_control` of the init's v1 memory cgroup, or why there is none.
fn oom_control(pid: i64) -> Result<String, String> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("init cgroups");
    let rel = cgroups
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
            ctrl.split(',').any(|c| c == "memory").then_some(path)
        })
        .ok_or("no cgroup v1 memory controller here (cgroup v2 has no OOM-killer switch)")?;
    let path = format!("/sys/fs/cgroup/memory{rel}/memory.oom_control");
    fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
}

/// `linux.resources.memory.disableOOMKiller` reaches the memory cgroup
/// (libcontainer 0.7 never applies it; runc does on cgroup v1).
#[test]
fn disable_oom_killer_reaches_the_memory_cgroup() {
    let test = "disable_oom_killer_reaches_the_memory_cgroup";
    if !can_run(test) {
        return;
    }
    let env = Env::new();
    let mut seen = Vec::new();
    for disable in [true, false] {
        let id = sleeper(&env, &format!("oom{disable}"), |d| {
            d["linux"]["resources"]["memory"] =
                json!({"limit": 67108864, "disableOOMKiller": disable});
        });
        let pid = env.state(&id)["pid"].as_i64().expect("init pid");
        let control = oom_control(pid);
        env.ok(&["delete", "--force", &id]);
        match control {
            Ok(text) => seen.push((disable, text)),
            Err(why) => {
                eprintln!("SKIP {test}: {why}");
                return;
            }
        }
    }
    for (disable, text) in seen {
        let want = format!("oom_kill_disable {}", u8::from(disable));
        assert!(text.contains(&want), "disableOOMKiller {disable}: {text}");
    }
}
