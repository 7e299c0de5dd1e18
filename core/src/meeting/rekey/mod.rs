//! The meeting state machine: roster, key leader, epochs and rekeying (sans-IO).
//!
//! [`MeetingState`] decides *what* must happen when participants reject, leave, are
//! removed or drop out; the async client does the I/O. Inputs are method calls that
//! carry `now` (and an `rng` where a key is drawn); outputs are polled with
//! [`MeetingState::poll_output`]; timers with [`MeetingState::poll_timeout`] and
//! [`MeetingState::handle_timeout`]. Nothing here reads a clock or a socket.
//!
//! # Protocol
//! * The **key leader** (initially the initiator) collects departures. The first one
//!   arms a short coalescing timer (`coalesce`); every departure before it fires joins
//!   the same rekey. At the timer the leader draws a *fresh* key for `epoch + 1` and emits
//!   one `Rekey` for the remaining devices only (one container, one entry per device:
//!   O(N) key messages).
//! * Receivers install a Rekey's key for *decryption* at once, but keep *sending* on the
//!   old epoch. When the IO layer reports the Rekey delivered
//!   ([`MeetingState::rekey_delivered`]), the leader switches its own sending epoch and
//!   rotates the SFU room to the new epoch. The room's announcement of its new epoch
//!   ([`MeetingState::room_epoch`]) is every receiver's signal to switch, so every
//!   device holds the new key before anyone sends on it, and a rekey costs one
//!   container round, not two. The announcement comes from the (untrusted) SFU, but it
//!   can only make a device switch to a key it holds from an authenticated Rekey; and
//!   a device switches on its own `switch_deadline` after the Rekey arrived if no
//!   announcement comes, so withholding it cannot keep a device sending on a key a
//!   removed participant holds. (An `EpochSwitch` from the leader is also obeyed.)
//! * After a switch the previous epoch stays decryptable for `grace` (frames in
//!   flight), then its key is dropped (zeroized).
//! * If the leader departs (leaves, or is reported dropped with
//!   [`MeetingState::device_dropped`]), the next leader is the remaining device with
//!   the **lowest sender index**; it rekeys (reason `LEADER_CHANGE`). Every device
//!   reaches this on its own. A would-be successor's Rekey that arrives before this
//!   device saw the leader depart is held (not installed) until it does.
//! * A device joining mid-meeting gets the *ratcheted* key of `epoch + 1`; existing
//!   members ratchet locally on the `EpochSwitch` that announces it, so the joiner cannot
//!   decrypt earlier media.
//! * **Fail closed on a missing key** (review M3). If the room announces an epoch newer
//!   than every key this device holds (its Rekey was lost, or withheld by a server
//!   colluding with a removed participant), the device stops sending at once
//!   ([`MeetingOutput::SendingPaused`]): its current key may be held by whoever was
//!   rekeyed out. After `key_request` it asks the key leader with a `KeyRequest`
//!   (again with backoff while it stays behind); the leader answers with a `Rekey` of
//!   its current epoch (reason `RESEND`) to that device alone, at most once per
//!   `key_request` per device. Sending resumes with the switch to that key. A false
//!   announcement (the SFU is not trusted) can only pause sending, which a hostile SFU
//!   can always cause by dropping media.
//!
//! # Authorization of control messages
//! The container layer authenticates the sender device; this machine decides whether it
//! may say what it says: `Rekey`, `EpochSwitch` and `Remove` only from the current (or,
//! after the leader departed, the designated next) leader, for this meeting id, with a
//! strictly increasing epoch, and a `Rekey`'s recipients must all be on its new roster
//! (minus the sender), which must be a subset of the current roster that contains this
//! device. Anything else is refused with a [`RekeyError`] and changes nothing.

mod message;
mod roster;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use conclave_proto::datagram::MediaKind;
use conclave_proto::v1::{self, RekeyReason, container_payload::Body};
use rand_core::CryptoRngCore;

pub use roster::{Roster, RosterMember};

use super::{Epoch, MeetingId, MeetingKey};
use crate::{DeviceId, UnixMillis, UserId};
pub use message::{ControlMessage, MeetingMessage, WirePayload};

/// Timers of the meeting state machine. Start from [`RekeyConfig::default`] and set
/// the fields to change (new timers may be added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyConfig {
    /// Departures within this window are handled by one rekey.
    pub coalesce: Duration,
    /// How long a previous epoch stays decryptable after a switch.
    pub grace: Duration,
    /// A receiver switches to an installed Rekey at the latest this long after it
    /// arrived, even if the room never announced the new epoch.
    pub switch_deadline: Duration,
    /// A device that the room has moved past (no key for the room's epoch) stops
    /// sending at once and asks the key leader for the key after this long (an
    /// `EpochSwitch` or Rekey usually arrives first); it asks again with doubling
    /// intervals up to [`MAX_KEY_REQUEST_INTERVAL_MS`]. The leader answers each device
    /// at most once per this interval.
    pub key_request: Duration,
}

/// The longest interval between two key requests of a device that stays behind, ms.
pub const MAX_KEY_REQUEST_INTERVAL_MS: u64 = 30_000;

/// How long after an invitation's ring deadline the key leader still waits for its
/// answer before ringing the invitee out ([`MeetingState::ring`]). An `Accept` sent just
/// before the deadline still has to be sealed and delivered, possibly after a prekey
/// rate-limit wait of up to 10 s or a reconnect; it must not find its sender rung out.
pub const ANSWER_GRACE: Duration = Duration::from_secs(15);

/// `d` in whole milliseconds, saturating (the machine's clock is `UnixMillis`).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for RekeyConfig {
    fn default() -> Self {
        RekeyConfig {
            coalesce: Duration::from_millis(20),
            grace: Duration::from_secs(2),
            switch_deadline: Duration::from_secs(1),
            key_request: Duration::from_millis(500),
        }
    }
}

/// Why this device's part in the meeting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// This device left.
    Left,
    /// The key leader removed this device (or its user).
    Removed,
    /// A rekey left this device out.
    ExcludedByRekey,
}

/// Where this device's view of the meeting is in the key schedule. Each phase names
/// what the machine waits for; the receiving side's own states (a Rekey installed and
/// waiting for the room's switch, sending paused behind the room) sit beside it, since
/// they can overlap any phase but `Ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sending on the current epoch, no rekey under way here.
    Steady,
    /// (Leader) departures are being gathered; the Rekey goes out at this time (ms).
    Coalescing {
        /// When the Rekey goes out, ms.
        rekey_at: u64,
    },
    /// (Leader) the Rekey of `epoch` is on its way; the switch waits for its delivery
    /// ([`MeetingState::rekey_delivered`]).
    Delivering {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The meeting ended here; every key is dropped.
    Ended(EndReason),
}

