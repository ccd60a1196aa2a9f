//! OCI image archives (image-spec image-layout.md, as one tar) that
//! `ctr images import` accepts: one busybox layer, a config, a manifest and
//! an `index.json` naming the image.

mod layer;
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

/// Builds an OCI image archive.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    kind: ImageKind,
    reference: String,
    busybox: Option<PathBuf>,
}

impl ImageBuilder {
    /// The busybox image, [`DEFAULT_IMAGE_REF`].
    pub fn busybox() -> Self {
        Self {
            kind: ImageKind::Busybox,
            reference: DEFAULT_IMAGE_REF.to_owned(),
            busybox: None,
        }
    }

    /// The pause image, [`PAUSE_IMAGE_REF`].
    pub fn pause() -> Self {
        Self {
            kind: ImageKind::Pause,
            reference: PAUSE_IMAGE_REF.to_owned(),
            busybox: None,
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

    /// Writes the archive to `out` (through a temporary file beside it).
    pub fn write(self, out: &Path) -> Result<ImageArchive, ImageError> {
        let tag = tag_of(&self.reference)?;
        let tmp = tempfile::tempdir().map_err(ImageError::TempDir)?;
        let root = tmp.path().join("rootfs");
        let mut rootfs = RootfsBuilder::new(&root);
        if let Some(bb) = &self.busybox {
            rootfs = rootfs.busybox(bb);
        }
        rootfs.build().map_err(ImageError::Rootfs)?;
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
        let manifest_hex = layer::sha256_hex(&manifest);

        let mut manifest_desc =
            descriptor(MediaType::ImageManifest, &manifest_hex, manifest.len())?;
        manifest_desc.set_annotations(Some(
            [
                (
                    ANNOTATION_CONTAINERD_NAME.to_owned(),
                    self.reference.clone(),
                ),
                (ANNOTATION_REF_NAME.to_owned(), tag.clone()),
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
            (format!("blobs/sha256/{}", layer.digest_hex), &layer.blob),
            (format!("blobs/sha256/{config_hex}"), &config),
            (format!("blobs/sha256/{manifest_hex}"), &manifest),
        ];
        write_archive(
            out,
            &serialize("oci-layout", &layout)?,
            &serialize("index", &index)?,
            &files,
        )?;
        let archive = ImageArchive {
            path: out.to_owned(),
            reference: self.reference,
            tag,
            manifest_digest: format!("sha256:{manifest_hex}"),
            config_digest: format!("sha256:{config_hex}"),
            layer_digest: format!("sha256:{}", layer.digest_hex),
            diff_id: format!("sha256:{}", layer.diff_id_hex),
        };
        info!(path = %out.display(), reference = %archive.reference,
              manifest = %archive.manifest_digest, "image archive written");
        Ok(archive)
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
