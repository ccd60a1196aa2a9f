//! Exit statuses of the shim's children.
//!
//! The shim is a subreaper: container inits and exec processes (whose
//! `cnfbox` parent exits right after creating them) are re-parented to it,
//! and the `containerd-shim` crate reaps every child with `waitpid(-1)` on
//! SIGCHLD and publishes `(pid, status)` on its monitor. Nothing else in the
//! shim may wait for a child (that would race the reaper), so every status,
//! the `cnfbox` commands' included, comes from here.
//!
//! A child can exit before anybody asks for its status (a container whose
//! init exits at once, a `cnfbox kill` that returns quickly): such statuses
//! are kept until claimed, so the order of "exit" and "expect" never matters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::monitor::{Subject, Topic};
use tokio::sync::oneshot;

/// Unclaimed statuses kept at most (children nobody asked about, such as
/// processes that escaped a container and were re-parented to the shim).
const MAX_UNCLAIMED: usize = 4096;

/// Routes reaped exit statuses to whoever waits for that pid.
#[derive(Default, Debug)]
pub struct Exits {
    inner: Mutex<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    waiting: HashMap<i32, oneshot::Sender<i32>>,
    unclaimed: HashMap<i32, i32>,
    order: VecDeque<i32>,
}

impl Exits {
    /// Starts routing the crate's reaper notifications; call once, before
    /// the first child is spawned.
    pub async fn start() -> containerd_shim::Result<Arc<Self>> {
        let exits = Arc::new(Self::default());
        let mut sub = monitor_subscribe(Topic::Pid).await?;
        let routed = exits.clone();
        tokio::spawn(async move {
            while let Some(e) = sub.rx.recv().await {
                if let Subject::Pid(pid) = e.subject {
                    routed.deliver(pid, e.exit_code);
                }
            }
        });
        Ok(exits)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps: recover.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `pid` exited with `code` (128+N for signal N).
    pub fn deliver(&self, pid: i32, code: i32) {
        let mut inner = self.lock();
        if let Some(tx) = inner.waiting.remove(&pid) {
            // The receiver may be gone (its waiter was cancelled): drop it.
            let _ = tx.send(code);
            return;
        }
        if inner.unclaimed.insert(pid, code).is_none() {
            inner.order.push_back(pid);
        }
        while inner.order.len() > MAX_UNCLAIMED {
            if let Some(old) = inner.order.pop_front() {
                inner.unclaimed.remove(&old);
            }
        }
    }

    /// The exit status of `pid`, delivered once it is reaped (or at once
    /// if it already was).
    pub fn expect(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if let Some(code) = inner.unclaimed.remove(&pid) {
            inner.order.retain(|p| *p != pid);
            let _ = tx.send(code);
        } else {
            inner.waiting.insert(pid, tx);
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_before_expect_is_kept() {
        let exits = Exits::default();
        exits.deliver(42, 3);
        assert_eq!(exits.expect(42).await.expect("status"), 3);
    }

    #[tokio::test]
    async fn expect_before_exit_is_woken() {
        let exits = Exits::default();
        let rx = exits.expect(7);
        exits.deliver(8, 1);
        exits.deliver(7, 137);
        assert_eq!(rx.await.expect("status"), 137);
        // pid 8 stays claimable.
        assert_eq!(exits.expect(8).await.expect("status"), 1);
    }

    #[tokio::test]
    async fn unclaimed_statuses_are_bounded() {
        let exits = Exits::default();
        for pid in 0..(MAX_UNCLAIMED as i32 + 10) {
            exits.deliver(pid, 0);
        }
        assert_eq!(exits.lock().unclaimed.len(), MAX_UNCLAIMED);
        // The oldest went first.
        assert!(!exits.lock().unclaimed.contains_key(&0));
    }
}