/// What the IO layer must do.
#[derive(Debug)]
pub enum MeetingOutput {
    /// Seal `payload` in one container to exactly these devices and send it.
    Send {
        /// Recipient devices.
        recipients: Vec<DeviceId>,
        /// The message (its keys zeroize on drop; [`MeetingMessage::to_wire`] gives
        /// the payload to seal).
        message: MeetingMessage,
        /// For a `Rekey`: its epoch, to report back with
        /// [`MeetingState::rekey_delivered`] once every recipient got it.
        rekey_epoch: Option<Epoch>,
    },
    /// Stop sending media now: the room moved to `room_epoch`, whose key this device
    /// does not hold, so its current key may be known to a departed participant. The
    /// key has been (or will be) asked for; sending resumes with the next
    /// [`MeetingOutput::SendingEpoch`].
    SendingPaused {
        /// The epoch the room announced.
        room_epoch: Epoch,
    },
    /// Decrypt frames of this epoch (its key is in [`MeetingState::key`]).
    ReceiveEpoch {
        /// The epoch.
        epoch: Epoch,
    },
    /// Send media on this epoch from now on (a new SFrame sender context) and prove
    /// the room's new epoch to the SFU.
    SendingEpoch {
        /// The epoch.
        epoch: Epoch,
    },
    /// (Leader) rotate the SFU room from `from` to `to` (keys via [`MeetingState::key`];
    /// the old key is kept until the rotation is signed, i.e. through the grace window).
    RotateRoom {
        /// Current epoch.
        from: Epoch,
        /// New epoch.
        to: Epoch,
    },
    /// Forget this epoch's key: remove it from the SFrame receiver.
    DropEpoch {
        /// The epoch.
        epoch: Epoch,
    },
    /// The roster changed (participants, safety code).
    RosterChanged,
    /// (Leader) `device` did not answer its invitation by the ring deadline: it is
    /// rekeyed out as if it had rejected (the Rekey says `REJECT`). Still on the
    /// roster when this is emitted; gone with the next [`MeetingOutput::RosterChanged`].
    Unanswered {
        /// The invited device.
        device: DeviceId,
    },
    /// A would-be successor rekeyed `leader` out, but this device still sees it: check
    /// whether `leader` is still there (arm its drop timer) and report with
    /// [`MeetingState::device_dropped`] if it is not.
    LeaderInDoubt {
        /// The current key leader.
        leader: DeviceId,
    },
    /// This device is out of the meeting; every key has been dropped.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// Why a control message or call was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// The message is for another meeting.
    #[error("control message for another meeting; ignored")]
    WrongMeeting,
    /// The sender may not issue this message (not the key leader).
    #[error("{what} from a device that is not the key leader; ignored")]
    NotLeader {
        /// Which message.
        what: &'static str,
    },
    /// The sender is not on the roster.
    #[error("message from a device that is not in the meeting; ignored")]
    NotParticipant,
    /// The epoch does not move forward (or does not match the pending one).
    #[error("epoch {got} is not acceptable here (current {current}); replayed or out of order")]
    BadEpoch {
        /// Epoch in the message.
        got: Epoch,
        /// This device's current epoch.
        current: Epoch,
    },
    /// A roster (invite, Rekey, joiners) or a Rekey's recipients are inconsistent, or
    /// an entry's certificate does not prove its user-device binding.
    #[error("roster rejected: {0}")]
    BadRoster(&'static str),
    /// The call is only for the key leader.
    #[error("only the key leader can {0}")]
    LeaderOnly(&'static str),
    /// The meeting has ended for this device.
    #[error("the meeting has ended for this device")]
    Ended,
    /// The meeting key is malformed (not 32 bytes, or an epoch SFrame cannot carry).
    #[error("malformed meeting key in an invite or rekey")]
    BadKey,
    /// A rekey is in progress; retry the call once it completed.
    #[error("a rekey is in progress; retry once it has completed")]
    Busy,
    /// The payload is not a meeting control message.
    #[error("not a meeting control message")]
    NotControl,
    /// A device asked for the key again sooner than the leader answers; it will ask
    /// again.
    #[error("key requested again too soon; ignored until the interval has passed")]
    TooSoon,
}

/// A Rekey held back until the leader's departure is confirmed here.
#[derive(Debug)]
struct EarlyRekey {
    from: DeviceId,
    recipients: Vec<DeviceId>,
    rekey: v1::Rekey,
    /// Its EpochSwitch came too.
    switched: bool,
}

impl Drop for EarlyRekey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.rekey.meeting_key);
    }
}

/// How many would-be successors (in succession order) may have a Rekey held here.
const EARLY_SLOTS: usize = 3;

/// On whose authority a Rekey arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// The current key leader (after a departure: this device's own pick of successor).
    Leader,
    /// One of the next devices in succession order, while this device still sees the
    /// leader: held until this device itself sees the leader (and any device ahead of
    /// the sender) depart.
    Early,
}

/// (Receiver) a Rekey installed for decryption, not yet sent on.
#[derive(Debug)]
struct Pending {
    epoch: Epoch,
    roster: Roster,
    leader: DeviceId,
    /// Switch at this time even if the room never announces `epoch`, ms.
    switch_at: u64,
}

/// (Any device) the room moved past every epoch this device holds.
#[derive(Debug, Clone, Copy)]
struct Behind {
    /// The newest epoch the room announced.
    room_epoch: Epoch,
    /// When to ask the key leader (again), ms.
    ask_at: u64,
    /// The interval after that, ms.
    backoff: u64,
}

