//! OCI image archives (image-spec image-layout.md, as one tar) that
//! `ctr images import` accepts: one busybox layer, a config, a manifest and
//! an `index.json` naming the image.

mod layer;
pub mod push;
mod verify;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
    RootFsBuilder, Sha256Digest,
};
use tracing::info;

use crate::rootfs::{RootfsBuilder, RootfsError, PAUSE_PATH};
use crate::spec::DEFAULT_PATH;

pub use verify::{verify_archive, VerifiedImage};

/// Reference of the busybox test image.
pub const DEFAULT_IMAGE_REF: &str = "docker.io/cnfbox/busybox:test";
/// Reference of the pause image.
pub const PAUSE_IMAGE_REF: &str = "docker.io/cnfbox/pause:test";
/// Annotation containerd's importer names the image by.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Standard annotation carrying the tag (image-spec annotations.md).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors while writing or checking an image archive.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {reference:?} is not usable: {reason}")]
    Reference {
        reference: String,
        reason: &'static str,
    },
    #[error("creating a temporary directory for the image rootfs")]
    TempDir(#[source] std::io::Error),
    #[error("writing the image rootfs")]
    Rootfs(#[source] RootfsError),
    #[error("reading {path} for the image layer")]
    ReadRootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("adding {path} to the image rootfs")]
    Extra {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a file, a directory nor a symlink; cannot put it in a layer")]
    UnsupportedFile { path: PathBuf },
    #[error("writing the layer tar of {root}")]
    WriteLayer {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the image {part}")]
    Build {
        part: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("serializing the image {part}")]
    Serialize {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing image archive {path}")]
    WriteArchive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading image archive {path}")]
    ReadArchive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image archive {path} is invalid: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Which process the image runs by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `Cmd ["/bin/sh"]`.
    Busybox,
    /// `Entrypoint ["/bin/cnfbox-pause"]`: sleeps, exits 0 on SIGTERM/SIGINT.
    Pause,
}

/// What [`ImageBuilder::write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The archive file.
    pub path: PathBuf,
    /// Full reference (`io.containerd.image.name`).
    pub reference: String,
    /// Tag (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the image config.
    pub config_digest: String,
    /// `sha256:...` of the gzipped layer.
    pub layer_digest: String,
    /// `sha256:...` of the uncompressed layer.
    pub diff_id: String,
}

/// An entry added to the image's rootfs after busybox, replacing what is
/// there (e.g. an applet's symlink).
#[derive(Debug, Clone)]
enum Extra {
    /// A regular file with these bytes and mode (setuid bits kept).
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// A copy of a host file, with this mode.
    HostFile {
        path: String,
        from: PathBuf,
        mode: u32,
    },
    /// A symlink.
    Symlink { path: String, target: String },
}

/// An image built in memory: its blobs, ready to be written as an archive
/// or pushed to a registry.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Full reference.
    pub reference: String,
    /// Tag.
    pub tag: String,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// The image manifest JSON (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
    /// The gzipped layer.
    pub layer: Vec<u8>,
    /// `sha256:...` of the uncompressed layer.
    pub diff_id: String,
}

impl BuiltImage {
    /// `sha256:...` of `bytes`.
    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", layer::sha256_hex(bytes))
    }
}

/// Builds an OCI image archive.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    kind: ImageKind,
    reference: String,
    busybox: Option<PathBuf>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    extras: Vec<Extra>,
}

impl ImageBuilder {
    /// The busybox image, [`DEFAULT_IMAGE_REF`].
    pub fn busybox() -> Self {
        Self {
            kind: ImageKind::Busybox,
            reference: DEFAULT_IMAGE_REF.to_owned(),
            busybox: None,
            user: None,
            entrypoint: None,
            cmd: None,
            extras: Vec::new(),
        }
    }

    /// The pause image, [`PAUSE_IMAGE_REF`].
    pub fn pause() -> Self {
        Self {
            kind: ImageKind::Pause,
            reference: PAUSE_IMAGE_REF.to_owned(),
            busybox: None,
            user: None,
            entrypoint: None,
            cmd: None,
            extras: Vec::new(),
        }
    }

