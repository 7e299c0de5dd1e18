//! The safety-words round: commit, then reveal (sans-IO).
//!
//! Two words carry 16 bits. If one participant could choose what they depend on (a
//! key leader picks the meeting id and every epoch key), it could try 65,536 choices
//! offline until the words of a meeting it runs with Bob equal those of a meeting it
//! runs with Alice, and sit in the middle unnoticed (security review M4). So the words
//! of an epoch also depend on a fresh random nonce from every device on the epoch's
//! roster, and each device reveals its nonce only after it holds a commitment to the
//! nonce of *every* roster device. Whoever commits last has seen only commitments, so
//! nobody can steer the result: a participant in the middle matches the other
//! meeting's words with probability 2^-16 per round, and every retry costs a visible
//! new epoch. (ZRTP's hash commitment does the same for two parties.)
//!
//! Messages are [`v1::SasRoundMessage`]s, each signed by its device's signing key
//! (pinned in the meeting's roster), sent to the meeting's room as room messages. A
//! device:
//! 1. on entering the epoch, draws its nonce and sends its **commitment**
//!    `SHA-256("conclave.sas-commit.v1" || meeting_id || u64be(epoch) || device_id ||
//!    nonce)`;
//! 2. records the first commitment of every roster device whose signature verifies (a
//!    second, different one is refused: a device cannot change its mind);
//! 3. once it holds the commitments of all roster devices, sends its **nonce**;
//! 4. accepts a nonce only if it matches that device's commitment; with every nonce,
//!    the round is complete and [`SasRound::nonces`] feeds
//!    [`SafetyWords::compute`](super::SafetyWords::compute).
//!
//! Only commitments have their signature checked. A nonce is authenticated by the
//! signed commitment it must match: only the device that drew it knows a preimage of
//! its commitment until it reveals it, and once revealed, relaying it (with or without
//! a signature) tells nobody anything new. Nonces are still sent signed, so that
//! clients which check them accept them. That halves the signature checks of a round
//! (at 100 participants from 198 to 99 per device).
//!
//! The caller resends its own messages now and then ([`SasRound::own_messages`]): room
//! messages reach only the members in the room at that moment.

use std::collections::{BTreeMap, VecDeque};

use conclave_proto::v1::{self, sas_round_message::Step};
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::DeviceId;
use crate::identity::DeviceIdentity;
use crate::meeting::Epoch;

/// Domain of the commitment hash.
const COMMIT_LABEL: &[u8] = b"conclave.sas-commit.v1";
/// Domain of the message signatures.
const SIGN_LABEL: &[u8] = b"conclave.sas-round.v1";

/// Why a round message was refused. The round is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// The message is for another epoch (an older round, or one this device has not
    /// reached yet).
    #[error("safety-words message for epoch {got}, this round is epoch {current}")]
    OtherEpoch {
        /// The message's epoch.
        got: u64,
        /// This round's epoch.
        current: u64,
    },
    /// The sender is not on the epoch's roster.
    #[error("safety-words message from a device that is not in the meeting")]
    NotParticipant,
    /// A field has the wrong size, or the step is missing.
    #[error("malformed safety-words message")]
    Malformed,
    /// The signature does not verify under the sender's pinned signing key.
    #[error("safety-words message with a bad signature")]
    BadSignature,
    /// The sender already committed to something else.
    #[error("a device committed twice to different nonces")]
    Equivocation,
    /// A nonce before its commitment, or one that does not match it.
    #[error("a revealed nonce does not match its commitment")]
    BadReveal,
}

