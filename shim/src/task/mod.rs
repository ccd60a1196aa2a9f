//! The Task service: one per shim, serving every container of the pod.
//!
//! - this module: the service's state (the pod's containers, each with its
//!   init and execs), looking processes up, wiring stdio, creating a
//!   container;
//! - `watch`: background tasks reporting exits and OOM kills as events;
//! - `api`: the ttrpc Task API methods containerd calls;
//! - `backend`: the seams the service drives (which runtime a container
//!   uses, where events go), so tests can drive it with fakes.
//!
//! The service is generic over the [`Runtime`]: `Service<Cnfbox>` in the
//! shim, a recording fake (`fake`) in the unit tests (`tests`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::util::timestamp;
use containerd_shim::{ExitSignal, TtrpcResult};
use tokio::sync::Mutex;

use crate::errors::{internal, not_found, runtime as runtime_err};
use crate::exits::Exits;
use crate::io::{ConsoleSocket, ProcessIo, StdioPaths};
use crate::process::Proc;
use crate::rootfs;
use crate::runtime::{ContainerStdio, Runtime, RuntimeError};
use crate::stop;

mod api;
mod backend;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
mod watch;

pub use backend::{FromOptions, Publish, Runtimes};

struct Container<R> {
    bundle: PathBuf,
    runtime: R,
    init: Arc<Proc>,
    execs: HashMap<String, Arc<Proc>>,
    rootfs_mounted: bool,
}

/// The shim's Task service, driving runtime `R`.
pub struct Service<R: Runtime> {
    namespace: String,
    exits: Arc<Exits>,
    publisher: Arc<dyn Publish>,
    runtimes: Box<dyn Runtimes<Runtime = R>>,
    containers: Mutex<HashMap<String, Container<R>>>,
    exit: Arc<ExitSignal>,
}

fn now() -> Timestamp {
    timestamp().unwrap_or_default()
}

impl<R: Runtime> Service<R> {
    /// The service of a shim in `namespace`: containers get their runtime
    /// from `runtimes`, exit statuses from `exits`, events go to
    /// `publisher`; `exit` is signalled at shutdown.
    pub fn new(
        namespace: &str,
        exits: Arc<Exits>,
        publisher: Arc<dyn Publish>,
        runtimes: Box<dyn Runtimes<Runtime = R>>,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            namespace: namespace.to_owned(),
            exits,
            publisher,
            runtimes,
            containers: Mutex::new(HashMap::new()),
            exit,
        }
    }

    async fn publish(&self, topic: &str, event: impl Event + 'static) {
        if let Err(err) = self
            .publisher
            .publish(topic, &self.namespace, Box::new(event))
            .await
        {
            log::error!("publishing {topic}: {err}");
        }
    }

    async fn lookup(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<Proc>, R, PathBuf)> {
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
        Ok((p, c.runtime.clone(), c.bundle.clone()))
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
        let runtime = self
            .runtimes
            .for_container(&bundle, &self.namespace, req.options.as_ref())
            .map_err(internal)?;
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
                let runtime = runtime.clone();
                let bundle = bundle.clone();
                let id = req.id.clone();
                async move {
                    runtime
                        .create(&id, &bundle, console.as_deref(), stdio)
                        .await
                }
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
        let leftovers = stop::kill_all_on_exit(&bundle).then(|| runtime.clone());
        self.containers.lock().await.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                runtime,
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
