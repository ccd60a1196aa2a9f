//! A private containerd's CRI, as the CRI tests (`shim_cri`) and the CRI
//! benchmark (`benches/cri_pods.rs`) drive it: the client, the containerd
//! config with both runtime handlers, a CNI bridge network, the images.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ContainerConfig, ContainerMetadata, ImageSpec};
use test_bundles::{ImageBuilder, PrivateContainerd, DEFAULT_IMAGE_REF, PAUSE_IMAGE_REF};
use tonic::transport::{Channel, Endpoint, Uri};

/// The shim binary cnfbox's CRI handler runs.
pub const SHIM: &str = "containerd-shim-cnfbox-v2";
/// Debian's CNI plugins (containernetworking-plugins).
pub const CNI_BIN: &str = "/usr/lib/cni";

pub type Client = RuntimeServiceClient<Channel>;

/// A CRI client on containerd's unix socket `socket`.
pub async fn connect(socket: PathBuf) -> Result<Client, String> {
    let shown = socket.display().to_string();
    // The URI is unused: every connection goes to the unix socket.
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("connect to CRI at {shown}: {e}"))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// A CNI bridge network `name` on bridge `bridge` (no gateway, no
/// masquerading), addresses from `subnet` (host-local, state in `ipam`),
/// with a default route in the pod when `default_route`; written into
/// `dir`, the CRI plugin's CNI conf_dir.
pub fn write_bridge_network(
    dir: &Path,
    name: &str,
    bridge: &str,
    subnet: &str,
    ipam: &Path,
    default_route: bool,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let routes = if default_route {
        r#","routes":[{"dst":"0.0.0.0/0"}]"#
    } else {
        ""
    };
    std::fs::write(
        dir.join("10-cnfbox.conflist"),
        format!(
            r#"{{"cniVersion":"0.4.0","name":"{name}","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":false,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]]{routes},"dataDir":"{ipam}"}}}}]}}"#,
            ipam = ipam.display()
        ),
    )
}

/// containerd config for CRI with the `runc` (default) and `cnfbox`
/// handlers and the CNI network in `cni_conf`; `extra` adds TOML tables
/// (more handlers).
pub fn containerd_config(cni_conf: &Path, extra: &str) -> String {
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE_REF}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  # containerd 2.x's default (1.6's is false): every sandbox gets
  # net.ipv4.ping_group_range = "0 2147483647".
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cnfbox]
      runtime_type = "io.containerd.cnfbox.v2"
      pod_annotations = ["cnfbox.io/*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{conf}"
{extra}"#,
        conf = cni_conf.display(),
    )
}

/// Imports the busybox and pause images into CRI's `k8s.io` namespace,
/// their archives written under `dir`.
pub fn import_images(cd: &PrivateContainerd, dir: &Path) -> Result<(), String> {
    for (name, img) in [
        ("busybox.tar", ImageBuilder::busybox()),
        ("pause.tar", ImageBuilder::pause()),
    ] {
        let archive = img.write(&dir.join(name)).map_err(|e| e.to_string())?;
        let out = cd
            .ctr()
            .env("CONTAINERD_SNAPSHOTTER", "overlayfs")
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive.path)
            .output()
            .map_err(|e| format!("ctr: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "import {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A busybox container `name` that sleeps until removed.
pub fn sleep_container(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: DEFAULT_IMAGE_REF.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".into(), "100000".into()],
        ..Default::default()
    }
}
