//! `containerd-shim-cnfbox-v2` under a real, private containerd 1.6,
//! driven with `ctr run --runtime io.containerd.cnfbox.v2`.
//!
//! containerd finds the shim as `containerd-shim-cnfbox-v2` on its `PATH`
//! (a temporary bin dir holding the built shim and `cnfbox`), and passes
//! its environment (`CNFBOX_CONFIG`: this test's own pool and ledger) to
//! the shim and so to the runtime.
//!
//! - `tasks`: `ctr run` and `ctr tasks exec/kill/pause/metrics`, seccomp,
//!   terminals;
//! - `pods`: one shim per pod, a killed shim, a containerd restart;
//! - `exits`: TaskOOM, and leftovers of a shared PID namespace dying with
//!   the init.

#[path = "../common/mod.rs"]
mod common;

mod exits;
mod pods;
mod tasks;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::{can_run, cnfbox_bin, Env};
use test_bundles::containerd::unsupported_for_cnfbox_shim;
use test_bundles::{ImageBuilder, PrivateContainerd, StartOptions, DEFAULT_IMAGE_REF};

const RUNTIME: &str = "io.containerd.cnfbox.v2";

const SHIM: &str = "containerd-shim-cnfbox-v2";

/// containerd's default snapshotter: cnfbox views an overlay rootfs through
/// id-mapped layers (runtime/src/overlay.rs).
const SNAPSHOTTER: &str = "overlayfs";

/// A private containerd that knows the cnfbox shim, with busybox imported.
struct Node {
    env: Env,
    cd: PrivateContainerd,
    _bin: tempfile::TempDir,
}

fn shim_bin() -> PathBuf {
    cnfbox_bin().with_file_name(SHIM)
}

fn node(test: &str) -> Option<Node> {
    if !can_run(test) {
        return None;
    }
    if let Some(why) = unsupported_for_cnfbox_shim() {
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    let shim = shim_bin();
    assert!(
        shim.exists(),
        "{} is missing: run `cargo build -p cnfbox -p cnfbox-shim` first",
        shim.display()
    );
    let bin = tempfile::Builder::new()
        .prefix("cnfbox-shim-bin-")
        .tempdir()
        .expect("bin dir");
    std::os::unix::fs::symlink(&shim, bin.path().join(SHIM)).expect("link shim");
    std::os::unix::fs::symlink(cnfbox_bin(), bin.path().join("cnfbox")).expect("link cnfbox");
    let env = Env::new();
    let opts = StartOptions {
        path_prepend: vec![bin.path().to_owned()],
        env: vec![(
            "CNFBOX_CONFIG".into(),
            env.config.clone().expect("env config").into(),
        )],
        cri: false,
    };
    let cd = PrivateContainerd::start_with("", &opts).expect("start private containerd");
    eprintln!("{test}: containerd {}", cd.version());
    let archive = ImageBuilder::busybox()
        .write(&env.tmp.path().join("busybox.tar"))
        .expect("write busybox image");
    cd.ctr_ok([Path::new("images"), Path::new("import"), &archive.path])
        .expect("ctr images import");
    Some(Node { env, cd, _bin: bin })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Node {
    fn ctr(&self, args: &[&str]) -> Output {
        self.cd
            .ctr()
            .env("CONTAINERD_SNAPSHOTTER", SNAPSHOTTER)
            .args(args)
            .output()
            .expect("spawn ctr")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}\n{}\ncontainerd log tail:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.log_tail()
        );
        text(&out.stdout)
    }

    fn log_tail(&self) -> String {
        let log = self.cd.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `ctr run -d` of `cmd` in a fresh container `id`.
    fn run_detached(&self, id: &str, extra: &[&str], cmd: &[&str]) {
        let mut args = vec!["run", "-d", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.extend([DEFAULT_IMAGE_REF, id]);
        args.extend_from_slice(cmd);
        self.ctr_ok(&args);
        self.wait_task(id, "RUNNING");
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["tasks", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    }

    fn wait_task(&self, id: &str, want: &str) {
        for _ in 0..400 {
            if self.task_status(id).as_deref() == Some(want) {
                return;
            }
            sleep(Duration::from_millis(25));
        }
        panic!(
            "task {id} never reached {want} (now {:?})\n{}",
            self.task_status(id),
            self.log_tail()
        );
    }

    /// Kills, deletes and removes container `id`.
    fn remove(&self, id: &str) {
        if self.task_status(id).is_some() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            self.ctr_ok(&["tasks", "delete", "-f", id]);
        }
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// A path as containerd (and the shim) see it: its /run is private.
    fn in_ns(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.cd.pid())).join(p.trim_start_matches('/'))
    }

    /// Pids of shims serving container or pod `id` of this containerd.
    fn shims(&self) -> Vec<i32> {
        let ns = self.cd.namespace();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.ends_with(SHIM));
            let ours = args.windows(2).any(|w| w[0] == "-namespace" && w[1] == ns);
            let serving = args.iter().any(|a| a == "-socket");
            if is_shim && ours && serving {
                pids.push(pid);
            }
        }
        pids
    }

    /// Nothing of container `id` is left: runtime state, mounts in
    /// containerd's namespace, cgroups, host ID range.
    fn assert_nothing_left(&self, id: &str) {
        let state = self.in_ns(&format!(
            "/run/containerd/cnfbox/{}/{id}",
            self.cd.namespace()
        ));
        assert!(!state.exists(), "runtime state {} left", state.display());
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.cd.pid()))
            .unwrap_or_default();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(id)).collect();
        assert!(left.is_empty(), "mounts of {id} left: {left:#?}");
        let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(self.cd.namespace()).join(id))
            .filter(|p| p.exists())
            .collect();
        assert!(cgroups.is_empty(), "cgroups of {id} left: {cgroups:?}");
        let held = self.env.allocator().show(id).expect("read ledger");
        assert!(held.is_none(), "host ID range of {id} left: {held:?}");
    }
}
