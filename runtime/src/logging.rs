//! Log set-up: runc's formats, so containerd can read what cnfbox says.
//!
//! containerd runs runtimes with `--log FILE --log-format json` and, when a
//! command fails, reads the last `"level":"error"` line of FILE for the
//! message it reports (containerd/go-runc `parseLogs`). Each JSON line is
//! therefore `{"level":..,"msg":..,"time":..}` plus the event's fields, as
//! logrus writes them.

use crate::fields::Fields;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-format {0:?}: expected text or json")]
    Format(String),
    #[error("open log file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Log line encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Self, LogError> {
        match s {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(LogError::Format(other.to_string())),
        }
    }
}

enum Sink {
    File(Mutex<File>),
    Stderr,
}

struct RuncLayer {
    sink: Sink,
    format: Format,
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let level = level_name(event.metadata().level());
        let line = match self.format {
            Format::Json => {
                let mut obj = fields.extra;
                obj.insert("level".into(), level.into());
                obj.insert("msg".into(), fields.msg.into());
                obj.insert("time".into(), time.into());
                let mut s = serde_json::Value::Object(obj).to_string();
                s.push('\n');
                s
            }
            Format::Text => {
                let mut s = format!("time=\"{time}\" level={level} msg={:?}", fields.msg);
                for (k, v) in &fields.extra {
                    let _ = write!(s, " {k}={v}");
                }
                s.push('\n');
                s
            }
        };
        match &self.sink {
            // A failed log write has nowhere to be reported; the command's
            // own result still reaches the caller through its exit code.
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

/// Installs the global subscriber.
///
/// Without `--log`, nothing is logged unless `--debug` is given: the one-line
/// error on stderr is the whole story for a person at a terminal. The
/// causes of libcontainer's errors are recorded in every case
/// (`causes.rs`), for that line.
pub fn init(log: Option<&Path>, format: Format, debug: bool) -> Result<(), LogError> {
    let runc = match log {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
            let level = if debug {
                LevelFilter::DEBUG
            } else {
                LevelFilter::INFO
            };
            Some((Sink::File(Mutex::new(file)), level))
        }
        None if debug => Some((Sink::Stderr, LevelFilter::DEBUG)),
        None => None,
    }
    .map(|(sink, level)| RuncLayer { sink, format }.with_filter(level));
    crate::causes::init();
    let causes = crate::causes::CauseLayer.with_filter(LevelFilter::ERROR);
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(runc)
        .with(causes)
        .try_init();
    Ok(())
}
