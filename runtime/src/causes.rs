//! The innermost cause of a failure inside libcontainer's processes, kept
//! for the one-line error.
//!
//! libcontainer 0.7's init and intermediate processes (forks of cnfbox)
//! report a failure to the parent as the top error's text only ("failed
//! to prepare rootfs", "failed syscall"); the reason ("filesystem proc must
//! be mounted on ordinary directory", the errno of a refused `capset`) is
//! only in the `err` field of the error event they log. cnfbox records
//! every libcontainer error event that has an `err` field in a memfd made
//! before any fork (the forks share it; `MFD_CLOEXEC` keeps it from the
//! container's program), and the one-line error ends with the first one
//! recorded: the innermost, logged where the failure happened.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::fields::Fields;

static RECORD: OnceLock<File> = OnceLock::new();

/// Makes the record (once per command, before libcontainer forks).
pub fn init() {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    match memfd_create(c"cnfbox-causes", MemFdCreateFlag::MFD_CLOEXEC) {
        Ok(fd) => {
            let _ = RECORD.set(File::from(fd));
        }
        // Without it the error line is only shorter.
        Err(err) => tracing::debug!(%err, "memfd_create for error causes"),
    }
}

/// Records libcontainer's (and libcgroups') error events with a cause.
pub struct CauseLayer;

impl<S: Subscriber> Layer<S> for CauseLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR
            || !(meta.target().starts_with("libcontainer")
                || meta.target().starts_with("libcgroups"))
        {
            return;
        }
        let Some(mut file) = RECORD.get() else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let flat = |s: &str| s.replace(['\n', '\t'], " ");
        // Events that format their cause into the message instead ("failed
        // to open /proc/self/oom_score_adj: Permission denied") are the
        // cause as they stand.
        let inner = match fields.extra.get("err").and_then(|v| v.as_str()) {
            Some(err) => innermost(err),
            None if fields.msg.contains(": ") => String::new(),
            None => return,
        };
        let line = format!("{}\t{}\n", flat(&fields.msg), flat(&inner));
        // Nowhere to report a failed write: the line is only shorter.
        let _ = file.write_all(line.as_bytes());
    }
}

/// `line` with the first cause recorded by this command or its forks
/// (where the failure happened) when the line lacks it: ": INNER" when the
/// line ends with that event's message, else ": MESSAGE: INNER".
pub fn complete(line: String) -> String {
    let Some(file) = RECORD.get() else {
        return line;
    };
    let mut buf = vec![0u8; 4096];
    let Ok(n) = file.read_at(&mut buf, 0) else {
        return line;
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    let Some((msg, inner)) = text.lines().next().and_then(|l| l.split_once('\t')) else {
        return line;
    };
    if inner.is_empty() {
        // The message is the cause.
        if line.contains(msg) {
            line
        } else {
            format!("{line}: {msg}")
        }
    } else if line.contains(inner) {
        line
    } else if line.ends_with(msg) {
        format!("{line}: {inner}")
    } else {
        format!("{line}: {msg}: {inner}")
    }
}

/// The innermost message of a Debug-formatted error chain: its last quoted
/// string (`Mount(Other("filesystem proc ..."))`), else its innermost
/// parenthesised word (`Nix(EPERM)`); an `(os error N)` gains its errno name.
fn innermost(debug: &str) -> String {
    let quoted = debug
        .rfind('"')
        .and_then(|end| debug[..end].rfind('"').map(|start| &debug[start + 1..end]))
        .filter(|s| !s.trim().is_empty());
    let msg = match quoted {
        // `NotFound(Some("/proc/9"))`: the kind names what the path lacked.
        Some(q) => match kind_before_quote(debug) {
            Some(kind) => format!("{kind}: {}", q.replace("\\\"", "\"")),
            None => q.replace("\\\"", "\""),
        },
        None => {
            let open = debug.rfind('(');
            let close = open.and_then(|o| debug[o..].find(')').map(|c| o + c));
            match (open, close) {
                (Some(o), Some(c)) if c > o + 1 => debug[o + 1..c].to_string(),
                _ => debug.to_string(),
            }
        }
    };
    match errno_of(&msg) {
        Some(name) => format!("{name}: {msg}"),
        None => msg,
    }
}

/// The variant wrapping the last quoted string, past any `Some(`, unless it
/// is a catch-all (`Other`, `Msg`, a `...Error` wrapper): `NotFound` in
/// `Procfs(NotFound(Some("..")))`.
fn kind_before_quote(debug: &str) -> Option<&str> {
    let end = debug.rfind('"')?;
    let start = debug[..end].rfind('"')?;
    let mut head = debug[..start].trim_end_matches('(');
    loop {
        let ident_start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let ident = &head[ident_start..];
        if ident == "Some" {
            head = head[..ident_start].trim_end_matches('(');
            continue;
        }
        let catch_all = matches!(ident, "Other" | "Msg" | "Message") || ident.ends_with("Error");
        return (!ident.is_empty() && !catch_all).then_some(ident);
    }
}

/// `EPERM` for a message ending in `(os error 1)`.
fn errno_of(msg: &str) -> Option<String> {
    let n: i32 = msg
        .rsplit_once("(os error ")?
        .1
        .strip_suffix(')')?
        .parse()
        .ok()?;
    let errno = nix::errno::Errno::from_raw(n);
    // Errno's Debug is its name.
    (errno != nix::errno::Errno::UnknownErrno).then(|| format!("{errno:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innermost_messages() {
        assert_eq!(
            innermost(r#"Mount(Other("filesystem proc must be mounted on ordinary directory"))"#),
            "filesystem proc must be mounted on ordinary directory"
        );
        assert_eq!(
            innermost(
                r#"SetCaps(CapsError("capset failure: Operation not permitted (os error 1)"))"#
            ),
            "EPERM: capset failure: Operation not permitted (os error 1)"
        );
        assert_eq!(innermost("Nix(EPERM)"), "EPERM");
        assert_eq!(
            innermost(r#"Mount(Procfs(NotFound(Some("/proc/9"))))"#),
            "NotFound: /proc/9"
        );
        assert_eq!(innermost("Plain"), "Plain");
    }
}
