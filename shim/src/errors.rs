//! The shim's errors by kind, and the one place that turns a kind into a
//! ttrpc code for containerd.
//!
//! A runtime failure's kind is the `kind` of `cnfbox`'s error log line
//! (`not_found` when the container does not exist, `failed` otherwise),
//! never the words of its message: "bind source ... does not exist" is a
//! failed create, not a missing container, and containerd treats NOT_FOUND
//! from delete as "already gone".

use containerd_shim::protos::ttrpc::{self, Code};

use crate::runtime::RuntimeError;

/// What went wrong, as far as containerd needs to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The container, exec or process does not exist (any more).
    NotFound,
    /// A container or exec of that id is already there.
    AlreadyExists,
    /// The shim does not do that (restore of a checkpoint).
    Unimplemented,
    /// The request is malformed (no resources in an update, ...).
    InvalidArgument,
    /// The request does not fit the process's state (delete of a running
    /// container, a second terminal, ...).
    FailedPrecondition,
    /// The shim itself failed (stdio, a pid file, the runtime's output).
    Internal,
    /// The runtime refused or failed the operation.
    Unknown,
}

impl Kind {
    /// The kind of a runtime error log line's `kind` field.
    pub fn of_runtime_log(kind: Option<&str>) -> Self {
        match kind {
            // A kill of an exited container: containerd's runc shim answers
            // NOT_FOUND ("process already finished") and containerd's CRI
            // goes on stopping the pod or removing the container.
            Some(
                cnfbox_annotations::error_kind::NOT_FOUND
                | cnfbox_annotations::error_kind::NOT_RUNNING,
            ) => Self::NotFound,
            _ => Self::Unknown,
        }
    }

    /// The ttrpc code containerd gets for this kind.
    pub fn code(self) -> Code {
        match self {
            Self::NotFound => Code::NOT_FOUND,
            Self::AlreadyExists => Code::ALREADY_EXISTS,
            Self::Unimplemented => Code::UNIMPLEMENTED,
            Self::InvalidArgument => Code::INVALID_ARGUMENT,
            Self::FailedPrecondition => Code::FAILED_PRECONDITION,
            Self::Internal => Code::INTERNAL,
            Self::Unknown => Code::UNKNOWN,
        }
    }
}

impl RuntimeError {
    /// The kind of a failure to run `cnfbox`: the runtime's own for a
    /// command that failed, the shim's for everything around it.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Failed { kind, .. } => Kind::of_runtime_log(kind.as_deref()),
            // Not the container: the runtime binary is missing.
            Self::NotFound { .. }
            | Self::Spawn { .. }
            | Self::Input { .. }
            | Self::Reaper { .. }
            | Self::PidFile { .. }
            | Self::BadPid { .. }
            | Self::Json { .. } => Kind::Internal,
        }
    }
}

/// The ttrpc error of `kind` with `msg`.
pub fn status(kind: Kind, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(kind.code(), msg.into()))
}

/// NOT_FOUND for `what`.
pub fn not_found(what: impl std::fmt::Display) -> ttrpc::Error {
    status(Kind::NotFound, format!("{what} not found"))
}

/// A failure to run the runtime, by its kind.
pub fn runtime(e: RuntimeError) -> ttrpc::Error {
    status(e.kind(), e.to_string())
}

/// A failure of the shim itself, with its whole chain of causes (the
/// caller, containerd or kubelet, sees one line).
pub fn internal(e: impl std::error::Error) -> ttrpc::Error {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    status(Kind::Internal, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(e: &ttrpc::Error) -> Code {
        match e {
            ttrpc::Error::RpcStatus(s) => s.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    fn failed(message: &str, kind: Option<&str>) -> RuntimeError {
        RuntimeError::Failed {
            command: "create".into(),
            code: 1,
            message: message.into(),
            kind: kind.map(str::to_owned),
        }
    }

    #[test]
    fn kinds_map_to_their_codes() {
        for (kind, code) in [
            (Kind::NotFound, Code::NOT_FOUND),
            (Kind::AlreadyExists, Code::ALREADY_EXISTS),
            (Kind::Unimplemented, Code::UNIMPLEMENTED),
            (Kind::InvalidArgument, Code::INVALID_ARGUMENT),
            (Kind::FailedPrecondition, Code::FAILED_PRECONDITION),
            (Kind::Internal, Code::INTERNAL),
            (Kind::Unknown, Code::UNKNOWN),
        ] {
            assert_eq!(kind.code(), code, "{kind:?}");
            assert_eq!(code_of(&status(kind, "x")), code, "{kind:?}");
        }
    }

    #[test]
    fn runtime_errors_go_by_the_logged_kind_not_the_words() {
        let gone = failed("container abc does not exist", Some("not_found"));
        assert_eq!(code_of(&runtime(gone)), Code::NOT_FOUND);
        let bind = failed(
            "create container c: bind source /srv/x does not exist",
            Some("failed"),
        );
        assert_eq!(
            code_of(&runtime(bind)),
            Code::UNKNOWN,
            "a missing bind source is not a missing container"
        );
        let exited = failed(
            "kill container abc: container not running (stopped)",
            Some("not_running"),
        );
        assert_eq!(
            code_of(&runtime(exited)),
            Code::NOT_FOUND,
            "a kill of an exited container is runc's \"process already finished\""
        );
        let unlabelled = failed("container abc does not exist", None);
        assert_eq!(code_of(&runtime(unlabelled)), Code::UNKNOWN);
        let no_binary = RuntimeError::NotFound {
            name: "cnfbox".into(),
            shim: "/usr/bin/containerd-shim-cnfbox-v2".into(),
        };
        assert_eq!(
            code_of(&runtime(no_binary)),
            Code::INTERNAL,
            "a missing runtime binary is the shim's failure, not a missing container"
        );
        let io = std::io::Error::other("boom");
        assert_eq!(code_of(&internal(io)), Code::INTERNAL);
        assert_eq!(code_of(&not_found("exec e1")), Code::NOT_FOUND);
    }
}