/// One device's view of the safety-words round of one epoch.
///
/// # Run loop
/// Create the round when the epoch starts, with a fresh random nonce; send what
/// [`SasRound::poll_message`] yields to the room after every input; hand it every room
/// message with [`SasRound::on_message`]; resend [`SasRound::own_messages`] now and
/// then; once [`SasRound::nonces`] is `Some`, compute the words. Two devices, with the
/// room simulated by moving the messages across:
///
/// ```
/// use conclave_core::identity::{DeviceIdentity, UserSigningKey};
/// use conclave_core::meeting::Epoch;
/// use conclave_core::safety::round::SasRound;
/// use conclave_core::{UnixMillis, UserId, time::DAY_MS};
/// use rand_core::{OsRng, RngCore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let now = UnixMillis(1_767_225_600_000);
/// let device = |name: &str| -> Result<DeviceIdentity, Box<dyn std::error::Error>> {
///     let key = UserSigningKey::generate(&mut OsRng);
///     Ok(DeviceIdentity::create(&key, UserId::from_username(name)?, now, DAY_MS, &mut OsRng)?)
/// };
/// let (alice, bob) = (device("alice")?, device("bob")?);
/// let me = [&alice, &bob];
/// let members: Vec<_> = me.iter().map(|d| (d.device_id(), *d.public().signing_key())).collect();
/// let meeting_id = [7u8; 32];
/// let new_round = |device: &DeviceIdentity| {
///     let mut nonce = [0u8; 32];
///     OsRng.fill_bytes(&mut nonce); // fresh for every round
///     SasRound::new(&meeting_id, Epoch(3), device.device_id(), members.clone(), nonce)
/// };
/// let mut rounds = [new_round(&alice), new_round(&bob)];
/// for _ in 0..3 {
///     for from in 0..2 {
///         while let Some(message) = rounds[from].poll_message(me[from]) {
///             rounds[1 - from].on_message(&message)?; // through the room
///         }
///     }
/// }
/// assert!(rounds.iter().all(SasRound::is_complete));
/// assert_eq!(rounds[0].nonces(), rounds[1].nonces());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SasRound {
    meeting_id: [u8; 32],
    epoch: Epoch,
    me: DeviceId,
    nonce: [u8; 32],
    /// Roster devices and their pinned signing keys.
    members: BTreeMap<DeviceId, VerifyingKey>,
    commitments: BTreeMap<DeviceId, [u8; 32]>,
    nonces: BTreeMap<DeviceId, [u8; 32]>,
    revealed: bool,
    outbox: VecDeque<Step>,
}

impl SasRound {
    /// The round of `epoch` for this device `me`, with the roster's devices and their
    /// signing keys (`me` among them) and this device's fresh random `nonce`. Queues
    /// the commitment.
    #[must_use]
    pub fn new(
        meeting_id: &[u8; 32],
        epoch: Epoch,
        me: DeviceId,
        members: impl IntoIterator<Item = (DeviceId, VerifyingKey)>,
        nonce: [u8; 32],
    ) -> Self {
        let mut round = SasRound {
            meeting_id: *meeting_id,
            epoch,
            me,
            nonce,
            members: members.into_iter().collect(),
            commitments: BTreeMap::new(),
            nonces: BTreeMap::new(),
            revealed: false,
            outbox: VecDeque::new(),
        };
        let own = round.commitment_of(&me, &nonce);
        round.commitments.insert(me, own);
        round.nonces.insert(me, nonce);
        round.outbox.push_back(Step::Commitment(own.to_vec()));
        round.reveal_if_ready();
        round
    }

    /// The epoch of this round.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Handles a round message from the room. A message whose step this round
    /// already accepted (a resend) is `Ok` at the cost of a comparison: it cannot
    /// change the round, so its signature is not verified again.
    pub fn on_message(&mut self, msg: &v1::SasRoundMessage) -> Result<(), SasError> {
        if msg.epoch != self.epoch.get() {
            return Err(SasError::OtherEpoch {
                got: msg.epoch,
                current: self.epoch.get(),
            });
        }
        let device = DeviceId::from_slice(&msg.device_id).ok_or(SasError::Malformed)?;
        let key = self.members.get(&device).ok_or(SasError::NotParticipant)?;
        let (tag, value) = match &msg.step {
            Some(Step::Commitment(c)) => (1u8, c),
            Some(Step::Nonce(n)) => (2u8, n),
            None => return Err(SasError::Malformed),
        };
        let value: [u8; 32] = value
            .as_slice()
            .try_into()
            .map_err(|_| SasError::Malformed)?;
        if self.already_holds(&device, tag, &value) {
            // A resend (or a replay) of something this round accepted: it cannot
            // change the round, so its signature is not checked again (resends make
            // these the bulk of a large meeting's round messages).
            return Ok(());
        }
        if device == self.me {
            // Something signed by this device that this round did not send (an earlier
            // run of the same epoch's round, before a restart) cannot change the round;
            // anything else claiming to be ours is a forgery.
            let signature =
                Signature::from_slice(&msg.signature).map_err(|_| SasError::Malformed)?;
            return key
                .verify(&self.signing_input(&device, tag, &value), &signature)
                .map_err(|_| SasError::BadSignature);
        }
        match tag {
            1 => {
                let signature =
                    Signature::from_slice(&msg.signature).map_err(|_| SasError::Malformed)?;
                key.verify(&self.signing_input(&device, tag, &value), &signature)
                    .map_err(|_| SasError::BadSignature)?;
                match self.commitments.get(&device) {
                    Some(known) if bool::from(known.ct_eq(&value)) => {}
                    Some(_) => return Err(SasError::Equivocation),
                    None => {
                        self.commitments.insert(device, value);
                    }
                }
            }
            _ => {
                // The signed commitment authenticates the nonce: only the device that
                // drew it knows a preimage, so a reveal's signature adds nothing and is
                // not checked (it halves the signature checks of a round).
                let expected = self.commitments.get(&device).ok_or(SasError::BadReveal)?;
                if !bool::from(self.commitment_of(&device, &value).ct_eq(expected)) {
                    return Err(SasError::BadReveal);
                }
                self.nonces.insert(device, value);
            }
        }
        self.reveal_if_ready();
        Ok(())
    }

