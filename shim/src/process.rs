//! A container's init or exec process, as the Task service tracks it.

use std::path::Path;
use std::sync::Mutex as StdMutex;

use containerd_shim::api::{StateResponse, Status};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use tokio::sync::{watch, Mutex};

use crate::io::{ProcessIo, StdioPaths};

#[derive(Clone, Debug)]
pub struct ExitInfo {
    pub code: u32,
    pub at: Timestamp,
}

pub struct ProcState {
    pub pid: i32,
    pub status: Status,
}

/// A container's init or exec process.
pub struct Proc {
    pub container_id: String,
    pub exec_id: String,
    pub paths: StdioPaths,
    /// An exec's process JSON (runtime-spec Process), until started.
    pub spec: Option<Vec<u8>>,
    pub state: StdMutex<ProcState>,
    pub io: StdMutex<Option<ProcessIo>>,
    pub exited: watch::Sender<Option<ExitInfo>>,
    /// Held by the kill of an exited init's leftovers and by `cnfbox
    /// delete`: a kill racing the delete would re-create the freezer
    /// cgroup the delete just removed.
    pub stopping: Mutex<()>,
}

impl Proc {
    pub fn new(
        container_id: &str,
        exec_id: &str,
        paths: StdioPaths,
        spec: Option<Vec<u8>>,
    ) -> Self {
        Self {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            paths,
            spec,
            state: StdMutex::new(ProcState {
                pid: 0,
                status: Status::CREATED,
            }),
            io: StdMutex::new(None),
            exited: watch::channel(None).0,
            stopping: Mutex::new(()),
        }
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.exited.borrow().clone()
    }

    pub fn response(&self, bundle: &Path) -> StateResponse {
        let (pid, status) = {
            let s = self.st();
            (s.pid, s.status)
        };
        let exit = self.exit();
        StateResponse {
            id: self.container_id.clone(),
            bundle: bundle.display().to_string(),
            pid: pid as u32,
            status: status.into(),
            stdin: self.paths.stdin.clone(),
            stdout: self.paths.stdout.clone(),
            stderr: self.paths.stderr.clone(),
            terminal: self.paths.terminal,
            exit_status: exit.as_ref().map_or(0, |e| e.code),
            exited_at: MessageField::from_option(exit.map(|e| e.at)),
            exec_id: self.exec_id.clone(),
            ..Default::default()
        }
    }

    pub fn set_io(&self, io: ProcessIo) {
        *self.io.lock().unwrap_or_else(|p| p.into_inner()) = Some(io);
    }

    pub fn with_io<T>(&self, f: impl FnOnce(&ProcessIo) -> T) -> Option<T> {
        self.io
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(f)
    }
}
