//! Background tasks that report a process's exit (TaskExit) and the OOM
//! kills in a container's memory cgroup (TaskOOM).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::api::Status;
use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use tokio::sync::mpsc;

use crate::process::{ExitInfo, Proc};
use crate::runtime::Runtime;
use crate::{oom, stats, stop};

use super::{now, Service};

/// How long an exited process's output may take to drain (a daemon it
/// left behind can hold its stdout open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

impl<R: Runtime> Service<R> {
    /// Reports `proc`'s exit once the reaper sees `pid` go. With
    /// `leftovers` (an init without a PID namespace of its own), whatever is
    /// left in the container's cgroup is killed first, so that no orphan
    /// keeps the container's stdio open (see `stop`).
    pub(super) fn watch_exit(&self, proc: Arc<Proc>, pid: i32, leftovers: Option<R>) {
        let rx = self.exits.expect(pid);
        let publisher = self.publisher.clone();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            // A lost reaper reports the process as killed.
            let code = rx.await.unwrap_or(128 + 9);
            if let Some(runtime) = leftovers {
                let _stopping = proc.stopping.lock().await;
                stop::kill_leftovers(&runtime, &proc.container_id).await;
            }
            let io = proc.io.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut io) = io {
                io.wait_output(OUTPUT_DRAIN).await;
            }
            let at = now();
            proc.st().status = Status::STOPPED;
            proc.exited.send_replace(Some(ExitInfo {
                code: code as u32,
                at: at.clone(),
            }));
            let id = if proc.exec_id.is_empty() {
                proc.container_id.clone()
            } else {
                proc.exec_id.clone()
            };
            let ev = TaskExit {
                container_id: proc.container_id.clone(),
                id,
                pid: pid as u32,
                exit_status: code as u32,
                exited_at: MessageField::some(at),
                ..Default::default()
            };
            if let Err(err) = publisher
                .publish(topics::TASK_EXIT_EVENT_TOPIC, &namespace, Box::new(ev))
                .await
            {
                log::error!("publishing TaskExit: {err}");
            }
        });
    }

    /// Publishes TaskOOM for every OOM kill in the container's memory cgroup.
    pub(super) fn watch_oom(&self, container_id: &str, pid: i32) {
        let (proc_root, cgroup_root) = (Path::new("/proc"), Path::new("/sys/fs/cgroup"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watched = if stats::is_unified(cgroup_root) {
            oom::memory_cgroup_v2(proc_root, cgroup_root, pid).and_then(|d| oom::watch_v2(&d, tx))
        } else {
            oom::memory_cgroup(proc_root, cgroup_root, pid).and_then(|d| oom::watch(&d, tx))
        };
        if let Err(err) = watched {
            log::warn!("no OOM events for {container_id}: {err}");
            return;
        }
        let publisher = self.publisher.clone();
        let namespace = self.namespace.clone();
        let id = container_id.to_owned();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let ev = TaskOOM {
                    container_id: id.clone(),
                    ..Default::default()
                };
                if let Err(err) = publisher
                    .publish(topics::TASK_OOM_EVENT_TOPIC, &namespace, Box::new(ev))
                    .await
                {
                    log::error!("publishing TaskOOM: {err}");
                }
            }
        });
    }
}
