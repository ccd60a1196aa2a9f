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

// Annotations that name a container's pod (CRI, CRI-O), the runtime's
// own keys; containers of one pod share the sandbox's shim.
use cnfbox_annotations::SANDBOX_IDS as SANDBOX_ID_ANNOTATIONS;

/// The shim-grouping key of the container whose `config.json` this is:
/// its pod's sandbox id, or its own id.
pub fn group_id(config_json: &Path, id: &str) -> String {
    let spec: Option<serde_json::Value> = std::fs::read(config_json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    spec.as_ref()
        .and_then(|s| {
            SANDBOX_ID_ANNOTATIONS
                .iter()
                .find_map(|k| s["annotations"][k].as_str())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or(id)
        .to_owned()
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
}
