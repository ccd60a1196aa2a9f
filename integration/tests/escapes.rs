//! Escape attempts: each test plays a tenant who is root in its pod (a
//! script run inside a real container) or a hostile bundle, tries a known
//! container-escape technique, and asserts that it gets nothing on the host.
//! SECURITY.md lists every attack with the test that proves it fails.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{assert_nothing_left, can_run, Env};
use serde_json::json;
use test_bundles::Scenario;

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
        .to_string()
}

/// Every `key=` line with this key.
fn all(out: &str, key: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Edits the spec as JSON (oci-spec's setters for every field get long).
fn edit(
    f: impl FnOnce(&mut serde_json::Value) + 'static,
) -> impl FnOnce(&mut oci_spec::runtime::Spec) {
    move |s| {
        let mut doc = serde_json::to_value(&*s).unwrap();
        f(&mut doc);
        *s = serde_json::from_value(doc).unwrap();
    }
}

/// `cnfbox run` of `script` in a fresh bundle; returns (success, stdout, stderr).
fn run_script(
    env: &Env,
    name: &str,
    script: &str,
    tweak: impl FnOnce(test_bundles::BundleBuilder) -> test_bundles::BundleBuilder,
) -> (bool, String, String) {
    let bundle = env.bundle(name, |b| tweak(b.args(["/bin/sh", "-c", script])));
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_nothing_left(env, &id);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha(path: &Path) -> Vec<u8> {
    // A byte-for-byte copy is as good as a digest for "unchanged".
    let mut buf = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    buf
}

/// `cnfbox exec --detach` of a sleep; stdio not captured (the process
/// would hold the pipe open).
fn exec_detached(env: &Env, id: &str, pidfile: &Path) {
    let st = env
        .command()
        .args(["exec", "--detach", "--pid-file"])
        .arg(pidfile)
        .args([id, "/bin/sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(pidfile.with_extension("err")).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "exec --detach in {id}: {}",
        fs::read_to_string(pidfile.with_extension("err")).unwrap_or_default()
    );
}

/// The fds of `pid` once it runs the container's program (`/bin/...`),
/// not the runtime's init code any more.
fn wait_exec(pid: i64) -> Vec<(i32, String)> {
    for _ in 0..400 {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().contains("busybox") {
            return fds_of(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} never exec'd the container's program");
}

/// The open fds of `pid` and what they point at.
fn fds_of(pid: i64) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let target = fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (n, target)
        })
        .collect();
    v.sort();
    v
}

/// Polls until `state` works and says running (a foreground `run` may still
/// be writing cnfbox's record when the first poll comes).
fn wait_running(env: &Env, id: &str) {
    for _ in 0..800 {
        let out = env.run(&["state", id]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"running\"") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{id} never ran");
}

// ---------------------------------------------------------------------------
// CVE-2019-5736 class: the runtime binary seen through /proc/<pid>/exe of a
// process entering the container.

const EXE_SCANNER: &str = r#"
me=$$
i=0
while [ ! -e /tmp/stop ]; do
  i=$((i+1))
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$me" ] && continue
    l=$(readlink $d/exe 2>/dev/null) || l=unreadable
    case "$l" in /bin/*) continue;; esac
    [ -d $d ] || continue
    echo "seen=$p:$l"
    if ( exec 3>>$d/exe ) 2>/dev/null; then echo "opened=$p:$l"; fi
  done
done
echo loops=$i
if ( exec 3>>/bin/cnfbox-check ) 2>/dev/null; then echo control=ok; else echo control=fail; fi
"#;

#[test]
fn proc_self_exe_of_an_entering_process_is_not_writable() {
    if !can_run("proc self exe") {
        return;
    }
    let env = Env::new();
    let bin = common::cnfbox_bin();
    let before = sha(&bin);
    let bundle = env.bundle("exe", |b| {
        b.args(["/bin/sh", "-c", EXE_SCANNER])
            .hard_link_busybox(false)
    });
    let id = env.id("exe");
    let log = env.tmp.path().join("scanner.out");
    let mut run = env
        .command()
        .args(["run", "-b", bundle.dir.to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(&env, &id);
    // Processes entering the container: foreground and detached execs, each
    // a clone of the cnfbox binary until it execs the container's program.
    let pidfile = env.tmp.path().join("exec.pid");
    for i in 0..40 {
        if i % 2 == 0 {
            env.ok(&["exec", &id, "/bin/true"]);
        } else {
            exec_detached(&env, &id, &pidfile);
            // The exec'd process itself, from the host's side: its exe is
            // the container's binary, and pod root may not open it for write.
            let epid: i64 = fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let exe = fs::read_link(format!("/proc/{epid}/exe")).unwrap();
            assert!(
                !exe.starts_with(bin.parent().unwrap()),
                "exec'd process still runs the runtime binary: {}",
                exe.display()
            );
            let uid = fs::metadata(format!("/proc/{epid}")).unwrap().uid();
            assert_ne!(uid, 0, "exec'd process runs as host root");
        }
    }
    env.ok(&["exec", &id, "/bin/touch", "/tmp/stop"]);
    let status = run.wait().unwrap();
    assert!(status.success(), "scanner: {status:?}");
    let out = fs::read_to_string(&log).unwrap();
    assert_eq!(
        kv(&out, "control"),
        "ok",
        "the scanner can open files for write:\n{out}"
    );
    let seen = all(&out, "seen");
    let opened = all(&out, "opened");
    eprintln!(
        "exe scanner: {} loops, saw {} foreign executables ({:?}), opened {:?}",
        kv(&out, "loops"),
        seen.len(),
        seen.iter().take(3).collect::<Vec<_>>(),
        opened
    );
    assert!(
        opened.is_empty(),
        "pod root opened a host binary for write: {opened:?}"
    );
    assert!(sha(&bin) == before, "{} was modified", bin.display());
    assert_nothing_left(&env, &id);
}

// ---------------------------------------------------------------------------
// CVE-2024-21626 class: host fds leaking into the container.

#[test]
fn cwd_through_a_leaked_fd_does_not_reach_the_host() {
    if !can_run("leaked fd cwd") {
        return;
    }
    let env = Env::new();
    // If the cwd were a host directory, climbing from it reaches the host's
    // root, which has this test's tmp dir's top component (/tmp or /work...).
    let host_top = env
        .tmp
        .path()
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap()
        .to_string();
    let script = "echo cwd=$(readlink /proc/self/cwd); cd ../../../../../../../..; echo top=$(ls | tr '\\n' ,)";
    for n in 3..=40 {
        let (ok, out, err) = run_script(&env, &format!("fdcwd{n}"), script, move |b| {
            b.modify(edit(move |d| {
                d["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
            }))
        });
        eprintln!(
            "cwd /proc/self/fd/{n}: ok={ok} {} {}",
            out.trim(),
            err.trim()
        );
        if !ok {
            // Refused: fine, as long as it says why in one line.
            assert!(!err.trim().is_empty(), "fd {n}: failure without a message");
            continue;
        }
        let cwd = kv(&out, "cwd");
        assert!(
            !cwd.contains("unreachable") && !cwd.starts_with("/proc"),
            "fd {n}: cwd outside the container: {cwd}"
        );
        let top: Vec<&str> = kv(&out, "top").leak().split(',').collect();
        assert!(
            !top.contains(&host_top.as_str())
                || Path::new("/").join(&host_top) == Path::new("/tmp"),
            "fd {n}: climbed to the host root: {top:?}"
        );
        assert!(
            !top.contains(&"work") && !top.contains(&"home") && !top.contains(&"boot"),
            "fd {n}: climbed to the host root: {top:?}"
        );
    }
}

/// The exec variant of CVE-2024-21626: `cnfbox exec --cwd /proc/self/fd/N`.
#[test]
fn exec_cwd_through_a_leaked_fd_does_not_reach_the_host() {
    if !can_run("exec leaked fd cwd") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("execcwd", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("execcwd");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let script = "echo cwd=$(readlink /proc/self/cwd); cd ../../../../../../../..; echo top=$(ls | tr '\\n' ,)";
    // Control: --cwd itself works.
    let out = env.ok(&["exec", "--cwd", "/tmp", &id, "/bin/sh", "-c", script]);
    assert_eq!(kv(&out, "cwd"), "/tmp", "{out}");
    let (mut refused, mut ran) = (0, 0);
    for n in 3..=40 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = env.run(&["exec", "--cwd", &cwd, &id, "/bin/sh", "-c", script]);
        if !out.status.success() {
            if refused == 0 {
                eprintln!(
                    "exec --cwd {cwd}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            refused += 1;
            continue;
        }
        ran += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cwd = kv(&stdout, "cwd");
        assert!(
            !cwd.contains("unreachable") && !cwd.starts_with("/proc"),
            "exec fd {n}: cwd outside the container: {cwd}"
        );
        let top = kv(&stdout, "top");
        assert!(
            !top.split(',')
                .any(|e| e == "work" || e == "home" || e == "boot"),
            "exec fd {n}: climbed to the host root: {top}"
        );
    }
    eprintln!("exec --cwd /proc/self/fd/3..40: {refused} refused, {ran} ran inside");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn only_stdio_and_preserved_fds_reach_init_and_exec() {
    if !can_run("fd scan") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("fds", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("fds");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let fds = wait_exec(pid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, [0, 1, 2], "init fds: {fds:?}");
    // A detached exec: its process's fds.
    let pidfile = env.tmp.path().join("fds.pid");
    exec_detached(&env, &id, &pidfile);
    let epid: i64 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fds = wait_exec(epid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, [0, 1, 2], "exec'd process fds: {fds:?}");
    // Seen from inside by a foreground exec too: the shell's own fds 0-2 and
    // the one `ls` reads the directory with.
    let inside = env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "ls /proc/self/fd | tr '\\n' ,",
    ]);
    assert_eq!(inside.trim(), "0,1,2,3,", "fds inside an exec: {inside}");
    // An exec'd process keeps the spec's no_new_privileges too.
    let nnp = env.ok(&["exec", &id, "/bin/grep", "NoNewPrivs", "/proc/self/status"]);
    assert!(
        nnp.trim().ends_with('1'),
        "exec without no_new_privileges: {nnp}"
    );
    env.ok(&["delete", "--force", &id]);

    // --preserve-fds 2: exactly fds 3 and 4 are passed on, nothing else.
    let id = env.id("fdskeep");
    let extra = env.tmp.path().join("extra");
    fs::write(&extra, "x").unwrap();
    let f3 = fs::File::open(&extra).unwrap();
    let f4 = fs::File::open(&extra).unwrap();
    let mut cmd = env.command();
    cmd.args([
        "create",
        "--preserve-fds",
        "2",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (a, b) = (f3.as_raw_fd(), f4.as_raw_fd());
        // SAFETY: dup2 and close are async-signal-safe; the fds are open in the parent
        // and stay open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Via 100/101 so that a source already at 3 or 4 is not
                // clobbered; dup2 leaves the copies without FD_CLOEXEC.
                if libc::dup2(a, 100) < 0
                    || libc::dup2(b, 101) < 0
                    || libc::dup2(100, 3) < 0
                    || libc::dup2(101, 4) < 0
                    || libc::close(100) < 0
                    || libc::close(101) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    assert!(cmd.status().unwrap().success());
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let fds = wait_exec(pid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(
        nums,
        [0, 1, 2, 3, 4],
        "init fds with --preserve-fds 2: {fds:?}"
    );
    assert!(
        fds[3].1.ends_with("extra") && fds[4].1.ends_with("extra"),
        "{fds:?}"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

// ---------------------------------------------------------------------------
// Mount destinations and rootfs paths that try to leave the rootfs.

/// Where cnfbox attaches the id-mapped rootfs view of container `id` of
/// `env` (see profile.rs `mount_dir`).
fn view_path(env: &Env, id: &str) -> PathBuf {
    use sha2::Digest;
    let canonical = fs::canonicalize(&env.root).unwrap_or_else(|_| env.root.clone());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Path::new("/run/cnfbox-mnt")
        .join(tag)
        .join("rootfs")
        .join(id)
}

fn tmpfs_at(dest: &str) -> serde_json::Value {
    json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1m"]})
}

#[test]
fn symlinked_and_dotdot_mount_destinations_stay_in_the_rootfs() {
    if !can_run("mount destinations") {
        return;
    }
    let env = Env::new();
    fs::create_dir_all(&env.root).unwrap();
    // A host directory the attacker wants to cover, with a file in it.
    let host_target = env.tmp.path().join("host-target");
    fs::create_dir_all(&host_target).unwrap();
    fs::write(host_target.join("precious"), "host").unwrap();
    let host_target_s = host_target.to_str().unwrap().to_string();

    let cases: Vec<(&str, String, String)> = vec![
        // /evil -> absolute host path
        ("abs", "evil".into(), host_target_s.clone()),
        // /evil -> ../../../.. host path
        (
            "rel",
            "evil".into(),
            format!("../../../../../../..{host_target_s}"),
        ),
        // The image's /proc and /sys are symlinks to the host directory:
        // the runtime's own proc and sysfs mounts must not follow them.
        ("proc", "proc".into(), host_target_s.clone()),
        ("sys", "sys".into(), host_target_s.clone()),
    ];
    for (name, link, target) in cases {
        let id = env.id(&format!("symdest-{name}"));
        let bundle = env.bundle(&format!("symdest-{name}"), |b| {
            b.args(["/bin/sh", "-c", "grep -c ' /evil ' /proc/self/mountinfo; ls /evil/precious 2>/dev/null && echo sees=host || echo sees=none"])
                .modify(edit(|d| {
                    d["mounts"].as_array_mut().unwrap().push(tmpfs_at("/evil"));
                }))
        });
        if matches!(name, "proc" | "sys") {
            fs::remove_dir(bundle.rootfs.join(&link)).unwrap();
        }
        std::os::unix::fs::symlink(&target, bundle.rootfs.join(&link)).unwrap();
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "symlinked destination {name}: {:?} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            assert_eq!(kv(&stdout, "sees"), "none", "{name}: {stdout}");
        }
        assert_eq!(
            fs::read_to_string(host_target.join("precious")).unwrap(),
            "host"
        );
        assert!(
            common::mounts_mentioning(&host_target_s).is_empty(),
            "{name}: a mount on the host target"
        );
        // The symlink still points where it did: the runtime did not follow
        // it to create or replace anything on the host.
        assert_eq!(
            fs::read_link(bundle.rootfs.join(&link)).unwrap(),
            Path::new(&target)
        );
        assert_nothing_left(&env, &id);
    }

    // A destination with `..` components climbing above the rootfs.
    let dotdot = format!("/../../../../../../..{host_target_s}");
    let (ok, out, _) = run_script(
        &env,
        "dotdot",
        "ls /precious 2>/dev/null; echo n=$(grep -c tmpfs /proc/self/mountinfo)",
        move |b| {
            b.modify(edit(move |d| {
                d["mounts"].as_array_mut().unwrap().push(tmpfs_at(&dotdot));
            }))
        },
    );
    eprintln!("dotdot destination: ok={ok} {out}");
    if ok {
        assert!(!out.contains("precious"), "{out}");
        // The runtime made the destination inside the rootfs.
        let inside = env
            .tmp
            .path()
            .join("dotdot/rootfs")
            .join(host_target_s.trim_start_matches('/'));
        assert!(inside.is_dir(), "{} was not created", inside.display());
    }
    assert_eq!(
        fs::read_to_string(host_target.join("precious")).unwrap(),
        "host"
    );
    assert!(common::mounts_mentioning(&host_target_s).is_empty());
}

/// CVE-2021-30465: `/dir` is swapped between a directory and a symlink
/// while the runtime mounts a tmpfs on `/dir/sub`. The symlink points at
/// the container's own rootfs view by its host path, `<view>/canary`: if
/// the runtime followed it on the host's terms, the tmpfs would cover
/// `/canary/sub` inside the container, hiding its marker file. Resolved
/// inside the root (as it must be), it lands on `<view>/canary/sub` under
/// the rootfs, which the test also creates so that both outcomes succeed.
#[test]
fn mount_destination_swapped_for_a_symlink_during_create() {
    if !can_run("symlink race") {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    fs::create_dir_all(&env.root).unwrap();
    let iterations = 40;
    let mut escaped = Vec::new();
    let mut created = 0;
    let mut total_flips = 0;
    for i in 0..iterations {
        let id = env.id("race");
        let view = view_path(&env, &id);
        let bundle = env.bundle(&format!("race{i}"), |b| {
            b.args([
                "/bin/sh",
                "-c",
                "echo marker=$(cat /canary/sub/marker); echo covered=$(grep -c ' /canary/sub ' /proc/self/mountinfo)",
            ])
            .modify(edit(|d| {
                d["mounts"].as_array_mut().unwrap().push(tmpfs_at("/dir/sub"));
            }))
        });
        let canary = bundle.rootfs.join("canary/sub");
        fs::create_dir_all(&canary).unwrap();
        fs::write(canary.join("marker"), "canary").unwrap();
        // Where the symlink leads when resolved inside the root.
        let in_root = bundle
            .rootfs
            .join(view.strip_prefix("/").unwrap())
            .join("canary/sub");
        fs::create_dir_all(&in_root).unwrap();
        fs::create_dir_all(bundle.rootfs.join("dir/sub")).unwrap();
        std::os::unix::fs::symlink(view.join("canary"), bundle.rootfs.join("link")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let stop = stop.clone();
            let path = |n: &str| {
                std::ffi::CString::new(bundle.rootfs.join(n).as_os_str().as_encoded_bytes())
                    .unwrap()
            };
            let (a, b) = (path("dir"), path("link"));
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: both paths are valid NUL-terminated strings
                    // owned by this closure.
                    let rc = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                    flips += 1;
                    std::thread::yield_now();
                }
                flips
            })
        };
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        stop.store(true, Ordering::Relaxed);
        total_flips += flipper.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            created += 1;
            if kv(&stdout, "marker") != "canary" || kv(&stdout, "covered") != "0" {
                escaped.push(format!("iteration {i}: {stdout}"));
            }
        }
        assert_eq!(fs::read_to_string(canary.join("marker")).unwrap(), "canary");
        assert_nothing_left(&env, &id);
    }
    eprintln!("symlink race: {created}/{iterations} creates succeeded, {total_flips} swaps");
    assert!(total_flips > 0);
    assert!(created > 0, "no create got through: the race was never run");
    assert!(
        escaped.is_empty(),
        "a mount followed a swapped symlink: {escaped:?}"
    );
}

#[test]
fn a_rootfs_that_is_a_symlink_is_refused() {
    if !can_run("rootfs symlink") {
        return;
    }
    let env = Env::new();
    for (name, target, why) in [
        ("slash", PathBuf::from("/"), "host's /"),
        ("etc", PathBuf::from("/etc"), "symlink"),
    ] {
        let bundle = env.bundle(&format!("rootlink-{name}"), |b| b.scenario(&Scenario::True));
        fs::create_dir_all(bundle.dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(&target, bundle.dir.join("hostroot")).unwrap();
        let mut spec = bundle.spec().unwrap();
        spec.root_mut()
            .as_mut()
            .unwrap()
            .set_path("hostroot".into());
        bundle.write_spec(&spec).unwrap();
        let id = env.id(&format!("rootlink-{name}"));
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        common::assert_one_line_error(&out, &["root.path", why]);
        assert_nothing_left(&env, &id);
    }
    // The host's / as the rootfs directly: container root would own the
    // host's files through the id-mapped view.
    let bundle = env.bundle("rootslash", |b| b.scenario(&Scenario::True));
    let mut spec = bundle.spec().unwrap();
    spec.root_mut().as_mut().unwrap().set_path("/".into());
    bundle.write_spec(&spec).unwrap();
    let id = env.id("rootslash");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    common::assert_one_line_error(&out, &["root.path", "/"]);
    assert_nothing_left(&env, &id);
}

// ---------------------------------------------------------------------------
// Masked and read-only paths, no_new_privileges, setuid binaries.

const PROC_SCRIPT: &str = r#"
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats; do
  [ -e $f ] || continue
  n=$(head -c 16 $f 2>/dev/null | wc -c)
  echo "read=$f:$n"
  # A masked file is /dev/null: writing "succeeds" and goes nowhere.
  echo "masked=$f:$(stat -c %t:%T $f)"
done
echo firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)
if ( echo x > /sys/firmware/x ) 2>/dev/null; then echo "write=/sys/firmware/x:ok"; fi
for f in /proc/sysrq-trigger /proc/sys/kernel/core_pattern /proc/sys/vm/drop_caches /proc/irq/default_smp_affinity /proc/bus/pci/devices; do
  [ -e $f ] || continue
  if ( echo 0 > $f ) 2>/dev/null; then echo "write=$f:ok"; fi
done
for f in /proc/kcore /proc/sysrq-trigger /sys/firmware /proc/sys; do
  if umount $f 2>/dev/null || umount -l $f 2>/dev/null; then echo "umount=$f:ok"; fi
done
if mount -t proc proc /tmp 2>/dev/null; then echo "mount=proc:ok"; fi
echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d '\t ' | cut -d: -f2)
echo capbnd=$(grep CapBnd /proc/self/status | tr -d '\t ' | cut -d: -f2)
echo done=1
"#;

#[test]
fn masked_and_readonly_paths_are_neither_readable_nor_writable() {
    if !can_run("masked paths") {
        return;
    }
    let env = Env::new();
    let core_pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let (ok, out, err) = run_script(&env, "masked", PROC_SCRIPT, |b| b);
    assert!(ok, "{err}");
    assert_eq!(kv(&out, "done"), "1", "{out}");
    for r in all(&out, "read") {
        assert!(r.ends_with(":0"), "masked file readable: {r}\n{out}");
    }
    let masked = all(&out, "masked");
    assert!(
        masked.len() >= 2,
        "the check must reach some masked files:\n{out}"
    );
    for m in masked {
        assert!(m.ends_with(":1:3"), "masked file is not /dev/null: {m}");
    }
    assert_eq!(kv(&out, "firmware"), "0", "/sys/firmware is masked: {out}");
    let writes = all(&out, "write");
    assert!(writes.is_empty(), "writable: {writes:?}");
    let umounts = all(&out, "umount");
    assert!(umounts.is_empty(), "a mask could be removed: {umounts:?}");
    assert!(
        all(&out, "mount").is_empty(),
        "pod root mounted proc: {out}"
    );
    assert_eq!(kv(&out, "nnp"), "1");
    let bnd = u64::from_str_radix(&kv(&out, "capbnd"), 16).unwrap();
    assert_eq!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN in the bounding set");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
}

#[test]
fn setuid_binaries_in_the_image_gain_nothing() {
    if !can_run("setuid") {
        return;
    }
    let env = Env::new();
    let script = "echo euid=$(/suid/busybox id -u); echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d '\\t ' | cut -d: -f2); \
                  /suid/busybox sh -c 'echo x > /etc/owned-by-root' 2>/dev/null && echo rootwrite=ok || echo rootwrite=denied";
    for nnp in [true, false] {
        let name = if nnp { "suid-nnp" } else { "suid-nonnp" };
        let bundle = env.bundle(name, |b| {
            b.args(["/bin/sh", "-c", script])
                .hard_link_busybox(false)
                .modify(edit(move |d| {
                    d["process"]["user"] = json!({"uid": 1000, "gid": 1000});
                    d["process"]["noNewPrivileges"] = json!(nnp);
                }))
        });
        // A setuid-root copy of busybox in the image (owned by uid 0 on disk).
        let suid = bundle.rootfs.join("suid/busybox");
        fs::create_dir(bundle.rootfs.join("suid")).unwrap();
        fs::copy(bundle.rootfs.join("bin/busybox"), &suid).unwrap();
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(bundle.rootfs.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        let id = env.id(name);
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert!(out.status.success(), "{name}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if nnp {
            assert_eq!(kv(&stdout, "nnp"), "1");
            assert_eq!(
                kv(&stdout, "euid"),
                "1000",
                "no_new_privileges ignored: {stdout}"
            );
            assert_eq!(kv(&stdout, "rootwrite"), "denied");
            assert!(!bundle.rootfs.join("etc/owned-by-root").exists());
        } else {
            // Without no_new_privileges the bit works inside, and only makes
            // the process the pod's root: a file it writes is uid 0 in the
            // image, which is no host privilege (the pod's range owns it).
            assert_eq!(kv(&stdout, "nnp"), "0");
            eprintln!("setuid without nnp: euid={}", kv(&stdout, "euid"));
        }
        assert_nothing_left(&env, &id);
    }
    // And from the host: a setuid process of the pod runs as the pod's
    // host uid, never as host root.
    let bundle = env.bundle("suid-host", |b| {
        b.args(["/suid/busybox", "sleep", "1000"])
            .hard_link_busybox(false)
            .modify(edit(|d| {
                d["process"]["user"] = json!({"uid": 1000, "gid": 1000});
                d["process"]["noNewPrivileges"] = json!(false);
            }))
    });
    let suid = bundle.rootfs.join("suid/busybox");
    fs::create_dir(bundle.rootfs.join("suid")).unwrap();
    fs::copy(bundle.rootfs.join("bin/busybox"), &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let id = env.id("suid-host");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let range = env
        .allocator()
        .show(&id)
        .unwrap()
        .unwrap()
        .mapping
        .uid
        .host_range();
    for line in status
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
    {
        for v in line.split_whitespace().skip(1) {
            let v: u32 = v.parse().unwrap();
            assert!(
                range.contains(v),
                "host id {v} outside the pod's range {range:?}: {line}"
            );
        }
    }
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

// ---------------------------------------------------------------------------
// Across pods.

const CROSS_POD: &str = r#"
t=$TARGET
[ -d /proc/$t ] && echo visible=yes || echo visible=no
kill -0 $t 2>/dev/null && echo signal=ok || echo signal=denied
kill -STOP $t 2>/dev/null && echo stop=ok || echo stop=denied
head -c 1 /proc/$t/environ >/dev/null 2>&1 && echo environ=ok || echo environ=denied
head -c 1 /proc/$t/mem >/dev/null 2>&1 && echo mem=ok || echo mem=denied
ls /proc/$t/root/ >/dev/null 2>&1 && echo root=ok || echo root=denied
( echo pwned > /proc/$t/root/tmp/pwned ) 2>/dev/null && echo write=ok || echo write=denied
( echo pwned > /proc/$t/cwd/pwned ) 2>/dev/null && echo cwdwrite=ok || echo cwdwrite=denied
nsenter -t $t -m true 2>/dev/null && echo nsenter=ok || echo nsenter=denied
( echo 1000 > /proc/$t/oom_score_adj ) 2>/dev/null && echo oom=ok || echo oom=denied
echo done=1
"#;

#[test]
fn a_pod_cannot_reach_another_pods_container() {
    if !can_run("cross pod") {
        return;
    }
    let env = Env::new();
    let victim_bundle = env.bundle("victim", |b| b.scenario(&Scenario::Sleep));
    let victim = env.id("victim");
    env.create(&victim_bundle, &victim);
    env.ok(&["start", &victim]);
    let pid = env.state(&victim)["pid"].as_i64().unwrap();
    // The attacker pod shares the host's pid namespace (hostPID), so it can
    // name the victim's init at all; it is root in its own user namespace
    // and holds every capability containerd grants by default.
    let pid_s = pid.to_string();
    let (ok, out, err) = run_script(&env, "attacker", CROSS_POD, move |b| {
        // procfs of the host's pid namespace cannot be mounted from a pod's
        // user namespace (the kernel refuses): bind the host's /proc.
        b.env("TARGET", pid_s)
            .annotation("cnfbox.io/idmap-volumes", "none")
            .modify(edit(|d| {
                d["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "pid");
                for m in d["mounts"].as_array_mut().unwrap() {
                    if m["destination"] == "/proc" {
                        *m = json!({"destination": "/proc", "type": "bind", "source": "/proc",
                                    "options": ["rbind", "nosuid", "noexec", "nodev"]});
                    }
                }
            }))
    });
    assert!(ok, "{err}");
    assert_eq!(kv(&out, "done"), "1");
    assert_eq!(
        kv(&out, "visible"),
        "yes",
        "control: the victim is visible: {out}"
    );
    for key in [
        "signal", "stop", "environ", "mem", "root", "write", "cwdwrite", "nsenter", "oom",
    ] {
        assert_eq!(kv(&out, key), "denied", "{key}: {out}");
    }
    assert!(!victim_bundle.rootfs.join("tmp/pwned").exists());
    assert_eq!(env.state(&victim)["status"], "running");
    // Control: the same script in the victim's own pod reaches its init.
    let mine = env.ok(&[
        "exec", "--env", "TARGET=1", &victim, "/bin/sh", "-c", CROSS_POD,
    ]);
    assert_eq!(kv(&mine, "signal"), "ok", "control in its own pod: {mine}");
    env.ok(&["delete", "--force", &victim]);
    assert_nothing_left(&env, &victim);
}

// ---------------------------------------------------------------------------
// Devices.

#[test]
fn only_the_specs_devices_exist_and_mknod_fails() {
    if !can_run("devices") {
        return;
    }
    let env = Env::new();
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("SKIP devices: the host has no /dev/net/tun to pass in");
        return;
    }
    let script = "echo dev=$(find /dev -type b -o -type c | sort | tr '\\n' ,); \
                  mknod /tmp/sda b 8 0 2>/dev/null && echo mknod_b=ok || echo mknod_b=denied; \
                  mknod /tmp/mem c 1 1 2>/dev/null && echo mknod_c=ok || echo mknod_c=denied; \
                  head -c 1 /dev/net/tun >/dev/null 2>&1; echo tun=$?";
    let (ok, out, err) = run_script(&env, "devices", script, |b| {
        b.modify(edit(|d| {
            d["linux"]["devices"] = json!([{"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200, "fileMode": 438, "uid": 0, "gid": 0}]);
            d["linux"]["resources"]["devices"]
                .as_array_mut()
                .unwrap()
                .push(json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}));
        }))
    });
    assert!(ok, "{err}");
    let devs: Vec<&str> = kv(&out, "dev")
        .leak()
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    let allowed = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
        "/dev/pts/ptmx",
        "/dev/console",
        "/dev/net/tun",
    ];
    for d in &devs {
        assert!(
            allowed.contains(d),
            "unexpected device {d} inside: {devs:?}"
        );
    }
    assert!(
        devs.contains(&"/dev/net/tun"),
        "the spec's device is there: {devs:?}"
    );
    assert_eq!(kv(&out, "mknod_b"), "denied");
    assert_eq!(kv(&out, "mknod_c"), "denied");
}

// ---------------------------------------------------------------------------
// The spec on the host.

/// The spec cnfbox keeps for `exec` carries the process environment (where
/// Kubernetes puts secrets); other host users may not read it, though the
/// state root is traversable.
#[test]
fn the_kept_spec_and_its_secrets_are_private_to_root() {
    if !can_run("private spec") {
        return;
    }
    let env = Env::new();
    // Traversable like /run, which holds the default state root.
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let bundle = env.bundle("secret", |b| {
        b.scenario(&Scenario::Sleep).env("DB_PASSWORD", "hunter2")
    });
    let id = env.id("secret");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    // exec still reads it (as uid 0 after joining the pod's user namespace).
    let out = env.ok(&["exec", &id, "/bin/sh", "-c", "echo $DB_PASSWORD"]);
    assert_eq!(out.trim(), "hunter2");
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("setpriv from util-linux")
    };
    let dir = env.root.join(&id);
    // Control: another user reaches the container's state dir.
    let ls = as_nobody(&["ls", dir.to_str().unwrap()]);
    assert!(
        ls.status.success(),
        "control: nobody lists {}",
        dir.display()
    );
    let spec = dir.join("bundle/config.json");
    assert!(spec.exists());
    let cat = as_nobody(&["cat", spec.to_str().unwrap()]);
    assert!(
        !cat.status.success() && !String::from_utf8_lossy(&cat.stdout).contains("hunter2"),
        "another host user read {}",
        spec.display()
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}
