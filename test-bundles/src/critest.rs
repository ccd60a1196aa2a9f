//! Stand-ins for the images critest (cri-tools v1.37) pulls, built offline
//! from busybox-static and the project's own static helpers, and pushed to
//! a local registry that containerd's `certs.d` mirrors `registry.k8s.io`,
//! `k8s.gcr.io` and `gcr.io` to.
//!
//! The list follows cri-tools' `pkg/validate/consts.go`,
//! `pkg/framework/util.go` and `images/build` at v1.37.0. Not built: the
//! digest-pinned `test-image-digest@sha256:9700f9a2...` (a digest cannot be
//! rebuilt; its spec is in `integration/critest-skips.txt`).

use std::path::{Path, PathBuf};

use crate::busybox::{Busybox, BusyboxError};
use crate::helpers::{self, HelperError};
use crate::image::push::{PushError, Registry};
use crate::image::{ImageBuilder, ImageError};

/// The sandbox (pause) image the private containerd is configured with:
/// a tag critest never pulls or removes, and a different image from
/// `pause:3.9`, which the image specs pull and remove by id.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10.1";

/// `pgrep PATTERN` for the default image (Debian's busybox has none).
const PGREP_SCRIPT: &str = include_str!("scripts/pgrep.sh");

/// `ipcs -m` for the default image (Debian's busybox has none).
const IPCS_SCRIPT: &str = include_str!("scripts/ipcs.sh");

