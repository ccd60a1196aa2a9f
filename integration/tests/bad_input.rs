//! Bad input: a one-line error naming what was wrong, a non-zero exit, and
//! nothing left behind (state dir, cgroup, mount).

mod common;

use std::fs;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use test_bundles::Scenario;

#[test]
fn missing_bundle() {
    if !can_run("missing bundle") {
        return;
    }
    let env = Env::new();
    let id = env.id("nob");
    let missing = env.tmp.path().join("no-such-bundle");
    let out = env.run(&["create", "--bundle", missing.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["no-such-bundle"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn malformed_config_names_the_field() {
    if !can_run("malformed config") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("bad", |b| b.scenario(&Scenario::True));
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fs::read(&bundle.config_path).unwrap()).unwrap();
    doc["process"]["user"]["uid"] = serde_json::json!("root");
    fs::write(&bundle.config_path, doc.to_string()).unwrap();
    let id = env.id("malformed");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["config.json", "process.user.uid"]);
    assert_nothing_left(&env, &id);

    fs::write(&bundle.config_path, b"{\"ociVersion\": \"1.0.2\", ").unwrap();
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["malformed", "config.json"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn misspelt_config_toml_is_refused_with_its_line() {
    if !can_run("config.toml section") {
        return;
    }
    let env = Env::new();
    let config = env.config.clone().expect("env config");
    // Three lines: [idmap], pool, ledger_dir.
    let idmap = fs::read_to_string(&config).unwrap();
    // The tenant asks for NET_ADMIN: with the admin's `allow = []` lost to
    // a misspelt section, the default allowlist (NET_ADMIN included) would
    // grant it.
    let bundle = env.bundle("netwrok", |b| {
        b.scenario(&Scenario::True).modify(|s| {
            s.set_annotations(Some(
                [(cnfbox_annotations::CAPABILITIES.into(), "NET_ADMIN".into())].into(),
            ));
        })
    });
    let id = env.id("netwrok");
    for (extra, what) in [
        (
            "[capabilites]\nallow = []\n",
            ":4: unknown section [capabilites] (known: idmap, numa, capabilities, network, devices, pods)",
        ),
        (
            "\n[netwrok]\nmovable = [\"vf*\"]\n",
            ":5: unknown section [netwrok] (known: idmap, numa, capabilities, network, devices, pods)",
        ),
        (
            "[devices]\nalow = [\"c 10:232\"]\n",
            ":5: unknown field `alow` in [devices] (known: allow)",
        ),
        (
            "[network]\nmax_attachments = \"4\"\n",
            ":5: [network] max_attachments: invalid type: string \"4\", expected usize",
        ),
    ] {
        fs::write(&config, format!("{idmap}{extra}")).unwrap();
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        let want = format!("{}{what}", config.display());
        assert_one_line_error(&out, &[&want]);
        assert_nothing_left(&env, &id);
    }
}

#[test]
fn unsupported_oci_version() {
    if !can_run("ociVersion") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("v2", |b| {
        b.scenario(&Scenario::True).modify(|s| {
            s.set_version("2.0.0".into());
        })
    });
    let id = env.id("v2");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["ociVersion", "2.0.0"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn missing_rootfs() {
    if !can_run("missing rootfs") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("norootfs", |b| b.scenario(&Scenario::True));
    fs::remove_dir_all(&bundle.rootfs).unwrap();
    let id = env.id("norootfs");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["root.path", "does not exist"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn duplicate_id_keeps_the_first_container() {
    if !can_run("duplicate id") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("dup", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("dup");
    env.create(&bundle, &id);
    let pid = env.state(&id)["pid"].clone();
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &[&id, "already exists"]);
    let s = env.state(&id);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid, "the first container is untouched");
    assert!(
        !common::cgroup_dirs_named(&id).is_empty(),
        "first container's cgroup kept"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn unknown_id_for_every_command() {
    if !can_run("unknown id") {
        return;
    }
    let env = Env::new();
    for args in [
        vec!["state", "ghost"],
        vec!["start", "ghost"],
        vec!["kill", "ghost", "KILL"],
        vec!["delete", "ghost"],
        vec!["exec", "ghost", "/bin/true"],
        vec!["ps", "ghost"],
        vec!["pause", "ghost"],
        vec!["resume", "ghost"],
        vec!["events", "--stats", "ghost"],
    ] {
        let out = env.run(&args);
        assert_one_line_error(&out, &["ghost", "does not exist"]);
    }
    let out = env.run(&["state", "../etc"]);
    assert_one_line_error(&out, &["invalid container id"]);
    assert!(!env.root.join("ghost").exists());
}

#[test]
fn invalid_signal() {
    if !can_run("invalid signal") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sig", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("sig");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    for bad in ["SIGBOGUS", "0x9", "99"] {
        let out = env.run(&["kill", &id, bad]);
        assert_one_line_error(&out, &["invalid signal", bad]);
    }
    assert_eq!(
        env.state(&id)["status"],
        "running",
        "a bad kill leaves it running"
    );
    env.ok(&["kill", &id, "9"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn failing_process_start_leaves_nothing() {
    if !can_run("bad args") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("noexec", |b| b.args(["/bin/does-not-exist"]));
    let id = env.id("noexec");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    let _ = env.run(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn systemd_cgroup_without_systemd() {
    if !can_run("--systemd-cgroup") {
        return;
    }
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("SKIP systemd_cgroup_without_systemd: systemd runs on this host");
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sd", |b| b.scenario(&Scenario::True));
    let id = env.id("sd");
    let out = env.run(&[
        "--systemd-cgroup",
        "create",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert_one_line_error(&out, &["--systemd-cgroup", "systemd is not running"]);
    assert_nothing_left(&env, &id);
}

/// A node with no host ID pool (no `[idmap] pool`, no `cnfbox:` lines in
/// /etc/subuid) refuses a pod with the pool's one-line error and leaves
/// nothing, not even the journal: the undo of the range it never got used
/// to need the pool too ("could not undo range ... kept in its journal").
#[test]
fn a_node_without_a_pool_refuses_the_pod_and_leaves_nothing() {
    const T: &str = "no host ID pool";
    if !can_run(T) {
        return;
    }
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    if subuid.lines().any(|l| l.starts_with("cnfbox:")) {
        eprintln!("SKIP {T}: /etc/subuid gives cnfbox a pool on this host");
        return;
    }
    let env = Env::new();
    let config = env.config.clone().expect("env config");
    let text = fs::read_to_string(&config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("pool"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text, "the test's config names a pool: {text}");
    fs::write(&config, &without).unwrap();
    let bundle = env.bundle("nopool", |b| b.scenario(&Scenario::True));
    let id = env.id("nopool");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    let err = assert_one_line_error(&out, &["no host ID pool", "[idmap] pool"]);
    assert!(!err.contains("undo"), "{err}");
    fs::write(&config, &text).unwrap();
    assert_nothing_left(&env, &id);
}

/// Failures inside libcontainer's init keep their innermost cause on the
/// one line (it was only in `--debug` output): proc mounted on a symlink,
/// and a capability set the kernel refuses (with its errno name).
#[test]
fn init_failures_name_their_cause() {
    if !can_run("init failure causes") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("symproc", |b| {
        b.scenario(&Scenario::True).modify(|s| {
            let mut mounts = s.mounts().clone().unwrap_or_default();
            for m in mounts
                .iter_mut()
                .filter(|m| m.destination() == std::path::Path::new("/proc"))
            {
                m.set_destination("/realproc".into());
            }
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination("/proc")
                    .typ("proc")
                    .source("proc")
                    .build()
                    .unwrap(),
            );
            s.set_mounts(Some(mounts));
        })
    });
    let proc_dir = bundle.rootfs.join("proc");
    let _ = fs::remove_dir(&proc_dir);
    fs::create_dir_all(bundle.rootfs.join("realproc")).unwrap();
    std::os::unix::fs::symlink("realproc", &proc_dir).unwrap();
    let id = env.id("symproc");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    let line = assert_one_line_error(
        &out,
        &[
            "prepare rootfs",
            "proc must be mounted on ordinary directory",
        ],
    );
    assert!(line.starts_with("cnfbox: error: "), "{line}");
    assert_nothing_left(&env, &id);

    // A capability outside this process's bounding set, asked for in the
    // host user namespace: capset(2) fails with EPERM.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let Some(missing) = (0..=40u32).find(|b| bnd & (1u64 << b) == 0) else {
        eprintln!("SKIP refused capset cause: this host's bounding set has every capability");
        return;
    };
    let names = caps_names();
    let name = names[missing as usize];
    let config = env.config.clone().unwrap();
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("[idmap]\n", "[idmap]\nallow_host_userns = true\n");
    fs::write(
        &config,
        format!("{text}[capabilities]\nallow = [\"{name}\"]\n"),
    )
    .unwrap();
    let bundle = env.bundle("badcaps", |b| {
        b.scenario(&Scenario::True)
            .annotation("cnfbox.io/userns", "host")
            .modify(move |s| {
                let p = s.process_mut().as_mut().unwrap();
                let mut caps = p.capabilities().clone().unwrap_or_default();
                let cap: oci_spec::runtime::Capability = name.parse().unwrap();
                let mut eff = caps.effective().clone().unwrap_or_default();
                eff.insert(cap);
                let mut prm = caps.permitted().clone().unwrap_or_default();
                prm.insert(cap);
                caps.set_effective(Some(eff));
                caps.set_permitted(Some(prm));
                p.set_capabilities(Some(caps));
            })
    });
    let id = env.id("badcaps");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["capabilities", "EPERM"]);
    assert_nothing_left(&env, &id);
}

/// Capability names by number, as oci-spec parses them (without CAP_).
fn caps_names() -> Vec<&'static str> {
    vec![
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
}

/// Issue 25: a state root another host user can write (or owns) is where
/// they plant the journals and state that root's commands act on (a
/// journal made `delete --force` remove any directory it named). Every
/// command that reads the root refuses it, naming the path and the
/// problem, and makes nothing.
#[test]
fn a_state_root_others_can_write_is_refused_by_every_command() {
    if !can_run("unsafe state root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let bundle = env.bundle("unsafe-root", |b| b.scenario(&Scenario::True));
    let id = env.id("unsaferoot");
    let root = env.root.to_str().unwrap().to_string();
    fs::create_dir_all(&env.root).unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["create", "-b", bundle.dir.to_str().unwrap(), &id],
        vec!["run", "-b", bundle.dir.to_str().unwrap(), &id],
        vec!["state", &id],
        vec!["list"],
        vec!["kill", &id, "KILL"],
        vec!["delete", "--force", &id],
        vec!["ps", &id],
        vec!["inspect", &id],
    ];
    for (mode, owner, problem) in [
        (0o777, 0, "writable by group or others"),
        (0o1777, 0, "writable by group or others"),
        (0o775, 0, "writable by group or others"),
        (0o755, 65534, "owned by uid 65534"),
    ] {
        std::os::unix::fs::chown(&env.root, Some(owner), Some(owner)).unwrap();
        fs::set_permissions(&env.root, fs::Permissions::from_mode(mode)).unwrap();
        for args in &commands {
            // Output through files: a detached init (a create that was
            // let through) would hold a pipe open.
            let err_path = env.tmp.path().join("unsafe-root.err");
            let status = env
                .command()
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(&err_path).unwrap())
                .status()
                .expect("spawn cnfbox");
            let out = std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: fs::read(&err_path).unwrap(),
            };
            assert_one_line_error(&out, &["state root", &root, problem]);
            assert_nothing_left(&env, &id);
        }
    }
    std::os::unix::fs::chown(&env.root, Some(0), Some(0)).unwrap();
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o711)).unwrap();
    env.ok(&["list"]);
}
