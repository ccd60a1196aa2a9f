//! The Task service driven through its ttrpc methods with the fake runtime
//! (`fake`): what it asks of the runtime, in which order, which events it
//! publishes between, and the ttrpc codes of its failures. The black-box
//! tests (integration/tests/shim_*.rs) drive the real shim and runtime.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    ResumeRequest, StartRequest, StateRequest, StateResponse, Status, UpdateTaskRequest,
    WaitRequest,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code, MessageHeader};
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};

use super::fake::{Call, Entry, FakePublisher, FakeRuntime, FakeRuntimes, Journal};
use super::Service;
use crate::exits::Exits;

/// A bundle whose container has a PID namespace of its own.
const OWN_PID_NS: &str = r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
/// A bundle whose container shares the host's PID namespace.
const HOST_PID_NS: &str = r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#;

const ID: &str = "c1";

struct Pod {
    service: Service<FakeRuntime>,
    runtime: FakeRuntime,
    journal: Journal,
    exits: Arc<Exits>,
    bundle: tempfile::TempDir,
}

fn pod(config: &str) -> Pod {
    let bundle = tempfile::tempdir().expect("tempdir");
    std::fs::write(bundle.path().join("config.json"), config).expect("write config.json");
    let exits = Arc::new(Exits::default());
    let runtime = FakeRuntime::new(exits.clone());
    let journal = runtime.journal();
    let service = Service::new(
        "cnfbox-test",
        exits.clone(),
        Arc::new(FakePublisher(journal.clone())),
        Box::new(FakeRuntimes(runtime.clone())),
        Arc::new(ExitSignal::default()),
    );
    Pod {
        service,
        runtime,
        journal,
        exits,
        bundle,
    }
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: MessageHeader::default(),
        metadata: HashMap::new(),
        timeout_nano: 0,
        connection_data: Default::default(),
    }
}

fn code<T: std::fmt::Debug>(r: TtrpcResult<T>) -> Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected a ttrpc status, got {other:?}"),
    }
}

fn call(c: Call) -> Entry {
    Entry::Call(c)
}

fn event(topic: &str, status: Option<u32>) -> Entry {
    Entry::Event {
        topic: topic.into(),
        status,
    }
}

fn status_of(s: &StateResponse) -> Status {
    s.status.enum_value().expect("a known status")
}

impl Pod {
    fn bundle(&self) -> String {
        self.bundle.path().display().to_string()
    }

    fn create_req(&self) -> CreateTaskRequest {
        CreateTaskRequest {
            id: ID.into(),
            bundle: self.bundle(),
            ..Default::default()
        }
    }

    async fn create(&self) -> u32 {
        let resp = self.service.create(&ctx(), self.create_req()).await;
        resp.expect("create").pid
    }

    async fn state(&self, exec_id: &str) -> TtrpcResult<StateResponse> {
        let req = StateRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.state(&ctx(), req).await
    }

    async fn start(&self, exec_id: &str) -> TtrpcResult<u32> {
        let req = StartRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn kill(&self, exec_id: &str, signal: u32) -> TtrpcResult<()> {
        let req = KillRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), req).await.map(drop)
    }

    async fn wait(&self, exec_id: &str) -> u32 {
        let req = WaitRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp = self.service.wait(&ctx(), req).await.expect("wait");
        resp.exit_status
    }

    async fn delete(&self, id: &str, exec_id: &str) -> TtrpcResult<u32> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service
            .delete(&ctx(), req)
            .await
            .map(|r| r.exit_status)
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Reads the FIFO at `path` to EOF on a thread (containerd's side).
fn read_fifo(path: &Path) -> std::thread::JoinHandle<String> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut s = String::new();
        std::fs::File::open(&path)
            .expect("open stdout FIFO")
            .read_to_string(&mut s)
            .expect("read stdout FIFO");
        s
    })
}

