//! Verifying what the directory returns, and the pinned identity keys (sans-IO).
//!
//! The directory is not trusted: every user key is checked against the one pinned for
//! that user (or pinned now, on first use), every device certificate against the user
//! key and every prekey against its certificate. Devices that fail are refused, with
//! the reason, and never receive anything sealed.

use std::collections::{BTreeMap, BTreeSet};

use conclave_proto::v1;

use crate::container::Recipient;
use crate::identity::{
    IdentityProblem, UserIdentity, UserPublicKey, VerifiedDevice, VerifiedPrekey,
};
use crate::meeting::rekey::{Roster, RosterMember};
use crate::{DeviceId, UnixMillis, UserId};

/// Why a device (or a whole user) was not invited.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The directory does not know the user.
    UnknownUser,
    /// The directory's key for the user differs from the pinned one.
    IdentityChanged,
    /// The directory sent no certificate for the device.
    MissingCertificate,
    /// The device certificate does not verify under the user's key.
    BadCertificate(IdentityProblem),
    /// The prekey does not verify under the device certificate (or belongs to another
    /// device).
    BadPrekey(IdentityProblem),
    /// The device has no prekeys left on the server.
    NoPrekeys,
    /// The directory withheld the device's prekey because too many were taken from it
    /// recently (its defence against prekey draining); retry after this long, ms.
    PrekeyRateLimited(u64),
    /// The directory answered with a user this device did not ask for. Nothing from
    /// that bundle is used or pinned.
    NotRequested,
    /// The directory answered twice for one user, or listed one device id twice.
    /// Every copy is refused.
    Duplicate,
    /// The directory's certificate for a meeting participant's device names other keys
    /// than the certificate pinned when the device joined the meeting. Nothing is
    /// sealed to it.
    DeviceKeysChanged,
}

impl RefusalReason {
    /// Whether the refusal means the directory answered something it should not have
    /// (a substituted or injected key, an unrequested user), as opposed to an ordinary
    /// state such as a device without prekeys. The client reports each such refusal as
    /// [`ClientEvent::DirectoryRefused`](super::ClientEvent::DirectoryRefused).
    #[must_use]
    pub fn is_suspicious(&self) -> bool {
        !matches!(
            self,
            RefusalReason::UnknownUser
                | RefusalReason::NoPrekeys
                | RefusalReason::PrekeyRateLimited(_)
        )
    }
}

impl core::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RefusalReason::UnknownUser => f.write_str("the directory does not know this user"),
            RefusalReason::IdentityChanged => f.write_str(
                "the directory's identity key differs from the pinned one (possible substitution)",
            ),
            RefusalReason::MissingCertificate => {
                f.write_str("the directory sent no certificate for the device")
            }
            RefusalReason::BadCertificate(e) => {
                write!(f, "device certificate does not verify: {e}")
            }
            RefusalReason::BadPrekey(e) => write!(f, "prekey does not verify: {e}"),
            RefusalReason::NoPrekeys => f.write_str("the device has no prekeys left"),
            RefusalReason::PrekeyRateLimited(ms) => write!(
                f,
                "the directory withheld the device's prekey (too many taken recently); retry in {ms} ms"
            ),
            RefusalReason::NotRequested => {
                f.write_str("the directory answered with a user that was not asked for")
            }
            RefusalReason::Duplicate => {
                f.write_str("the directory listed this user or device more than once")
            }
            RefusalReason::DeviceKeysChanged => f.write_str(
                "the directory's certificate names other keys than the ones pinned in the meeting (possible substitution)",
            ),
        }
    }
}

/// A device that was not invited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedDevice {
    /// The user.
    pub user_id: UserId,
    /// The device, when the refusal concerns one device.
    pub device_id: Option<DeviceId>,
    /// Why.
    pub reason: RefusalReason,
}

