//! Where a test may make the server hostile (feature `adversary` only).
//!
//! The threat model treats the SFU and its directory as part of the adversary, so the
//! client's defences are tested against a *real* server that lies. With the
//! `adversary` feature, `EmbeddedSfu::start_hostile` runs the ordinary server with an
//! `Adversary` attached: it can rewrite or drop any request a
//! device sends and any answer or event the server writes to a device, records every
//! container that passes through `SendContainer`, and can push forged events (a
//! container "from the mailbox", a room announcement) to a connected device.
//!
//! Without the feature, the server's hook point is an empty struct whose methods do
//! nothing and compile away; the production binary has no way to enable any of this.

#[cfg(feature = "adversary")]
pub use enabled::{Adversary, FrameRule, RequestRule};
pub(crate) use imp::Hooks;

#[cfg(not(feature = "adversary"))]
mod imp {
    use conclave_proto::v1::{ClientFrame, ServerFrame};

    use crate::store::DeviceIdBytes;

    /// No hooks: every frame passes unchanged.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Hooks;

    impl Hooks {
        #[inline]
        pub(crate) fn request(
            &self,
            _device: Option<DeviceIdBytes>,
            _frame: &mut ClientFrame,
        ) -> bool {
            true
        }

        #[inline]
        pub(crate) fn outbound(
            &self,
            _device: Option<DeviceIdBytes>,
            _frame: &mut ServerFrame,
        ) -> bool {
            true
        }

        #[inline]
        pub(crate) fn attach(&self, _shared: &std::sync::Arc<crate::server::Shared>) {}
    }
}

#[cfg(feature = "adversary")]
mod imp {
    use std::sync::Arc;

    use conclave_proto::v1::{ClientFrame, ServerFrame};

    use super::Adversary;
    use crate::store::DeviceIdBytes;

    /// The adversary, if the test attached one.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Hooks(pub(crate) Option<Arc<Adversary>>);

    impl Hooks {
        /// Lets the adversary see (and rewrite) a request; `false` drops it unanswered.
        pub(crate) fn request(
            &self,
            device: Option<DeviceIdBytes>,
            frame: &mut ClientFrame,
        ) -> bool {
            self.0.as_ref().is_none_or(|a| a.on_request(device, frame))
        }

        /// Lets the adversary see (and rewrite) a frame for `device`; `false` withholds it.
        pub(crate) fn outbound(
            &self,
            device: Option<DeviceIdBytes>,
            frame: &mut ServerFrame,
        ) -> bool {
            self.0.as_ref().is_none_or(|a| a.on_outbound(device, frame))
        }

        pub(crate) fn attach(&self, shared: &Arc<crate::server::Shared>) {
            if let Some(a) = &self.0 {
                a.attach(Arc::downgrade(shared));
            }
        }
    }
}

#[cfg(feature = "adversary")]
mod enabled {
    use std::sync::{Mutex, OnceLock, Weak};

    use conclave_proto::v1::{self, ClientFrame, ServerFrame, client_frame::Request};

    use crate::store::DeviceIdBytes;

    /// A rule over requests: gets the sending device (`None` before authentication) and
    /// the frame, may rewrite it; returns `false` to drop it without an answer.
    pub type RequestRule =
        Box<dyn Fn(Option<DeviceIdBytes>, &mut ClientFrame) -> bool + Send + Sync>;
    /// A rule over what the server writes to a device (answers and events): may rewrite
    /// the frame; returns `false` to withhold it.
    pub type FrameRule = Box<dyn Fn(Option<DeviceIdBytes>, &mut ServerFrame) -> bool + Send + Sync>;

    /// A hostile server's hand: rules a test installs and a record of what passed.
    #[derive(Default)]
    pub struct Adversary {
        requests: Mutex<Vec<RequestRule>>,
        outbound: Mutex<Vec<FrameRule>>,
        containers: Mutex<Vec<(DeviceIdBytes, Vec<u8>)>>,
        shared: OnceLock<Weak<crate::server::Shared>>,
    }

    impl std::fmt::Debug for Adversary {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Adversary").finish_non_exhaustive()
        }
    }

    impl Adversary {
        /// An adversary with no rules yet (the server behaves honestly).
        #[must_use]
        pub fn new() -> Self {
            Self::default()
        }

        /// Adds a rule over requests (rules run in the order added).
        pub fn on_requests(&self, rule: RequestRule) {
            lock(&self.requests).push(rule);
        }

        /// Adds a rule over frames written to devices (rules run in the order added).
        pub fn on_frames(&self, rule: FrameRule) {
            lock(&self.outbound).push(rule);
        }

        /// Removes every rule: the server is honest again.
        pub fn clear_rules(&self) {
            lock(&self.requests).clear();
            lock(&self.outbound).clear();
        }

        /// Every container sent through `SendContainer` so far (after the request rules
        /// ran), with its sending device: what a server operator could keep forever.
        #[must_use]
        pub fn containers(&self) -> Vec<(DeviceIdBytes, Vec<u8>)> {
            lock(&self.containers).clone()
        }

        /// Pushes `event` to `device` if it is connected, as if the server had produced
        /// it (e.g. a forged `MailboxDelivery`). Returns whether it was queued.
        pub fn inject(&self, device: &DeviceIdBytes, event: v1::event::Event) -> bool {
            let Some(shared) = self.shared.get().and_then(Weak::upgrade) else {
                return false;
            };
            let Some(conn) = shared.online.get(device).map(|c| *c) else {
                return false;
            };
            let Some(handle) = shared.conns.get(&conn).map(|h| std::sync::Arc::clone(&h)) else {
                return false;
            };
            handle.push_event(event)
        }

        pub(crate) fn attach(&self, shared: Weak<crate::server::Shared>) {
            let _ = self.shared.set(shared);
        }

        pub(crate) fn on_request(
            &self,
            device: Option<DeviceIdBytes>,
            frame: &mut ClientFrame,
        ) -> bool {
            for rule in lock(&self.requests).iter() {
                if !rule(device, frame) {
                    return false;
                }
            }
            if let (Some(device), Some(Request::SendContainer(send))) = (device, &frame.request) {
                lock(&self.containers).push((device, send.container.clone()));
            }
            true
        }

        pub(crate) fn on_outbound(
            &self,
            device: Option<DeviceIdBytes>,
            frame: &mut ServerFrame,
        ) -> bool {
            lock(&self.outbound).iter().all(|rule| rule(device, frame))
        }
    }

    /// A poisoned lock (a test rule panicked) is recovered: the data is plain.
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
