//! `create` flags: `--pid-file`, `--console-socket` (and a terminal
//! without one), `--preserve-fds`, `--no-pivot`.

use super::*;

#[test]
fn create_pid_file_holds_the_init_pid() {
    if !can_run("create --pid-file") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("pidfile", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("pidfile");
    let pid_file = env.tmp.path().join("init.pid");
    create_with(
        &env,
        &bundle,
        &id,
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    let written: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written by create")
        .trim()
        .parse()
        .expect("pid file holds a number");
    let s = env.state(&id);
    assert_eq!(s["pid"].as_i64(), Some(written), "pid file vs state: {s}");
    assert!(written > 1 && Path::new(&format!("/proc/{written}")).exists());
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn create_console_socket_hands_over_the_pty_master() {
    if !can_run("create --console-socket") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("console", |b| {
        b.terminal(true).args(["/bin/sh", "-c", "tty; echo ok"])
    });
    let id = env.id("console");
    let socket = ConsoleSocket::bind(&env, "console");
    // Relative to the caller's cwd, as runc takes it (containerd passes an
    // absolute path; the exec test below uses both).
    let mut cmd = cnfbox(&env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir)
        .arg("--console-socket")
        .arg(socket.path.file_name().unwrap())
        .arg(&id)
        .current_dir(env.tmp.path());
    let (out, _) = run_to_files(&env, &mut cmd, "create-console");
    assert_ok(&out, "create --console-socket (relative path)");
    let master = socket.receive_master();
    env.ok(&["start", &id]);
    let out = read_pty(master, "ok");
    assert_tty_output(&out);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn terminal_without_console_socket_is_refused() {
    if !can_run("terminal without --console-socket") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("noconsole", |b| {
        b.terminal(true).args(["/bin/sh", "-c", "tty; echo ok"])
    });
    let id = env.id("noconsole");
    let mut cmd = cnfbox(&env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir).arg(&id);
    let (out, _) = run_to_files(&env, &mut cmd, "noconsole");
    assert_one_line_error(&out, &["process.terminal", "--console-socket"]);
    assert_nothing_left(&env, &id);
}

/// `ls -l /proc/self/fd` output as (fd, target) pairs.
fn parse_fd_listing(out: &str) -> Vec<(u32, String)> {
    out.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.trim().to_string()))
        })
        .collect()
}

/// Whether `target` is `ls`'s own handle on the directory it lists.
fn is_listing_dir(target: &str) -> bool {
    target
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/fd"))
        .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Opens `content` in a file and passes it to `create` as fd 3.
fn create_with_fd3(env: &Env, bundle: &Bundle, id: &str, extra: &[&str], fd3: &File) -> PathBuf {
    let mut cmd = cnfbox(env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir).args(extra).arg(id);
    let src = fd3.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and only calls
    // dup2(2) and fcntl(2), which are async-signal-safe and allocate nothing;
    // `src` is open in the child because `fd3` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if src == 3 {
                // dup2 onto itself would keep O_CLOEXEC: clear it instead.
                fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))?;
            } else {
                nix::unistd::dup2(src, 3)?;
            }
            Ok(())
        });
    }
    let (out, stdout) = run_to_files(env, &mut cmd, "create-fd3");
    assert_ok(&out, &format!("create {extra:?} {id} with fd 3"));
    stdout
}

#[test]
fn preserve_fds_passes_fd_3_and_only_with_the_flag() {
    if !can_run("create --preserve-fds") {
        return;
    }
    let env = Env::new();
    let content = format!("preserved-{}", std::process::id());
    let file_path = env.tmp.path().join("fd3-source");
    fs::write(&file_path, format!("{content}\n")).unwrap();

    let bundle = env.bundle("fds", |b| {
        b.args([
            "/bin/sh",
            "-c",
            "cat <&3; echo; echo --; ls -l /proc/self/fd",
        ])
    });
    let id = env.id("fds");
    let fd3 = File::open(&file_path).unwrap();
    let stdout = create_with_fd3(&env, &bundle, &id, &["--preserve-fds", "1"], &fd3);
    let out = start_and_collect(&env, &id, &stdout);
    let (read, listing) = out.split_once("--\n").expect("marker line");
    assert_eq!(read.trim(), content, "cat <&3 inside: {out}");
    let fds = parse_fd_listing(listing);
    let fd3_target = fds.iter().find(|(fd, _)| *fd == 3).map(|(_, t)| t.as_str());
    assert!(
        fd3_target.is_some_and(|t| t.ends_with("fd3-source")),
        "fd 3 inside is not the passed file: {listing}"
    );
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);

    // Same fd 3 offered, no flag: the container must not see it (runc closes
    // every fd above 2 + --preserve-fds before exec).
    let bare = env.bundle("nofds", |b| b.args(["/bin/ls", "-l", "/proc/self/fd"]));
    let id = env.id("nofds");
    let stdout = create_with_fd3(&env, &bare, &id, &[], &fd3);
    let listing = start_and_collect(&env, &id, &stdout);
    let fds = parse_fd_listing(&listing);
    let open: BTreeSet<u32> = fds
        .iter()
        .filter(|(_, target)| !is_listing_dir(target))
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(
        open,
        BTreeSet::from([0, 1, 2]),
        "fds inside without --preserve-fds: {listing}"
    );
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn no_pivot_still_roots_the_container_in_its_rootfs() {
    if !can_run("create --no-pivot") {
        return;
    }
    let env = Env::new();
    let bundle_dir = env.tmp.path().join("nopivot");
    let host_probe = bundle_dir.join("config.json");
    let script = format!(
        "cat /marker; if [ -e {} ]; then echo host-visible; else echo host-hidden; fi; ls -a /",
        host_probe.display()
    );
    let bundle = env.bundle("nopivot", |b| b.args(["/bin/sh", "-c", &script]));
    let marker = format!("rootfs-of-{}", std::process::id());
    fs::write(bundle.rootfs.join("marker"), format!("{marker}\n")).unwrap();
    let id = env.id("nopivot");
    let stdout = create_with(&env, &bundle, &id, &["--no-pivot"]);
    let out = start_and_collect(&env, &id, &stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(marker.as_str()), "{out}");
    assert_eq!(lines.next(), Some("host-hidden"), "{out}");
    let inside: BTreeSet<String> = lines
        .flat_map(str::split_whitespace)
        .filter(|n| *n != "." && *n != "..")
        .map(str::to_string)
        .collect();
    let on_host: BTreeSet<String> = fs::read_dir(&bundle.rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(inside, on_host, "`ls /` inside vs the rootfs on the host");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}
