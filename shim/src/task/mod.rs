//! The Task service: one per shim, serving every container of the pod.
//!
//! - this module: the service's state (the pod's containers, each with its
//!   init and execs), looking processes up, wiring stdio, creating a
//!   container;
//! - `watch`: background tasks reporting exits and OOM kills as events;
//! - `api`: the ttrpc Task API methods containerd calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::util::timestamp;
use containerd_shim::{Context, ExitSignal, TtrpcResult};
use tokio::sync::Mutex;

use crate::errors::{internal, not_found, runtime as runtime_err};
use crate::exits::Exits;
use crate::io::{ConsoleSocket, ProcessIo, StdioPaths};
use crate::options::{self, ShimState};
use crate::process::Proc;
use crate::rootfs;
use crate::runtime::{Cnfbox, ContainerStdio, RuntimeError};
use crate::stop;

mod api;
mod watch;

struct Container {
    bundle: PathBuf,
    cnfbox: Cnfbox,
    init: Arc<Proc>,
    execs: HashMap<String, Arc<Proc>>,
    rootfs_mounted: bool,
}

/// The shim's Task service.
pub struct Service {
    namespace: String,
    exits: Arc<Exits>,
    publisher: Arc<RemotePublisher>,
    containers: Mutex<HashMap<String, Container>>,
    exit: Arc<ExitSignal>,
}

fn now() -> Timestamp {
    timestamp().unwrap_or_default()
}

impl Service {
    pub fn new(
        namespace: &str,
        exits: Arc<Exits>,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            namespace: namespace.to_owned(),
            exits,
            publisher: Arc::new(publisher),
            containers: Mutex::new(HashMap::new()),
            exit,
        }
    }

    async fn publish(&self, topic: &str, event: impl Event + 'static) {
        if let Err(err) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, Box::new(event))
            .await
        {
            log::error!("publishing {topic}: {err}");
        }
    }

    async fn lookup(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<Proc>, Cnfbox, PathBuf)> {
        let containers = self.containers.lock().await;
        let c = containers
            .get(id)
            .ok_or_else(|| not_found(format!("container {id}")))?;
        let p = if exec_id.is_empty() {
            c.init.clone()
        } else {
            c.execs
                .get(exec_id)
                .cloned()
                .ok_or_else(|| not_found(format!("exec {exec_id} in container {id}")))?
        };
        Ok((p, c.cnfbox.clone(), c.bundle.clone()))
    }

    /// Sets up stdio, runs `run` with the container side, and wires the
    /// terminal (if any) afterwards.
    async fn with_stdio<F, Fut>(&self, paths: &StdioPaths, run: F) -> TtrpcResult<(i32, ProcessIo)>
    where
        F: FnOnce(Option<PathBuf>, ContainerStdio) -> Fut,
        Fut: std::future::Future<Output = Result<i32, RuntimeError>>,
    {
        if paths.terminal {
            let socket = ConsoleSocket::new().map_err(internal)?;
            let pid = run(Some(socket.path().to_owned()), ContainerStdio::default())
                .await
                .map_err(runtime_err)?;
            let io = ProcessIo::console(&socket, paths).map_err(internal)?;
            Ok((pid, io))
        } else {
            let (io, stdio) = ProcessIo::pipes(paths).map_err(internal)?;
            let pid = run(None, stdio).await.map_err(runtime_err)?;
            Ok((pid, io))
        }
    }

    async fn create_container(&self, req: &CreateTaskRequest) -> TtrpcResult<i32> {
        let bundle = PathBuf::from(&req.bundle);
        let opts = options::from_any(req.options.as_ref()).map_err(internal)?;
        let state = ShimState::resolve(&opts, &self.namespace).map_err(internal)?;
        state.save(&bundle).map_err(internal)?;
        let cnfbox = state.cnfbox(self.exits.clone());
        let rootfs_mounted = !req.rootfs.is_empty();
        if rootfs_mounted {
            rootfs::mount_all(
                &req.rootfs,
                &bundle.join("rootfs"),
                &bundle.join("config.json"),
            )
            .await
            .map_err(internal)?;
        }
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let created = self
            .with_stdio(&paths, |console, stdio| {
                let cnfbox = cnfbox.clone();
                let bundle = bundle.clone();
                let id = req.id.clone();
                async move { cnfbox.create(&id, &bundle, console.as_deref(), stdio).await }
            })
            .await;
        let (pid, io) = match created {
            Ok(v) => v,
            Err(err) => {
                if rootfs_mounted {
                    rootfs::unmount(&bundle.join("rootfs"));
                }
                return Err(err);
            }
        };
        let init = Arc::new(Proc::new(&req.id, "", paths, None));
        init.st().pid = pid;
        init.set_io(io);
        let leftovers = stop::kill_all_on_exit(&bundle).then(|| cnfbox.clone());
        self.containers.lock().await.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                cnfbox,
                init: init.clone(),
                execs: HashMap::new(),
                rootfs_mounted,
            },
        );
        self.watch_exit(init, pid, leftovers);
        self.watch_oom(&req.id, pid);
        Ok(pid)
    }
}