    /// The next message to send, signed by `me` (the device this round is for).
    pub fn poll_message(&mut self, me: &DeviceIdentity) -> Option<v1::SasRoundMessage> {
        let step = self.outbox.pop_front()?;
        Some(self.signed(step, me))
    }

    /// Every message this device has sent in this round (its commitment, and its
    /// nonce once revealed), signed again: to resend to members who may have missed
    /// them.
    #[must_use]
    pub fn own_messages(&self, me: &DeviceIdentity) -> Vec<v1::SasRoundMessage> {
        let mut steps = vec![Step::Commitment(
            self.commitment_of(&self.me, &self.nonce).to_vec(),
        )];
        if self.revealed {
            steps.push(Step::Nonce(self.nonce.to_vec()));
        }
        steps.into_iter().map(|s| self.signed(s, me)).collect()
    }

    /// Whether every roster device's nonce is in (the words can be computed).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.members.keys().all(|d| self.nonces.contains_key(d))
    }

    /// Every roster device's nonce, once the round is complete.
    #[must_use]
    pub fn nonces(&self) -> Option<Vec<([u8; 16], [u8; 32])>> {
        self.is_complete().then(|| {
            self.nonces
                .iter()
                .filter(|(d, _)| self.members.contains_key(d))
                .map(|(d, n)| (*d.as_bytes(), *n))
                .collect()
        })
    }

    /// Roster devices whose commitment or nonce has not arrived yet.
    #[must_use]
    pub fn waiting_for(&self) -> Vec<DeviceId> {
        self.members
            .keys()
            .filter(|d| !self.nonces.contains_key(d))
            .copied()
            .collect()
    }

    /// Whether this round already accepted exactly this step from `device` (a resend).
    fn already_holds(&self, device: &DeviceId, tag: u8, value: &[u8; 32]) -> bool {
        let held = match tag {
            1 => self.commitments.get(device),
            _ => self.nonces.get(device),
        };
        held.is_some_and(|h| bool::from(h.ct_eq(value)))
    }

    /// Reveals this device's nonce once every roster device has committed.
    fn reveal_if_ready(&mut self) {
        if self.revealed
            || !self
                .members
                .keys()
                .all(|d| self.commitments.contains_key(d))
        {
            return;
        }
        self.revealed = true;
        self.outbox.push_back(Step::Nonce(self.nonce.to_vec()));
    }

    fn commitment_of(&self, device: &DeviceId, nonce: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(COMMIT_LABEL);
        h.update(self.meeting_id);
        h.update(self.epoch.get().to_be_bytes());
        h.update(device.as_bytes());
        h.update(nonce);
        h.finalize().into()
    }

    fn signing_input(&self, device: &DeviceId, tag: u8, value: &[u8; 32]) -> Vec<u8> {
        let mut input = Vec::with_capacity(SIGN_LABEL.len() + 32 + 8 + 16 + 1 + 32);
        input.extend_from_slice(SIGN_LABEL);
        input.extend_from_slice(&self.meeting_id);
        input.extend_from_slice(&self.epoch.get().to_be_bytes());
        input.extend_from_slice(device.as_bytes());
        input.push(tag);
        input.extend_from_slice(value);
        input
    }

    fn signed(&self, step: Step, me: &DeviceIdentity) -> v1::SasRoundMessage {
        let (tag, value) = match &step {
            Step::Commitment(c) => (1u8, c),
            Step::Nonce(n) => (2u8, n),
        };
        let value: [u8; 32] = value
            .as_slice()
            .try_into()
            .expect("own commitments and nonces are 32 bytes");
        let signature = me
            .signing_key()
            .sign(&self.signing_input(&self.me, tag, &value));
        v1::SasRoundMessage {
            epoch: self.epoch.get(),
            device_id: self.me.as_bytes().to_vec(),
            step: Some(step),
            signature: signature.to_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests;