/// Removes from `bundles` every user that was not `requested` or appears twice, and
/// every device whose id appears twice in the answer (across users too); returns what
/// was removed. Only what survives is verified, so users are pinned only on the
/// lookups this device made.
pub(crate) fn screen_bundles(
    bundles: &mut v1::Bundles,
    requested: &[UserId],
) -> Vec<RefusedDevice> {
    let mut refused = Vec::new();
    let wanted: BTreeSet<UserId> = requested.iter().copied().collect();
    let mut seen_users: BTreeMap<UserId, usize> = BTreeMap::new();
    let mut seen_devices: BTreeMap<DeviceId, usize> = BTreeMap::new();
    for bundle in &bundles.users {
        if let Some(user) = UserId::from_slice(&bundle.user_id) {
            *seen_users.entry(user).or_default() += 1;
        }
        for device in &bundle.devices {
            if let Some(id) = device.certificate.as_ref().and_then(claimed_device_id) {
                *seen_devices.entry(id).or_default() += 1;
            }
        }
    }
    bundles.users.retain_mut(|bundle| {
        let Some(user_id) = UserId::from_slice(&bundle.user_id) else {
            return false;
        };
        let reason = if !wanted.contains(&user_id) {
            Some(RefusalReason::NotRequested)
        } else if seen_users.get(&user_id).copied().unwrap_or(0) > 1 {
            Some(RefusalReason::Duplicate)
        } else {
            None
        };
        if let Some(reason) = reason {
            refused.push(RefusedDevice {
                user_id,
                device_id: None,
                reason,
            });
            return false;
        }
        bundle.devices.retain(|device| {
            let id = device.certificate.as_ref().and_then(claimed_device_id);
            let twice = id.is_some_and(|id| seen_devices.get(&id).copied().unwrap_or(0) > 1);
            if twice {
                refused.push(RefusedDevice {
                    user_id,
                    device_id: id,
                    reason: RefusalReason::Duplicate,
                });
            }
            !twice
        });
        true
    });
    refused
}

/// Recipients for a container to meeting participants: for each roster `member`, the
/// directory's entry must carry the member's pinned identity key and a certificate of
/// the same device keys as the one pinned in the roster, and a prekey signed by that
/// device. The recipient is built from the *pinned* certificate; the directory only
/// supplies prekeys. Entries for devices not in `members` are ignored.
pub(crate) fn roster_recipients(
    bundles: &v1::Bundles,
    members: &[RosterMember],
    now: UnixMillis,
) -> (Vec<Recipient>, Vec<RefusedDevice>) {
    let mut recipients = Vec::new();
    let mut refused = Vec::new();
    for bundle in &bundles.users {
        let Some(user_id) = UserId::from_slice(&bundle.user_id) else {
            continue;
        };
        for device in &bundle.devices {
            let Some(device_id) = device.certificate.as_ref().and_then(claimed_device_id) else {
                continue;
            };
            let Some(member) = members
                .iter()
                .find(|m| m.user_id == user_id && m.device_id == device_id)
            else {
                continue;
            };
            match roster_recipient(bundle, device, member, now) {
                Ok(r) => recipients.push(r),
                Err(reason) => refused.push(RefusedDevice {
                    user_id,
                    device_id: Some(device_id),
                    reason,
                }),
            }
        }
    }
    (recipients, refused)
}

fn roster_recipient(
    bundle: &v1::UserBundle,
    device: &v1::DeviceBundle,
    member: &RosterMember,
    now: UnixMillis,
) -> Result<Recipient, RefusalReason> {
    if bundle.user_public_key.as_slice() != member.identity_key.as_slice() {
        return Err(RefusalReason::IdentityChanged);
    }
    let pinned = UserIdentity {
        user_id: member.user_id,
        key: UserPublicKey::from_bytes(&member.identity_key)
            .map_err(|_| RefusalReason::IdentityChanged)?,
    };
    let certificate = device
        .certificate
        .as_ref()
        .ok_or(RefusalReason::MissingCertificate)?;
    let current = VerifiedDevice::verify(certificate, &pinned, now)
        .map_err(|e| RefusalReason::BadCertificate(e.problem()))?;
    if !current.same_keys(&member.device) {
        return Err(RefusalReason::DeviceKeysChanged);
    }
    let prekey = device
        .prekey
        .as_ref()
        .ok_or_else(|| missing_prekey(device))?;
    prekey_recipient(prekey, &member.device, now)
}

/// `device` as a recipient of its `prekey`, if the prekey verifies under its
/// certificate and belongs to it.
fn prekey_recipient(
    prekey: &v1::SignedPrekey,
    device: &VerifiedDevice,
    now: UnixMillis,
) -> Result<Recipient, RefusalReason> {
    let verified = VerifiedPrekey::verify(prekey, device, now)
        .map_err(|e| RefusalReason::BadPrekey(e.problem()))?;
    // The only way this fails: the prekey names another device.
    Recipient::new(device.clone(), verified)
        .map_err(|_| RefusalReason::BadPrekey(IdentityProblem::WrongDevice))
}

/// Checks that every identity key `roster` claims equals the key pinned for its user.
/// Users never pinned must have been looked up (and pinned) before.
pub(crate) fn check_roster_keys(
    roster: &Roster,
    trust: &TrustStore,
) -> Result<(), super::MessageRefusal> {
    for (user, key) in roster.identity_keys() {
        match trust.get(&user) {
            Some(pinned) if pinned.key.to_bytes() == key => {}
            Some(_) => return Err(super::MessageRefusal::RosterKeyMismatch(user)),
            None => return Err(super::MessageRefusal::RosterUserUnknown(user)),
        }
    }
    Ok(())
}

