//! Id-mapped mounts on real filesystems: ext4 and tmpfs work, hugetlbfs is
//! refused with a message naming it. Runs as root; every mount is undone by
//! a guard, even when an assertion fails.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idmap::mount::{fs_name, idmapped_bind, MountError};
use idmap::userns::{ns_id, UsernsCache};
use idmap::{Mapping, PodMapping};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const HOST_BASE: u32 = 100_000;

/// Prints past libtest's output capture (which only catches the print
/// macros), so that a skip or a fallback is visible even when the test
/// passes.
fn loud(msg: &str) {
    // Nothing sensible to do if stderr is gone; the assertions stand alone.
    writeln!(std::io::stderr().lock(), "{msg}").ok();
}

fn mapping() -> PodMapping {
    PodMapping::symmetric(Mapping::new(0, HOST_BASE, 65_536).expect("mapping"))
}

/// Unmounts (lazily) on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.0, MntFlags::MNT_DETACH) {
            loud(&format!("cleanup: umount {}: {e}", self.0.display()));
        }
    }
}

/// A 0755 scratch directory under the cargo target dir (on the disk, not in
/// a tmpfs /tmp), so that uid 100000 can traverse it.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("idmap-mount-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn mkdir(path: &Path) -> PathBuf {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

/// Runs `argv` in the user namespace `ns`; with `as_root`, as uid/gid 0 of
/// that namespace (host 100000) with no supplementary groups.
fn in_userns(ns: &OwnedFd, as_root: bool, argv: &[&str]) -> Output {
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (setns, setgroups, setresgid, setresuid) on
    // an fd that stays open until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if as_root
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(0, 0, 0) != 0
                    || libc::setresuid(0, 0, 0) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("spawn in user namespace");
    assert!(
        out.status.success(),
        "{argv:?} in userns failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The id-mapped mount checks on a directory tree at `base` (any
/// filesystem that supports id-mapped mounts): a root-owned source seen
/// through a mount mapped to 100000 is owned by 0 inside a user namespace
/// with that mapping, and a write there lands on disk as uid 0.
fn check_idmapped_mount(base: &Path, target_base: &Path) {
    let src = mkdir(&base.join("src"));
    std::fs::write(src.join("file"), b"host root's file").expect("write");
    let target = mkdir(&target_base.join("target"));
    let m = mapping();
    idmapped_bind(&src, &target, &m).expect("id-mapped bind mount");
    let _mounted = Mounted(target.clone());

    // From the host: on-disk root appears as host uid 100000.
    let md = std::fs::metadata(&target).expect("stat target");
    assert_eq!((md.uid(), md.gid()), (HOST_BASE, HOST_BASE));
    assert_eq!(
        std::fs::metadata(target.join("file")).expect("stat").uid(),
        HOST_BASE
    );
    assert_eq!(
        std::fs::metadata(&src).expect("stat src").uid(),
        0,
        "source unchanged"
    );

    // From inside a user namespace with the same mapping: owned by 0.
    let ns = UsernsCache::global().get(&m).expect("userns fd");
    let t = target.to_str().expect("utf8");
    let f = target.join("file");
    let out = in_userns(
        &ns,
        false,
        &["stat", "-c", "%u:%g", t, f.to_str().expect("utf8")],
    );
    assert_eq!(stdout(&out), "0:0\n0:0\n");
    // Contrast: the plain source is unmapped there (the overflow uid).
    let out = in_userns(
        &ns,
        false,
        &["stat", "-c", "%u", src.to_str().expect("utf8")],
    );
    assert_eq!(stdout(&out), "65534\n");

    // Container root writes through the mount; the disk records uid 0.
    let script = format!("echo hi > {t}/new && mkdir {t}/newdir && id -u");
    let out = in_userns(&ns, true, &["sh", "-c", &script]);
    assert_eq!(stdout(&out), "0\n");
    for name in ["new", "newdir"] {
        let on_disk = std::fs::metadata(src.join(name)).expect("stat on disk");
        assert_eq!((on_disk.uid(), on_disk.gid()), (0, 0), "{name} on disk");
        let via_mount = std::fs::metadata(target.join(name)).expect("stat via mount");
        assert_eq!(via_mount.uid(), HOST_BASE, "{name} via mount");
    }
}

/// An ext4 directory: the scratch dir if it is on ext4, else a loop-mounted
/// ext4 image. `None` (after saying why) if neither can be had.
fn ext4_base(scratch: &Path) -> Option<(PathBuf, Option<Mounted>)> {
    match fs_name(scratch) {
        Ok("ext4") => return Some((scratch.to_owned(), None)),
        Ok(other) => loud(&format!(
            "{} is {other}; trying a loop-mounted ext4 image",
            scratch.display()
        )),
        Err(e) => loud(&format!(
            "statfs {}: {e}; trying a loop-mounted ext4 image",
            scratch.display()
        )),
    }
    let img = scratch.join("ext4.img");
    let dir = mkdir(&scratch.join("ext4"));
    let made = std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .is_ok()
        && Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
    if !made {
        loud("SKIP: no ext4 here: scratch dir is not ext4 and mkfs.ext4 + loop mount failed");
        return None;
    }
    let guard = Mounted(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Some((dir, Some(guard)))
}

#[test]
fn idmapped_mount_on_ext4() {
    let d = scratch();
    let Some((base, _guard)) = ext4_base(d.path()) else {
        return;
    };
    assert_eq!(fs_name(&base).expect("statfs"), "ext4");
    check_idmapped_mount(&base, d.path());
}

#[test]
fn idmapped_mount_on_tmpfs() {
    let d = scratch();
    let fs = mkdir(&d.path().join("tmpfs"));
    if let Err(e) = mount(
        Some("tmpfs"),
        &fs,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    ) {
        loud(&format!(
            "SKIP: cannot mount tmpfs on {}: {e}",
            fs.display()
        ));
        return;
    }
    let _tmpfs = Mounted(fs.clone());
    assert_eq!(fs_name(&fs).expect("statfs"), "tmpfs");
    check_idmapped_mount(&fs, d.path());
}

/// Mounts `fstype` on a fresh directory and tries to id-map it. `Ok(None)`
/// if the kernel id-mapped it (the mount is undone), `Ok(Some(err))` with
/// the refusal, `Err(why)` if the filesystem cannot even be mounted here.
fn try_idmap_fs(base: &Path, fstype: &str) -> Result<Option<MountError>, String> {
    let fs = mkdir(&base.join(fstype));
    mount(
        Some("none"),
        &fs,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount {fstype} on {}: {e}", fs.display()))?;
    let _fs = Mounted(fs.clone());
    let target = mkdir(&base.join(format!("{fstype}-target")));
    match idmapped_bind(&fs, &target, &mapping()) {
        Ok(()) => {
            let _undo = Mounted(target.clone());
            let uid = std::fs::metadata(&target).expect("stat").uid();
            assert_eq!(
                uid, HOST_BASE,
                "{fstype} id-mapped but root not shown as {HOST_BASE}"
            );
            Ok(None)
        }
        Err(e) => {
            assert!(!target.join("x").exists());
            Ok(Some(e))
        }
    }
}

fn assert_clear_refusal(err: &MountError, fs: &Path, fstype: &str) {
    assert!(matches!(err, MountError::SetIdmap { .. }), "{err:?}");
    let want = format!(
        "mount_setattr(MOUNT_ATTR_IDMAP) on {}: EINVAL ({fstype} cannot be id-mapped)",
        fs.display()
    );
    assert_eq!(err.to_string(), want);
}

/// Older kernels refuse to id-map hugetlbfs; recent ones (6.18 here) give it
/// `FS_ALLOW_IDMAP`. When this kernel accepts it, the same check runs on
/// ramfs, which still refuses; the test fails if neither refuses.
#[test]
fn unsupported_filesystem_gets_a_clear_error() {
    let d = scratch();
    match try_idmap_fs(d.path(), "hugetlbfs") {
        Ok(Some(err)) => {
            return assert_clear_refusal(&err, &d.path().join("hugetlbfs"), "hugetlbfs")
        }
        Ok(None) => loud(
            "NOTE: this kernel id-maps hugetlbfs (it has FS_ALLOW_IDMAP here); \
             checking the refusal on ramfs instead",
        ),
        Err(why) => loud(&format!(
            "NOTE: {why}; checking the refusal on ramfs instead"
        )),
    }
    match try_idmap_fs(d.path(), "ramfs") {
        Ok(Some(err)) => assert_clear_refusal(&err, &d.path().join("ramfs"), "ramfs"),
        Ok(None) => panic!("neither hugetlbfs nor ramfs refused an id-mapped mount"),
        Err(why) => loud(&format!(
            "SKIP: {why}: no filesystem here refuses id-mapped mounts"
        )),
    }
}

#[test]
fn userns_fds_are_cached_per_mapping_and_carry_it() {
    let cache = UsernsCache::new("/proc");
    let a = mapping();
    let b = PodMapping {
        uid: Mapping::new(0, 300_000, 65_536).expect("m"),
        gid: Mapping::new(0, 400_000, 65_536).expect("m"),
    };
    let a1 = cache.get(&a).expect("a");
    let a2 = cache.get(&a).expect("a again");
    let b1 = cache.get(&b).expect("b");
    assert_ne!(a1.as_raw_fd(), a2.as_raw_fd(), "callers get their own dup");
    assert_eq!(ns_id(&a1).expect("ns"), ns_id(&a2).expect("ns"));
    assert_ne!(ns_id(&a1).expect("ns"), ns_id(&b1).expect("ns"));
    assert_eq!(cache.len(), 2);
    let maps = in_userns(
        &b1,
        false,
        &["cat", "/proc/self/uid_map", "/proc/self/gid_map"],
    );
    let words: Vec<String> = stdout(&maps)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(words, ["0", "300000", "65536", "0", "400000", "65536"]);
    // The fd outlives the helper process and the cache entry.
    cache.evict(&b);
    assert_eq!(cache.len(), 1);
    let again = in_userns(&b1, false, &["cat", "/proc/self/uid_map"]);
    assert!(stdout(&again).contains("300000"));
}
