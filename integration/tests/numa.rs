//! NUMA placement on this machine (one node, CPUs 0-1): the hint pins the
//! container's cpuset before its process runs; bad hints are refused.

mod common;

use std::fs;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;

const PROBE: &str =
    "grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status | tr -d '\\t ' | tr ':' '='";

fn node0_cpus() -> String {
    fs::read_to_string("/sys/devices/system/node/node0/cpulist")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn run_hinted(
    env: &Env,
    name: &str,
    hint: &str,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> std::process::Output {
    let (cpus, mems) = (cpus.map(str::to_string), mems.map(str::to_string));
    let bundle = env.bundle(name, move |b| {
        b.args(["/bin/sh", "-c", PROBE])
            .annotation("cnfbox.io/numa-node", hint)
            .modify(move |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                let mut cpu = serde_json::Map::new();
                if let Some(c) = cpus {
                    cpu.insert("cpus".into(), json!(c));
                }
                if let Some(m) = mems {
                    cpu.insert("mems".into(), json!(m));
                }
                d["linux"]["resources"]["cpu"] = serde_json::Value::Object(cpu);
                *s = serde_json::from_value(d).unwrap();
            })
    });
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_nothing_left(env, &id);
    out
}

#[test]
fn hint_pins_cpus_and_mems_before_the_process_runs() {
    if !can_run("numa placement") {
        return;
    }
    let cpus = node0_cpus();
    if cpus != "0-1" && !cpus.contains('1') {
        eprintln!("SKIP numa placement: needs CPU 1 on node 0 (node0 cpulist {cpus:?})");
        return;
    }
    let env = Env::new();
    let out = run_hinted(&env, "pin1", "0", Some("1"), None);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Cpus_allowed_list=1\n"), "{s}");
    assert!(s.contains("Mems_allowed_list=0\n"), "{s}");

    let out = run_hinted(&env, "node0", "0", None, None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(&format!("Cpus_allowed_list={cpus}\n")), "{s}");

    // reserved_cpus from config.toml is taken out.
    let config = env.config.clone().unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\n[numa]\nreserved_cpus = \"0\"\n");
    fs::write(&config, text).unwrap();
    let out = run_hinted(&env, "reserved", "0", None, None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Cpus_allowed_list=1\n"), "{s}");
}

#[test]
fn bad_hints_are_refused_and_leave_nothing() {
    if !can_run("numa refusals") {
        return;
    }
    let env = Env::new();
    for (name, hint, cpus, mems, needles) in [
        ("unknown", "7", None, None, vec!["node 7 does not exist"]),
        (
            "notanumber",
            "zero",
            None,
            None,
            vec!["cnfbox.io/numa-node", "zero"],
        ),
        (
            "empty",
            "0",
            Some("63"),
            None,
            vec!["no CPU left on node 0"],
        ),
        (
            "malformed",
            "0",
            Some("1-x"),
            None,
            vec!["linux.resources.cpu.cpus", "1-x"],
        ),
        (
            "mems",
            "0",
            None,
            Some("1"),
            vec!["contradicts linux.resources.cpu.mems"],
        ),
    ] {
        let out = run_hinted(&env, name, hint, cpus, mems);
        assert_one_line_error(&out, &needles);
    }
    assert!(env.allocator().list().unwrap().is_empty());
}
