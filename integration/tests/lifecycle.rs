//! Container lifecycle through the `cnfbox` CLI, as containerd and a person
//! drive runc.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_nothing_left, can_run, Env};
use test_bundles::Scenario;

fn sleeper(env: &Env) -> test_bundles::Bundle {
    env.bundle("sleep", |b| b.scenario(&Scenario::Sleep))
}

#[test]
fn create_start_kill_delete_with_state_checked_field_by_field() {
    if !can_run("lifecycle") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("life");
    let before = chrono_now();
    env.create(&bundle, &id);

    let s = env.state(&id);
    let canonical = fs::canonicalize(&bundle.dir).unwrap();
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["status"], "created");
    assert!(s["ociVersion"].as_str().unwrap().starts_with("1."), "{s}");
    let pid = s["pid"].as_i64().unwrap();
    assert!(pid > 1, "{s}");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(s["bundle"], canonical.to_str().unwrap());
    assert_eq!(s["rootfs"], canonical.join("rootfs").to_str().unwrap());
    // runc's owner: the user owning the state directory, in `state` and
    // `list` alike.
    assert_eq!(s["owner"], "root", "{s}");
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(mine["owner"], s["owner"], "{listed}");
    let table = env.ok(&["list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(id.as_str()))
        .unwrap_or_default();
    assert!(row.ends_with(" root"), "{table}");
    let created = s["created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() >= 20, "{created}");
    assert!(
        created >= before.as_str(),
        "created {created} before {before}"
    );

    env.ok(&["start", &id]);
    let s = env.wait_status(&id, "running");
    assert_eq!(s["pid"].as_i64().unwrap(), pid, "start keeps the init pid");

    env.ok(&["kill", &id, "KILL"]);
    let s = env.wait_status(&id, "stopped");
    assert_eq!(s["pid"], 0, "{s}");

    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
    let out = env.run(&["state", &id]);
    assert!(
        !out.status.success(),
        "state of a deleted container succeeded"
    );
}

/// RFC 3339 UTC now, comparable as a string with `created`.
fn chrono_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn run_passes_the_exit_code_through() {
    if !can_run("run exit code") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("exit3", |b| b.scenario(&Scenario::Exit(3)));
    let id = env.id("exit3");
    let out = env.run(&["run", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_nothing_left(&env, &id);

    let bundle = env.bundle("echo", |b| {
        b.scenario(&Scenario::Echo("hello cnfbox".into()))
    });
    let id = env.id("echo");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello cnfbox\n");
}

#[test]
fn run_detach_leaves_it_running() {
    if !can_run("run --detach") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("detach");
    let out = env
        .command()
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    env.wait_status(&id, "running");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn exec_output_and_exit_code() {
    if !can_run("exec") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("exec");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);

    let out = env.run(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "echo inside:$(hostname); exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("inside:"));

    let out = env.run(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "/bin/sh",
        "-c",
        "echo $FOO $(pwd)",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bar /tmp\n",
        "{out:?}"
    );

    // process.json form, as containerd uses.
    let process = env.tmp.path().join("process.json");
    fs::write(
        &process,
        r#"{"args":["/bin/sh","-c","id -u; exit 4"],"cwd":"/","user":{"uid":65534,"gid":65534},"env":["PATH=/bin"]}"#,
    )
    .unwrap();
    let out = env.run(&["exec", "-p", process.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n");

    let out = env.run(&["exec", "--user", "65534:65534", &id, "/bin/id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n", "{out:?}");

    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn ps_lists_container_processes() {
    if !can_run("ps") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("ps");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();

    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, vec![pid]);
    let table = env.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string()) && l.contains("sleep")),
        "{table}"
    );
    env.ok(&["delete", "--force", &id]);
}

/// Freezer state of the container's cgroup, v1 or v2.
fn freezer_state(id: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup/freezer/cnfbox")
        .join(id)
        .join("freezer.state");
    if v1.exists() {
        return fs::read_to_string(v1).unwrap().trim().to_string();
    }
    let v2 = Path::new("/sys/fs/cgroup/cnfbox")
        .join(id)
        .join("cgroup.freeze");
    match fs::read_to_string(&v2).unwrap().trim() {
        "1" => "FROZEN".into(),
        _ => "THAWED".into(),
    }
}

#[test]
fn pause_and_resume_show_in_the_freezer() {
    if !can_run("pause/resume") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("pause");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    env.ok(&["pause", &id]);
    assert_eq!(env.state(&id)["status"], "paused");
    assert_eq!(freezer_state(&id), "FROZEN");
    env.ok(&["resume", &id]);
    assert_eq!(env.state(&id)["status"], "running");
    assert_eq!(freezer_state(&id), "THAWED");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn delete_force_of_a_running_container() {
    if !can_run("delete --force") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("force");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let out = env.run(&["delete", &id]);
    common::assert_one_line_error(&out, &["running", "--force"]);
    env.ok(&["delete", "--force", &id]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));
    assert_nothing_left(&env, &id);
    // runc: force-deleting a container that is gone succeeds.
    env.ok(&["delete", "--force", &id]);
}

fn is_zombie_or_gone(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => true,
    }
}

#[test]
fn events_stats_show_memory_and_pids() {
    if !can_run("events --stats") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("events");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let ev: serde_json::Value =
        serde_json::from_str(env.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{ev}"
    );
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn ten_containers_at_once() {
    if !can_run("ten containers") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let ids: Vec<String> = (0..10).map(|i| env.id(&format!("ten{i}"))).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let (env, bundle) = (&env, &bundle);
            s.spawn(move || {
                env.create(bundle, id);
                env.ok(&["start", id]);
            });
        }
    });
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list.len(), 10);
    for id in &ids {
        let entry = list
            .iter()
            .find(|c| c["id"] == id.as_str())
            .expect("listed");
        assert_eq!(entry["status"], "running");
    }
    let pids: std::collections::HashSet<i64> =
        list.iter().map(|c| c["pid"].as_i64().unwrap()).collect();
    assert_eq!(pids.len(), 10, "each container has its own init");
    let table = env.ok(&["list"]);
    assert_eq!(table.lines().count(), 11, "{table}");
    std::thread::scope(|s| {
        for id in &ids {
            let env = &env;
            s.spawn(move || env.ok(&["delete", "--force", id]));
        }
    });
    for id in &ids {
        assert_nothing_left(&env, id);
    }
}

#[test]
fn cgroups_path_plain_and_systemd_form() {
    if !can_run("cgroupsPath") {
        return;
    }
    let env = Env::new();
    let id = env.id("cgp");
    let plain = format!("/cnfbox-it/{id}");
    let bundle = env.bundle("plain", |b| {
        b.scenario(&Scenario::Sleep).cgroups_path(plain.clone())
    });
    env.create(&bundle, &id);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.lines().any(|l| l.ends_with(&plain)), "{own}");
    env.ok(&["delete", "--force", &id]);
    assert!(!own.is_empty());

    let id2 = env.id("cgs");
    let bundle = env.bundle("sd", |b| {
        b.scenario(&Scenario::Sleep)
            .cgroups_path(format!("cnfboxit.slice:cri:{id2}"))
    });
    env.create(&bundle, &id2);
    let pid = env.state(&id2)["pid"].as_i64().unwrap();
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/cnfboxit.slice/cri-{id2}.scope");
    assert!(own.lines().any(|l| l.ends_with(&want)), "{own}");
    env.ok(&["delete", "--force", &id2]);
    for line in own.lines().filter(|l| l.ends_with(&want)) {
        let ctrl = line.split(':').nth(1).unwrap();
        let dir = Path::new("/sys/fs/cgroup")
            .join(ctrl.trim_start_matches("name="))
            .join(want.trim_start_matches('/'));
        assert!(!dir.exists(), "{} left after delete", dir.display());
    }
}