    /// Names the image `reference` (`registry/repo:tag`).
    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }

    /// Uses this busybox instead of `CNFBOX_BUSYBOX` / `/bin/busybox`.
    pub fn busybox_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = Some(path.into());
        self
    }

    /// The image config's `User` (`uid`, `name`, `uid:gid`, ...).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The image config's `Entrypoint` (replaces the kind's).
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(args.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    /// The image config's `Cmd` (replaces the kind's).
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(args.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    /// Adds a regular file at the absolute in-image `path`.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.extras.push(Extra::File {
            path: path.to_owned(),
            data: data.into(),
            mode,
        });
        self
    }

    /// Adds a copy of the host file `from` at the in-image `path`.
    pub fn host_file(mut self, path: &str, from: impl Into<PathBuf>, mode: u32) -> Self {
        self.extras.push(Extra::HostFile {
            path: path.to_owned(),
            from: from.into(),
            mode,
        });
        self
    }

    /// Adds a symlink at the in-image `path`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.extras.push(Extra::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        });
        self
    }

    /// Writes the archive to `out` (through a temporary file beside it).
    pub fn write(self, out: &Path) -> Result<ImageArchive, ImageError> {
        let image = self.build()?;
        let layer_hex = layer::sha256_hex(&image.layer);
        let config_hex = layer::sha256_hex(&image.config);
        let manifest_hex = layer::sha256_hex(&image.manifest);
        let mut manifest_desc = descriptor(
            MediaType::ImageManifest,
            &manifest_hex,
            image.manifest.len(),
        )?;
        manifest_desc.set_annotations(Some(
            [
                (
                    ANNOTATION_CONTAINERD_NAME.to_owned(),
                    image.reference.clone(),
                ),
                (ANNOTATION_REF_NAME.to_owned(), image.tag.clone()),
            ]
            .into(),
        ));
        manifest_desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(Arch::default())
                .os(Os::Linux)
                .build()
                .map_err(build_err("platform"))?,
        ));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()
            .map_err(build_err("index"))?;
        let layout = OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()
            .map_err(build_err("oci-layout"))?;

        let files: Vec<(String, &[u8])> = vec![
            (format!("blobs/sha256/{layer_hex}"), &image.layer),
            (format!("blobs/sha256/{config_hex}"), &image.config),
            (format!("blobs/sha256/{manifest_hex}"), &image.manifest),
        ];
        write_archive(
            out,
            &serialize("oci-layout", &layout)?,
            &serialize("index", &index)?,
            &files,
        )?;
        let archive = ImageArchive {
            path: out.to_owned(),
            reference: image.reference,
            tag: image.tag,
            manifest_digest: format!("sha256:{manifest_hex}"),
            config_digest: format!("sha256:{config_hex}"),
            layer_digest: format!("sha256:{layer_hex}"),
            diff_id: image.diff_id,
        };
        info!(path = %out.display(), reference = %archive.reference,
              manifest = %archive.manifest_digest, "image archive written");
        Ok(archive)
    }

    /// Builds the image's layer, config and manifest in memory.
    pub fn build(self) -> Result<BuiltImage, ImageError> {
        let tag = tag_of(&self.reference)?;
        let tmp = tempfile::tempdir().map_err(ImageError::TempDir)?;
        let root = tmp.path().join("rootfs");
        let mut rootfs = RootfsBuilder::new(&root);
        if let Some(bb) = &self.busybox {
            rootfs = rootfs.busybox(bb);
        }
        rootfs.build().map_err(ImageError::Rootfs)?;
        for extra in &self.extras {
            add_extra(&root, extra)?;
        }
        let layer = layer::layer_from_dir(&root)?;

        let config = serialize("config", &self.image_config(&layer.diff_id_hex)?)?;
        let config_hex = layer::sha256_hex(&config);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_hex,
                config.len(),
            )?)
            .layers(vec![descriptor(
                MediaType::ImageLayerGzip,
                &layer.digest_hex,
                layer.blob.len(),
            )?])
            .build()
            .map_err(build_err("manifest"))?;
        let manifest = serialize("manifest", &manifest)?;
        Ok(BuiltImage {
            reference: self.reference,
            tag,
            config,
            manifest,
            layer: layer.blob,
            diff_id: format!("sha256:{}", layer.diff_id_hex),
        })
    }

    fn image_config(
        &self,
        diff_id_hex: &str,
    ) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let mut config = ConfigBuilder::default()
            .env(vec![format!("PATH={DEFAULT_PATH}")])
            .working_dir("/");
        config = match self.kind {
            ImageKind::Busybox => config.cmd(vec!["/bin/sh".to_owned()]),
            ImageKind::Pause => config
                .entrypoint(vec![PAUSE_PATH.to_owned()])
                .stop_signal("SIGTERM"),
        };
        if let Some(user) = &self.user {
            config = config.user(user.clone());
        }
        if let Some(entrypoint) = &self.entrypoint {
            config = config.entrypoint(entrypoint.clone());
        }
        if let Some(cmd) = &self.cmd {
            config = config.cmd(cmd.clone());
        }
        ImageConfigurationBuilder::default()
            .architecture(Arch::default())
            .os(Os::Linux)
            .config(config.build().map_err(build_err("config"))?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![format!("sha256:{diff_id_hex}")])
                    .build()
                    .map_err(build_err("rootfs"))?,
            )
            .history(vec![HistoryBuilder::default()
                .created_by("cnfbox-test-bundles: busybox-static rootfs")
                .build()
                .map_err(build_err("history"))?])
            .build()
            .map_err(build_err("config"))
    }
}

