//! OCI hooks see the bundle the user gave.
//!
//! libcontainer 0.7 loads the spec only from `BUNDLE/config.json`, so cnfbox
//! creates the container from a staged bundle (`<root>/.staging/<id>.<pid>`,
//! later kept as `<root>/<id>/bundle`) and libcontainer hands that path to
//! every hook in the state on its stdin; runc hands the user's bundle, which
//! `cnfbox state` reports. The hooks that run in the runtime's namespaces
//! (`prestart`, `createRuntime`, `poststart`, `poststop`) are run through
//! `cnfbox hook-relay`, which puts the user's bundle in the state and runs
//! the hook with it, with the hook's own arguments, environment and exit
//! status; libcontainer's timeout still applies to the relay, and the hook
//! dies with it. Hooks that run inside the container (`createContainer`,
//! `startContainer`) are left as they are: the relay is the host's cnfbox
//! binary, which is never executed in a container's namespaces. They get
//! the user's bundle from libcontainer's state itself, because `create`
//! gives libcontainer the staged spec at a path whose realpath is the
//! user's bundle (`bundle_alias`); that also covers `prestart` and
//! `createRuntime`, which stay relayed for when the alias cannot be made.

use std::io::{Read as _, Write as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oci_spec::runtime::{Hook, Spec};

/// The hidden subcommand that runs a hook.
pub const RELAY: &str = "hook-relay";

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("find the cnfbox binary for the hook relay")]
    Exe(#[source] std::io::Error),
    #[error("hook-relay: read the container state from stdin")]
    ReadState(#[source] std::io::Error),
    #[error("hook-relay: the container state on stdin is not JSON")]
    ParseState(#[source] serde_json::Error),
    #[error("hook-relay: run hook {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hook-relay: write the state to hook {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hook-relay: wait for hook {path}")]
    Wait {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Routes the runtime-namespace hooks of `spec` through the relay, which
/// tells them `bundle`.
pub fn relay_through_cnfbox(
    spec: &mut Spec,
    bundle: &Path,
    state_dir: &Path,
) -> Result<(), HookError> {
    let Some(mut hooks) = spec.hooks().clone() else {
        return Ok(());
    };
    let exe = std::env::current_exe().map_err(HookError::Exe)?;
    let report = state_dir.join(POSTSTOP_FAILED);
    let wrap = |list: &Option<Vec<Hook>>, report: Option<&Path>| -> Option<Vec<Hook>> {
        list.as_ref()
            .map(|l| l.iter().map(|h| wrapped(h, &exe, bundle, report)).collect())
    };
    hooks.set_prestart(wrap(hooks.prestart(), None));
    hooks.set_create_runtime(wrap(hooks.create_runtime(), None));
    hooks.set_poststart(wrap(hooks.poststart(), None));
    // libcontainer stops at the first poststop hook that fails and says
    // only how: the relay names it in the state dir (`poststop_paths`).
    hooks.set_poststop(wrap(hooks.poststop(), Some(&report)));
    spec.set_hooks(Some(hooks));
    Ok(())
}

/// The file in a container's state dir naming the poststop hook that
/// failed (written by its relay).
pub const POSTSTOP_FAILED: &str = "poststop-failed";

/// `hook` as run by `exe hook-relay --bundle BUNDLE [--report FILE] -- PATH
/// ARG0 ARGS...`.
fn wrapped(hook: &Hook, exe: &Path, bundle: &Path, report: Option<&Path>) -> Hook {
    let path = hook.path().display().to_string();
    let mut args: Vec<String> = vec![
        "cnfbox".into(),
        RELAY.into(),
        "--bundle".into(),
        bundle.display().to_string(),
    ];
    if let Some(r) = report {
        args.extend(["--report".into(), r.display().to_string()]);
    }
    args.extend(["--".into(), path.clone()]);
    match hook.args() {
        Some(a) if !a.is_empty() => args.extend(a.iter().cloned()),
        // OCI: without args the hook's argv[0] is its path.
        _ => args.push(path),
    }
    let mut w = hook.clone();
    w.set_path(exe.to_path_buf());
    w.set_args(Some(args));
    w
}

/// The path of the poststop hook that failed, as its relay wrote it in the
/// container's state dir `root`; else (a container created before the
/// relay reported) the paths of all its poststop hooks in the libcontainer
/// config, as the user gave them (the relay's own argument after `--`),
/// comma-separated; `?` when neither can be read.
pub fn poststop_paths(root: &Path) -> String {
    if let Ok(failed) = std::fs::read_to_string(root.join(POSTSTOP_FAILED)) {
        if !failed.trim().is_empty() {
            return failed.trim().to_string();
        }
    }
    let Ok(config) = libcontainer::config::YoukiConfig::load(root) else {
        return "?".into();
    };
    let hooks = config
        .hooks
        .as_ref()
        .and_then(|h| h.poststop().clone())
        .unwrap_or_default();
    let paths: Vec<String> = hooks
        .iter()
        .map(|h| {
            let args = h.args().as_deref().unwrap_or_default();
            match args.iter().position(|a| a == "--") {
                Some(i) if args.get(1).map(String::as_str) == Some(RELAY) => args
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| h.path().display().to_string()),
                _ => h.path().display().to_string(),
            }
        })
        .collect();
    if paths.is_empty() {
        "?".into()
    } else {
        paths.join(", ")
    }
}

/// `cnfbox hook-relay --bundle BUNDLE -- PATH ARG0 ARGS...`: runs the hook
/// with the state from stdin, its `bundle` made `BUNDLE`; returns the
/// hook's exit code (128 + signal if it was killed).
pub fn run_relay(
    bundle: &Path,
    report: Option<&Path>,
    path: &Path,
    argv: &[String],
) -> Result<u8, HookError> {
    let code = relay(bundle, path, argv);
    let failed = !matches!(code, Ok(0));
    if let (true, Some(report)) = (failed, report) {
        // Only the first failure counts: libcontainer runs no hook after it.
        if let Err(err) = std::fs::write(report, path.display().to_string()) {
            tracing::warn!(report = %report.display(), %err, "name the failing poststop hook");
        }
    }
    code
}

fn relay(bundle: &Path, path: &Path, argv: &[String]) -> Result<u8, HookError> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(HookError::ReadState)?;
    let mut state: serde_json::Value =
        serde_json::from_slice(&raw).map_err(HookError::ParseState)?;
    state["bundle"] = bundle.display().to_string().into();
    let mut cmd = Command::new(path);
    if let Some((arg0, rest)) = argv.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.stdin(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe; it touches no memory of
    // the parent.
    unsafe {
        cmd.pre_exec(|| {
            // libcontainer's hook timeout kills the relay: the hook goes too.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = state.to_string();
        // A hook that exits without reading its state is not an error.
        if let Err(source) = stdin.write_all(body.as_bytes()) {
            if source.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(HookError::WriteState {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    let status = child.wait().map_err(|source| HookError::Wait {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{HookBuilder, HooksBuilder};

    use super::*;

    fn hook(path: &str, args: Option<&[&str]>) -> Hook {
        let mut b = HookBuilder::default().path(path).timeout(5);
        if let Some(a) = args {
            b = b.args(a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().unwrap()
    }

    #[test]
    fn runtime_namespace_hooks_go_through_the_relay_and_keep_their_argv() {
        let mut spec = Spec::default();
        spec.set_hooks(Some(
            HooksBuilder::default()
                .prestart(vec![hook("/bin/pre", Some(&["pre", "-x"]))])
                .create_runtime(vec![hook("/bin/cr", None)])
                .create_container(vec![hook("/bin/cc", None)])
                .start_container(vec![hook("/bin/sc", None)])
                .poststart(vec![hook("/bin/ps", None)])
                .poststop(vec![hook("/bin/stop", None)])
                .build()
                .unwrap(),
        ));
        relay_through_cnfbox(&mut spec, Path::new("/srv/bundle"), Path::new("/run/c/c1")).unwrap();
        let hooks = spec.hooks().clone().unwrap();
        let exe = std::env::current_exe().unwrap();
        let pre = &hooks.prestart().as_ref().unwrap()[0];
        assert_eq!(pre.path(), &exe);
        assert_eq!(
            pre.args().as_deref().unwrap(),
            [
                "cnfbox",
                RELAY,
                "--bundle",
                "/srv/bundle",
                "--",
                "/bin/pre",
                "pre",
                "-x"
            ]
        );
        assert_eq!(pre.timeout(), Some(5));
        let cr = &hooks.create_runtime().as_ref().unwrap()[0];
        assert_eq!(cr.args().as_deref().unwrap()[5..], ["/bin/cr", "/bin/cr"]);
        for h in [&hooks.poststart(), &hooks.poststop()] {
            assert_eq!(h.as_ref().unwrap()[0].path(), &exe);
        }
        // Only a poststop hook's relay reports its failure.
        let stop = hooks.poststop().as_ref().unwrap()[0]
            .args()
            .clone()
            .unwrap();
        assert_eq!(
            stop[4..],
            [
                "--report",
                "/run/c/c1/poststop-failed",
                "--",
                "/bin/stop",
                "/bin/stop"
            ]
        );
        let ps = hooks.poststart().as_ref().unwrap()[0]
            .args()
            .clone()
            .unwrap();
        assert!(!ps.contains(&"--report".to_string()), "{ps:?}");
        // In-container hooks are not the host binary's to run.
        assert_eq!(
            hooks.create_container().as_ref().unwrap()[0].path(),
            Path::new("/bin/cc")
        );
        assert_eq!(
            hooks.start_container().as_ref().unwrap()[0].path(),
            Path::new("/bin/sc")
        );
        let mut none = Spec::default();
        relay_through_cnfbox(&mut none, Path::new("/b"), Path::new("/run/c/x")).unwrap();
        assert_eq!(none, Spec::default());
    }
}