/// Failures print one line that tools recognise as an error (runc's
/// `ERRO`/`error` lines); `kill` of a stopped container answers runc's
/// "container not running", which containerd's runc shim reads as "process
/// already finished".
#[test]
fn error_lines_say_error_and_a_stopped_container_is_not_running() {
    if !can_run("error lines") {
        return;
    }
    let env = Env::new();
    let out = env.run(&["kill", "ghost-container", "KILL"]);
    let line = common::assert_one_line_error(&out, &["ghost-container", "does not exist"]);
    assert!(line.starts_with("cnfbox: error: "), "{line:?}");

    let bundle = sleeper(&env);
    let id = env.id("errline");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let out = env.run(&["delete", &id]);
    let line = common::assert_one_line_error(&out, &[&id, "running", "--force"]);
    assert!(line.starts_with("cnfbox: error: "), "{line:?}");

    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    let log = env.tmp.path().join("kill-log.json");
    let log_s = log.to_str().expect("utf-8");
    let out = env.run(&["--log", log_s, "--log-format", "json", "kill", &id, "TERM"]);
    common::assert_one_line_error(&out, &["container not running"]);
    // The kind the shim maps to NOT_FOUND (not the words).
    let text = std::fs::read_to_string(&log).expect("kill's log");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a log line")).expect("JSON line");
    assert_eq!(last["kind"], "not_running", "{last}");
    // --all still reaches what is left (nothing): not an error.
    env.ok(&["kill", "--all", &id, "KILL"]);
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

/// `exec` without `-p` runs the command as the spec's `process.user` with
/// its rlimits, as runc does (libcontainer's own flags process ran as uid 0
/// with none); `--user` still overrides it.
#[test]
fn exec_without_a_process_file_is_the_specs_user() {
    if !can_run("exec user") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("execuser", |b| {
        b.scenario(&Scenario::Sleep).modify(|s| {
            let p = s.process_mut().as_mut().unwrap();
            p.user_mut().set_uid(1000);
            p.user_mut().set_gid(1001);
            p.set_rlimits(Some(vec![oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
                .hard(333u64)
                .soft(333u64)
                .build()
                .unwrap()]));
        })
    });
    let id = env.id("execuser");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let out = env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "echo $(id -u):$(id -g) $(ulimit -n)",
    ]);
    assert_eq!(out.trim(), "1000:1001 333");
    let out = env.ok(&[
        "exec",
        "--user",
        "0:0",
        &id,
        "/bin/sh",
        "-c",
        "echo $(id -u):$(id -g)",
    ]);
    assert_eq!(out.trim(), "0:0");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

