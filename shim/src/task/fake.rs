//! A recording fake runtime and event sink that drive the Task service in
//! tests without the `cnfbox` binary or containerd.
//!
//! Both write to one [`Journal`], so a test sees the order of the runtime
//! calls and the events between them. The fake runtime plays the reaper's
//! part as a real container would: a kill of the init (or a forced delete
//! of a live one) delivers its exit status to [`Exits`].

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::protos::events::task::{TaskDelete, TaskExit};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageDyn;
use tokio::sync::watch;

use crate::exits::Exits;
use crate::options::OptionsError;
use crate::runtime::{ContainerStdio, Runtime, RuntimeError};
use crate::stats::Stats;

use super::backend::{Publish, Runtimes};

/// Fake pids start above the kernel's largest `pid_max` (2^22, proc(5)):
/// no host process has them, so nothing the service does with a pid
/// (`/proc/PID/cgroup` for the OOM watch, kill(2) of an exec) reaches one.
const FIRST_PID: i32 = 1 << 23;

/// A runtime command as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create {
        id: String,
        bundle: String,
    },
    /// `process` is the process JSON the service wrote for the exec.
    Exec {
        id: String,
        process: String,
    },
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: u32,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        id: String,
        resources: Vec<u8>,
    },
    Stats {
        id: String,
    },
    Ps {
        id: String,
    },
}

/// One thing that happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Call(Call),
    /// A published event: its topic and, for TaskExit and TaskDelete, the
    /// exit status it carries.
    Event {
        topic: String,
        status: Option<u32>,
    },
}

/// The shared, ordered record of calls and events.
#[derive(Clone)]
pub struct Journal(Arc<watch::Sender<Vec<Entry>>>);

impl Journal {
    fn new() -> Self {
        Self(Arc::new(watch::channel(Vec::new()).0))
    }

    fn push(&self, e: Entry) {
        self.0.send_modify(|v| v.push(e));
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.0.borrow().clone()
    }

    /// The runtime calls only.
    pub fn calls(&self) -> Vec<Call> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Call(c) => Some(c),
                Entry::Event { .. } => None,
            })
            .collect()
    }

    /// The published events' topics only.
    pub fn topics(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Event { topic, .. } => Some(topic),
                Entry::Call(_) => None,
            })
            .collect()
    }

    /// Waits (at most 10 s) until an event of `topic` was published; the
    /// exit status it carried.
    pub async fn event(&self, topic: &str) -> Option<u32> {
        let mut rx = self.0.subscribe();
        let found = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|v| {
                v.iter()
                    .any(|e| matches!(e, Entry::Event { topic: t, .. } if t == topic))
            }),
        )
        .await;
        let entries = found
            .unwrap_or_else(|_| panic!("no {topic} event within 10 s: {:?}", self.entries()))
            .expect("journal sender alive");
        entries.iter().find_map(|e| match e {
            Entry::Event { topic: t, status } if t == topic => Some(*status),
            _ => None,
        })?
    }
}

#[derive(Default)]
struct State {
    next_pid: i32,
    /// Container id -> its init's pid.
    inits: HashMap<String, i32>,
    /// Pids whose exit was delivered.
    exited: Vec<i32>,
    /// Failures to return, per command, in order.
    failures: HashMap<&'static str, VecDeque<Option<String>>>,
}

/// The fake runtime: records every call in the journal.
#[derive(Clone)]
pub struct FakeRuntime {
    journal: Journal,
    exits: Arc<Exits>,
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new(exits: Arc<Exits>) -> Self {
        Self {
            journal: Journal::new(),
            exits,
            state: Arc::new(Mutex::new(State {
                next_pid: FIRST_PID,
                ..State::default()
            })),
        }
    }