/// Writes `extra` into the rootfs at `root`, replacing what is there.
fn add_extra(root: &Path, extra: &Extra) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let path = match extra {
        Extra::File { path, .. } | Extra::HostFile { path, .. } | Extra::Symlink { path, .. } => {
            root.join(path.trim_start_matches('/'))
        }
    };
    let err = |source| ImageError::Extra {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let (data, mode) = match extra {
        Extra::Symlink { target, .. } => {
            return std::os::unix::fs::symlink(target, &path).map_err(err);
        }
        Extra::File { data, mode, .. } => (data.clone(), *mode),
        Extra::HostFile { from, mode, .. } => (
            std::fs::read(from).map_err(|source| ImageError::ReadRootfs {
                path: from.clone(),
                source,
            })?,
            *mode,
        ),
    };
    std::fs::write(&path, data).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// The tag of `reference` (`latest` when it has none).
pub fn tag_of(reference: &str) -> Result<String, ImageError> {
    let bad = |reason| ImageError::Reference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.is_empty() {
        return Err(bad("it is empty"));
    }
    if reference.contains('@') {
        return Err(bad("digest references cannot name an imported image"));
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        Some((_, "")) => Err(bad("the tag after ':' is empty")),
        Some((_, tag)) => Ok(tag.to_owned()),
        None => Ok("latest".to_owned()),
    }
}

fn build_err(part: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ImageError {
    move |source| ImageError::Build { part, source }
}

fn serialize<T: serde::Serialize>(part: &'static str, v: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v).map_err(|source| ImageError::Serialize { part, source })
}

fn descriptor(media_type: MediaType, hex: &str, size: usize) -> Result<Descriptor, ImageError> {
    let digest = Sha256Digest::from_str(hex).map_err(build_err("digest"))?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size as u64)
        .build()
        .map_err(build_err("descriptor"))
}

/// Writes the layout as a tar: `oci-layout`, `index.json`, `blobs/...`.
fn write_archive(
    out: &Path,
    layout: &[u8],
    index: &[u8],
    blobs: &[(String, &[u8])],
) -> Result<(), ImageError> {
    let write_err = |source| ImageError::WriteArchive {
        path: out.to_owned(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    {
        let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
        append_dir(&mut tar, "blobs/").map_err(write_err)?;
        append_dir(&mut tar, "blobs/sha256/").map_err(write_err)?;
        append_file(&mut tar, "oci-layout", layout).map_err(write_err)?;
        append_file(&mut tar, "index.json", index).map_err(write_err)?;
        for (name, data) in blobs {
            append_file(&mut tar, name, data).map_err(write_err)?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(write_err)?;
    }
    tmp.persist(out)
        .map_err(|e| write_err(e.error))
        .map(|_: File| ())
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    tar.append_data(&mut h, name, std::io::empty())
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag_of(DEFAULT_IMAGE_REF).expect("tag"), "test");
        assert_eq!(tag_of("localhost:5000/a/b").expect("tag"), "latest");
        assert_eq!(tag_of("localhost:5000/a/b:v1").expect("tag"), "v1");
        assert!(tag_of("a/b@sha256:00").is_err());
        assert!(tag_of("a/b:").is_err());
    }

    #[test]
    fn archive_digests_match_blobs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("busybox.tar");
        let archive = ImageBuilder::busybox().write(&out).expect("write image");
        let v = verify_archive(&out).expect("archive verifies");
        assert_eq!(v.reference.as_deref(), Some(DEFAULT_IMAGE_REF));
        assert_eq!(v.tag.as_deref(), Some("test"));
        assert_eq!(v.manifest_digest, archive.manifest_digest);
        assert_eq!(v.layer_digests, std::slice::from_ref(&archive.layer_digest));
        assert_eq!(v.diff_ids, std::slice::from_ref(&archive.diff_id));
        assert_eq!(v.cmd, Some(vec!["/bin/sh".to_owned()]));
        assert!(v.layer_paths.iter().any(|p| p == "bin/sh"));
        assert!(v.layer_paths.iter().any(|p| p == "bin/busybox"));

        // Same busybox, same digests.
        let again = ImageBuilder::busybox()
            .write(&tmp.path().join("again.tar"))
            .expect("write image");
        assert_eq!(again.manifest_digest, archive.manifest_digest);
    }

    #[test]
    fn pause_image_has_pause_entrypoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("pause.tar");
        ImageBuilder::pause().write(&out).expect("write image");
        let v = verify_archive(&out).expect("archive verifies");
        assert_eq!(v.reference.as_deref(), Some(PAUSE_IMAGE_REF));
        assert_eq!(v.entrypoint, Some(vec![PAUSE_PATH.to_owned()]));
    }
}
