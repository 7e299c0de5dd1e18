//! Prepared containers: what is sealed later opens like any container, for exactly the
//! devices named at sealing.

#![allow(clippy::unwrap_used)]

use super::super::tests::{NOW, Party, TTL, setup, text};
use super::*;
use crate::container::{ContainerError, SealedContainer};
use crate::time::DAY_MS;

fn ids(parties: &[&Party]) -> Vec<DeviceId> {
    parties.iter().map(|p| p.device.device_id()).collect()
}

/// Seals a "rekey" text to `to` now.
fn seal_rekey(
    prepared: PreparedSeal,
    sender: &Party,
    to: &[&Party],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Vec<u8>, ContainerError> {
    prepared.seal(&sender.device, &ids(to), &text("rekey"), NOW, TTL, rng)
}

/// Alice's preparation for Bob and Carol (their first prekeys).
fn prepare_for_bob_and_carol(
    alice: &Party,
    bob: &Party,
    carol: &Party,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> PreparedSeal {
    let recipients = [bob.recipient(0), carol.recipient(0)];
    PreparedSeal::new(&alice.device, &recipients, NOW, rng).unwrap()
}

#[test]
fn prepared_entries_open_like_a_sealed_container() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let prepared = prepare_for_bob_and_carol(&alice, &bob, &carol, &mut rng);
    assert_eq!(prepared.devices().count(), 2);
    let later = UnixMillis(NOW.0 + 60_000);
    let bytes = prepared
        .seal(
            &alice.device,
            &ids(&[&bob, &carol]),
            &text("rekey"),
            later,
            TTL,
            &mut rng,
        )
        .unwrap();
    for party in [&mut bob, &mut carol] {
        let opened = party.open_at(&bytes, &alice, later).unwrap();
        assert_eq!(opened.payload(), &text("rekey"));
        assert_eq!(opened.created_at(), later);
        assert_eq!(opened.recipients().len(), 2);
    }
}

/// A participant who departed between preparation and sealing is simply not named: its
/// entry never reaches the wire, so even with the container in hand it cannot open it.
#[test]
fn a_device_left_out_at_sealing_cannot_open_the_container() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let prepared = prepare_for_bob_and_carol(&alice, &bob, &carol, &mut rng);
    let bytes = seal_rekey(prepared, &alice, &[&bob], &mut rng).unwrap();
    assert!(SealedContainer::decode(&bytes).is_ok());
    assert!(matches!(
        carol.open(&bytes, &alice),
        Err(ContainerError::NotARecipient { .. })
    ));
    let opened = bob.open(&bytes, &alice).unwrap();
    assert_eq!(opened.recipients(), ids(&[&bob]).as_slice());
}

#[test]
fn devices_added_later_open_too() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let mut prepared =
        PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    prepared
        .add(&alice.device, &[carol.recipient(1)], NOW)
        .unwrap();
    assert!(prepared.has(&carol.device.device_id()));
    let bytes = seal_rekey(prepared, &alice, &[&carol, &bob], &mut rng).unwrap();
    assert_eq!(bob.open(&bytes, &alice).unwrap().payload(), &text("rekey"));
    assert_eq!(
        carol.open(&bytes, &alice).unwrap().payload(),
        &text("rekey")
    );
}

#[test]
fn an_empty_preparation_takes_devices_later() {
    let (mut rng, alice, mut bob, _) = setup();
    let mut prepared = PreparedSeal::new(&alice.device, &[], NOW, &mut rng).unwrap();
    assert_eq!(prepared.devices().count(), 0);
    prepared
        .add(&alice.device, &[bob.recipient(0)], NOW)
        .unwrap();
    let bytes = seal_rekey(prepared, &alice, &[&bob], &mut rng).unwrap();
    assert!(bob.open(&bytes, &alice).is_ok());
}

