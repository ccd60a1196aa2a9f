//! A private containerd with CRI for the CRI tests: both runtime handlers
//! (`cnfbox`, `io.containerd.cnfbox.v2`, and `runc`), configuration B
//! (`cnfbox-runc`), a CNI bridge of the test's own, and the calls the tests
//! make through a Rust CRI client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{can_run, cnfbox_bin, Env};
use crate::cri::{self, Client, CNI_BIN, SHIM};
use k8s_cri::v1::{
    CreateContainerRequest, ExecSyncRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use test_bundles::containerd::unsupported_for_cnfbox_shim;
use test_bundles::{PrivateContainerd, StartOptions};

/// A private containerd with CRI, both handlers and a CNI bridge.
pub struct CriNode {
    pub env: Env,
    pub cd: Option<PrivateContainerd>,
    pub bridge: String,
    /// containerd's mount points when it came up (it inherits the host's,
    /// other tests' included).
    pub baseline: Vec<String>,
    /// The host's IPv4 forwarding when the node came up: CNI must not
    /// change it (new network namespaces inherit it).
    pub forwarding: String,
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    _bin: tempfile::TempDir,
}

/// A node dropped with containerd still up (a test that failed, or one
/// that did not end with `finish` or `stop`): its pods go through CRI
/// first, so no pod process, range or mount outlives the test (stopping
/// containerd alone left the pods running, orphaned, in the CI's machine).
impl Drop for CriNode {
    fn drop(&mut self) {
        if self.cd.is_none() {
            return;
        }
        let listed = self.rt.block_on(
            self.client
                .list_pod_sandbox(ListPodSandboxRequest::default()),
        );
        let pods = listed.map(|r| r.into_inner().items).unwrap_or_default();
        for pod in pods {
            eprintln!("cri node dropped with pod {} up: removing it", pod.id);
            let _ = self
                .rt
                .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                }));
            let _ = self
                .rt
                .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id,
                }));
        }
        self.cd.take();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn cri_node(test: &str) -> Option<CriNode> {
    if !can_run(test) {
        return None;
    }
    if let Some(why) = unsupported_for_cnfbox_shim() {
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    if !Path::new(CNI_BIN).join("bridge").exists() {
        eprintln!(
            "SKIP {test}: {CNI_BIN}/bridge missing (apt-get install containernetworking-plugins)"
        );
        return None;
    }
    let shim = cnfbox_bin().with_file_name(SHIM);
    assert!(
        shim.exists(),
        "{} missing: cargo build -p cnfbox-shim",
        shim.display()
    );
    let bin = tempfile::Builder::new()
        .prefix("cnfbox-cri-bin-")
        .tempdir()
        .expect("bin dir");
    std::os::unix::fs::symlink(&shim, bin.path().join(SHIM)).expect("link shim");
    std::os::unix::fs::symlink(cnfbox_bin(), bin.path().join("cnfbox")).expect("link cnfbox");

    let env = Env::new();
    // Unique per node: tests of one process run at once.
    static NODES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
    let pid = std::process::id();
    let bridge = format!("cnfbr{}{seq}", pid % 100_000);
    let subnet = format!(
        "10.{}.{}.0/24",
        100 + pid % 100,
        ((pid / 100) * 10 + seq) % 256
    );
    let cni_dir = env.tmp.path().join("cni");
    cri::write_bridge_network(
        &cni_dir,
        &format!("cnfbox-test-{pid}"),
        &bridge,
        &subnet,
        &env.tmp.path().join("ipam"),
        true,
    )
    .expect("write CNI config");
    let config = cri::containerd_config(
        &cni_dir,
        &format!(
            r#"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cnfbox-runc]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = "{shim_path}"
  pod_annotations = ["cnfbox.io/*"]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cnfbox-runc.options]
    BinaryName = "{cnfbox_path}"
"#,
            shim_path = shim.display(),
            cnfbox_path = cnfbox_bin().display(),
        ),
    );
    let opts = StartOptions {
        path_prepend: vec![bin.path().to_owned()],
        env: vec![(
            "CNFBOX_CONFIG".into(),
            env.config.clone().expect("config").into(),
        )],
        cri: true,
    };
    let cd = PrivateContainerd::start_with(&config, &opts).expect("start containerd with CRI");
    eprintln!("containerd {}", cd.version());
    cri::import_images(&cd, env.tmp.path()).expect("import images");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let socket = cd.socket().to_owned();
    let client = rt.block_on(cri::connect(socket)).expect("CRI client");
    let baseline = mount_points(cd.pid());
    Some(CriNode {
        env,
        cd: Some(cd),
        bridge,
        baseline,
        forwarding: host_forwarding(),
        rt,
        client,
        _bin: bin,
    })
}

