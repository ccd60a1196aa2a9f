//! Named process setups the tests and the CLI refer to.

use std::fmt;
use std::str::FromStr;

use crate::rootfs::{CHECKER_PATH, PAUSE_PATH};

/// Seconds [`Scenario::Sleep`] sleeps: about 31 years. A number rather than
/// `infinity`, which only busybox builds with float sleep accept.
pub const SLEEP_SECONDS: &str = "1000000000";

/// A named container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// `/bin/true`: exits 0 at once.
    True,
    /// Sleeps (practically) forever; stop it with a signal.
    Sleep,
    /// `sh -c 'exit N'`.
    Exit(u8),
    /// Prints the text and a newline on stdout.
    Echo(String),
    /// Runs `/bin/cnfbox-check`; parse its output with [`crate::CheckReport`].
    Checker,
    /// Runs `/bin/cnfbox-pause`: sleeps, exits 0 on SIGTERM or SIGINT.
    Pause,
}

/// An unknown scenario name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown scenario {name:?}: expected true, sleep, exit:N (0-255), echo:TEXT, checker or pause"
)]
pub struct ScenarioError {
    pub name: String,
}

impl Scenario {
    /// The process arguments (`process.args`) of this scenario.
    pub fn args(&self) -> Vec<String> {
        let v: Vec<&str> = match self {
            Scenario::True => vec!["/bin/true"],
            Scenario::Sleep => vec!["/bin/sleep", SLEEP_SECONDS],
            Scenario::Exit(code) => {
                return vec!["/bin/sh".into(), "-c".into(), format!("exit {code}")];
            }
            // printf, not echo: echo would take a leading "-n" as an option.
            Scenario::Echo(text) => {
                return vec!["/bin/printf".into(), "%s\\n".into(), text.clone()];
            }
            Scenario::Checker => vec![CHECKER_PATH],
            Scenario::Pause => vec![PAUSE_PATH],
        };
        v.into_iter().map(str::to_owned).collect()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::True => f.write_str("true"),
            Scenario::Sleep => f.write_str("sleep"),
            Scenario::Exit(code) => write!(f, "exit:{code}"),
            Scenario::Echo(text) => write!(f, "echo:{text}"),
            Scenario::Checker => f.write_str("checker"),
            Scenario::Pause => f.write_str("pause"),
        }
    }
}

impl FromStr for Scenario {
    type Err = ScenarioError;

    /// Parses `true`, `sleep`, `exit:N`, `echo:TEXT`, `checker`, `pause`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || ScenarioError { name: s.to_owned() };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("true", None) => Ok(Scenario::True),
            ("sleep", None) => Ok(Scenario::Sleep),
            ("exit", Some(code)) => code.parse().map(Scenario::Exit).map_err(|_| unknown()),
            ("echo", Some(text)) => Ok(Scenario::Echo(text.to_owned())),
            ("checker", None) => Ok(Scenario::Checker),
            ("pause", None) => Ok(Scenario::Pause),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            Scenario::True,
            Scenario::Sleep,
            Scenario::Exit(3),
            Scenario::Echo("hello: world".into()),
            Scenario::Checker,
            Scenario::Pause,
        ] {
            assert_eq!(s.to_string().parse::<Scenario>().expect("parse"), s);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["exit", "exit:256", "exit:x", "echo", "nope", "true:1"] {
            assert!(bad.parse::<Scenario>().is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_args() {
        assert_eq!(Scenario::Exit(3).args(), ["/bin/sh", "-c", "exit 3"]);
    }
}
