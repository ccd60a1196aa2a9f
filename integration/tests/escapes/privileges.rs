//! Masked paths, setuid binaries, other pods, devices, the spec on the host.

use super::*;

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
    // A hostPID pod (no pid namespace of its own) is refused by default
    // ([pods] host_namespaces); with the opt-in it runs as host root, as
    // under runc, so there is no pod-userns attacker in the host's pid
    // namespace any more.
    let hostpid = env.bundle("attacker-hostpid", |b| {
        b.scenario(&Scenario::True).modify(edit(|d| {
            d["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "pid");
        }))
    });
    let hostpid_id = env.id("attacker-hostpid");
    let refused = env.run(&["create", "-b", hostpid.dir.to_str().unwrap(), &hostpid_id]);
    assert_one_line_error(&refused, &["no pid namespace", "[pods]", "host_namespaces"]);
    assert_nothing_left(&env, &hostpid_id);
    // The attack as such a pod was: root of another pod's user namespace
    // (every capability of it, more than containerd's default set) that
    // still sees the host's pid namespace and /proc, so it can name the
    // victim's init at all. nsenter puts a host shell in the attacker
    // pod's user namespace and nothing else.
    let attacker_bundle = env.bundle("attacker", |b| b.scenario(&Scenario::Sleep));
    let attacker = env.id("attacker");
    env.create(&attacker_bundle, &attacker);
    env.ok(&["start", &attacker]);
    let apid = env.state(&attacker)["pid"].as_i64().unwrap().to_string();
    let run = std::process::Command::new("nsenter")
        .args(["-t", &apid, "-U", "--", "/bin/sh", "-c", CROSS_POD])
        .env("TARGET", pid.to_string())
        .current_dir("/")
        .output()
        .expect("nsenter");
    let (ok, out, err) = (
        run.status.success(),
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    );
    env.ok(&["delete", "--force", &attacker]);
    assert_nothing_left(&env, &attacker);
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
    // The state root is traversable, the container's directory is not
    // (0700: it also holds exec process files, which carry the environment).
    let ls = as_nobody(&["ls", dir.to_str().unwrap()]);
    assert!(
        !ls.status.success(),
        "another host user listed {}",
        dir.display()
    );
    assert!(
        as_nobody(&["stat", dir.to_str().unwrap()]).status.success(),
        "control: nobody reaches {} through the state root",
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
    // And the file itself stays 0600 after the exec rewrote it.
    let mode = fs::metadata(&spec).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", spec.display());
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

/// Issue 25: while create runs, another host user read
/// `<root>/<id>/youki_config.json` (libcontainer's 0755 state dir), and in
/// it every hook's environment. A createRuntime hook, run by the runtime
/// in the middle of create, has uid 65534 read every `youki_config.json`
/// host root can see under the state root at that moment (and records the
/// directory's mode, for the message).
#[test]
fn the_state_dir_is_private_while_create_runs() {
    if !can_run("state dir during create") {
        return;
    }
    let env = Env::new();
    // Traversable like /run, which holds the default state root.
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let out = env.tmp.path().join("during");
    fs::create_dir(&out).unwrap();
    let hook = env.tmp.path().join("peek-hook");
    let root = env.root.display();
    let o = out.display();
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\
             for f in {root}/*/youki_config.json {root}/.staging/*/*/*/youki_config.json; do\n\
             \x20 [ -e \"$f\" ] || continue\n\
             \x20 echo \"$f\" >> {o}/seen\n\
             \x20 stat -c '%a %n' \"$(dirname \"$f\")\" >> {o}/modes\n\
             \x20 setpriv --reuid=65534 --regid=65534 --clear-groups cat \"$f\" >> {o}/read 2>/dev/null\n\
             done\n\
             true\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = env.bundle("peek", |b| {
        let hook = hook.clone();
        b.scenario(&Scenario::True).modify(move |s| {
            let h = oci_spec::runtime::HookBuilder::default()
                .path(&hook)
                .env(vec![
                    "PATH=/usr/bin:/bin:/usr/sbin:/sbin".to_string(),
                    "HOOK_TOKEN=hook-secret-42".to_string(),
                ])
                .build()
                .unwrap();
            let hooks = oci_spec::runtime::HooksBuilder::default()
                .create_runtime(vec![h])
                .build()
                .unwrap();
            s.set_hooks(Some(hooks));
        })
    });
    let id = env.id("peek");
    env.create(&bundle, &id);
    let seen = fs::read_to_string(out.join("seen")).unwrap_or_default();
    let modes = fs::read_to_string(out.join("modes")).unwrap_or_default();
    let read = fs::read_to_string(out.join("read")).unwrap_or_default();
    eprintln!("during create: seen {seen:?}, modes {modes:?}");
    assert!(
        seen.contains("youki_config.json"),
        "control: the hook found no youki_config.json during create"
    );
    assert!(
        !read.contains("hook-secret-42"),
        "another host user read a hook's environment during create (modes: {modes})"
    );
    let mode = fs::metadata(env.root.join(&id))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}
