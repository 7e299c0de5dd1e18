//! The client's protocol rules, sans-IO: each part is a plain state machine that is
//! told the time (`now`) and what happened, and says what to do. The async driver
//! (`client::driver`) owns one of each, feeds them and carries out their answers; the
//! parts never touch a socket, a task or the system clock, so their rules are tested
//! here without a network and without waiting.
//!
//! * [`clock`]: the server's master clock, its offset from this device's clamped.
//! * [`outbox`]: meeting messages waiting for a connection, resends with backoff to the
//!   devices a message missed, and what a send's outcome means for a rekey; recipients
//!   are cut down to the roster before anything goes out again.
//! * [`acks`]: acknowledging processed mailbox entries in batches.
//! * [`rotations`]: retrying refused room rotations with capped backoff.
//! * [`invitations`]: unanswered invitations, bounded and expiring.
//! * [`prepared`]: when the key leader wraps its next Rekey's entries ahead of time,
//!   and which of them a Rekey may use.
//! * [`order`]: the order in which one meeting's outputs are carried out.
//! * [`sas_timing`]: when a meeting's safety-words round starts (once its epoch has
//!   settled) and resends; [`sas_early`]: round messages that came before the round.
//!
//! The meeting key schedule and rekey machine itself is
//! [`MeetingState`](crate::meeting::rekey::MeetingState) in `conclave-core`; presence
//! (telling a dropped device from a reconnecting one) is `client::presence`.

pub(crate) mod acks;
pub(crate) mod clock;
pub(crate) mod early_messages;
pub(crate) mod invitations;
pub(crate) mod order;
pub(crate) mod outbox;
pub(crate) mod prepared;
pub(crate) mod rotations;
pub(crate) mod sas_early;
pub(crate) mod sas_timing;

#[cfg(test)]
pub(crate) mod fixtures;