/// critest's `hostNetWebServerImage` (`hostnet-nginx-` + GOARCH).
const HOSTNET_NGINX: &str = match std::env::consts::ARCH.as_bytes() {
    b"aarch64" => "gcr.io/k8s-staging-cri-tools/hostnet-nginx-arm64:latest",
    _ => "gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      www-data:x:33:33:www-data:/var/www:/bin/false\n\
                      default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nwww-data:x:33:\ndefault-user:x:1000:\n\
                     group-defined-in-image:x:50000:default-user\nnobody:x:65534:\n";

/// Errors building or pushing the critest images.
#[derive(Debug, thiserror::Error)]
pub enum CritestImagesError {
    #[error("locating busybox-static")]
    Busybox(#[source] BusyboxError),
    #[error("building the critest helpers")]
    Helper(#[source] HelperError),
    #[error("building image {reference}")]
    Build {
        reference: String,
        #[source]
        source: ImageError,
    },
    #[error("pushing image {reference}")]
    Push {
        reference: String,
        #[source]
        source: PushError,
    },
    #[error("{reference}: expected REGISTRY/REPOSITORY:TAG")]
    Reference { reference: String },
}

/// Inputs of the images besides busybox-static.
#[derive(Debug, Clone)]
pub struct CritestInputs {
    /// A busybox whose shell runs commands from `PATH` (Debian's dynamic
    /// `busybox`, not busybox-static's standalone shell, which runs `ls`
    /// as an applet and so never meets the MaskedPaths spec's masked
    /// `/bin/ls`), with its shared libraries, as a tree copied over the
    /// default image's rootfs: `bin/sh` and `lib*/...`.
    pub shell_tree: PathBuf,
    /// Where the static helpers are compiled.
    pub work: PathBuf,
}

/// One image and the references it is pushed under.
pub struct CritestImage {
    pub references: Vec<&'static str>,
    pub builder: ImageBuilder,
}

/// The images critest pulls, with their stand-ins.
pub fn images(inputs: &CritestInputs) -> Result<Vec<CritestImage>, CritestImagesError> {
    let webserve =
        helpers::build(helpers::WEBSERVE, &inputs.work).map_err(CritestImagesError::Helper)?;
    let nnp = helpers::build(helpers::NNP, &inputs.work).map_err(CritestImagesError::Helper)?;
    let pause = helpers::build(helpers::PAUSE, &inputs.work).map_err(CritestImagesError::Helper)?;
    let base = || {
        ImageBuilder::busybox()
            .file("/etc/passwd", PASSWD, 0o644)
            .file("/etc/group", GROUP, 0o644)
    };
    let mut out = Vec::new();
    let mut add = |references: Vec<&'static str>, builder: ImageBuilder| {
        out.push(CritestImage {
            references,
            builder,
        })
    };

    // framework.DefaultLinuxContainerImage: sh, top, echo, ... A shell that
    // looks commands up in PATH, and /bin/ls a file of its own (not a
    // symlink to busybox, which masking would follow).
    let busybox = Busybox::locate().map_err(CritestImagesError::Busybox)?;
    let mut default = base()
        .cmd(&["sh"])
        .host_file("/bin/ls", busybox.path(), 0o755)
        .file("/bin/pgrep", PGREP_SCRIPT, 0o755)
        .file("/bin/ipcs", IPCS_SCRIPT, 0o755);
    for (path, from) in tree_files(&inputs.shell_tree) {
        default = default.host_file(&path, from, 0o755);
    }
    add(
        vec!["registry.k8s.io/e2e-test-images/busybox:1.29-2"],
        default,
    );

    // Web servers: the port-forward, port-mapping and multi-container specs
    // want 200 on port 80; the httpd container's log must say "httpd"; the
    // ContainerPID spec waits for "master process" in nginx's
    // /proc/1/cmdline (nginx's title for its main process), the HostPID
    // one for /var/run/nginx.pid.
    add(
        vec!["registry.k8s.io/e2e-test-images/nginx:1.14-2"],
        base()
            .host_file("/usr/sbin/nginx", &webserve, 0o755)
            .symlink("/var/run", "../run")
            .entrypoint(&[
                "/usr/sbin/nginx",
                "80",
                "/var/run/nginx.pid",
                "master process",
            ])
            .cmd(&[]),
    );
    // The host-network port-forward spec (skipped for cnfbox, which refuses
    // host namespaces; run with --handler runc): port 12003.
    add(
        vec![HOSTNET_NGINX],
        base()
            .host_file("/usr/sbin/nginx", &webserve, 0o755)
            .entrypoint(&["/usr/sbin/nginx", "12003"])
            .cmd(&[]),
    );
    add(
        vec!["registry.k8s.io/e2e-test-images/httpd:2.4.39-4"],
        base()
            .host_file("/usr/local/bin/httpd", &webserve, 0o755)
            .entrypoint(&["/usr/local/bin/httpd", "80"])
            .cmd(&[]),
    );
    // NoNewPrivs: a setuid-root probe that prints its effective uid.
    add(
        vec!["registry.k8s.io/e2e-test-images/nonewprivs:1.3"],
        base()
            .host_file("/usr/local/bin/nnp", &nnp, 0o4755)
            .entrypoint(&["/usr/local/bin/nnp"])
            .cmd(&[]),
    );

    // images/build's IMAGE_USERS.
    for (reference, user) in [
        (
            "gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest",
            "1002",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-user-username:latest",
            "www-data",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-user-uid-group:latest",
            "1003:1004",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-user-username-group:latest",
            "www-data:1004",
        ),
    ] {
        add(vec![reference], base().user(user));
    }
    add(
        vec!["gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest"],
        base().user("1000"),
    );
    // images/image-test: busybox plus a file named after the image, so
    // each is a distinct image.
    for (reference, marker) in [
        (
            "gcr.io/k8s-staging-cri-tools/test-image-1:latest",
            "test-image-1",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-2:latest",
            "test-image-2",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-3:latest",
            "test-image-3",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-latest:latest",
            "test-image-latest",
        ),
        ("gcr.io/k8s-staging-cri-tools/test-image-tag:test", "test"),
        ("gcr.io/k8s-staging-cri-tools/test-image-tag:all", "all"),
    ] {
        add(
            vec![reference],
            base().file(&format!("/{marker}"), "", 0o644),
        );
    }
    // Three tags of one image.
    add(
        vec![
            "gcr.io/k8s-staging-cri-tools/test-image-tags:1",
            "gcr.io/k8s-staging-cri-tools/test-image-tags:2",
            "gcr.io/k8s-staging-cri-tools/test-image-tags:3",
        ],
        base().file("/same-image", "", 0o644),
    );
    // The same pause from two registries (one local repository), and the
    // sandbox image: every pause tag a distinct image. Their process is the
    // static `pause` (one process, like Kubernetes' pause): containers that
    // share the pod's PID namespace see no `sleep` of the sandbox's.
    let pause_image = |marker: &str| {
        ImageBuilder::pause()
            .host_file("/pause", &pause, 0o755)
            .entrypoint(&["/pause"])
            .file(marker, "", 0o644)
    };
    add(
        vec!["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"],
        pause_image("/pause-3.9"),
    );
    add(vec![SANDBOX_IMAGE], pause_image("/pause-3.10.1"));
    Ok(out)
}

/// `registry.k8s.io/e2e-test-images/busybox:1.29-2` as (repository
/// `e2e-test-images/busybox`, tag `1.29-2`): the path a mirror is asked
/// for.
pub fn repository_and_tag(reference: &str) -> Result<(&str, &str), CritestImagesError> {
    let bad = || CritestImagesError::Reference {
        reference: reference.to_owned(),
    };
    let (_, rest) = reference.split_once('/').ok_or_else(bad)?;
    rest.rsplit_once(':').ok_or_else(bad)
}

/// Builds every image and pushes it to the registry at `registry`
/// (`127.0.0.1:PORT`) under each of its references' repository and tag.
/// Returns (reference, manifest digest) pairs.
pub fn push_all(
    inputs: &CritestInputs,
    registry: &str,
) -> Result<Vec<(String, String)>, CritestImagesError> {
    let registry = Registry::new(registry);
    let mut pushed = Vec::new();
    for image in images(inputs)? {
        let first = image.references[0];
        let built =
            image
                .builder
                .reference(first)
                .build()
                .map_err(|source| CritestImagesError::Build {
                    reference: first.to_owned(),
                    source,
                })?;
        for reference in &image.references {
            let (repository, tag) = repository_and_tag(reference)?;
            let digest = registry
                .push(&built, repository, &[tag])
                .map_err(|source| CritestImagesError::Push {
                    reference: (*reference).to_owned(),
                    source,
                })?;
            pushed.push(((*reference).to_owned(), digest));
        }
    }
    Ok(pushed)
}

/// Regular files and symlink targets under `root`, as (in-image absolute
/// path, host path), symlinks resolved.
fn tree_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push((format!("/{}", rel.display()), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_map_to_mirror_paths() {
        assert_eq!(
            repository_and_tag("registry.k8s.io/e2e-test-images/busybox:1.29-2").expect("ref"),
            ("e2e-test-images/busybox", "1.29-2")
        );
        assert_eq!(
            repository_and_tag("k8s.gcr.io/pause:3.9").expect("ref"),
            ("pause", "3.9")
        );
        assert!(repository_and_tag("busybox").is_err());
    }
}
