//! A compromised directory substitutes a device certificate (signed by another key
//! than the user's) and a prekey (not signed by the device): the inviting client
//! detects both, reports them, and seals the invite only to verified devices.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use conclave_sdk::UserId;
use conclave_sdk::client::{MediaKind, RefusalReason};
use conclave_sdk::identity::{DeviceIdentity, PrekeyPool, UserSigningKey};
use conclave_sdk::time::DAY_MS;
use conclave_sfu::store::*;
use conclave_testkit::prelude::*;
use rand_core::OsRng;

/// A store that lies on the directory's read path, like a compromised server would.
struct Tampering {
    inner: MemoryStore,
    /// (user, forged certificate bytes): every device of the user gets it.
    certificate: Mutex<Option<(UserIdBytes, Vec<u8>)>>,
    /// Devices of this user get this signed prekey instead of their own.
    prekey: Mutex<Option<(UserIdBytes, StoredPrekey)>>,
}

impl Store for Tampering {
    fn user_key(&self, u: &UserIdBytes) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.user_key(u)
    }
    fn register_device(
        &self,
        k: &[u8; 32],
        d: &DeviceRecord,
        m: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        self.inner.register_device(k, d, m)
    }
    fn device(&self, d: &DeviceIdBytes) -> Result<Option<DeviceRecord>, StoreError> {
        self.inner.device(d)
    }
    fn user_devices(&self, u: &UserIdBytes) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut devices = self.inner.user_devices(u)?;
        if let Some((user, forged)) = self.certificate.lock().unwrap().as_ref() {
            if user == u {
                for d in &mut devices {
                    d.certificate = forged.clone();
                }
            }
        }
        Ok(devices)
    }
    fn add_prekeys(
        &self,
        d: &DeviceIdBytes,
        p: &[StoredPrekey],
        m: usize,
        n: u64,
    ) -> Result<usize, StoreError> {
        self.inner.add_prekeys(d, p, m, n)
    }
    fn set_last_resort_prekey(
        &self,
        d: &DeviceIdBytes,
        p: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        self.inner.set_last_resort_prekey(d, p)
    }
    fn last_resort_prekey(
        &self,
        d: &DeviceIdBytes,
        n: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        self.inner.last_resort_prekey(d, n)
    }
    fn prekey_count(&self, d: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.inner.prekey_count(d)
    }
    fn take_prekeys(&self, ds: &[DeviceIdBytes], n: u64) -> Result<Vec<TakenPrekey>, StoreError> {
        let mut taken = self.inner.take_prekeys(ds, n)?;
        if let Some((user, forged)) = self.prekey.lock().unwrap().as_ref() {
            for t in &mut taken {
                let owner = self.inner.device(&t.device_id)?.map(|d| d.user_id);
                if owner.as_ref() == Some(user) && t.prekey.is_some() {
                    t.prekey = Some(forged.clone());
                }
            }
        }
        Ok(taken)
    }
    fn mailbox_put(
        &self,
        r: &[DeviceIdBytes],
        c: &[u8],
        s: u64,
        e: u64,
        m: usize,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        self.inner.mailbox_put(r, c, s, e, m)
    }
    fn mailbox_list(
        &self,
        d: &DeviceIdBytes,
        a: u64,
        l: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.inner.mailbox_list(d, a, l)
    }
    fn mailbox_count(&self, d: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.inner.mailbox_count(d)
    }
    fn mailbox_ack(&self, d: &DeviceIdBytes, ids: &[u64]) -> Result<usize, StoreError> {
        self.inner.mailbox_ack(d, ids)
    }
    fn mailbox_expire(&self, n: u64) -> Result<usize, StoreError> {
        self.inner.mailbox_expire(n)
    }
    fn room(&self, r: &RoutingIdBytes) -> Result<Option<RoomRecord>, StoreError> {
        self.inner.room(r)
    }
    fn put_room(&self, r: &RoutingIdBytes, rec: &RoomRecord) -> Result<(), StoreError> {
        self.inner.put_room(r, rec)
    }
    fn delete_room(&self, r: &RoutingIdBytes) -> Result<(), StoreError> {
        self.inner.delete_room(r)
    }
    fn expire_rooms(
        &self,
        c: u64,
        live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError> {
        self.inner.expire_rooms(c, live)
    }
    fn set_push_subscription(
        &self,
        d: &DeviceIdBytes,
        s: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.inner.set_push_subscription(d, s)
    }
    fn push_subscription(&self, d: &DeviceIdBytes) -> Result<Option<PushSubscription>, StoreError> {
        self.inner.push_subscription(d)
    }
    fn clear_push_subscription(
        &self,
        d: &DeviceIdBytes,
        e: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.clear_push_subscription(d, e)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_substitutes_a_certificate_or_prekey_is_detected_and_not_invited() {
    let store = Arc::new(Tampering {
        inner: MemoryStore::new(),
        certificate: Mutex::new(None),
        prekey: Mutex::new(None),
    });
    let sfu = TestSfu::start_with(client_test_config(), store.clone()).await;
    let ([_alice, bob, carol, dave], [a, mut b, mut c, mut d]) =
        connect_users(&sfu, ["alice", "bob", "carol", "dave"]).await;

    // The attacker's keys: a certificate claiming to be a device of Bob, signed by
    // the attacker's user key; and a prekey signed by the attacker's device.
    let attacker = UserSigningKey::generate(&mut OsRng);
    let bob_id: UserId = bob.id();
    let forged_device =
        DeviceIdentity::create(&attacker, bob_id, now(), DAY_MS, &mut OsRng).unwrap();
    let forged_cert = conclave_proto::Message::encode_to_vec(forged_device.certificate());
    *store.certificate.lock().unwrap() = Some((*bob_id.as_bytes(), forged_cert));
    let mut attacker_pool = PrekeyPool::new(&forged_device);
    let forged_prekey = attacker_pool
        .generate(&forged_device, 1, now(), DAY_MS, &mut OsRng)
        .unwrap()
        .remove(0);
    *store.prekey.lock().unwrap() = Some((
        *carol.id().as_bytes(),
        StoredPrekey {
            prekey_id: 1,
            expires_at_ms: now().0 + DAY_MS,
            signed: conclave_proto::Message::encode_to_vec(&forged_prekey),
        },
    ));

    let (meeting_a, report) = a
        .client
        .start_meeting(&[bob.id(), carol.id(), dave.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited, vec![(dave.id(), d.id())]);
    let refused = |user: UserId| {
        report
            .refused
            .iter()
            .find(|r| r.user_id == user)
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("a refusal is reported"))
    };
    assert!(matches!(
        refused(bob.id()),
        RefusalReason::BadCertificate(_)
    ));
    assert!(matches!(refused(carol.id()), RefusalReason::BadPrekey(_)));

    // Dave joins; Bob and Carol never got an invitation.
    let mut meeting_d = d.accept_next(&[MediaKind::Audio]).await;
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"verified only",
        &mut meeting_d,
    )
    .await;
    assert_eq!(meeting_a.participants().len(), 2);
    for device in [&mut b, &mut c] {
        while let Some(event) = device.events.try_recv() {
            assert!(
                !matches!(event, conclave_sdk::client::ClientEvent::Invited(_)),
                "a device with a substituted directory entry got the invite"
            );
        }
    }
}
