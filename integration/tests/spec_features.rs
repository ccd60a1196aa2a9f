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
    let r = run_probe(&env, "hardened", |d| {
        d["hostname"] = json!("cnf-probe");
        d["process"]["noNewPrivileges"] = json!(true);
        d["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 777}]);
        let caps = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        d["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps
        });
        d["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
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
    assert_eq!(r["ip_forward"], "1", "sysctl set in the container's netns");
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
    assert_eq!(r["ip_forward"], "0", "a fresh netns does not forward");
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