/// A pod created through CRI.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl CriNode {
    pub fn cd(&self) -> &PrivateContainerd {
        self.cd.as_ref().expect("containerd running")
    }

    pub fn pod_config(&self, name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        let uid = self.env.id(name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: uid.clone(),
                uid: uid.clone(),
                namespace: "cnfbox-test".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    pub fn run_pod(
        &mut self,
        name: &str,
        handler: &str,
        annotations: &[(&str, &str)],
    ) -> Result<Pod, tonic::Status> {
        let config = self.pod_config(name, annotations);
        self.run_pod_config(config, handler)
    }

    /// RunPodSandbox of `config` (e.g. from [`CriNode::pod_config`] with
    /// namespace options added) on `handler`.
    pub fn run_pod_config(
        &mut self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<Pod, tonic::Status> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let resp = self.rt.block_on(self.client.run_pod_sandbox(req))?;
        Ok(Pod {
            id: resp.into_inner().pod_sandbox_id,
            config,
        })
    }

    /// [`CriNode::pod_config`] of `name` with kubelet's namespace options.
    pub fn pod_config_with(&self, name: &str, ns: NamespaceOption) -> PodSandboxConfig {
        let mut config = self.pod_config(name, &[]);
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns),
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    }

    /// Creates and starts a `sleep` container in `pod`; its id.
    pub fn start_container(&mut self, pod: &Pod, name: &str) -> String {
        self.start_config(pod, cri::sleep_container(name))
    }

    /// Creates and starts `config` in `pod`; its id.
    pub fn start_config(&mut self, pod: &Pod, config: k8s_cri::v1::ContainerConfig) -> String {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .rt
            .block_on(self.client.create_container(req))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log_tail()))
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.client.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.log_tail()));
        id
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub fn exec(&mut self, container: &str, cmd: &[&str]) -> (i32, String, String) {
        let req = ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 0,
        };
        let r = self
            .rt
            .block_on(self.client.exec_sync(req))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    pub fn remove_pod(&mut self, pod: &Pod) {
        self.rt
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", self.log_tail()));
        self.rt
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            }))
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", self.log_tail()));
    }

    pub fn log_tail(&self) -> String {
        let log = self.cd().log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// cnfbox shims serving this containerd.
    pub fn shims(&self) -> usize {
        let dir = self.cd().dir().expect("dir").to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let c = String::from_utf8_lossy(&c);
                c.contains(SHIM) && c.contains("-socket") && c.contains(&dir)
            })
            .count()
    }

    /// Mount points made in containerd's namespace since it came up
    /// that mention `needle`.
    pub fn mounts(&self, needle: &str) -> Vec<String> {
        mount_points(self.cd().pid())
            .into_iter()
            .filter(|m| m.contains(needle) && !self.baseline.contains(m))
            .collect()
    }

    pub fn held_ranges(&self) -> Vec<String> {
        self.env
            .allocator()
            .list()
            .expect("ledger")
            .into_iter()
            .map(|g| format!("{g:?}"))
            .collect()
    }

    /// Asserts that no host ID range and no cnfbox shim of this node is
    /// left, then stops it.
    pub fn finish(self) {
        assert!(
            self.held_ranges().is_empty(),
            "ranges left: {:?}",
            self.held_ranges()
        );
        assert_eq!(self.shims(), 0, "shims left");
        self.stop();
    }

    pub fn stop(mut self) {
        if let Some(cd) = self.cd.take() {
            cd.stop().expect("stop containerd");
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let links = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip link");
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        assert!(
            !links.contains(&format!(" {}:", self.bridge)),
            "bridge {} left",
            self.bridge
        );
        assert_eq!(
            host_forwarding(),
            self.forwarding,
            "the host's net.ipv4.ip_forward changed"
        );
    }
}

/// Cgroup directories (two levels deep in every hierarchy) named `id`.
pub fn cgroups_named(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    for h in dirs(Path::new("/sys/fs/cgroup")) {
        for l1 in dirs(&h) {
            if l1.ends_with(id) {
                found.push(l1.clone());
            }
            found.extend(dirs(&l1).into_iter().filter(|l2| l2.ends_with(id)));
        }
    }
    found
}

pub fn host_forwarding() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default()
}

/// Mount points of `pid`'s mount namespace.
pub fn mount_points(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

pub fn uid_map(out: &str) -> (u64, u64, u64) {
    let v: Vec<u64> = out
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(v.len() >= 3, "uid_map: {out:?}");
    (v[0], v[1], v[2])
}