/// Start-path regression guard: the syscall count of `cnfbox run` of
/// `/bin/true` (pod profile, every process, `strace -f -c`) stays within
/// 10% of the figure recorded in `integration/syscall-budget.txt`. Counts
/// are stable where times are not (three runs differ by < 0.5%). The
/// second run is called from a directory that only host root may read: the
/// init keeps that cwd, and pathrs' openat2 probe on it used to fail there
/// and leave the whole rootfs setup on its emulated resolvers (~2x the
/// syscalls; vendor/pathrs/NOTE.md).
#[test]
fn syscall_count_of_a_run_stays_within_budget() {
    if !can_run("syscall budget") {
        return;
    }
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIP syscall budget: strace is not installed (scripts/deps.sh installs it)");
        return;
    }
    let budget_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("syscall-budget.txt");
    let budget: u64 = fs::read_to_string(&budget_file)
        .unwrap()
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure in {}", budget_file.display()));
    let env = Env::new();
    let bundle = env.bundle("budget", |b| b.scenario(&Scenario::True));
    let mut counts = Vec::new();
    // The test dir is 0700, host root's: the pod's root may not read it.
    let cwds = [Path::new(env!("CARGO_MANIFEST_DIR")), env.tmp.path()];
    for (round, cwd) in cwds.iter().enumerate() {
        let id = env.id("budget");
        let out_file = env.tmp.path().join(format!("strace.{round}"));
        // An untraced run first warms the caches the traced one uses.
        env.ok(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        let id = env.id("budget");
        let traced = std::process::Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&out_file)
            .arg(common::cnfbox_bin())
            .env("CNFBOX_CONFIG", env.config.as_ref().unwrap())
            .arg("--root")
            .arg(&env.root)
            .args(["run", "-b"])
            .arg(&bundle.dir)
            .arg(&id)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("strace");
        assert!(traced.status.success(), "traced run: {traced:?}");
        let report = fs::read_to_string(&out_file).unwrap();
        let total: u64 = report
            .lines()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no total in strace's report:\n{report}"));
        counts.push(total);
        assert_nothing_left(&env, &id);
    }
    let most = *counts.iter().max().unwrap();
    eprintln!(
        "syscalls per run (cwd readable, cwd host root's): {counts:?} (budget {budget}, +10% = {})",
        budget * 11 / 10
    );
    assert!(
        most * 10 <= budget * 11,
        "cnfbox run of /bin/true took {most} syscalls, more than 10% over the {budget} recorded in {}: find the new work (strace -f -c), or raise the figure with the reason",
        budget_file.display()
    );
}