#[tokio::test]
async fn create_start_kill_wait_delete_in_order() {
    let p = pod(OWN_PID_NS);
    let stdout = p.bundle.path().join("stdout");
    mkfifo(&stdout);
    let output = read_fifo(&stdout);
    let req = CreateTaskRequest {
        stdout: stdout.display().to_string(),
        ..p.create_req()
    };
    let pid = p.service.create(&ctx(), req).await.expect("create").pid;
    assert!(pid > 0);
    let st = p.state("").await.expect("state after create");
    assert_eq!((status_of(&st), st.pid), (Status::CREATED, pid));

    assert_eq!(p.start("").await.expect("start"), pid);
    let st = p.state("").await.expect("state after start");
    assert_eq!(status_of(&st), Status::RUNNING);
    assert_eq!(
        code(p.start("").await),
        Code::FAILED_PRECONDITION,
        "a running init cannot start again"
    );
    assert_eq!(
        code(p.delete(ID, "").await),
        Code::FAILED_PRECONDITION,
        "a running container is killed before it is deleted"
    );

    p.kill("", 15).await.expect("kill");
    assert_eq!(p.wait("").await, 128 + 15);
    p.journal.event(topics::TASK_EXIT_EVENT_TOPIC).await;
    let st = p.state("").await.expect("state after exit");
    assert_eq!((status_of(&st), st.exit_status), (Status::STOPPED, 143));
    assert_eq!(
        code(p.kill("", 9).await),
        Code::NOT_FOUND,
        "an exited process is not there to kill"
    );

    assert_eq!(p.delete(ID, "").await.expect("delete"), 143);
    assert_eq!(code(p.state("").await), Code::NOT_FOUND, "deleted");
    assert_eq!(code(p.delete(ID, "").await), Code::NOT_FOUND, "twice");
    assert_eq!(
        output.join().expect("FIFO reader"),
        "hello from c1\n",
        "the container's stdout reached containerd's FIFO"
    );

    let id = || ID.to_owned();
    assert_eq!(
        p.journal.entries(),
        vec![
            call(Call::Create {
                id: id(),
                bundle: p.bundle()
            }),
            event(topics::TASK_CREATE_EVENT_TOPIC, None),
            call(Call::Start { id: id() }),
            event(topics::TASK_START_EVENT_TOPIC, None),
            call(Call::Kill {
                id: id(),
                signal: 15,
                all: false
            }),
            event(topics::TASK_EXIT_EVENT_TOPIC, Some(143)),
            call(Call::Delete {
                id: id(),
                force: false
            }),
            event(topics::TASK_DELETE_EVENT_TOPIC, Some(143)),
        ]
    );
}

#[tokio::test]
async fn failed_create_is_not_not_found_and_leaves_nothing() {
    let p = pod(OWN_PID_NS);
    // The runtime's message says "does not exist"; its kind says failed.
    p.runtime.fail_next("create", Some("failed"));
    let got = code(p.service.create(&ctx(), p.create_req()).await);
    assert_ne!(
        got,
        Code::NOT_FOUND,
        "a failed create is no missing container"
    );
    assert_eq!(got, Code::UNKNOWN);
    // Without a kind (an older runtime) it is no missing container either.
    p.runtime.fail_next("create", None);
    assert_eq!(
        code(p.service.create(&ctx(), p.create_req()).await),
        Code::UNKNOWN
    );

    assert_eq!(code(p.state("").await), Code::NOT_FOUND, "not registered");
    assert!(
        p.journal.topics().is_empty(),
        "no TaskCreate for a failed create"
    );
    assert_eq!(p.journal.calls().len(), 2, "{:?}", p.journal.calls());
    // The id is free again.
    assert!(p.create().await > 0);
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_reach_no_runtime() {
    let p = pod(OWN_PID_NS);
    assert_eq!(code(p.delete("nope", "").await), Code::NOT_FOUND);
    assert_eq!(code(p.state("").await), Code::NOT_FOUND);
    assert_eq!(code(p.kill("", 9).await), Code::NOT_FOUND);
    p.create().await;
    assert_eq!(
        code(p.delete(ID, "no-such-exec").await),
        Code::NOT_FOUND,
        "an unknown exec of a known container"
    );
    assert_eq!(
        code(p.service.create(&ctx(), p.create_req()).await),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        p.journal.calls(),
        vec![Call::Create {
            id: ID.into(),
            bundle: p.bundle()
        }]
    );
}

#[tokio::test]
async fn deleting_a_created_container_forces_it_and_waits_for_its_exit() {
    let p = pod(OWN_PID_NS);
    p.create().await;
    assert_eq!(p.delete(ID, "").await.expect("delete"), 128 + 9);
    assert_eq!(
        p.journal.calls().last(),
        Some(&Call::Delete {
            id: ID.into(),
            force: true
        }),
        "a created init is killed by delete --force"
    );
    assert_eq!(
        p.journal.event(topics::TASK_EXIT_EVENT_TOPIC).await,
        Some(137)
    );
    assert_eq!(code(p.state("").await), Code::NOT_FOUND);
}

#[tokio::test]
async fn delete_retries_forced_and_takes_not_found_as_gone() {
    let p = pod(OWN_PID_NS);
    p.create().await;
    p.start("").await.expect("start");
    p.kill("", 9).await.expect("kill");
    p.wait("").await;
    p.runtime.fail_next("delete", Some("failed"));
    p.runtime.fail_next("delete", Some("not_found"));
    assert_eq!(p.delete(ID, "").await.expect("delete"), 137);
    let deletes: Vec<_> = p
        .journal
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Delete { .. }))
        .collect();
    assert_eq!(
        deletes,
        [false, true].map(|force| Call::Delete {
            id: ID.into(),
            force
        })
    );
    assert_eq!(code(p.state("").await), Code::NOT_FOUND, "gone");
}

