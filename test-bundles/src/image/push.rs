//! Pushes a [`BuiltImage`] to a registry over plain HTTP (the Docker
//! Registry HTTP API V2 as `distribution` serves it): blob uploads in one
//! monolithic `PUT`, then the manifest by tag. Enough for a registry on
//! loopback in tests; no TLS, no auth, a new connection per request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::BuiltImage;

const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Errors pushing an image.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{method} http://{registry}{path}")]
    Io {
        method: &'static str,
        registry: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} http://{registry}{path} answered {status}: {body}")]
    Status {
        method: &'static str,
        registry: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("POST http://{registry}{path} answered without a Location header")]
    NoLocation { registry: String, path: String },
}

/// A response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A registry at `host:port` (HTTP).
#[derive(Debug, Clone)]
pub struct Registry {
    addr: String,
}

impl Registry {
    /// The registry at `addr` (`127.0.0.1:5000`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }

    /// Pushes `image`'s blobs and manifest as `repository:tag` for every
    /// tag in `tags`.
    pub fn push(
        &self,
        image: &BuiltImage,
        repository: &str,
        tags: &[&str],
    ) -> Result<String, PushError> {
        self.push_blob(repository, &image.layer)?;
        self.push_blob(repository, &image.config)?;
        for tag in tags {
            let path = format!("/v2/{repository}/manifests/{tag}");
            self.expect(
                "PUT",
                &path,
                &[("Content-Type", MANIFEST_TYPE)],
                &image.manifest,
                201,
            )?;
        }
        Ok(BuiltImage::digest(&image.manifest))
    }

    fn push_blob(&self, repository: &str, data: &[u8]) -> Result<(), PushError> {
        let digest = BuiltImage::digest(data);
        let head = format!("/v2/{repository}/blobs/{digest}");
        if self.request("HEAD", &head, &[], &[])?.status == 200 {
            return Ok(());
        }
        let post = format!("/v2/{repository}/blobs/uploads/");
        let resp = self.expect("POST", &post, &[], &[], 202)?;
        let location = resp
            .header("location")
            .ok_or_else(|| PushError::NoLocation {
                registry: self.addr.clone(),
                path: post.clone(),
            })?;
        // The location may be absolute (http://host/v2/...) and already
        // carries a query (`_state=`).
        let mut path = match location.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
            None => location.to_owned(),
        };
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("digest={digest}"));
        self.expect(
            "PUT",
            &path,
            &[("Content-Type", "application/octet-stream")],
            data,
            201,
        )?;
        Ok(())
    }

    fn expect(
        &self,
        method: &'static str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        want: u16,
    ) -> Result<Response, PushError> {
        let resp = self.request(method, path, headers, body)?;
        if resp.status != want {
            return Err(PushError::Status {
                method,
                registry: self.addr.clone(),
                path: path.to_owned(),
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        Ok(resp)
    }

    fn request(
        &self,
        method: &'static str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, PushError> {
        let io = |source| PushError::Io {
            method,
            registry: self.addr.clone(),
            path: path.to_owned(),
            source,
        };
        let mut stream = TcpStream::connect(&self.addr).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        // "HTTP/1.1 201 Created"
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 || line.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut body = Vec::new();
        if method != "HEAD" {
            // Connection: close, so the body ends at EOF.
            reader.read_to_end(&mut body).map_err(io)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