/// One device's view of one meeting.
///
/// # Run loop
/// The IO layer owns one `MeetingState` per meeting and repeats three steps, with the
/// server's time as `now`: feed it what happened (a command of the app, an opened
/// control message with [`MeetingState::on_message`], the room's epoch with
/// [`MeetingState::room_epoch`], a delivery report with
/// [`MeetingState::rekey_delivered`], a dropped device); carry out every output of
/// [`MeetingState::poll_output`] in order, the `RotateRoom` of a round before the
/// rest; and call [`MeetingState::handle_timeout`] when [`MeetingState::poll_timeout`]
/// comes. Here the key leader removes Bob:
///
/// ```
/// use conclave_core::identity::{DeviceIdentity, UserIdentity, UserSigningKey};
/// use conclave_core::meeting::rekey::{MeetingOutput, MeetingState, RekeyConfig, Roster, RosterMember};
/// use conclave_core::meeting::{Epoch, MeetingId, MeetingKey};
/// use conclave_core::{UnixMillis, UserId, time::DAY_MS};
/// use rand_core::OsRng;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut now = UnixMillis(1_767_225_600_000);
/// let member = |name: &str, index: u32| -> Result<(UserId, RosterMember), Box<dyn std::error::Error>> {
///     let key = UserSigningKey::generate(&mut OsRng);
///     let user = UserIdentity { user_id: UserId::from_username(name)?, key: key.public_key() };
///     let device = DeviceIdentity::create(&key, user.user_id, now, DAY_MS, &mut OsRng)?;
///     Ok((user.user_id, RosterMember::new(&user, device.public().clone(), index)))
/// };
/// let (_, alice) = member("alice", 0)?;
/// let (bob, bob_device) = member("bob", 1)?;
/// let me = alice.device_id;
/// let roster = Roster::new([alice, bob_device])?;
/// let id = MeetingId::generate(&UserId::from_username("alice")?, &me, now, 2, &mut OsRng);
/// let mut state = MeetingState::start(id, me, roster, MeetingKey::generate(Epoch::ZERO, &mut OsRng), RekeyConfig::default())?;
///
/// state.remove(&[bob], &[], now)?; // an input
/// let mut rekeyed = None;
/// for _ in 0..10 {
///     while let Some(output) = state.poll_output() {
///         match output {
///             // Seal `payload` to exactly these roster devices and send it; report a
///             // Rekey delivered once the server took it.
///             MeetingOutput::Send { rekey_epoch: Some(epoch), .. } => rekeyed = Some(epoch),
///             MeetingOutput::Send { .. } => {}
///             // Rotate the SFU room, then send on the new epoch's SFrame key.
///             MeetingOutput::RotateRoom { .. } | MeetingOutput::SendingEpoch { .. } => {}
///             _ => {} // install or drop receive keys, update the roster view, ...
///         }
///     }
///     if let Some(epoch) = rekeyed.take() {
///         state.rekey_delivered(epoch, now)?; // an input: the Rekey went out
///         continue;
///     }
///     match state.poll_timeout() {
///         Some(at) => {
///             now = at; // sleep until then (or until the next input)
///             state.handle_timeout(now, &mut OsRng);
///         }
///         None => break,
///     }
/// }
/// assert_eq!(state.sending_epoch(), Epoch(1));
/// assert_eq!(state.roster().len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MeetingState {
    meeting_id: MeetingId,
    me: DeviceId,
    config: RekeyConfig,
    roster: Roster,
    /// Counts the roster's replacements ([`MeetingState::roster_version`]).
    roster_version: u64,
    leader: DeviceId,
    /// The leader's rekey cycle, or the end.
    phase: Phase,
    /// The epoch this device sends on.
    sending: Epoch,
    /// Keys this device can decrypt with.
    keys: BTreeMap<Epoch, MeetingKey>,
    /// Epochs to drop at a deadline.
    drops: BTreeMap<Epoch, u64>,
    /// (Leader) devices that must leave at the next rekey, and why.
    departures: BTreeMap<DeviceId, RekeyReason>,
    /// (Receiver) a Rekey installed but not yet switched to.
    pending: Option<Pending>,
    /// (Receiver) the highest epoch the SFU room announced.
    announced: Epoch,
    /// (Receiver) Rekeys from would-be successors that arrived before this device saw
    /// the leader depart, by sender (at most [`EARLY_SLOTS`]); one is applied when its
    /// sender becomes this device's own pick of leader.
    early: BTreeMap<DeviceId, EarlyRekey>,
    /// (Non-leader) roster devices seen dropping out since the last switch: a successor
    /// rekeys them out too, and succession skips them.
    suspects: BTreeSet<DeviceId>,
    /// Sending paused: the room is past every key held here (review M3).
    behind: Option<Behind>,
    /// (Leader) when each device's last key request was answered, ms.
    answered: BTreeMap<DeviceId, u64>,
    /// (Leader) devices whose key requests are answered together at `resend_at`: a
    /// burst of requests (every member asks at once after a switch the server
    /// delivered late) gets one resend container, sealed and sent once.
    resend_to: Vec<DeviceId>,
    resend_at: Option<u64>,
    /// (Leader) invited devices that have not answered yet, and when their
    /// invitation stops ringing, ms ([`MeetingState::ring`]).
    ringing: BTreeMap<DeviceId, u64>,
    outputs: VecDeque<MeetingOutput>,
}

impl MeetingState {
    /// A meeting this device starts as key leader with `key`; `roster` includes this
    /// device. Emits nothing: the caller sends the invites ([`MeetingState::invite`]).
    pub fn start(
        meeting_id: MeetingId,
        me: DeviceId,
        roster: Roster,
        key: MeetingKey,
        config: RekeyConfig,
    ) -> Result<Self, RekeyError> {
        if !roster.contains(&me) {
            return Err(RekeyError::BadRoster("the initiator must be on the roster"));
        }
        Ok(Self::with(meeting_id, me, config, roster, me, key))
    }

    fn with(
        meeting_id: MeetingId,
        me: DeviceId,
        config: RekeyConfig,
        roster: Roster,
        leader: DeviceId,
        key: MeetingKey,
    ) -> Self {
        let epoch = key.epoch();
        MeetingState {
            meeting_id,
            me,
            config,
            roster,
            roster_version: 0,
            leader,
            sending: epoch,
            keys: BTreeMap::from([(epoch, key)]),
            drops: BTreeMap::new(),
            departures: BTreeMap::new(),
            phase: Phase::Steady,
            pending: None,
            announced: Epoch::ZERO,
            early: BTreeMap::new(),
            suspects: BTreeSet::new(),
            behind: None,
            answered: BTreeMap::new(),
            resend_to: Vec::new(),
            resend_at: None,
            ringing: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Joins a meeting from an opened invite. Every roster entry's certificate must
    /// verify under its identity key at `now` (the caller also checks those keys
    /// against the ones it pinned: [`Roster::identity_keys`]).
    pub fn from_invite(
        me: DeviceId,
        invite: &v1::MeetingInvite,
        config: RekeyConfig,
        now: UnixMillis,
    ) -> Result<Self, RekeyError> {
        let meeting_id = MeetingId::from_slice(&invite.meeting_id)
            .ok_or(RekeyError::BadRoster("meeting id is not 32 bytes"))?;
        let roster = Roster::from_proto(&invite.roster, &Roster::default(), now)?;
        if !roster.contains(&me) {
            return Err(RekeyError::BadRoster(
                "this device is not on the invite's roster",
            ));
        }
        let leader = DeviceId::from_slice(&invite.key_leader_device_id)
            .filter(|l| roster.contains(l))
            .ok_or(RekeyError::BadRoster("key leader is not on the roster"))?;
        let key = MeetingKey::from_slice(Epoch(invite.epoch), &invite.meeting_key)
            .map_err(|_| RekeyError::BadKey)?;
        Ok(Self::with(meeting_id, me, config, roster, leader, key))
    }

    /// The invitation to the current epoch (send it to every other device).
    ///
    /// # Errors
    /// [`RekeyError::BadKey`] if the meeting ended (no key is held).
    pub fn invite(
        &self,
        media_kinds: &[MediaKind],
        expires_at: UnixMillis,
    ) -> Result<MeetingMessage, RekeyError> {
        let key = self.keys.get(&self.sending).ok_or(RekeyError::BadKey)?;
        Ok(self.message(ControlMessage::Invite {
            key: key.clone(),
            roster: self.roster.clone(),
            leader: self.leader,
            media_kinds: media_kinds.to_vec(),
            expires_at,
        }))
    }

    fn message(&self, body: ControlMessage) -> MeetingMessage {
        MeetingMessage {
            meeting_id: self.meeting_id,
            body,
        }
    }

    /// The meeting id.
    #[must_use]
    pub fn meeting_id(&self) -> &MeetingId {
        &self.meeting_id
    }

    /// This device.
    #[must_use]
    pub fn me(&self) -> DeviceId {
        self.me
    }

    /// The current roster.
    #[must_use]
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// A number that changes whenever the roster is replaced (a join, a departure, a
    /// Rekey's roster), so that what is derived from the roster, such as the safety
    /// code, is computed again only then. It says nothing across meetings.
    #[must_use]
    pub fn roster_version(&self) -> u64 {
        self.roster_version
    }

    fn set_roster(&mut self, roster: Roster) {
        self.roster = roster;
        self.roster_version = self.roster_version.wrapping_add(1);
    }

    /// The current key leader.
    #[must_use]
    pub fn leader(&self) -> DeviceId {
        self.leader
    }

    /// The devices that may rotate the meeting's SFU room, in succession order: the key
    /// leader, then the remaining devices by lowest sender index (the order in which
    /// they would succeed it), at most `n`. Every device with the same roster computes
    /// the same list.
    #[must_use]
    pub fn room_leaders(&self, n: usize) -> Vec<DeviceId> {
        let mut rest: Vec<&RosterMember> = self
            .roster
            .iter()
            .filter(|m| m.device_id != self.leader)
            .collect();
        rest.sort_by_key(|m| m.sender_index);
        std::iter::once(self.leader)
            .chain(rest.into_iter().map(|m| m.device_id))
            .take(n)
            .collect()
    }

    /// Whether this device is the key leader.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader == self.me
    }

    /// The epoch this device sends on.
    #[must_use]
    pub fn sending_epoch(&self) -> Epoch {
        self.sending
    }

    /// The key of `epoch`, while this device holds it.
    #[must_use]
    pub fn key(&self, epoch: Epoch) -> Option<&MeetingKey> {
        self.keys.get(&epoch)
    }

    /// Epochs this device can decrypt.
    pub fn epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.keys.keys().copied()
    }

