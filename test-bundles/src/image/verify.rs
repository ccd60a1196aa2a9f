//! Reading an image archive back and checking every digest and size:
//! blob names against their content, descriptors against their blobs,
//! and diff_ids against the uncompressed layers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::layer::sha256_hex;
use super::{ImageError, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};

/// What an archive holds, after [`verify_archive`] checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedImage {
    /// `io.containerd.image.name` of the first manifest.
    pub reference: Option<String>,
    /// `org.opencontainers.image.ref.name` of the first manifest.
    pub tag: Option<String>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    /// Image config `architecture` (Go names: `amd64`, `arm64`).
    pub architecture: String,
    pub os: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Every path in every layer, in tar order.
    pub layer_paths: Vec<String>,
}

/// Checks the OCI image layout tar at `path` (first manifest of the index).
pub fn verify_archive(path: &Path) -> Result<VerifiedImage, ImageError> {
    let invalid = |problem: String| ImageError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let files = read_tar(path)?;
    let layout = files
        .get("oci-layout")
        .ok_or_else(|| invalid("no oci-layout file".into()))?;
    let layout: serde_json::Value =
        serde_json::from_slice(layout).map_err(|e| invalid(format!("oci-layout: {e}")))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(invalid(format!(
            "oci-layout has no imageLayoutVersion 1.0.0: {layout}"
        )));
    }
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let actual = sha256_hex(data);
            if actual != hex {
                return Err(invalid(format!("blob {name} has sha256 {actual}")));
            }
        }
    }

    let index = files
        .get("index.json")
        .ok_or_else(|| invalid("no index.json".into()))?;
    let index: ImageIndex =
        serde_json::from_slice(index).map_err(|e| invalid(format!("index.json: {e}")))?;
    let manifest_desc = index
        .manifests()
        .first()
        .ok_or_else(|| invalid("index.json lists no manifest".into()))?;
    let annotation = |key: &str| {
        manifest_desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let manifest: ImageManifest = parse_blob(&files, manifest_desc, &MediaType::ImageManifest)
        .map_err(|p| invalid(format!("manifest: {p}")))?;
    let config: ImageConfiguration = parse_blob(&files, manifest.config(), &MediaType::ImageConfig)
        .map_err(|p| invalid(format!("config: {p}")))?;

    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(invalid(format!(
            "{} layers but {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layer_paths = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        let blob = blob(&files, desc).map_err(|p| invalid(format!("layer: {p}")))?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut tar)
            .map_err(|e| invalid(format!("layer {} does not gunzip: {e}", desc.digest())))?;
        let actual = format!("sha256:{}", sha256_hex(&tar));
        if &actual != diff_id {
            return Err(invalid(format!(
                "layer {} uncompresses to {actual}, config says {diff_id}",
                desc.digest()
            )));
        }
        let mut archive = tar::Archive::new(&tar[..]);
        let entries = archive
            .entries()
            .map_err(|e| invalid(format!("layer {}: {e}", desc.digest())))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(format!("layer {}: {e}", desc.digest())))?;
            let p = entry
                .path()
                .map_err(|e| invalid(format!("layer {}: {e}", desc.digest())))?;
            layer_paths.push(p.display().to_string());
        }
    }

    let process = config.config().as_ref();
    Ok(VerifiedImage {
        reference: annotation(ANNOTATION_CONTAINERD_NAME),
        tag: annotation(ANNOTATION_REF_NAME),
        manifest_digest: manifest_desc.digest().to_string(),
        config_digest: manifest.config().digest().to_string(),
        layer_digests: manifest
            .layers()
            .iter()
            .map(|d| d.digest().to_string())
            .collect(),
        diff_ids,
        architecture: config.architecture().to_string(),
        os: config.os().to_string(),
        entrypoint: process.and_then(|c| c.entrypoint().clone()),
        cmd: process.and_then(|c| c.cmd().clone()),
        layer_paths,
    })
}

/// Regular files of the tar by normalized name.
fn read_tar(path: &Path) -> Result<HashMap<String, Vec<u8>>, ImageError> {
    let read_err = |source| ImageError::ReadArchive {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name: PathBuf = entry.path().map_err(read_err)?.into_owned();
        let name = name.display().to_string();
        let name = name.trim_start_matches("./").to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(read_err)?;
        files.insert(name, data);
    }
    Ok(files)
}

/// The blob `desc` points at, with its size checked.
fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, desc: &Descriptor) -> Result<&'a [u8], String> {
    let digest = desc.digest().to_string();
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest} is not sha256"))?;
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| format!("blob {digest} is missing"))?;
    if data.len() as u64 != desc.size() {
        return Err(format!(
            "blob {digest} has {} bytes, descriptor says {}",
            data.len(),
            desc.size()
        ));
    }
    Ok(data)
}

fn parse_blob<T: serde::de::DeserializeOwned>(
    files: &HashMap<String, Vec<u8>>,
    desc: &Descriptor,
    media_type: &MediaType,
) -> Result<T, String> {
    if desc.media_type() != media_type {
        return Err(format!(
            "media type {} where {media_type} was expected",
            desc.media_type()
        ));
    }
    serde_json::from_slice(blob(files, desc)?).map_err(|e| e.to_string())
}