#[tokio::test]
async fn a_failed_forced_retry_keeps_the_container() {
    let p = pod(OWN_PID_NS);
    p.create().await;
    p.start("").await.expect("start");
    p.kill("", 9).await.expect("kill");
    p.wait("").await;
    p.runtime.fail_next("delete", Some("failed"));
    p.runtime.fail_next("delete", Some("failed"));
    assert_eq!(code(p.delete(ID, "").await), Code::UNKNOWN);
    assert!(
        p.state("").await.is_ok(),
        "still known: containerd may retry"
    );
    assert!(!p
        .journal
        .topics()
        .contains(&topics::TASK_DELETE_EVENT_TOPIC.to_owned()));
}

#[tokio::test]
async fn a_shared_pid_namespace_has_its_leftovers_killed_before_the_exit() {
    let p = pod(HOST_PID_NS);
    p.create().await;
    p.start("").await.expect("start");
    p.kill("", 15).await.expect("kill");
    p.journal.event(topics::TASK_EXIT_EVENT_TOPIC).await;
    let tail: Vec<_> = p.journal.entries().into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        vec![
            event(topics::TASK_EXIT_EVENT_TOPIC, Some(143)),
            call(Call::Kill {
                id: ID.into(),
                signal: 9,
                all: true
            }),
            call(Call::Kill {
                id: ID.into(),
                signal: 15,
                all: false
            }),
        ],
        "the cgroup's leftovers are SIGKILLed after the init's exit, before TaskExit"
    );
}