    /// Whether sending is paused because the room moved to an epoch whose key this
    /// device does not hold (it has asked the key leader for it).
    #[must_use]
    pub fn is_sending_paused(&self) -> bool {
        self.behind.is_some()
    }

    /// Whether the meeting has ended for this device.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// Where the meeting is in the key schedule.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When a coalesced rekey is due, ms.
    fn rekey_at(&self) -> Option<u64> {
        match self.phase {
            Phase::Coalescing { rekey_at } => Some(rekey_at),
            _ => None,
        }
    }

    /// Next output to apply.
    pub fn poll_output(&mut self) -> Option<MeetingOutput> {
        self.outputs.pop_front()
    }

    /// Earliest time [`MeetingState::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let drop = self.drops.values().min().copied();
        let switch = self.pending.as_ref().map(|p| p.switch_at);
        let ask = self.behind.map(|b| b.ask_at);
        let ring = self.ringing.values().min().copied();
        [drop, self.rekey_at(), switch, ask, self.resend_at, ring]
            .into_iter()
            .flatten()
            .min()
            .map(UnixMillis)
    }

    /// Runs due timers: drops expired epochs, switches to a Rekey the room never
    /// announced and, on the leader, starts a due rekey.
    pub fn handle_timeout(&mut self, now: UnixMillis, rng: &mut impl CryptoRngCore) {
        if self.pending.as_ref().is_some_and(|p| p.switch_at <= now.0) {
            self.switch_to_pending(now);
        }
        let due: Vec<Epoch> = self
            .drops
            .iter()
            .filter(|(_, at)| **at <= now.0)
            .map(|(e, _)| *e)
            .collect();
        for epoch in due {
            self.drops.remove(&epoch);
            if self.keys.remove(&epoch).is_some() {
                self.outputs.push_back(MeetingOutput::DropEpoch { epoch });
            }
        }
        self.ring_out(now);
        if self.rekey_at().is_some_and(|at| at <= now.0) {
            self.phase = Phase::Steady;
            self.start_rekey(rng);
        }
        if self.behind.is_some_and(|b| b.ask_at <= now.0) {
            self.ask_for_key(now);
        }
        if self.resend_at.is_some_and(|at| at <= now.0) {
            self.resend_key();
        }
    }

    /// This device leaves and drops every key. A participant tells only the key leader
    /// (who rekeys; the others learn from the Rekey's roster); the leader tells every
    /// other device, since they must all pick its successor.
    pub fn leave(&mut self) -> Result<(), RekeyError> {
        self.check_live()?;
        let others = if self.is_leader() {
            self.roster.devices_except(&self.me)
        } else {
            vec![self.leader]
        };
        if !others.is_empty() {
            self.outputs.push_back(MeetingOutput::Send {
                recipients: others,
                message: self.message(ControlMessage::Leave {
                    epoch: self.sending,
                }),
                rekey_epoch: None,
            });
        }
        self.end(EndReason::Left);
        Ok(())
    }

    /// (Leader) removes users (all their devices) and single devices, then rekeys.
    pub fn remove(
        &mut self,
        users: &[UserId],
        devices: &[DeviceId],
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_live()?;
        if !self.is_leader() {
            return Err(RekeyError::LeaderOnly("remove participants"));
        }
        let mut removed: BTreeSet<DeviceId> = devices.iter().copied().collect();
        removed.extend(self.roster.devices_of_users(users));
        removed.remove(&self.me);
        removed.retain(|d| self.roster.contains(d));
        if removed.is_empty() {
            return Ok(());
        }
        // Tell the removed devices (everyone else learns from the Rekey).
        self.outputs.push_back(MeetingOutput::Send {
            recipients: removed.iter().copied().collect(),
            message: self.message(ControlMessage::Remove {
                users: users.to_vec(),
                devices: removed.iter().copied().collect(),
            }),
            rekey_epoch: None,
        });
        for d in removed {
            self.depart(d, RekeyReason::Remove, now);
        }
        Ok(())
    }

    /// A device dropped out (its connection was lost beyond the reconnect window).
    ///
    /// The leader rekeys it out. If it *is* the leader, its successor (the lowest
    /// remaining sender index) takes over and rekeys, as if it had left. Other devices
    /// remember it, so that a successor also rekeys out devices that dropped while the
    /// old leader was going down.
    pub fn device_dropped(&mut self, device: DeviceId, now: UnixMillis) {
        if self.is_ended() || device == self.me || !self.roster.contains(&device) {
            return;
        }
        if self.is_leader() {
            self.depart(device, RekeyReason::DeviceDropped, now);
        } else if device == self.leader {
            self.leader_departed(device, now);
        } else {
            self.suspects.insert(device);
        }
    }

    /// (Leader) the invitation just sent to `devices` rings until `deadline` (the
    /// invite's `expires_at`): a device whose answer has not arrived [`ANSWER_GRACE`]
    /// after that is sent a `Remove` (so that a device that did answer, too late, ends
    /// cleanly instead of waiting for a key) and rekeyed out as if it had rejected;
    /// [`MeetingOutput::Unanswered`] says so. Call it after
    /// [`MeetingState::start`] for the invitees; [`MeetingState::add_participants`]
    /// does it for joiners. Devices not on the roster, and this one, are ignored. A
    /// successor leader does not know who has answered (replies go to the leader), so
    /// invitees of a leader that left ring out on their own side only.
    ///
    /// # Errors
    /// [`RekeyError::LeaderOnly`] on another device.
    pub fn ring(&mut self, devices: &[DeviceId], deadline: UnixMillis) -> Result<(), RekeyError> {
        self.check_live()?;
        if !self.is_leader() {
            return Err(RekeyError::LeaderOnly("ring invitees"));
        }
        let ring_out_at = deadline.0.saturating_add(ms(ANSWER_GRACE));
        for d in devices {
            if *d != self.me && self.roster.contains(d) {
                self.ringing.insert(*d, ring_out_at);
            }
        }
        Ok(())
    }

    /// (Leader) adds devices mid-meeting. The meeting moves to the *ratcheted* key of
    /// the next epoch: existing devices derive it themselves from an `EpochSwitch`
    /// naming the joiners; the joiners get it in an invite (returned here to be sealed
    /// to `joiners`), so they cannot decrypt earlier media.
    pub fn add_participants(
        &mut self,
        joiners: Vec<RosterMember>,
        media_kinds: &[MediaKind],
        invite_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<MeetingMessage, RekeyError> {
        self.check_live()?;
        if !self.is_leader() {
            return Err(RekeyError::LeaderOnly("add participants"));
        }
        if self.phase != Phase::Steady {
            return Err(RekeyError::Busy);
        }
        if joiners.iter().any(|j| self.roster.contains(&j.device_id)) {
            return Err(RekeyError::BadRoster("a joiner is already in the meeting"));
        }
        let roster = Roster::new(self.roster.iter().cloned().chain(joiners.iter().cloned()))?;
        let joined_devices: Vec<DeviceId> = joiners.iter().map(|j| j.device_id).collect();
        let joined = Roster::new(joiners)?;
        let epoch = self.ratchet_current()?;
        let existing = self.roster.devices_except(&self.me);
        self.send_switch(existing, epoch, joined);
        self.set_roster(roster);
        self.outputs.push_back(MeetingOutput::RosterChanged);
        self.outputs.push_back(MeetingOutput::RotateRoom {
            from: self.sending,
            to: epoch,
        });
        self.switch_to(epoch, now);
        let ring_out_at = invite_expires_at.0.saturating_add(ms(ANSWER_GRACE));
        for j in &joined_devices {
            self.ringing.insert(*j, ring_out_at);
        }
        self.invite(media_kinds, invite_expires_at)
    }

    /// Queues an `EpochSwitch` to `recipients` (nothing if there are none).
    fn send_switch(&mut self, recipients: Vec<DeviceId>, epoch: Epoch, joined: Roster) {
        if recipients.is_empty() {
            return;
        }
        self.outputs.push_back(MeetingOutput::Send {
            recipients,
            message: self.message(ControlMessage::EpochSwitch { epoch, joined }),
            rekey_epoch: None,
        });
    }

    /// Derives and installs the ratchet of the sending epoch's key; returns its epoch.
    fn ratchet_current(&mut self) -> Result<Epoch, RekeyError> {
        let next = self
            .keys
            .get(&self.sending)
            .ok_or(RekeyError::BadKey)?
            .ratchet()
            .map_err(|_| RekeyError::BadKey)?;
        let epoch = next.epoch();
        self.keys.insert(epoch, next);
        self.outputs
            .push_back(MeetingOutput::ReceiveEpoch { epoch });
        Ok(epoch)
    }

    /// (Leader) the Rekey of `epoch` reached every recipient: switch everyone to it.
    pub fn rekey_delivered(&mut self, epoch: Epoch, now: UnixMillis) -> Result<(), RekeyError> {
        if self.phase != (Phase::Delivering { epoch }) {
            return Err(RekeyError::BadEpoch {
                got: epoch,
                current: self.sending,
            });
        }
        self.phase = Phase::Steady;
        // No EpochSwitch container: the room's rotation announces the switch.
        self.outputs.push_back(MeetingOutput::RotateRoom {
            from: self.sending,
            to: epoch,
        });
        self.switch_to(epoch, now);
        if !self.departures.is_empty() {
            self.phase = Phase::Coalescing {
                rekey_at: now.0.saturating_add(ms(self.config.coalesce)),
            };
        }
        Ok(())
    }

    /// The SFU reports the meeting's room at `epoch` (an `EpochChanged` event, or the
    /// epoch in the answer to a join). A Rekey of that epoch (or an older one) installed
    /// here is switched to now; one that arrives later is switched to as it arrives.
    ///
    /// The SFU is not trusted with this: a false or early announcement can only make
    /// this device send sooner on a key it already holds from an authenticated Rekey.
    pub fn room_epoch(&mut self, epoch: Epoch, now: UnixMillis) -> Result<(), RekeyError> {
        self.check_live()?;
        self.announced = self.announced.max(epoch);
        for held in self.early.values_mut() {
            if Epoch(held.rekey.epoch) <= epoch {
                held.switched = true;
            }
        }
        if self.pending.as_ref().is_some_and(|p| p.epoch <= epoch) {
            self.switch_to_pending(now);
        }
        self.check_behind(now);
        Ok(())
    }

    /// Fails closed if the room is past every key this device holds: pause sending and
    /// arm the key request (review M3).
    fn check_behind(&mut self, now: UnixMillis) {
        if self.is_ended() || self.announced <= self.newest_epoch() {
            return;
        }
        match &mut self.behind {
            Some(b) => b.room_epoch = b.room_epoch.max(self.announced),
            None => {
                self.behind = Some(Behind {
                    room_epoch: self.announced,
                    ask_at: now.0.saturating_add(ms(self.config.key_request)),
                    backoff: ms(self.config.key_request),
                });
                self.outputs.push_back(MeetingOutput::SendingPaused {
                    room_epoch: self.announced,
                });
            }
        }
    }

    /// Asks the key leader (or the leader of the pending Rekey) for the current key,
    /// and schedules the next request with backoff. The leader itself has nobody to
    /// ask: it stays paused (it was most likely rekeyed out by a successor).
    fn ask_for_key(&mut self, now: UnixMillis) {
        let Some(b) = self.behind.as_mut() else {
            return;
        };
        let backoff = b
            .backoff
            .saturating_mul(2)
            .clamp(1, MAX_KEY_REQUEST_INTERVAL_MS);
        b.ask_at = now.0.saturating_add(b.backoff.max(1));
        b.backoff = backoff;
        let room_epoch = b.room_epoch;
        let leader = self.pending.as_ref().map_or(self.leader, |p| p.leader);
        if leader == self.me {
            return;
        }
        self.outputs.push_back(MeetingOutput::Send {
            recipients: vec![leader],
            message: self.message(ControlMessage::KeyRequest {
                held_epoch: self.newest_epoch(),
                room_epoch,
            }),
            rekey_epoch: None,
        });
    }

    /// Switches to the pending Rekey on its own leader's authority (the room announced
    /// it, or the deadline passed).
    fn switch_to_pending(&mut self, now: UnixMillis) {
        if let Some(p) = &self.pending {
            let (leader, epoch) = (p.leader, p.epoch);
            // Cannot fail: the pending Rekey matches its own epoch and leader.
            let _ = self.apply_switch(leader, epoch, now);
        }
    }

    /// Handles an opened control payload from device `from` (authenticated by the
    /// container layer), whose container was addressed to `recipients`.
    pub fn on_message(
        &mut self,
        from: DeviceId,
        recipients: &[DeviceId],
        payload: &v1::ContainerPayload,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_live()?;
        match &payload.body {
            Some(Body::InviteReply(r)) => self.on_reply(from, r, now),
            Some(Body::Leave(l)) => self.on_leave(from, l, now),
            Some(Body::Remove(r)) => self.on_remove(from, r),
            Some(Body::Rekey(r)) => self.on_rekey(from, recipients, r, now),
            Some(Body::EpochSwitch(s)) => self.on_switch(from, s, now),
            Some(Body::KeyRequest(r)) => self.on_key_request(from, r, now),
            _ => Err(RekeyError::NotControl),
        }
    }

    /// The newest epoch whose key this device holds (a pending one included).
    fn newest_epoch(&self) -> Epoch {
        self.keys
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.sending)
    }

    fn check_live(&self) -> Result<(), RekeyError> {
        if self.is_ended() {
            Err(RekeyError::Ended)
        } else {
            Ok(())
        }
    }

    fn check_meeting(&self, id: &[u8]) -> Result<(), RekeyError> {
        if id == self.meeting_id.as_bytes().as_slice() {
            Ok(())
        } else {
            Err(RekeyError::WrongMeeting)
        }
    }

    fn on_reply(
        &mut self,
        from: DeviceId,
        r: &v1::InviteReply,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_meeting(&r.meeting_id)?;
        if !self.roster.contains(&from) {
            return Err(RekeyError::NotParticipant);
        }
        // Answered, either way: it rings no more.
        self.ringing.remove(&from);
        if r.decision == v1::invite_reply::Decision::Reject as i32 && self.is_leader() {
            self.depart(from, RekeyReason::Reject, now);
        }
        Ok(())
    }

    fn on_leave(
        &mut self,
        from: DeviceId,
        l: &v1::Leave,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_meeting(&l.meeting_id)?;
        if !self.roster.contains(&from) || from == self.me {
            return Err(RekeyError::NotParticipant);
        }
        if from == self.leader {
            self.leader_departed(from, now);
            return Ok(());
        }
        if self.is_leader() {
            self.depart(from, RekeyReason::Leave, now);
        }
        Ok(())
    }

    fn on_remove(&mut self, from: DeviceId, r: &v1::Remove) -> Result<(), RekeyError> {
        self.check_meeting(&r.meeting_id)?;
        if from != self.leader {
            return Err(RekeyError::NotLeader { what: "Remove" });
        }
        let me_removed = r
            .device_ids
            .iter()
            .any(|d| d.as_slice() == self.me.as_bytes())
            || self.roster.get(&self.me).is_some_and(|m| {
                r.user_ids
                    .iter()
                    .any(|u| u.as_slice() == m.user_id.as_bytes())
            });
        if me_removed {
            self.end(EndReason::Removed);
        }
        Ok(())
    }

    /// (Leader) a roster device missed the current key: resend it to that device
    /// alone, in a Rekey of the current epoch (reason `RESEND`) with the current roster.
    fn on_key_request(
        &mut self,
        from: DeviceId,
        r: &v1::KeyRequest,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_meeting(&r.meeting_id)?;
        if !self.roster.contains(&from) || from == self.me {
            return Err(RekeyError::NotParticipant);
        }
        if !self.is_leader() {
            return Err(RekeyError::LeaderOnly("answer key requests"));
        }
        if matches!(self.phase, Phase::Delivering { .. }) {
            // The Rekey being delivered is addressed to it; it asks again if not.
            return Err(RekeyError::Busy);
        }
        if Epoch(r.held_epoch) >= self.sending {
            // It holds the current key: the room's announcement it saw was false.
            return Ok(());
        }
        if self
            .answered
            .get(&from)
            .is_some_and(|at| now.0 < at.saturating_add(ms(self.config.key_request)))
        {
            return Err(RekeyError::TooSoon);
        }
        if !self.keys.contains_key(&self.sending) {
            return Err(RekeyError::BadKey);
        }
        // Bounded by the roster: only roster devices get here.
        self.answered.retain(|d, _| self.roster.contains(d));
        self.answered.insert(from, now.0);
        if !self.resend_to.contains(&from) {
            self.resend_to.push(from);
        }
        if self.resend_at.is_none() {
            self.resend_at = Some(now.0.saturating_add(ms(self.config.coalesce)));
        }
        Ok(())
    }

    /// (Leader) answers the key requests gathered since the first of them: the current
    /// key to all those devices still in the roster, in one Rekey of the current epoch
    /// (reason `RESEND`). While a new Rekey is being delivered they get that instead
    /// (and ask again if it misses them).
    fn resend_key(&mut self) {
        self.resend_at = None;
        let mut recipients = std::mem::take(&mut self.resend_to);
        recipients.retain(|d| self.roster.contains(d) && *d != self.me);
        if recipients.is_empty()
            || !self.is_leader()
            || matches!(self.phase, Phase::Delivering { .. })
        {
            return;
        }
        let Some(key) = self.keys.get(&self.sending) else {
            return;
        };
        let message = self.message(ControlMessage::Rekey {
            key: key.clone(),
            roster: self.roster.clone(),
            leader: self.me,
            reason: RekeyReason::Resend,
        });
        self.outputs.push_back(MeetingOutput::Send {
            recipients,
            message,
            rekey_epoch: None,
        });
    }

    fn on_rekey(
        &mut self,
        from: DeviceId,
        recipients: &[DeviceId],
        r: &v1::Rekey,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_meeting(&r.meeting_id)?;
        let newest = self.newest_epoch();
        if Epoch(r.epoch) <= newest {
            return Err(RekeyError::BadEpoch {
                got: Epoch(r.epoch),
                current: newest,
            });
        }
        let roster = Roster::from_proto(&r.roster, &self.roster, now)?;
        // A resend may list devices that joined since (by the ratchet this device
        // missed): each is proven by its certificate (and checked against pinned keys by
        // the caller). Any other Rekey only removes devices.
        let resend = r.reason == RekeyReason::Resend as i32 && from == self.leader;
        if !resend && !roster.is_subset_of(&self.roster) {
            return Err(RekeyError::BadRoster(
                "new roster adds devices (joins use the ratchet)",
            ));
        }
        if !roster.contains(&from) {
            return Err(RekeyError::BadRoster(
                "the key leader is not on the new roster",
            ));
        }
        let authority = self.rekey_authority(from, &roster)?;
        // Nobody off the new roster may hold the new key. (A roster device the leader
        // could not reach, e.g. with no prekeys left, is dropped by a following rekey.)
        let allowed: BTreeSet<DeviceId> = roster.devices_except(&from).into_iter().collect();
        if !recipients.iter().all(|d| allowed.contains(d)) {
            return Err(RekeyError::BadRoster(
                "the rekey was sent to a device off the new roster",
            ));
        }
        let leader = DeviceId::from_slice(&r.key_leader_device_id)
            .filter(|l| roster.contains(l))
            .ok_or(RekeyError::BadRoster("key leader is not on the new roster"))?;
        if leader != from {
            return Err(RekeyError::BadRoster(
                "a rekey must name its sender as the key leader",
            ));
        }
        if authority == Authority::Early {
            if roster.contains(&self.me)
                && self
                    .early
                    .get(&from)
                    .is_none_or(|held| Epoch(held.rekey.epoch) < Epoch(r.epoch))
            {
                self.early.insert(
                    from,
                    EarlyRekey {
                        from,
                        recipients: recipients.to_vec(),
                        rekey: r.clone(),
                        switched: Epoch(r.epoch) <= self.announced,
                    },
                );
                self.outputs.push_back(MeetingOutput::LeaderInDoubt {
                    leader: self.leader,
                });
            }
            return Ok(());
        }
        if !roster.contains(&self.me) {
            // Not addressed to us (we could not have opened it): nothing to do.
            self.end(EndReason::ExcludedByRekey);
            return Ok(());
        }
        let key = MeetingKey::from_slice(Epoch(r.epoch), &r.meeting_key)
            .map_err(|_| RekeyError::BadKey)?;
        self.keys.insert(Epoch(r.epoch), key);
        // A pending Rekey this one replaces never became the sending epoch here: its key
        // goes when an old epoch's would if this device switched at the new deadline
        // (devices that did switch to it are heard until they switch on). Before, it
        // stayed until the next switch, so a key leader sending Rekeys faster than the
        // switch deadline grew the keys held without bound.
        if let Some(replaced) = self.pending.as_ref().map(|p| p.epoch) {
            let at = now
                .0
                .saturating_add(ms(self.config.switch_deadline))
                .saturating_add(ms(self.config.grace));
            self.drops.entry(replaced).or_insert(at);
        }
        self.pending = Some(Pending {
            epoch: Epoch(r.epoch),
            roster,
            leader,
            switch_at: now.0.saturating_add(ms(self.config.switch_deadline)),
        });
        self.outputs.push_back(MeetingOutput::ReceiveEpoch {
            epoch: Epoch(r.epoch),
        });
        if Epoch(r.epoch) <= self.announced {
            // The room already moved on (its announcement overtook this Rekey).
            self.switch_to_pending(now);
        }
        Ok(())
    }

    /// Who may send a Rekey with this new `roster`: the leader (after a departure,
    /// this device's own deterministic pick). A Rekey that leaves out the leader this
    /// device still sees, from one of the next [`EARLY_SLOTS`] devices in succession
    /// order, is held ([`Authority::Early`]); it takes effect only if its sender becomes
    /// this device's own pick, so no participant can rekey a live leader out or jump
    /// the succession order.
    fn rekey_authority(&self, from: DeviceId, roster: &Roster) -> Result<Authority, RekeyError> {
        if from == self.leader {
            return Ok(Authority::Leader);
        }
        if !roster.contains(&self.leader) && self.succession_order().contains(&from) {
            return Ok(Authority::Early);
        }
        Err(RekeyError::NotLeader { what: "Rekey" })
    }

    /// The devices that would lead before this one if the leader departed, in order
    /// (skipping suspects), at most [`EARLY_SLOTS`]. Empty when this device is next.
    fn succession_order(&self) -> Vec<DeviceId> {
        let base = self.pending.as_ref().map_or(&self.roster, |p| &p.roster);
        let mut order: Vec<&RosterMember> = base
            .iter()
            .filter(|m| m.device_id != self.leader && !self.suspects.contains(&m.device_id))
            .collect();
        order.sort_by_key(|m| m.sender_index);
        order
            .into_iter()
            .map(|m| m.device_id)
            .take_while(|d| *d != self.me)
            .take(EARLY_SLOTS)
            .collect()
    }

    fn on_switch(
        &mut self,
        from: DeviceId,
        s: &v1::EpochSwitch,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        self.check_meeting(&s.meeting_id)?;
        if !s.joined.is_empty() {
            if from != self.leader {
                return Err(RekeyError::NotLeader {
                    what: "EpochSwitch",
                });
            }
            return self.on_ratchet_switch(s, now);
        }
        let from_pending_leader = self.pending.as_ref().is_some_and(|p| p.leader == from);
        if from_pending_leader {
            return self.apply_switch(from, Epoch(s.epoch), now);
        }
        if let Some(early) = self
            .early
            .get_mut(&from)
            .filter(|e| Epoch(e.rekey.epoch) == Epoch(s.epoch))
        {
            // Held with its Rekey until its sender becomes this device's leader.
            early.switched = true;
            return Ok(());
        }
        if from != self.leader {
            return Err(RekeyError::NotLeader {
                what: "EpochSwitch",
            });
        }
        self.apply_switch(from, Epoch(s.epoch), now)
    }

    /// Switches to the pending Rekey of `epoch`, announced by `from`.
    fn apply_switch(
        &mut self,
        from: DeviceId,
        epoch: Epoch,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        let Some(Pending {
            epoch,
            roster,
            leader,
            ..
        }) = self
            .pending
            .take_if(|p| p.epoch == epoch && p.leader == from)
        else {
            return Err(RekeyError::BadEpoch {
                got: epoch,
                current: self.sending,
            });
        };
        self.set_roster(roster);
        self.leader = leader;
        self.outputs.push_back(MeetingOutput::RosterChanged);
        self.switch_to(epoch, now);
        Ok(())
    }

    /// Devices joined mid-meeting: ratchet to the next epoch and add them.
    fn on_ratchet_switch(
        &mut self,
        s: &v1::EpochSwitch,
        now: UnixMillis,
    ) -> Result<(), RekeyError> {
        let newest = self.newest_epoch();
        if self.pending.is_some()
            || newest != self.sending
            || Some(Epoch(s.epoch)) != self.sending.next()
        {
            return Err(RekeyError::BadEpoch {
                got: Epoch(s.epoch),
                current: self.sending,
            });
        }
        let joined = Roster::from_proto(&s.joined, &Roster::default(), now)?;
        if joined.iter().any(|j| self.roster.contains(&j.device_id)) {
            return Err(RekeyError::BadRoster("a joiner is already in the meeting"));
        }
        let roster = Roster::new(self.roster.iter().cloned().chain(joined.iter().cloned()))?;
        let epoch = self.ratchet_current()?;
        self.set_roster(roster);
        self.outputs.push_back(MeetingOutput::RosterChanged);
        self.switch_to(epoch, now);
        Ok(())
    }

    /// The key leader `old` left or dropped out. Deterministic succession: the lowest
    /// sender index among the remaining devices, skipping devices seen dropping out
    /// (they are rekeyed out too). If `old` had a Rekey pending here, its roster is the
    /// base, so whoever `old` was removing stays out. A held Rekey from the new leader
    /// applies now.
    fn leader_departed(&mut self, old: DeviceId, now: UnixMillis) {
        let base = match self.pending.take() {
            Some(p) if p.leader == old => p.roster,
            _ => self.roster.clone(),
        };
        let remaining = base.without(&[old]);
        self.suspects.remove(&old);
        let live = remaining.without(&self.suspects.iter().copied().collect::<Vec<_>>());
        let Some(next) = live.lowest_sender().or_else(|| remaining.lowest_sender()) else {
            return;
        };
        self.set_roster(remaining);
        self.leader = next;
        self.outputs.push_back(MeetingOutput::RosterChanged);
        if next == self.me {
            self.early.clear();
            self.depart(old, RekeyReason::LeaderChange, now);
            let suspects: Vec<DeviceId> = std::mem::take(&mut self.suspects)
                .into_iter()
                .filter(|d| self.roster.contains(d))
                .collect();
            for device in suspects {
                self.depart(device, RekeyReason::DeviceDropped, now);
            }
        } else if let Some(early) = self.early.remove(&next) {
            // The new leader's Rekey (and maybe its switch) came first; it is judged
            // again now, and dropped if it does not hold up.
            if self
                .on_rekey(early.from, &early.recipients, &early.rekey, now)
                .is_ok()
                && early.switched
            {
                let _ = self.apply_switch(early.from, Epoch(early.rekey.epoch), now);
            }
        }
    }

    /// (Leader) rekeys out the invitees whose invitations stopped ringing unanswered
    /// (the deadline and [`ANSWER_GRACE`] passed), telling each with a `Remove`.
    fn ring_out(&mut self, now: UnixMillis) {
        let due: Vec<DeviceId> = self
            .ringing
            .iter()
            .filter(|(_, at)| **at <= now.0)
            .map(|(d, _)| *d)
            .collect();
        for device in due {
            self.ringing.remove(&device);
            if self.is_leader() && self.roster.contains(&device) && !self.is_ended() {
                self.outputs.push_back(MeetingOutput::Unanswered { device });
                self.outputs.push_back(MeetingOutput::Send {
                    recipients: vec![device],
                    message: self.message(ControlMessage::Remove {
                        users: Vec::new(),
                        devices: vec![device],
                    }),
                    rekey_epoch: None,
                });
                self.depart(device, RekeyReason::Reject, now);
            }
        }
    }

    /// Records a departure and arms the coalescing timer (leader only).
    fn depart(&mut self, device: DeviceId, reason: RekeyReason, now: UnixMillis) {
        self.departures.entry(device).or_insert(reason);
        if self.phase == Phase::Steady {
            self.phase = Phase::Coalescing {
                rekey_at: now.0.saturating_add(ms(self.config.coalesce)),
            };
        }
    }

    fn start_rekey(&mut self, rng: &mut impl CryptoRngCore) {
        if self.departures.is_empty()
            || matches!(self.phase, Phase::Delivering { .. })
            || !self.is_leader()
        {
            return;
        }
        let departed: Vec<DeviceId> = self.departures.keys().copied().collect();
        let reason = self
            .departures
            .values()
            .copied()
            .max_by_key(|r| *r as i32)
            .unwrap_or(RekeyReason::Unspecified);
        self.departures.clear();
        let roster = self.roster.without(&departed);
        let newest = self.newest_epoch();
        let Some(epoch) = newest.next() else {
            return;
        };
        let key = MeetingKey::generate(epoch, rng);
        let recipients = roster.devices_except(&self.me);
        let message = self.message(ControlMessage::Rekey {
            key: key.clone(),
            roster: roster.clone(),
            leader: self.me,
            reason,
        });
        self.keys.insert(epoch, key);
        self.set_roster(roster);
        self.ringing.retain(|d, _| self.roster.contains(d));
        self.outputs.push_back(MeetingOutput::RosterChanged);
        self.outputs
            .push_back(MeetingOutput::ReceiveEpoch { epoch });
        self.phase = Phase::Delivering { epoch };
        self.outputs.push_back(MeetingOutput::Send {
            recipients,
            message,
            rekey_epoch: Some(epoch),
        });
    }

    fn switch_to(&mut self, epoch: Epoch, now: UnixMillis) {
        self.sending = epoch;
        if self.behind.is_some_and(|b| b.room_epoch <= epoch) {
            self.behind = None;
        }
        // The meeting moved on under a live leader: held Rekeys for older epochs are
        // void, and suspicions start afresh (a stale one must not cut out a device
        // that came back).
        self.early.retain(|_, held| Epoch(held.rekey.epoch) > epoch);
        self.suspects.clear();
        self.outputs
            .push_back(MeetingOutput::SendingEpoch { epoch });
        let at = now.0.saturating_add(ms(self.config.grace));
        for e in self.keys.keys().copied().filter(|e| *e < epoch) {
            self.drops.entry(e).or_insert(at);
        }
    }

    fn end(&mut self, reason: EndReason) {
        self.phase = Phase::Ended(reason);
        let epochs: Vec<Epoch> = self.keys.keys().copied().collect();
        self.keys.clear();
        self.drops.clear();
        self.pending = None;
        self.departures.clear();
        self.early.clear();
        self.suspects.clear();
        self.behind = None;
        self.answered.clear();
        self.resend_to.clear();
        self.resend_at = None;
        self.ringing.clear();
        for epoch in epochs {
            self.outputs.push_back(MeetingOutput::DropEpoch { epoch });
        }
        self.outputs.push_back(MeetingOutput::Ended { reason });
    }
}