/// No reader meets a half-written `state.json` (libcontainer 0.7 truncates
/// it, then writes): `state` runs while another process pauses and resumes
/// the container over and over, each rewriting the record.
#[test]
fn state_readers_never_see_a_half_written_record() {
    if !can_run("state readers") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("torn");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    const ROUNDS: usize = 150;
    let writer = {
        let bin = common::cnfbox_bin();
        let root = env.root.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                for cmd in ["pause", "resume"] {
                    let out = std::process::Command::new(&bin)
                        .arg("--root")
                        .arg(&root)
                        .args([cmd, &id])
                        .output()
                        .expect("run cnfbox");
                    assert!(out.status.success(), "{cmd}: {out:?}");
                }
            }
        })
    };
    let mut torn = Vec::new();
    let mut reads = 0;
    while !writer.is_finished() {
        let out = env.run(&["state", &id]);
        reads += 1;
        if !out.status.success() {
            torn.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    writer.join().expect("writer");
    env.ok(&["delete", "--force", &id]);
    assert!(
        reads > 10,
        "the reader ran alongside the writer ({reads} reads)"
    );
    assert!(
        torn.is_empty(),
        "{} of {reads} state reads failed, first: {}",
        torn.len(),
        torn[0]
    );
}

/// The state root's directory under /run/cnfbox-mnt goes with its last
/// pod, and not before: a second pod keeps it.
#[test]
fn the_roots_mount_directory_goes_with_its_last_pod() {
    if !can_run("per-root mount directory") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let (a, b) = (env.id("lasta"), env.id("lastb"));
    env.create(&bundle, &a);
    env.create(&bundle, &b);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--format", "json", &a])).unwrap();
    let view = v["containers"][0]["idmapped_mounts"][0]
        .as_str()
        .unwrap()
        .rsplit(" -> ")
        .next()
        .unwrap()
        .to_string();
    // MOUNT_BASE/<hash>/rootfs/<id>/root
    let base = Path::new(&view).ancestors().nth(3).unwrap().to_path_buf();
    assert!(base.starts_with("/run/cnfbox-mnt"), "{view}");
    env.ok(&["delete", "--force", &a]);
    assert!(base.join("rootfs").is_dir(), "gone while {b} lives");
    env.ok(&["delete", "--force", &b]);
    assert_nothing_left(&env, &b);
    assert!(!base.exists(), "{} left after the last pod", base.display());
}

/// `process.oomScoreAdj` of an exec into a pod (own user namespace) is in
/// effect in the exec'd process: cnfbox writes it before it joins the
/// pod's user namespace (the VM lane's CRI test checks a value below the
/// shim's floor, which needs CAP_SYS_RESOURCE this host's root lacks).
#[test]
fn exec_applies_the_process_oom_score_adj() {
    if !can_run("exec oomScoreAdj") {
        return;
    }
    let env = Env::new();
    let bundle = sleeper(&env);
    let id = env.id("oomadj");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let p = env.tmp.path().join("oom-process.json");
    fs::write(
        &p,
        r#"{"user":{"uid":0,"gid":0},"args":["/bin/cat","/proc/self/oom_score_adj"],"cwd":"/","env":["PATH=/bin"],"oomScoreAdj":321}"#,
    )
    .unwrap();
    let out = env.ok(&["exec", "-p", p.to_str().unwrap(), &id]);
    assert_eq!(out.trim(), "321", "exec'd process's oom_score_adj");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}