    pub fn journal(&self) -> Journal {
        self.journal.clone()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `command` fail as `cnfbox` does, with the error log
    /// line's `kind` (`"not_found"`, `"failed"`, or none).
    pub fn fail_next(&self, command: &'static str, kind: Option<&str>) {
        self.st()
            .failures
            .entry(command)
            .or_default()
            .push_back(kind.map(str::to_owned));
    }

    /// Records `call`; the scripted failure of `command`, if any.
    fn record(&self, command: &'static str, call: Call) -> Result<(), RuntimeError> {
        self.journal.push(Entry::Call(call));
        let failure = self
            .st()
            .failures
            .get_mut(command)
            .and_then(VecDeque::pop_front);
        match failure {
            None => Ok(()),
            Some(kind) => Err(RuntimeError::Failed {
                command: command.into(),
                code: 1,
                // Words that sound like a missing container: only the
                // kind may decide (see errors.rs).
                message: "bind source /srv/x does not exist".into(),
                kind,
            }),
        }
    }

    fn new_pid(&self) -> i32 {
        let mut st = self.st();
        st.next_pid += 1;
        st.next_pid
    }

    /// The init of `id` exits with `code` (once).
    fn init_exits(&self, id: &str, code: i32) {
        let pid = {
            let mut st = self.st();
            let Some(pid) = st.inits.get(id).copied() else {
                return;
            };
            if st.exited.contains(&pid) {
                return;
            }
            st.exited.push(pid);
            pid
        };
        self.exits.deliver(pid, code);
    }
}

/// The container's stdout says hello, so a test sees stdio reach it.
fn greet(stdio: ContainerStdio, id: &str) {
    if let Some(fd) = stdio.stdout {
        let mut out = std::fs::File::from(fd);
        out.write_all(format!("hello from {id}\n").as_bytes())
            .expect("writing the container's stdout");
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        _console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError> {
        let call = Call::Create {
            id: id.into(),
            bundle: bundle.display().to_string(),
        };
        self.record("create", call)?;
        let pid = self.new_pid();
        self.st().inits.insert(id.into(), pid);
        greet(stdio, id);
        Ok(pid)
    }

    async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        _pid_file: &Path,
        _console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError> {
        let process = std::fs::read_to_string(process_json).unwrap_or_default();
        self.record(
            "exec",
            Call::Exec {
                id: id.into(),
                process,
            },
        )?;
        greet(stdio, id);
        Ok(self.new_pid())
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.record("start", Call::Start { id: id.into() })
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let call = Call::Kill {
            id: id.into(),
            signal,
            all,
        };
        self.record("kill", call)?;
        if !all {
            // Killed by the signal: 128+N, as the reaper reports it.
            self.init_exits(id, 128 + signal as i32);
        }
        Ok(())
    }

    async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        self.record(
            "delete",
            Call::Delete {
                id: id.into(),
                force,
            },
        )?;
        if force {
            // `delete --force` SIGKILLs a live init.
            self.init_exits(id, 128 + 9);
        }
        Ok(())
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.record("pause", Call::Pause { id: id.into() })
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.record("resume", Call::Resume { id: id.into() })
    }

    async fn update(&self, id: &str, resources: Vec<u8>) -> Result<(), RuntimeError> {
        let call = Call::Update {
            id: id.into(),
            resources,
        };
        self.record("update", call)
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        self.record("stats", Call::Stats { id: id.into() })?;
        Ok(Stats::default())
    }

    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        self.record("ps", Call::Ps { id: id.into() })?;
        Ok(self.st().inits.get(id).copied().into_iter().collect())
    }
}

/// Every container gets the one fake runtime.
pub struct FakeRuntimes(pub FakeRuntime);

impl Runtimes for FakeRuntimes {
    type Runtime = FakeRuntime;

    fn for_container(
        &self,
        _bundle: &Path,
        _namespace: &str,
        _options: Option<&Any>,
    ) -> Result<FakeRuntime, OptionsError> {
        Ok(self.0.clone())
    }
}

/// Events go to the journal.
pub struct FakePublisher(pub Journal);

#[async_trait]
impl Publish for FakePublisher {
    async fn publish(
        &self,
        topic: &str,
        _namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> containerd_shim::Result<()> {
        let status = event
            .downcast_ref::<TaskExit>()
            .map(|e| e.exit_status)
            .or_else(|| event.downcast_ref::<TaskDelete>().map(|e| e.exit_status));
        self.0.push(Entry::Event {
            topic: topic.into(),
            status,
        });
        Ok(())
    }
}
