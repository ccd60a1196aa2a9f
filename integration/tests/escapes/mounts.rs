//! Mount destinations and rootfs paths that try to leave the rootfs.

use super::*;

// ---------------------------------------------------------------------------
// Mount destinations and rootfs paths that try to leave the rootfs.

/// Where cnfbox attaches the id-mapped rootfs view of container `id` of
/// `env` (see runtime/src/views.rs).
fn view_path(env: &Env, id: &str) -> PathBuf {
    use sha2::Digest;
    let canonical = fs::canonicalize(&env.root).unwrap_or_else(|_| env.root.clone());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Path::new("/run/cnfbox-mnt")
        .join(tag)
        .join("rootfs")
        .join(id)
        .join("root")
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
        ("slash", PathBuf::from("/"), "symlink"),
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

/// Issue 25: `root.path` through a symlink, spelt so that the old check
/// (last component, relative prefixes only) missed it: a trailing `/`, or
/// an absolute path with the symlink in a middle component. The link names
/// a host directory (here another bundle's rootfs, so the container can
/// start) holding a 0600 root-owned file; pod root, owner of host uid 0's
/// files through the id-mapped view, read it and planted a file there.
#[test]
fn a_rootfs_through_a_symlink_with_a_slash_or_in_the_middle_is_refused() {
    if !can_run("rootfs symlink spellings") {
        return;
    }
    let env = Env::new();
    let host = env.bundle("rootmid-host", |b| b.scenario(&Scenario::True));
    fs::write(host.rootfs.join("secret"), "host-secret").unwrap();
    fs::set_permissions(
        host.rootfs.join("secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let script = "cat /secret; echo planted > /planted; echo done";
    for name in ["slash", "middle"] {
        let bundle = env.bundle(&format!("rootmid-{name}"), |b| {
            b.args(["/bin/sh", "-c", script])
        });
        let root_path = match name {
            // `link/` names the host directory itself.
            "slash" => {
                std::os::unix::fs::symlink(&host.rootfs, bundle.dir.join("link")).unwrap();
                "link/".to_string()
            }
            // `<bundle>/via/rootfs`, `via` naming the host bundle.
            _ => {
                std::os::unix::fs::symlink(&host.dir, bundle.dir.join("via")).unwrap();
                format!("{}/via/rootfs", bundle.dir.display())
            }
        };
        let mut spec = bundle.spec().unwrap();
        spec.root_mut()
            .as_mut()
            .unwrap()
            .set_path(root_path.clone().into());
        bundle.write_spec(&spec).unwrap();
        let id = env.id(&format!("rootmid-{name}"));
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("host-secret"),
            "{name}: pod root read the host's 0600 file: {stdout}"
        );
        assert!(
            !host.rootfs.join("planted").exists(),
            "{name}: pod root planted a file in the host directory"
        );
        assert_one_line_error(&out, &["root.path", &root_path, "symlink"]);
        assert_nothing_left(&env, &id);
    }
}
