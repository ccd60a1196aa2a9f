//! Shared harness for black-box tests of the built `cnfbox` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use test_bundles::{Bundle, BundleBuilder};

/// Path of the built `cnfbox` (same profile as this test binary), or
/// `$CNFBOX_BIN`.
pub fn cnfbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CNFBOX_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/cnfbox
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join("cnfbox");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p cnfbox` first (the README's test command does)",
        bin.display()
    );
    bin
}

/// True when the test can touch namespaces and cgroups; otherwise prints a
/// loud skip line.
pub fn can_run(test: &str) -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP {test}: needs root (namespaces, cgroups, mounts)");
        return false;
    }
    true
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Slices of host IDs for test environments: 500 of `ENV_POOL` above 2^31.
const SLOTS: u64 = 500;

/// A slice no live environment holds: an exclusive flock on its file in
/// `/run/cnfbox-it-slots`, held until the environment is dropped.
fn claim_slot() -> (u64, nix::fcntl::Flock<std::fs::File>) {
    use nix::fcntl::{Flock, FlockArg};
    let dir = Path::new("/run/cnfbox-it-slots");
    std::fs::create_dir_all(dir).expect("slot dir");
    let first =
        (u64::from(std::process::id()) * 131 + ENVS.fetch_add(1, Ordering::Relaxed) as u64) % SLOTS;
    for i in 0..SLOTS {
        let slot = (first + i) % SLOTS;
        let file = std::fs::File::create(dir.join(format!("{slot}.lock"))).expect("slot file");
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return (slot, lock);
        }
    }
    panic!("all {SLOTS} test ID slots are held by live test environments");
}

/// A private state root and bundle area for one test.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    /// The host ID pool config every command gets through `CNFBOX_CONFIG`
    /// (`None`: the variable is removed).
    pub config: Option<PathBuf>,
    pool: (u64, u64),
    /// This environment's slice of host IDs, held across test processes.
    _slot: nix::fcntl::Flock<std::fs::File>,
}

static ENVS: AtomicUsize = AtomicUsize::new(0);

/// Host IDs per test environment: 64 pods of 65536.
const ENV_POOL: u64 = 64 * 65536;

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("cnfbox-it-")
            .tempdir()
            .expect("tempdir");
        // Private like a real state root's parent may be: the container's
        // init must not need to traverse it.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod 0700 test dir");
        let root = tmp.path().join("state");
        // Each environment gets its own ledger and its own slice of host
        // IDs above 2^31, never one another live environment holds, in this
        // test process or another (`ranges gc` keeps a range that a live
        // user namespace is mapped on, so two environments on one slice
        // would see each other's pods).
        let (slot, lock) = claim_slot();
        let start = (1u64 << 31) + slot * ENV_POOL;
        let config = tmp.path().join("cnfbox.toml");
        std::fs::write(
            &config,
            format!(
                "[idmap]\npool = \"{start}:{ENV_POOL}\"\nledger_dir = \"{}\"\n",
                tmp.path().join("ledger").display()
            ),
        )
        .expect("write test config");
        Self {
            tmp,
            root,
            config: Some(config),
            pool: (start, ENV_POOL),
            _slot: lock,
        }
    }

    /// This environment's slice of host IDs (start, size): the pool of
    /// the config it starts with.
    pub fn pool(&self) -> (u64, u64) {
        self.pool
    }

    /// An allocator on this environment's ledger.
    pub fn allocator(&self) -> idmap::Allocator {
        let path = self.config.as_ref().expect("env has a config");
        let cfg = idmap::Config::load_from(path, true).expect("load test config");
        idmap::Allocator::from_config(&cfg, &idmap::EtcRoot::default()).expect("allocator")
    }

    /// `cnfbox --root ROOT` with this environment's `CNFBOX_CONFIG`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(cnfbox_bin());
        match &self.config {
            Some(c) => cmd.env("CNFBOX_CONFIG", c),
            None => cmd.env_remove("CNFBOX_CONFIG"),
        };
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// A container id unique across tests running at once.
    pub fn id(&self, name: &str) -> String {
        format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A bundle directory named `name` with the given builder tweaks.
    pub fn bundle(&self, name: &str, f: impl FnOnce(BundleBuilder) -> BundleBuilder) -> Bundle {
        f(BundleBuilder::new(self.tmp.path().join(name)))
            .build()
            .expect("build test bundle")
    }

    /// `cnfbox --root ROOT ARGS...` with stdin closed; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        cmd.stdin(Stdio::null());
        cmd.output().expect("spawn cnfbox")
    }

    /// Like `run`, but asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cnfbox {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `create` a container without holding its stdio (a detached init
    /// inherits the caller's stdio; the test must not block on it).
    pub fn create(&self, bundle: &Bundle, id: &str) {
        self.create_with(&[], bundle, id);
    }

    /// `create` with global flags (`--systemd-cgroup`) before the command.
    pub fn create_with(&self, global: &[&str], bundle: &Bundle, id: &str) {
        let err_path = self.tmp.path().join(format!("{id}.create.err"));
        let err_file = std::fs::File::create(&err_path).expect("stderr file");
        let status = self
            .command()
            .args(global)
            .args(["create", "--bundle"])
            .arg(&bundle.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .status()
            .expect("spawn cnfbox create");
        assert!(
            status.success(),
            "create {id}: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    /// Polls `state` until the status is `want` (the process side is async).
    pub fn wait_status(&self, id: &str, want: &str) -> serde_json::Value {
        for _ in 0..200 {
            let s = self.state(id);
            if s["status"] == want {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("container {id} never reached {want}: {}", self.state(id));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort: force-delete whatever a failed test left running.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    let _ = self.run(&["delete", "--force", &name]);
                }
            }
        }
        // cnfbox keeps one mount directory per state root under
        // /run/cnfbox-mnt (named by a hash of the root's path); a test's
        // root dies with the test, so its (by now empty) directory goes too.
        // remove_dir never removes anything still holding a mount point.
        if let Some(base) = mount_base_of(&self.root) {
            for kind in ["rootfs", "volumes", "ns", "hugepages", "netpins", "devices"] {
                let _ = std::fs::remove_dir(base.join(kind));
            }
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// `/run/cnfbox-mnt/<hash>` of state root `root`, as the runtime names it
/// (`profile::mount_path`: first 8 bytes of SHA-256 of the canonical path).
pub fn mount_base_of(root: &Path) -> Option<PathBuf> {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(root).ok()?;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Some(Path::new("/run/cnfbox-mnt").join(tag))
}

/// Every place a cgroup of container `id` could be, on v1 and v2.
pub fn cgroup_dirs_named(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for h in hier.flatten() {
        let p = h.path().join("cnfbox").join(id);
        if p.exists() {
            found.push(p);
        }
    }
    let p = Path::new("/sys/fs/cgroup/cnfbox").join(id);
    if p.exists() {
        found.push(p);
    }
    found
}

/// cnfbox's rootfs and volume views, namespace pins, hugetlbfs and device
/// tmpfs for container `id` (layout: runtime/src/views.rs).
pub fn mount_points_of(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in std::fs::read_dir("/run/cnfbox-mnt")
        .into_iter()
        .flatten()
        .flatten()
    {
        for p in [
            // The container's directory (rootfs view, overlay layers, a
            // member's netns pin), or the view itself before it had one.
            root.path().join("rootfs").join(id),
            root.path().join("ns").join(format!("{id}-net")),
            root.path().join("hugepages").join(id),
            root.path().join("volumes").join(id),
            root.path().join("netpins").join(format!("{id}-hostnet")),
            root.path().join("netpins").join(format!("{id}-podnet")),
            root.path().join("devices").join(id),
        ] {
            if p.exists() {
                found.push(p);
            }
        }
    }
    found
}

/// Mount points that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Asserts that nothing of container `id` is left: state dir, cgroup, mount.
pub fn assert_nothing_left(env: &Env, id: &str) {
    assert!(
        !env.root.join(id).exists(),
        "state dir {} left behind",
        env.root.join(id).display()
    );
    let staging = env.root.join(".staging");
    if let Ok(entries) = std::fs::read_dir(&staging) {
        let left: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "staged bundles left behind: {left:?}");
    }
    let journal = env.root.join(".journal").join(format!("{id}.json"));
    assert!(
        !journal.exists(),
        "journal {} left behind: {}",
        journal.display(),
        std::fs::read_to_string(&journal).unwrap_or_default()
    );
    let cgroups = cgroup_dirs_named(id);
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let mounts = mounts_mentioning(id);
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    let views = mount_points_of(id);
    assert!(
        views.is_empty(),
        "views, pins or hugetlbfs left behind: {views:?}"
    );
    if env.config.is_some() {
        let held = env.allocator().show(id).expect("read ledger");
        assert!(held.is_none(), "host ID range left allocated: {held:?}");
    }
}

/// Asserts a failed command: non-zero exit, one line on stderr containing
/// every `needle`.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
    err
}

/// Capability names by number (capabilities(7)), up to CAP_CHECKPOINT_RESTORE.
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// cnfbox's (the test's) bounding set, as a mask from /proc/self/status.
pub fn bounding_mask() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim();
    u64::from_str_radix(hex, 16).expect("CapBnd hex")
}

/// Every capability the caller holds, as containerd's `WithPrivileged`
/// (`WithAllCurrentCapabilities`) and Kubernetes' `capabilities.add: [ALL]`
/// put them in the spec.
pub fn all_caps() -> Vec<&'static str> {
    let mask = bounding_mask();
    CAPS.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The cgroup2 directory holding container `id`'s hugetlb limits: cnfbox's
/// own under `/sys/fs/cgroup/unified` on a hybrid host, libcontainer's
/// under `/sys/fs/cgroup` on a unified one (the VM lane's guest).
pub fn hugetlb_cgroup_dir(id: &str) -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let base = if unified.join("cgroup.controllers").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    };
    base.join("cnfbox").join(id)
}

/// Container `id`'s record, as create keeps it in its journal
/// (`<root>/.journal/<id>.json`, `record`).
pub fn record_of(root: &Path, id: &str) -> serde_json::Value {
    let path = root.join(".journal").join(format!("{id}.json"));
    let journal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .unwrap();
    journal["record"].clone()
}
