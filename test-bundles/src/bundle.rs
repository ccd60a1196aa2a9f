//! OCI runtime bundles: a busybox rootfs plus `config.json`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use tracing::info;

use crate::rootfs::{RootfsBuilder, RootfsError};
use crate::scenario::Scenario;
use crate::spec::{default_spec, SpecError, SpecOptions};

/// File name of the runtime config inside a bundle (runtime-spec bundle.md).
pub const CONFIG_FILE: &str = "config.json";
/// Directory name of the rootfs inside a bundle; `root.path` of the spec.
pub const ROOTFS_DIR: &str = "rootfs";

/// Errors while writing or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("creating bundle directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {path} already has a {CONFIG_FILE}")]
    Exists { path: PathBuf },
    #[error("bundle {path} has no {CONFIG_FILE}")]
    NoConfig { path: PathBuf },
    #[error("writing the rootfs of bundle {path}")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: RootfsError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("spec for {path} has no process to set {what} on")]
    NoProcess { path: PathBuf, what: &'static str },
    #[error("serializing the runtime spec for {path}")]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading runtime spec {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// A bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle directory (what `runc run --bundle` takes).
    pub dir: PathBuf,
    /// `dir/rootfs`.
    pub rootfs: PathBuf,
    /// `dir/config.json`.
    pub config_path: PathBuf,
}

impl Bundle {
    /// An existing bundle at `dir`; fails if it has no `config.json`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BundleError> {
        let b = Self::paths(dir.into());
        if !b.config_path.is_file() {
            return Err(BundleError::NoConfig { path: b.dir });
        }
        Ok(b)
    }

    fn paths(dir: PathBuf) -> Self {
        Self {
            rootfs: dir.join(ROOTFS_DIR),
            config_path: dir.join(CONFIG_FILE),
            dir,
        }
    }

    /// Reads `config.json` back.
    pub fn spec(&self) -> Result<Spec, BundleError> {
        Spec::load(&self.config_path).map_err(|source| BundleError::Load {
            path: self.config_path.clone(),
            source,
        })
    }

    /// Replaces `config.json` with `spec`.
    pub fn write_spec(&self, spec: &Spec) -> Result<(), BundleError> {
        write_spec(&self.config_path, spec)
    }
}

/// Writes `spec` as indented JSON to `path`.
fn write_spec(path: &Path, spec: &Spec) -> Result<(), BundleError> {
    let mut json = serde_json::to_vec_pretty(spec).map_err(|source| BundleError::Serialize {
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    fs::write(path, json).map_err(|source| BundleError::Write {
        path: path.to_owned(),
        source,
    })
}

type Modifier = Box<dyn FnOnce(&mut Spec)>;

/// Builds a bundle; everything not set keeps [`default_spec`]'s value.
pub struct BundleBuilder {
    dir: PathBuf,
    args: Option<Vec<String>>,
    env: Vec<(String, String)>,
    hostname: Option<String>,
    terminal: bool,
    annotations: HashMap<String, String>,
    files: usize,
    busybox: Option<PathBuf>,
    hard_link_busybox: bool,
    spec_options: SpecOptions,
    modifiers: Vec<Modifier>,
}

impl std::fmt::Debug for BundleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleBuilder")
            .field("dir", &self.dir)
            .field("args", &self.args)
            .field("files", &self.files)
            .field("modifiers", &self.modifiers.len())
            .finish_non_exhaustive()
    }
}

