//! Proof that the bundles are valid: Debian's runc runs them.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{not_root, runc, unique_id, wait_timeout, Runc};
use test_bundles::{Bundle, BundleBuilder, CheckReport, Scenario};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// containerd's default capabilities as a /proc/<pid>/status mask:
/// CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) FSETID(4) KILL(5) SETGID(6) SETUID(7)
/// SETPCAP(8) NET_BIND_SERVICE(10) NET_RAW(13) SYS_CHROOT(18) MKNOD(27)
/// AUDIT_WRITE(29) SETFCAP(31).
const DEFAULT_CAP_MASK: u64 = 0xa80425fb;

/// runc, or the reason the test cannot run.
fn setup() -> Result<Runc, String> {
    if let Some(why) = not_root() {
        return Err(format!("runc tests need root because {why}"));
    }
    let bin = runc().ok_or("runc is not installed (Debian package runc)")?;
    Ok(Runc::new(bin))
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `runc run --bundle DIR ID` in the foreground, stdio captured.
fn run(runc: &Runc, bundle: &Path, id: &str) -> Ran {
    let mut child = runc
        .cmd()
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runc run");
    let Some(status) = wait_timeout(&mut child, RUN_TIMEOUT) else {
        runc.force_delete(id);
        let _ = child.kill();
        panic!("runc run {id} did not finish within {RUN_TIMEOUT:?}");
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    runc.force_delete(id);
    Ran {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn bundle(dir: &Path, scenario: &Scenario) -> Bundle {
    BundleBuilder::new(dir.join("bundle"))
        .scenario(scenario)
        .build()
        .expect("build bundle")
}

#[test]
fn runc_runs_exit_scenario_and_returns_its_code() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_runs_exit_scenario_and_returns_its_code: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = bundle(tmp.path(), &Scenario::Exit(3));
    let ran = run(&runc, &b.dir, &unique_id("exit3"));
    assert_eq!(ran.code, Some(3), "stderr: {}", ran.stderr);
}

#[test]
fn runc_runs_true_scenario() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_runs_true_scenario: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = bundle(tmp.path(), &Scenario::True);
    let ran = run(&runc, &b.dir, &unique_id("true"));
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
}

#[test]
fn runc_runs_echo_scenario_and_prints_text() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_runs_echo_scenario_and_prints_text: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = "-n hello from cnfbox";
    let b = bundle(tmp.path(), &Scenario::Echo(text.into()));
    let ran = run(&runc, &b.dir, &unique_id("echo"));
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    assert_eq!(ran.stdout, format!("{text}\n"));
}

#[test]
fn runc_runs_checker_and_it_reports_the_container_view() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_runs_checker_and_it_reports_the_container_view: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = BundleBuilder::new(tmp.path().join("bundle"))
        .scenario(&Scenario::Checker)
        .hostname("checker-host")
        .build()
        .expect("build bundle");
    let ran = run(&runc, &b.dir, &unique_id("checker"));
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    let r = CheckReport::parse(&ran.stdout);
    assert!(r.is_complete(), "truncated report:\n{}", ran.stdout);
    assert_eq!(r.errors(), Vec::<&str>::new(), "{}", ran.stdout);
    assert_eq!(r.get("pid"), Some("1"));
    assert_eq!(r.get("uid_map"), Some("0 0 4294967295"));
    assert_eq!(r.get("gid_map"), Some("0 0 4294967295"));
    assert_eq!(r.get("hostname"), Some("checker-host"));
    assert_eq!(r.get("NoNewPrivs"), Some("1"));
    assert_eq!(r.get("Seccomp"), Some("0"));
    for key in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(r.cap_mask(key), Some(DEFAULT_CAP_MASK), "{key}");
    }
    assert_eq!(r.get("nofile"), Some("1024"));
    assert!(r.get("Cpus_allowed_list").is_some());
    assert!(r.get("Mems_allowed_list").is_some());
    let id = r.get("id").unwrap_or_default();
    assert!(id.starts_with("uid=0(root) gid=0(root)"), "{id}");
    let root: Vec<_> = r.all("mountinfo_root").collect();
    assert!(!root.is_empty(), "{}", ran.stdout);
    assert!(r.all("mountinfo").any(|m| m.contains(" /proc ")));
}

#[test]
fn runc_runs_bundle_with_filler_files() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_runs_bundle_with_filler_files: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = BundleBuilder::new(tmp.path().join("bundle"))
        .files(1500)
        .args(["/bin/sh", "-c", "ls /usr/share/filler/* | grep -c '^f'"])
        .build()
        .expect("build bundle");
    let ran = run(&runc, &b.dir, &unique_id("filler"));
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "1500");
}

/// Starts `scenario` in the foreground, signals it once it runs, and
/// returns runc's exit code.
fn run_and_signal(runc: &Runc, dir: &Path, scenario: &Scenario, signal: &str) -> Option<i32> {
    let b = bundle(dir, scenario);
    let id = unique_id(&format!("{scenario}-{signal}").replace(':', "-"));
    let mut child = runc
        .cmd()
        .args(["run", "--bundle"])
        .arg(&b.dir)
        .arg(&id)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn runc run");
    assert!(
        runc.wait_running(&id, RUN_TIMEOUT),
        "{id} never reached running"
    );
    // Let the script install its traps before the signal lands.
    std::thread::sleep(Duration::from_millis(300));
    assert!(runc.kill(&id, signal).success(), "runc kill {id} {signal}");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    runc.force_delete(&id);
    let Some(status) = status else {
        let _ = child.kill();
        panic!("{id} still runs 20s after {signal}");
    };
    status.code()
}

#[test]
fn runc_pause_scenario_exits_0_on_sigterm() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_pause_scenario_exits_0_on_sigterm: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        run_and_signal(&runc, tmp.path(), &Scenario::Pause, "TERM"),
        Some(0)
    );
}

#[test]
fn runc_pause_scenario_exits_0_on_sigint() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_pause_scenario_exits_0_on_sigint: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        run_and_signal(&runc, tmp.path(), &Scenario::Pause, "INT"),
        Some(0)
    );
}

#[test]
fn runc_sleep_scenario_runs_until_killed() {
    let runc = match setup() {
        Ok(r) => r,
        Err(why) => skip!("runc_sleep_scenario_runs_until_killed: {why}"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // runc reports death by signal as 128 + signo.
    assert_eq!(
        run_and_signal(&runc, tmp.path(), &Scenario::Sleep, "KILL"),
        Some(128 + 9)
    );
}
