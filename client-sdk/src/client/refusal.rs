//! Why a received container was refused: a closed set of reasons, each with its
//! source where one exists, so an app can tell a forgery from a stale redelivery
//! without parsing text.

use crate::UserId;
use crate::container::ContainerError;
use crate::meeting::rekey::RekeyError;

use super::ClientError;

/// Why a received container was refused ([`ClientEvent::MessageRefused`]). Every
/// refused container has been acknowledged and deleted from the mailbox.
///
/// [`ClientEvent::MessageRefused`]: super::ClientEvent::MessageRefused
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageRefusal {
    /// The bytes are not a container this client can read.
    #[error("not a readable container: {0}")]
    Undecodable(#[source] ContainerError),
    /// The container does not open: forged, altered, expired, addressed to another
    /// device, or sealed to a prekey this device no longer holds.
    #[error("the container does not open: {0}")]
    Unopenable(#[source] ContainerError),
    /// The directory said a moment ago that the claimed sender does not exist (it is
    /// not asked again so soon).
    #[error("the directory recently said the sender does not exist")]
    SenderRecentlyUnknown,
    /// The directory does not know the claimed sender, or gives it another key than
    /// the one pinned.
    #[error("the directory does not know the sender (or changed its key)")]
    SenderUnknown,
    /// Looking the sender up failed for a reason that will not pass.
    #[error("looking the sender up failed: {0}")]
    SenderLookupFailed(#[source] Box<ClientError>),
    /// A meeting message names a meeting id that is not 32 bytes.
    #[error("the meeting id is not 32 bytes")]
    BadMeetingId,
    /// An invitation that does not make a valid meeting (roster, key, epochs).
    #[error("invalid invitation: {0}")]
    InvalidInvite(#[source] RekeyError),
    /// The inviting user already has this many unanswered invitations here.
    #[error("this user already has {0} unanswered invitations here; answer or let them expire")]
    TooManyInvitationsFromUser(usize),
    /// This device already holds this many unanswered invitations.
    #[error("{0} unanswered invitations are waiting already; answer or let them expire")]
    TooManyInvitations(usize),
    /// An invitation sent by a device other than the meeting's key leader.
    #[error("invitation not sent by the meeting's key leader")]
    InviteNotFromLeader,
    /// The inviter is not on the roster as its own user and device.
    #[error("roster rejected: the inviter is not on it as its own user and device")]
    InviterNotOnRoster,
    /// A roster lists a user with another identity key than the one pinned here
    /// (someone tried to impersonate that user).
    #[error(
        "roster rejected: it lists user {0:?} with an identity key that differs from the pinned one"
    )]
    RosterKeyMismatch(UserId),
    /// A roster lists a user the directory does not know.
    #[error("roster rejected: the directory does not know user {0:?}")]
    RosterUserUnknown(UserId),
    /// The devices a meeting message adds do not form a valid roster.
    #[error("roster rejected: {0}")]
    BadRoster(#[source] RekeyError),
}

impl MessageRefusal {
    /// Whether the refusal concerns a meeting roster (an impersonation attempt, a
    /// certificate that does not verify under its user's key, or a malformed list of
    /// participants).
    #[must_use]
    pub fn is_roster_problem(&self) -> bool {
        matches!(
            self,
            MessageRefusal::InviterNotOnRoster
                | MessageRefusal::RosterKeyMismatch(_)
                | MessageRefusal::RosterUserUnknown(_)
                | MessageRefusal::BadRoster(_)
                | MessageRefusal::InvalidInvite(RekeyError::BadRoster(_))
        )
    }
}