impl BundleBuilder {
    /// A bundle in `dir` (created if missing) running `sh`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            args: None,
            env: Vec::new(),
            hostname: None,
            terminal: false,
            annotations: HashMap::new(),
            files: 0,
            busybox: None,
            hard_link_busybox: true,
            spec_options: SpecOptions::default(),
            modifiers: Vec::new(),
        }
    }

    /// Runs `scenario`'s process.
    pub fn scenario(self, scenario: &Scenario) -> Self {
        self.args(scenario.args())
    }

    /// Sets `process.args`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `hostname`.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = Some(name.into());
        self
    }

    /// Sets (or replaces) `KEY=VALUE` in `process.env`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets `process.terminal`.
    pub fn terminal(mut self, on: bool) -> Self {
        self.terminal = on;
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Makes the bundle a container of CRI pod `pod` as containerd's CRI
    /// annotates it: `kind` is `"sandbox"` or `"container"` (a member).
    pub fn in_pod(self, pod: impl Into<String>, kind: &str) -> Self {
        self.annotation("io.kubernetes.cri.sandbox-id", pod)
            .annotation("io.kubernetes.cri.container-type", kind)
    }

    /// Adds `n` filler files to the rootfs (see [`RootfsBuilder::files`]).
    pub fn files(mut self, n: usize) -> Self {
        self.files = n;
        self
    }

    /// Sets `linux.cgroupsPath` (unset by default: the runtime decides).
    pub fn cgroups_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec_options.cgroups_path = Some(path.into());
        self
    }

    /// Adds a cgroup namespace.
    pub fn cgroup_namespace(mut self, on: bool) -> Self {
        self.spec_options.cgroup_namespace = on;
        self
    }

    /// Adds runc's read-only `/sys/fs/cgroup` mount.
    pub fn cgroup_mount(mut self, on: bool) -> Self {
        self.spec_options.cgroup_mount = on;
        self
    }

    /// Uses this busybox instead of `CNFBOX_BUSYBOX` / `/bin/busybox`.
    pub fn busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = Some(path.into());
        self
    }

    /// See [`RootfsBuilder::hard_link_busybox`].
    pub fn hard_link_busybox(mut self, allow: bool) -> Self {
        self.hard_link_busybox = allow;
        self
    }

    /// Edits the spec after every other setting; modifiers run in order.
    pub fn modify(mut self, f: impl FnOnce(&mut Spec) + 'static) -> Self {
        self.modifiers.push(Box::new(f));
        self
    }

    /// Writes `dir/rootfs` and `dir/config.json`.
    pub fn build(self) -> Result<Bundle, BundleError> {
        fs::create_dir_all(&self.dir).map_err(|source| BundleError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let bundle = Bundle::paths(self.dir.clone());
        if bundle.config_path.exists() {
            return Err(BundleError::Exists { path: bundle.dir });
        }
        let mut rootfs = RootfsBuilder::new(&bundle.rootfs)
            .files(self.files)
            .hard_link_busybox(self.hard_link_busybox);
        if let Some(bb) = &self.busybox {
            rootfs = rootfs.busybox(bb);
        }
        rootfs.build().map_err(|source| BundleError::Rootfs {
            path: bundle.dir.clone(),
            source,
        })?;

        let spec = self.spec(&bundle.dir)?;
        write_spec(&bundle.config_path, &spec)?;
        info!(bundle = %bundle.dir.display(), "bundle written");
        Ok(bundle)
    }

    /// The spec this builder describes, with modifiers applied.
    fn spec(self, dir: &Path) -> Result<Spec, BundleError> {
        let mut spec = default_spec(&self.spec_options)?;
        let no_process = |what| BundleError::NoProcess {
            path: dir.to_owned(),
            what,
        };
        let process = spec
            .process_mut()
            .as_mut()
            .ok_or_else(|| no_process("args"))?;
        if let Some(args) = self.args {
            process.set_args(Some(args));
        }
        process.set_terminal(Some(self.terminal));
        if !self.env.is_empty() {
            let mut env = process.env().clone().unwrap_or_default();
            for (k, v) in self.env {
                let prefix = format!("{k}=");
                env.retain(|e| !e.starts_with(&prefix));
                env.push(format!("{k}={v}"));
            }
            process.set_env(Some(env));
        }
        if let Some(h) = self.hostname {
            spec.set_hostname(Some(h));
        }
        if !self.annotations.is_empty() {
            spec.set_annotations(Some(self.annotations));
        }
        for m in self.modifiers {
            m(&mut spec);
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_back_with_settings_applied() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bundle = BundleBuilder::new(tmp.path().join("b"))
            .args(["/bin/sh", "-c", "exit 3"])
            .hostname("x")
            .env("K", "V")
            .env("TERM", "dumb")
            .annotation("a.b/c", "d")
            .cgroups_path("/cnfbox/test")
            .modify(|spec| {
                spec.set_domainname(Some("example".into()));
            })
            .build()
            .expect("build bundle");
        assert_eq!(bundle.rootfs, bundle.dir.join("rootfs"));
        let spec = bundle.spec().expect("config.json parses with oci-spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(
            p.args().as_deref(),
            Some(&["/bin/sh".to_owned(), "-c".into(), "exit 3".into()][..])
        );
        let env = p.env().as_ref().expect("env");
        assert!(env.contains(&"K=V".to_owned()), "{env:?}");
        assert!(env.contains(&"TERM=dumb".to_owned()), "{env:?}");
        assert!(!env.contains(&"TERM=xterm".to_owned()), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        assert_eq!(spec.hostname().as_deref(), Some("x"));
        assert_eq!(spec.domainname().as_deref(), Some("example"));
        let ann = spec.annotations().as_ref().expect("annotations");
        assert_eq!(ann.get("a.b/c").map(String::as_str), Some("d"));
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(linux.cgroups_path(), &Some(PathBuf::from("/cnfbox/test")));
    }

    #[test]
    fn write_spec_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bundle = BundleBuilder::new(tmp.path())
            .scenario(&Scenario::Checker)
            .build()
            .expect("build bundle");
        let mut spec = bundle.spec().expect("spec");
        spec.set_hostname(Some("changed".into()));
        bundle.write_spec(&spec).expect("write spec");
        assert_eq!(
            Bundle::open(tmp.path())
                .expect("open")
                .spec()
                .expect("spec"),
            spec
        );
    }

    #[test]
    fn second_build_in_same_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        BundleBuilder::new(tmp.path()).build().expect("first");
        let err = BundleBuilder::new(tmp.path()).build().expect_err("second");
        assert!(matches!(err, BundleError::Exists { .. }), "{err}");
    }

    #[test]
    fn open_without_config_fails() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Bundle::open(tmp.path()),
            Err(BundleError::NoConfig { .. })
        ));
    }
}
