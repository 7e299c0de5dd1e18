//! The key leader's next Rekey, prepared while its meeting is steady, and the Rekey
//! that uses it (the rules are `protocol::prepared`'s; this is their IO).

use std::collections::BTreeSet;

use conclave_proto::v1;

use super::engine::Engine;
use crate::DeviceId;
use crate::client::ClientError;
use crate::client::protocol::outbox::Outgoing;
use crate::client::protocol::prepared::{Plan, PreparedRekey, usable_through_margin};
use crate::container::{self, PreparedSeal};
use crate::meeting::MeetingId;
use crate::meeting::rekey::RosterMember;

impl Engine {
    /// Makes or tops up the preparations that are due (only with a connection: they
    /// need the directory).
    pub(super) async fn prepare_due(&mut self) {
        if self.link.is_none() {
            return;
        }
        for id in self.prepared.due(self.now()) {
            self.prepare(id).await;
        }
    }

    async fn prepare(&mut self, id: MeetingId) {
        let now = self.now();
        let Some(entry) = self.meetings.get(&id) else {
            self.prepared.forget(&id);
            return;
        };
        let (members, fresh) = match self.prepared.plan(&entry.state, now) {
            Plan::Nothing => return,
            Plan::Make(members) => (members, true),
            Plan::TopUp(members) => (members, false),
        };
        match self.wrap_for(&id, &members, fresh).await {
            Ok((made, wait_ms)) => {
                tracing::debug!(
                    target: super::REKEY_TRACE,
                    me = ?self.creds.device_id(),
                    devices = members.len(),
                    fresh,
                    "rekey prepared"
                );
                self.prepared.made(&id, made, self.now(), wait_ms);
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not prepare the next rekey; trying later");
                self.prepared.failed(&id, self.now());
            }
        }
        self.show_prepared(id);
    }

    /// Tells meeting `id`'s handle how many devices its next Rekey is prepared for.
    pub(super) fn show_prepared(&self, id: MeetingId) {
        let devices = self.prepared.devices(&id);
        if let Some(entry) = self.meetings.get(&id) {
            entry
                .shared
                .set_info(|info| info.prepared_rekey_devices = devices);
        }
    }

    /// Fetches prekeys for `members` and wraps for them: a new preparation (`fresh`),
    /// or entries added to the one held. A recipient whose certificate or prekey would
    /// not serve a Rekey (it expires within the margin) is left out. Also returns the
    /// directory's requested wait before taking prekeys again, ms.
    async fn wrap_for(
        &mut self,
        id: &MeetingId,
        members: &[RosterMember],
        fresh: bool,
    ) -> Result<(Option<PreparedRekey>, u64), ClientError> {
        let (mut recipients, wait_ms) = self.fetch_roster_recipients(members).await?;
        let now = self.now();
        recipients.retain(|r| {
            usable_through_margin(r.device().expires_at(), now)
                && usable_through_margin(r.prekey().expires_at(), now)
        });
        if fresh {
            let seal = PreparedSeal::new(self.creds.device(), &recipients, now, &mut self.rng)?;
            return Ok((Some(PreparedRekey::new(seal, members)), wait_ms));
        }
        if let Some(ready) = self.prepared.ready_mut(id)
            && !recipients.is_empty()
        {
            ready.seal.add(self.creds.device(), &recipients, now)?;
            ready.wrapped_for(members);
        }
        Ok((None, wait_ms))
    }

    /// Sends Rekey `out` with `prepared`: the entries of the recipients it serves, plus
    /// entries wrapped now for those it does not (fresh prekeys for exactly them).
    /// Returns the devices it reached and the directory's requested wait, ms.
    pub(super) async fn send_prepared(
        &mut self,
        out: &Outgoing,
        (mut ready, mut devices, missing): (PreparedRekey, Vec<DeviceId>, Vec<RosterMember>),
    ) -> Result<(BTreeSet<DeviceId>, u64), ClientError> {
        let mut wait_ms = 0;
        let served = devices.len();
        if !missing.is_empty() {
            let (recipients, wait) = self.fetch_roster_recipients(&missing).await?;
            wait_ms = wait;
            ready
                .seal
                .add(self.creds.device(), &recipients, self.now())?;
            devices.extend(recipients.iter().map(|r| r.device().device_id()));
        }
        let me = self.creds.device_id();
        tracing::debug!(
            target: super::REKEY_TRACE,
            me = ?me,
            prepared = served,
            wrapped_now = devices.len() - served,
            "bundles fetched"
        );
        if devices.is_empty() {
            return Ok((BTreeSet::new(), wait_ms));
        }
        let sealed = ready.seal.seal(
            self.creds.device(),
            &devices,
            &out.message.to_wire(),
            self.now(),
            container::DEFAULT_TTL_MS,
            &mut self.rng,
        )?;
        tracing::debug!(target: super::REKEY_TRACE, me = ?me, recipients = devices.len(), "sealed");
        let reached = self
            .send_sealed(&devices, sealed, v1::WakeUrgency::Normal)
            .await?;
        tracing::debug!(target: super::REKEY_TRACE, me = ?me, "rekey sent");
        Ok((reached, wait_ms))
    }
}