#[test]
fn sealing_to_a_device_that_was_not_prepared_is_refused() {
    let (mut rng, alice, bob, carol) = setup();
    let prepared = PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    assert!(matches!(
        prepared.seal(&alice.device, &ids(&[&bob, &carol]), &text("x"), NOW, TTL, &mut rng),
        Err(ContainerError::NotPrepared { device_id }) if device_id == carol.device.device_id()
    ));
}

#[test]
fn a_device_is_prepared_and_named_once() {
    let (mut rng, alice, bob, _) = setup();
    let mut prepared =
        PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    assert!(matches!(
        prepared.add(&alice.device, &[bob.recipient(1)], NOW),
        Err(ContainerError::DuplicateRecipient { .. })
    ));
    assert!(matches!(
        prepared.seal(
            &alice.device,
            &ids(&[&bob, &bob]),
            &text("x"),
            NOW,
            TTL,
            &mut rng
        ),
        Err(ContainerError::DuplicateRecipient { .. })
    ));
}

#[test]
fn nothing_is_sealed_to_no_one_or_with_an_empty_payload() {
    let (mut rng, alice, bob, _) = setup();
    let first = PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    assert!(matches!(
        first.seal(&alice.device, &[], &text("x"), NOW, TTL, &mut rng),
        Err(ContainerError::NoRecipients)
    ));
    let second = PreparedSeal::new(&alice.device, &[bob.recipient(1)], NOW, &mut rng).unwrap();
    let empty = conclave_proto::v1::ContainerPayload::default();
    assert!(matches!(
        second.seal(&alice.device, &ids(&[&bob]), &empty, NOW, TTL, &mut rng),
        Err(ContainerError::EmptyPayload)
    ));
}

/// Published prekeys live 7 days (the test parties): an entry prepared with one is not
/// sealed after that, as a fresh seal would refuse the prekey too.
#[test]
fn an_entry_whose_prekey_expired_is_not_sealed() {
    let (mut rng, alice, bob, _) = setup();
    let prepared = PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    let (_, usable_until) = prepared.devices().next().unwrap();
    assert_eq!(usable_until, UnixMillis(NOW.0 + 7 * DAY_MS));
    assert!(matches!(
        prepared.seal(
            &alice.device,
            &ids(&[&bob]),
            &text("x"),
            usable_until,
            TTL,
            &mut rng
        ),
        Err(ContainerError::RecipientExpired { .. })
    ));
}

#[test]
fn only_the_preparing_device_may_use_a_preparation() {
    let (mut rng, alice, bob, carol) = setup();
    let mut prepared =
        PreparedSeal::new(&alice.device, &[carol.recipient(0)], NOW, &mut rng).unwrap();
    assert!(matches!(
        prepared.add(&bob.device, &[carol.recipient(1)], NOW),
        Err(ContainerError::PreparedByAnotherDevice)
    ));
    assert!(matches!(
        prepared.seal(&bob.device, &ids(&[&carol]), &text("x"), NOW, TTL, &mut rng),
        Err(ContainerError::PreparedByAnotherDevice)
    ));
}

#[test]
fn retained_entries_are_the_only_ones_left() {
    let (mut rng, alice, bob, carol) = setup();
    let mut prepared = prepare_for_bob_and_carol(&alice, &bob, &carol, &mut rng);
    let bob_id = bob.device.device_id();
    prepared.retain(|d| *d == bob_id);
    assert!(prepared.has(&bob_id));
    assert!(!prepared.has(&carol.device.device_id()));
}

#[test]
fn a_preparation_prints_no_secret() {
    let (mut rng, alice, bob, _) = setup();
    let prepared = PreparedSeal::new(&alice.device, &[bob.recipient(0)], NOW, &mut rng).unwrap();
    let shown = format!("{prepared:?}");
    assert!(shown.starts_with("PreparedSeal"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", prepared.payload_key.as_slice())));
    assert!(!shown.contains(&format!("{:?}", prepared.container_id)));
    assert!(!shown.contains(&format!("{:?}", prepared.container_id.as_bytes())));
}
