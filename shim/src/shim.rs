//! The shim's lifecycle: `start` (one shim per pod), `delete` (cleanup
//! after a shim died) and serving.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::util::timestamp;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};

use crate::exits::Exits;
use crate::options::{from_any, ShimState};
use crate::runtime::{Cnfbox, Runtime};
use crate::task::{FromOptions, Service};
use crate::{rootfs, start};

/// The shim-grouping key of the container whose `config.json` this is:
/// its pod's sandbox id, or its own id. The pod is found by the runtime's
/// rule (`cnfbox_annotations::sandbox_id`: the writing engine's key only),
/// so a CRI-O pod annotation carrying containerd's key with another pod's
/// id is not handed that pod's shim.
pub fn group_id(config_json: &Path, id: &str) -> String {
    let spec: Option<serde_json::Value> = std::fs::read(config_json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let annotations = spec.as_ref().map(|s| &s["annotations"]);
    let get = |k: &str| annotations.and_then(|a| a[k].as_str());
    cnfbox_annotations::sandbox_id(get).unwrap_or(id).to_owned()
}

pub struct CnfboxShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for CnfboxShim {
    type T = Service<Cnfbox>;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // containerd runs `start` in the bundle directory.
        let group = group_id(Path::new("config.json"), &opts.id);
        start::start_server(&opts, &group)
            .await
            .map_err(|e| Error::Other(e.to_string()))
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // containerd runs `delete` in the bundle directory, after the shim
        // serving it died (or failed to start): clean up the runtime side.
        let bundle = std::env::current_dir().map_err(|e| Error::Other(format!("cwd: {e}")))?;
        let exits = Exits::start().await?;
        let state = match ShimState::load(&bundle) {
            Some(s) => s,
            None => ShimState::resolve(&from_any(None).unwrap_or_default(), &self.namespace)
                .map_err(|e| Error::Other(e.to_string()))?,
        };
        let cnfbox = state.cnfbox(exits);
        match cnfbox.delete(&self.id, true).await {
            Ok(()) => log::info!("deleted {} after its shim went away", self.id),
            Err(e) if e.is_not_found() => {}
            Err(e) => log::warn!("cnfbox delete --force {}: {e}", self.id),
        }
        rootfs::unmount(&bundle.join("rootfs"));
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 128 + 9,
            exited_at: MessageField::some(timestamp()?),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let exits = match Exits::start().await {
            Ok(e) => e,
            Err(err) => {
                // Without exit statuses the shim cannot serve at all.
                eprintln!("containerd-shim-cnfbox-v2: subscribing to exits: {err}");
                std::process::exit(1);
            }
        };
        Service::new(
            &self.namespace,
            exits.clone(),
            Arc::new(publisher),
            Box::new(FromOptions { exits }),
            self.exit.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_sandbox_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.json");
        assert_eq!(group_id(&cfg, "c1"), "c1", "no config: own id");
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod9"}}"#,
        )
        .expect("write");
        assert_eq!(group_id(&cfg, "c1"), "pod9");
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri-o.SandboxID":"podX"}}"#,
        )
        .expect("write");
        assert_eq!(group_id(&cfg, "c1"), "podX");
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":""}}"#,
        )
        .expect("write");
        assert_eq!(group_id(&cfg, "c1"), "c1");
    }

    /// Issue 25: containerd's key with another pod's id beside CRI-O's
    /// (a CRI-O pod annotation): CRI-O's decides, as in the runtime.
    #[test]
    fn a_forged_containerd_key_in_a_crio_spec_groups_by_crio() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"victim","io.kubernetes.cri-o.SandboxID":"mine","io.kubernetes.cri-o.ContainerType":"container"}}"#,
        )
        .expect("write");
        assert_eq!(group_id(&cfg, "c1"), "mine");
        // CRI-O's id empty: a shim of its own, never the forged pod's.
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"victim","io.kubernetes.cri-o.ContainerType":"container"}}"#,
        )
        .expect("write");
        assert_eq!(group_id(&cfg, "c1"), "c1");
    }
}