/// Identity keys this device trusts, by user.
#[derive(Debug, Default)]
pub(crate) struct TrustStore {
    pinned: BTreeMap<UserId, UserPublicKey>,
}

/// The outcome of checking a user key against the trust store.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Already pinned, same key.
    Known,
    /// Pinned now (first use).
    New,
    /// Pinned to another key.
    Changed,
}

impl TrustStore {
    pub(crate) fn new(pinned: impl IntoIterator<Item = UserIdentity>) -> Self {
        TrustStore {
            pinned: pinned.into_iter().map(|u| (u.user_id, u.key)).collect(),
        }
    }

    pub(crate) fn get(&self, user: &UserId) -> Option<UserIdentity> {
        self.pinned.get(user).map(|key| UserIdentity {
            user_id: *user,
            key: *key,
        })
    }

    /// Pins `key` for `user` on first use; reports whether it matches a pinned key.
    pub(crate) fn pin(&mut self, user: UserId, key: UserPublicKey) -> Pin {
        match self.pinned.get(&user) {
            Some(k) if *k == key => Pin::Known,
            Some(_) => Pin::Changed,
            None => {
                self.pinned.insert(user, key);
                Pin::New
            }
        }
    }

    pub(crate) fn all(&self) -> Vec<UserIdentity> {
        self.pinned
            .iter()
            .map(|(user_id, key)| UserIdentity {
                user_id: *user_id,
                key: *key,
            })
            .collect()
    }
}

/// Verified bundles.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    /// Devices whose certificate and prekey verified (only with prekeys requested).
    pub recipients: Vec<Recipient>,
    /// Users whose key was checked, with their verified devices.
    pub users: Vec<(UserIdentity, Vec<VerifiedDevice>)>,
    pub refused: Vec<RefusedDevice>,
    /// Users pinned for the first time.
    pub newly_pinned: Vec<UserIdentity>,
}

/// Checks `bundles` against `trust` (pinning first-seen keys). With `with_prekeys`,
/// every device must also carry a verifying prekey to become a recipient.
pub(crate) fn verify_bundles(
    bundles: &v1::Bundles,
    trust: &mut TrustStore,
    with_prekeys: bool,
    now: UnixMillis,
) -> Verified {
    let mut out = Verified::default();
    for bundle in &bundles.users {
        let Some(user_id) = UserId::from_slice(&bundle.user_id) else {
            continue;
        };
        let refuse_user = |out: &mut Verified, reason| {
            out.refused.push(RefusedDevice {
                user_id,
                device_id: None,
                reason,
            });
        };
        let Ok(key) = UserPublicKey::from_bytes(&bundle.user_public_key) else {
            refuse_user(&mut out, RefusalReason::UnknownUser);
            continue;
        };
        let user = UserIdentity { user_id, key };
        match trust.pin(user_id, key) {
            Pin::Changed => {
                refuse_user(&mut out, RefusalReason::IdentityChanged);
                continue;
            }
            Pin::New => out.newly_pinned.push(user),
            Pin::Known => {}
        }
        let mut devices = Vec::new();
        for device in &bundle.devices {
            let claimed = device.certificate.as_ref().and_then(claimed_device_id);
            let refuse = |out: &mut Verified, reason| {
                out.refused.push(RefusedDevice {
                    user_id,
                    device_id: claimed,
                    reason,
                });
            };
            let verified = match device
                .certificate
                .as_ref()
                .map(|c| VerifiedDevice::verify(c, &user, now))
            {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    refuse(&mut out, RefusalReason::BadCertificate(e.problem()));
                    continue;
                }
                None => {
                    refuse(&mut out, RefusalReason::MissingCertificate);
                    continue;
                }
            };
            if with_prekeys {
                let Some(prekey) = device.prekey.as_ref() else {
                    refuse(&mut out, missing_prekey(device));
                    continue;
                };
                match prekey_recipient(prekey, &verified, now) {
                    Ok(r) => out.recipients.push(r),
                    Err(reason) => {
                        refuse(&mut out, reason);
                        continue;
                    }
                }
            }
            devices.push(verified);
        }
        out.users.push((user, devices));
    }
    out
}

/// Why a directory entry carries no prekey.
fn missing_prekey(device: &v1::DeviceBundle) -> RefusalReason {
    if device.prekey_rate_limited {
        RefusalReason::PrekeyRateLimited(device.prekey_retry_after_ms)
    } else {
        RefusalReason::NoPrekeys
    }
}