#[tokio::test]
async fn an_exec_runs_its_spec_and_reports_its_own_exit() {
    let p = pod(OWN_PID_NS);
    p.create().await;
    p.start("").await.expect("start");
    let spec = br#"{"args":["/bin/true"],"cwd":"/"}"#.to_vec();
    let exec = |spec: Vec<u8>| ExecProcessRequest {
        id: ID.into(),
        exec_id: "e1".into(),
        spec: Some(Any {
            value: spec,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    p.service
        .exec(&ctx(), exec(spec.clone()))
        .await
        .expect("exec");
    assert_eq!(
        code(p.service.exec(&ctx(), exec(spec.clone())).await),
        Code::ALREADY_EXISTS
    );
    let pid = p.start("e1").await.expect("start exec");
    let st = p.state("e1").await.expect("exec state");
    assert_eq!(
        (status_of(&st), st.pid, st.exec_id.as_str()),
        (Status::RUNNING, pid, "e1")
    );
    assert_eq!(
        p.journal.calls().last(),
        Some(&Call::Exec {
            id: ID.into(),
            process: String::from_utf8(spec).expect("utf-8"),
        }),
        "the exec's process spec reached the runtime"
    );
    let leftover = std::fs::read_dir(p.bundle.path())
        .expect("read bundle")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(".exec-"));
    assert!(
        leftover.is_none(),
        "the process JSON is removed: {leftover:?}"
    );

    assert_eq!(
        code(p.delete(ID, "e1").await),
        Code::FAILED_PRECONDITION,
        "a running exec is not deleted"
    );
    p.exits.deliver(pid as i32, 3);
    assert_eq!(p.wait("e1").await, 3);
    assert_eq!(p.delete(ID, "e1").await.expect("delete exec"), 3);
    assert_eq!(code(p.state("e1").await), Code::NOT_FOUND);
    let st = p.state("").await.expect("the init is untouched");
    assert_eq!(status_of(&st), Status::RUNNING);
    assert_eq!(
        code(p.service.exec(&ctx(), exec(Vec::new())).await),
        Code::INVALID_ARGUMENT,
        "an exec needs a process spec"
    );
}

#[tokio::test]
async fn no_exec_joins_an_init_that_exited() {
    let p = pod(OWN_PID_NS);
    let exec = |exec_id: &str| ExecProcessRequest {
        id: ID.into(),
        exec_id: exec_id.into(),
        spec: Some(Any {
            value: br#"{"args":["/bin/true"],"cwd":"/"}"#.to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let init = p.create().await;
    assert_eq!(
        code(p.service.exec(&ctx(), exec("early")).await),
        Code::FAILED_PRECONDITION,
        "an init not yet started"
    );
    p.start("").await.expect("start");
    p.service
        .exec(&ctx(), exec("added"))
        .await
        .expect("exec while the init runs");
    p.exits.deliver(init as i32, 0);
    assert_eq!(p.wait("").await, 0);
    let calls = p.journal.calls().len();
    assert_eq!(
        code(p.service.exec(&ctx(), exec("late")).await),
        Code::FAILED_PRECONDITION,
        "the init's pid may name a host process by now"
    );
    assert_eq!(
        code(p.start("added").await),
        Code::FAILED_PRECONDITION,
        "an exec added before the exit is not started after it"
    );
    assert!(
        !p.journal.calls()[calls..]
            .iter()
            .any(|c| matches!(c, Call::Exec { .. })),
        "no exec reached the runtime: {:?}",
        &p.journal.calls()[calls..]
    );
}

#[tokio::test]
async fn pause_resume_update_and_pids_reach_the_runtime() {
    let p = pod(OWN_PID_NS);
    let pid = p.create().await;
    p.start("").await.expect("start");
    let id = || ID.to_owned();
    let pause = PauseRequest {
        id: id(),
        ..Default::default()
    };
    p.service.pause(&ctx(), pause).await.expect("pause");
    assert_eq!(
        status_of(&p.state("").await.expect("state")),
        Status::PAUSED
    );
    let resume = ResumeRequest {
        id: id(),
        ..Default::default()
    };
    p.service.resume(&ctx(), resume).await.expect("resume");
    assert_eq!(
        status_of(&p.state("").await.expect("state")),
        Status::RUNNING
    );

    let update = |resources: &[u8]| UpdateTaskRequest {
        id: id(),
        resources: Some(Any {
            value: resources.to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    assert_eq!(
        code(p.service.update(&ctx(), update(b"")).await),
        Code::INVALID_ARGUMENT
    );
    let resources = br#"{"cpu":{"shares":512}}"#;
    p.service
        .update(&ctx(), update(resources))
        .await
        .expect("update");
    let pids = PidsRequest {
        id: id(),
        ..Default::default()
    };
    let got = p.service.pids(&ctx(), pids).await.expect("pids");
    let got: Vec<u32> = got.processes.iter().map(|i| i.pid).collect();
    assert_eq!(got, vec![pid]);

    let calls = p.journal.calls();
    assert_eq!(
        calls[2..],
        [
            Call::Pause { id: id() },
            Call::Resume { id: id() },
            Call::Update {
                id: id(),
                resources: resources.to_vec()
            },
            Call::Ps { id: id() },
        ],
        "an update without resources reaches no runtime"
    );
}
