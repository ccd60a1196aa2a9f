//! What the Task service drives besides its own state, each behind a small
//! trait so that tests drive the service with fakes:
//!
//! - [`Runtimes`]: the runtime a new container uses, chosen from
//!   containerd's runtime options ([`FromOptions`] in the shim);
//! - [`Publish`]: where task events go ([`RemotePublisher`], containerd's
//!   events service, in the shim).
//!
//! The runtime itself is [`crate::runtime::Runtime`]. Stdio, rootfs
//! mounts and exit statuses need no seam: a request without FIFOs or
//! rootfs mounts touches neither, and [`crate::exits::Exits`] takes
//! statuses from whoever delivers them (the reaper, or a test).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::Context;

use crate::exits::Exits;
use crate::options::{self, OptionsError, ShimState};
use crate::runtime::{Cnfbox, Runtime};

/// Chooses the runtime of a container the service is about to create.
pub trait Runtimes: Send + Sync {
    type Runtime: Runtime;

    /// The runtime for a container in `bundle` of `namespace`, from the
    /// create request's runtime options.
    fn for_container(
        &self,
        bundle: &Path,
        namespace: &str,
        options: Option<&Any>,
    ) -> Result<Self::Runtime, OptionsError>;
}

/// The shim's [`Runtimes`]: the `cnfbox` binary and state root that runc's
/// options name, recorded in the bundle for a later `shim delete`.
pub struct FromOptions {
    pub exits: Arc<Exits>,
}

impl Runtimes for FromOptions {
    type Runtime = Cnfbox;

    fn for_container(
        &self,
        bundle: &Path,
        namespace: &str,
        options: Option<&Any>,
    ) -> Result<Cnfbox, OptionsError> {
        let opts = options::from_any(options)?;
        let state = ShimState::resolve(&opts, namespace)?;
        state.save(bundle)?;
        Ok(state.cnfbox(self.exits.clone()))
    }
}

/// Where the service's task events go.
#[async_trait]
pub trait Publish: Send + Sync {
    async fn publish(
        &self,
        topic: &str,
        namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> containerd_shim::Result<()>;
}

#[async_trait]
impl Publish for RemotePublisher {
    async fn publish(
        &self,
        topic: &str,
        namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> containerd_shim::Result<()> {
        RemotePublisher::publish(self, Context::default(), topic, namespace, event).await
    }
}