/// Reads the (unverified) device id out of a certificate, for error reports only.
fn claimed_device_id(certificate: &v1::DeviceCertificate) -> Option<DeviceId> {
    use conclave_proto::Message as _;
    v1::DeviceCertificateBody::decode(certificate.body.as_slice())
        .ok()
        .and_then(|b| DeviceId::from_slice(&b.device_id))
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;
    use crate::identity::{DeviceIdentity, PrekeyPool, UserSigningKey};
    use crate::time::DAY_MS;

    const NOW: UnixMillis = UnixMillis(1_767_225_600_000);

    struct Fixture {
        user: UserIdentity,
        key: UserSigningKey,
        device: DeviceIdentity,
        pool: PrekeyPool,
    }

    fn fixture(name: &str) -> Fixture {
        let key = UserSigningKey::generate(&mut OsRng);
        let user = UserIdentity {
            user_id: UserId::from_username(name).unwrap(),
            key: key.public_key(),
        };
        let device = DeviceIdentity::create(&key, user.user_id, NOW, DAY_MS, &mut OsRng).unwrap();
        let pool = PrekeyPool::new(&device);
        Fixture {
            user,
            key,
            device,
            pool,
        }
    }

    fn bundle(f: &mut Fixture, cert: v1::DeviceCertificate, prekey: bool) -> v1::UserBundle {
        let prekey = prekey.then(|| {
            f.pool
                .generate(&f.device, 1, NOW, DAY_MS, &mut OsRng)
                .unwrap()
                .remove(0)
        });
        v1::UserBundle {
            user_id: f.user.user_id.as_bytes().to_vec(),
            user_public_key: f.user.key.to_bytes().to_vec(),
            devices: vec![v1::DeviceBundle {
                certificate: Some(cert),
                prekeys_exhausted: prekey.is_none(),
                prekey,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_genuine_bundle_becomes_a_recipient_and_pins_the_key() {
        let mut bob = fixture("bob");
        let cert = bob.device.certificate().clone();
        let bundles = v1::Bundles {
            users: vec![bundle(&mut bob, cert, true)],
        };
        let mut trust = TrustStore::default();
        let v = verify_bundles(&bundles, &mut trust, true, NOW);
        assert_eq!(v.recipients.len(), 1);
        assert!(v.refused.is_empty());
        assert_eq!(v.newly_pinned, vec![bob.user]);
        assert_eq!(trust.get(&bob.user.user_id), Some(bob.user));
    }

    #[test]
    fn a_certificate_signed_by_another_key_is_refused() {
        let mut bob = fixture("bob");
        let mallory = fixture("bob");
        // Mallory's device certificate for "bob", signed by Mallory's key.
        let forged = mallory.device.certificate().clone();
        let bundles = v1::Bundles {
            users: vec![bundle(&mut bob, forged, false)],
        };
        let mut trust = TrustStore::new([bob.user]);
        let v = verify_bundles(&bundles, &mut trust, false, NOW);
        assert!(v.recipients.is_empty());
        assert_eq!(
            v.refused[0].reason,
            RefusalReason::BadCertificate(IdentityProblem::BadSignature)
        );
        let _ = bob.key.public_key();
    }

    #[test]
    fn a_prekey_of_another_device_is_refused() {
        let mut bob = fixture("bob");
        let mut other = fixture("bob-other");
        let cert = bob.device.certificate().clone();
        let mut b = bundle(&mut bob, cert, false);
        let foreign = other
            .pool
            .generate(&other.device, 1, NOW, DAY_MS, &mut OsRng)
            .unwrap()
            .remove(0);
        b.devices[0].prekey = Some(foreign);
        let mut trust = TrustStore::default();
        let v = verify_bundles(&v1::Bundles { users: vec![b] }, &mut trust, true, NOW);
        assert!(v.recipients.is_empty());
        assert!(matches!(v.refused[0].reason, RefusalReason::BadPrekey(_)));
    }

    #[test]
    fn a_changed_identity_key_refuses_the_whole_user() {
        let mut bob = fixture("bob");
        let impostor = fixture("bob");
        let mut trust = TrustStore::new([impostor.user]);
        let cert = bob.device.certificate().clone();
        let bundles = v1::Bundles {
            users: vec![bundle(&mut bob, cert, true)],
        };
        let v = verify_bundles(&bundles, &mut trust, true, NOW);
        assert!(v.recipients.is_empty());
        assert_eq!(v.refused[0].reason, RefusalReason::IdentityChanged);
        assert_eq!(trust.get(&bob.user.user_id), Some(impostor.user));
    }

    #[test]
    fn a_device_without_prekeys_is_refused_and_an_unknown_user_reported() {
        let mut bob = fixture("bob");
        let cert = bob.device.certificate().clone();
        let mut unknown = bundle(&mut bob, cert.clone(), false);
        unknown.user_public_key.clear();
        unknown.user_id = UserId::from_username("nobody").unwrap().as_bytes().to_vec();
        let bundles = v1::Bundles {
            users: vec![bundle(&mut bob, cert, false), unknown],
        };
        let v = verify_bundles(&bundles, &mut TrustStore::default(), true, NOW);
        let reasons: Vec<_> = v.refused.iter().map(|r| r.reason.clone()).collect();
        assert_eq!(
            reasons,
            vec![RefusalReason::NoPrekeys, RefusalReason::UnknownUser]
        );
    }

    #[test]
    fn unrequested_and_duplicate_bundles_are_screened_out() {
        let mut bob = fixture("bob");
        let mut eve = fixture("eve");
        let cert = bob.device.certificate().clone();
        let bob_bundle = bundle(&mut bob, cert.clone(), true);
        let eve_cert = eve.device.certificate().clone();
        let mut bundles = v1::Bundles {
            users: vec![bob_bundle.clone(), bundle(&mut eve, eve_cert, true)],
        };
        let refused = screen_bundles(&mut bundles, &[bob.user.user_id]);
        assert_eq!(bundles.users.len(), 1);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].user_id, eve.user.user_id);
        assert_eq!(refused[0].reason, RefusalReason::NotRequested);

        let mut twice = v1::Bundles {
            users: vec![bob_bundle.clone(), bob_bundle],
        };
        let refused = screen_bundles(&mut twice, &[bob.user.user_id]);
        assert!(twice.users.is_empty());
        assert!(refused.iter().all(|r| r.reason == RefusalReason::Duplicate));
    }

    #[test]
    fn a_device_id_listed_twice_is_refused_in_every_copy() {
        let mut bob = fixture("bob");
        let cert = bob.device.certificate().clone();
        let mut b = bundle(&mut bob, cert, true);
        let copy = b.devices[0].clone();
        b.devices.push(copy);
        let mut bundles = v1::Bundles { users: vec![b] };
        let refused = screen_bundles(&mut bundles, &[bob.user.user_id]);
        assert!(bundles.users[0].devices.is_empty());
        assert_eq!(refused.len(), 2);
    }

    #[test]
    fn a_roster_device_is_sealed_to_only_with_its_pinned_keys() {
        let mut bob = fixture("bob");
        let member = RosterMember::new(&bob.user, bob.device.public().clone(), 1);
        let cert = bob.device.certificate().clone();
        let genuine = v1::Bundles {
            users: vec![bundle(&mut bob, cert, true)],
        };
        let (ok, refused) = roster_recipients(&genuine, std::slice::from_ref(&member), NOW);
        assert_eq!(ok.len(), 1);
        assert!(refused.is_empty());

        // The same device id, certified by Bob's own key, with other device keys.
        let other = DeviceIdentity::create_with_id(
            &bob.key,
            bob.user.user_id,
            bob.device.device_id(),
            NOW,
            DAY_MS,
            &mut OsRng,
        )
        .unwrap();
        let mut substituted = fixture("bob");
        substituted.user = bob.user;
        substituted.device = other;
        substituted.pool = PrekeyPool::new(&substituted.device);
        let cert = substituted.device.certificate().clone();
        let bundles = v1::Bundles {
            users: vec![bundle(&mut substituted, cert, true)],
        };
        let (ok, refused) = roster_recipients(&bundles, &[member], NOW);
        assert!(ok.is_empty());
        assert_eq!(refused[0].reason, RefusalReason::DeviceKeysChanged);
        assert!(refused[0].reason.is_suspicious());
    }

    #[test]
    fn a_withheld_prekey_is_a_rate_limit_not_an_attack() {
        let mut bob = fixture("bob");
        let cert = bob.device.certificate().clone();
        let mut b = bundle(&mut bob, cert, false);
        b.devices[0].prekeys_exhausted = false;
        b.devices[0].prekey_rate_limited = true;
        b.devices[0].prekey_retry_after_ms = 1_500;
        let member = RosterMember::new(&bob.user, bob.device.public().clone(), 1);
        let bundles = v1::Bundles { users: vec![b] };
        let (ok, refused) = roster_recipients(&bundles, &[member], NOW);
        assert!(ok.is_empty());
        assert_eq!(refused[0].reason, RefusalReason::PrekeyRateLimited(1_500));
        assert!(!refused[0].reason.is_suspicious());
    }
}
