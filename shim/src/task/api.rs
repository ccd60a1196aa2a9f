//! The ttrpc Task API: what containerd calls on the shim.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::util::convert_to_any;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::errors::{internal, not_found, runtime as runtime_err, status, Kind};
use crate::io::{ProcessIo, StdioPaths};
use crate::process::{ExitInfo, Proc};
use crate::rootfs;
use crate::runtime::Runtime;
use crate::stats;

use super::{now, Service};

#[async_trait]
impl<R: Runtime> Task for Service<R> {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let (p, _, bundle) = self.lookup(&req.id, &req.exec_id).await?;
        Ok(p.response(&bundle))
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        if self.containers.lock().await.contains_key(&req.id) {
            return Err(status(
                Kind::AlreadyExists,
                format!("container {} already exists in this shim", req.id),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(status(
                Kind::Unimplemented,
                "cnfbox does not restore checkpoints",
            ));
        }
        let pid = self.create_container(&req).await?;
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        )
        .await;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let (p, runtime, bundle) = self.lookup(&req.id, &req.exec_id).await?;
        if p.st().status != Status::CREATED {
            return Err(status(
                Kind::FailedPrecondition,
                format!("{} {} is not in the created state", req.id, req.exec_id),
            ));
        }
        if req.exec_id.is_empty() {
            runtime.start(&req.id).await.map_err(runtime_err)?;
            let pid = {
                let mut s = p.st();
                if s.status == Status::CREATED {
                    s.status = Status::RUNNING;
                }
                s.pid
            };
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            )
            .await;
            return Ok(StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }
        // The init may have exited since the exec was added: its pid is
        // then free for the host to reuse, and nothing may join it.
        let (init, ..) = self.lookup(&req.id, "").await?;
        refuse_after_init_exit(&init, &req.id)?;
        let spec = p.spec.clone().unwrap_or_default();
        let tag = format!("{}-{}", std::process::id(), req.exec_id);
        let process_json = bundle.join(format!(".exec-{tag}.json"));
        let pid_file = bundle.join(format!(".exec-{tag}.pid"));
        std::fs::write(&process_json, &spec).map_err(internal)?;
        let started = self
            .with_stdio(&p.paths, |console, stdio| {
                let runtime = runtime.clone();
                let id = req.id.clone();
                let process_json = process_json.clone();
                let pid_file = pid_file.clone();
                async move {
                    runtime
                        .exec(&id, &process_json, &pid_file, console.as_deref(), stdio)
                        .await
                }
            })
            .await;
        // Best effort: our own temporary file.
        let _ = std::fs::remove_file(&process_json);
        let (pid, io) = started?;
        {
            let mut s = p.st();
            s.pid = pid;
            s.status = Status::RUNNING;
        }
        p.set_io(io);
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        )
        .await;
        self.watch_exit(p, pid, None);
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let (p, runtime, bundle) = self.lookup(&req.id, &req.exec_id).await?;
        let st = p.st().status;
        if !req.exec_id.is_empty() {
            if matches!(st, Status::RUNNING | Status::PAUSED) {
                return Err(status(
                    Kind::FailedPrecondition,
                    format!("exec {} in {} is still running", req.exec_id, req.id),
                ));
            }
            if let Some(c) = self.containers.lock().await.get_mut(&req.id) {
                c.execs.remove(&req.exec_id);
            }
            let exit = p.exit();
            return Ok(DeleteResponse {
                pid: p.st().pid as u32,
                exit_status: exit.as_ref().map_or(0, |e| e.code),
                exited_at: MessageField::from_option(exit.map(|e| e.at)),
                ..Default::default()
            });
        }
        if matches!(st, Status::RUNNING | Status::PAUSED) && p.exit().is_none() {
            return Err(status(
                Kind::FailedPrecondition,
                format!("container {} is still running: kill it first", req.id),
            ));
        }
        // A created (never started) init is killed by `delete --force`.
        let force = p.exit().is_none();
        {
            // After the delete the leftovers' kill finds no container.
            let _stopping = p.stopping.lock().await;
            if let Err(err) = runtime.delete(&req.id, force).await {
                if !err.is_not_found() {
                    log::warn!("cnfbox delete {}: {err}; retrying with --force", req.id);
                    if let Err(err) = runtime.delete(&req.id, true).await {
                        if !err.is_not_found() {
                            return Err(runtime_err(err));
                        }
                    }
                }
            }
        }
        if force {
            let mut rx = p.exited.subscribe();
            // The init was killed; its exit arrives through the reaper.
            let _ = rx.wait_for(Option::is_some).await;
        }
        let removed = self.containers.lock().await.remove(&req.id);
        if removed.is_some_and(|c| c.rootfs_mounted) {
            rootfs::unmount(&bundle.join("rootfs"));
        }
        let exit = p.exit();
        let pid = p.st().pid as u32;
        let (code, at) = exit.map_or((0, now()), |e| (e.code, e.at));
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                id: req.id.clone(),
                ..Default::default()
            },
        )
        .await;
        Ok(DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let (_, runtime, _) = self.lookup(&req.id, "").await?;
        let pids = runtime.ps(&req.id).await.map_err(runtime_err)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let (p, runtime, _) = self.lookup(&req.id, "").await?;
        runtime.pause(&req.id).await.map_err(runtime_err)?;
        p.st().status = Status::PAUSED;
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        )
        .await;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let (p, runtime, _) = self.lookup(&req.id, "").await?;
        runtime.resume(&req.id).await.map_err(runtime_err)?;
        p.st().status = Status::RUNNING;
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        )
        .await;
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let (p, runtime, _) = self.lookup(&req.id, &req.exec_id).await?;
        if p.exit().is_some() {
            return Err(not_found(format!(
                "process {} {} (already finished)",
                req.id, req.exec_id
            )));
        }
        if req.exec_id.is_empty() {
            runtime
                .kill(&req.id, req.signal, req.all)
                .await
                .map_err(runtime_err)?;
            return Ok(Empty::new());
        }
        let pid = p.st().pid;
        if pid <= 0 {
            return Err(status(
                Kind::FailedPrecondition,
                format!("exec {} in {} was not started", req.exec_id, req.id),
            ));
        }
        let sig = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            status(
                Kind::InvalidArgument,
                format!("signal {} is not a valid signal", req.signal),
            )
        })?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            Ok(()) => Ok(Empty::new()),
            Err(nix::Error::ESRCH) => Err(not_found(format!("exec {} process", req.exec_id))),
            Err(e) => Err(status(Kind::Unknown, format!("kill({pid}, {sig}): {e}"))),
        }
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            refuse_after_init_exit(&c.init, &req.id)?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(status(
                    Kind::AlreadyExists,
                    format!("exec {} already exists in {}", req.exec_id, req.id),
                ));
            }
            let spec = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    status(
                        Kind::InvalidArgument,
                        format!("exec {}: no process spec", req.exec_id),
                    )
                })?;
            let paths = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let p = Arc::new(Proc::new(&req.id, &req.exec_id, paths, Some(spec)));
            c.execs.insert(req.exec_id.clone(), p);
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        )
        .await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let (p, _, _) = self.lookup(&req.id, &req.exec_id).await?;
        match p.with_io(|io| io.resize(req.width, req.height)) {
            Some(Ok(())) => Ok(Empty::new()),
            Some(Err(e)) => Err(status(Kind::FailedPrecondition, e.to_string())),
            None => Err(status(
                Kind::FailedPrecondition,
                format!("{} {} has no live terminal", req.id, req.exec_id),
            )),
        }
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let (p, _, _) = self.lookup(&req.id, &req.exec_id).await?;
        if req.stdin {
            p.with_io(ProcessIo::close_stdin);
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let (_, runtime, _) = self.lookup(&req.id, "").await?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| status(Kind::InvalidArgument, "update: no resources given"))?;
        runtime
            .update(&req.id, resources)
            .await
            .map_err(runtime_err)?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let (p, _, _) = self.lookup(&req.id, &req.exec_id).await?;
        let mut rx = p.exited.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| status(Kind::Unknown, "the process's exit was lost"))?
            .clone()
            .unwrap_or(ExitInfo {
                code: 255,
                at: now(),
            });
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let (p, runtime, _) = self.lookup(&req.id, "").await?;
        if p.exit().is_some() {
            return Err(not_found(format!("running container {}", req.id)));
        }
        let s = runtime.stats(&req.id).await.map_err(runtime_err)?;
        let any = if stats::is_unified(Path::new("/sys/fs/cgroup")) {
            convert_to_any(Box::new(stats::v2(&s)))
        } else {
            let mut m = stats::v1(&s);
            // The init's memory cgroup's OOM counters (libcgroups' stats
            // leave them out): CRI's container_oom_events_total.
            let (proc_root, cgroup_root) = (Path::new("/proc"), Path::new("/sys/fs/cgroup"));
            let control = crate::oom::memory_cgroup(proc_root, cgroup_root, p.st().pid)
                .map_err(|e| e.to_string())
                .and_then(|dir| {
                    let path = dir.join("memory.oom_control");
                    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
                });
            match control {
                Ok(text) => m.memory_oom_control = MessageField::some(stats::oom_control_v1(&text)),
                Err(err) => log::debug!("no OOM counters for {}: {err}", req.id),
            }
            convert_to_any(Box::new(m))
        }
        .map_err(internal)?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = match self.lookup(&req.id, "").await {
            Ok((p, _, _)) => p.st().pid as u32,
            Err(_) => 0,
        };
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        // A pod's shim serves all its containers: it stays while any is left.
        if req.now || self.containers.lock().await.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// An exec joins the init's namespaces through its pid: once the init has
/// exited (or was never started) that pid names nothing of the container.
fn refuse_after_init_exit(init: &Proc, id: &str) -> TtrpcResult<()> {
    let st = init.st();
    if init.exit().is_some() || st.status != Status::RUNNING {
        return Err(status(
            Kind::FailedPrecondition,
            format!(
                "exec in container {id}: its init is not running ({:?})",
                st.status
            ),
        ));
    }
    Ok(())
}
