//! Directory requests: prekey upload and bundle fetch.
//!
//! Popping prekeys is rate limited per (requesting device, target device) and per
//! target device ([`crate::ratelimit::PrekeyPopLimiter`]), so that no one can drain a
//! device's stock: a withheld prekey comes back as a bundle without prekey, marked
//! `prekey_rate_limited` with a retry hint, and the rest of the answer is served.
//!
//! A device with no one-time prekey left, or whose prekey is withheld, is served its
//! signed last-resort prekey instead (`last_resort` set; never deleted), so draining
//! or rate-limiting cannot make it unreachable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use conclave_core::UnixMillis;
use conclave_core::identity::{VerifiedDevice, VerifiedPrekey};
use conclave_proto::Message;
use conclave_proto::v1::{self, response};
use metrics::counter;

use super::session::{After, Handled, Session, to_u32};
use super::{RequestError, now_ms};
use crate::ratelimit::PopRefused;
use crate::store::{DeviceIdBytes, DeviceRecord, StoredPrekey, TakenPrekey, UserIdBytes};
use crate::telemetry;

impl Session {
    pub(super) async fn upload_prekeys(&mut self, r: v1::UploadPrekeys) -> Handled {
        let limits = &self.shared.config.limits;
        let (max_upload, max_held) = (limits.max_prekeys_per_upload, limits.max_prekeys_per_device);
        let device = self.device()?;
        if r.prekeys.is_empty() && r.last_resort.is_none() {
            return Err(RequestError::bad_request("upload carries no prekeys"));
        }
        if r.prekeys.len() > max_upload {
            return Err(RequestError::limit(format!(
                "{} prekeys in one upload; at most {max_upload} (max_prekeys_per_upload)",
                r.prekeys.len()
            )));
        }
        let now = UnixMillis(now_ms());
        // Up to `max_prekeys_per_upload` signature checks and P-384 point decodings:
        // on the blocking pool, so that the shard's thread keeps forwarding media.
        let signer = device.verified.clone();
        let (stored, last_resort) = self
            .shared
            .compute("prekey verification", move || {
                verify_upload(&r.prekeys, r.last_resort.as_ref(), &signer, now)
            })
            .await??;
        let replace = r.replace;
        let device_id = device.record.device_id;
        let count = stored.len();
        let now_ms = now.0;
        let held = self
            .shared
            .blocking("prekey upload", move |s| {
                if replace {
                    s.clear_prekeys(&device_id)?;
                    if last_resort.is_none() {
                        s.set_last_resort_prekey(&device_id, None)?;
                    }
                }
                if let Some(last_resort) = &last_resort {
                    s.set_last_resort_prekey(&device_id, Some(last_resort))?;
                }
                s.add_prekeys(&device_id, &stored, max_held, now_ms)
            })
            .await?;
        counter!(telemetry::PREKEYS_UPLOADED).increment(count as u64);
        Ok((
            response::Result::PrekeysUploaded(v1::PrekeysUploaded {
                prekeys_held: to_u32(held),
            }),
            After::Nothing,
        ))
    }

    pub(super) async fn fetch_bundles(&mut self, r: v1::FetchBundles) -> Handled {
        let me = self.device()?.record.device_id;
        let max_users = self.shared.config.limits.max_users_per_fetch;
        if r.user_ids.len() > max_users {
            return Err(RequestError::limit(format!(
                "{} user ids in one fetch; at most {max_users} (max_users_per_fetch)",
                r.user_ids.len()
            )));
        }
        let mut users = BTreeSet::new();
        for id in &r.user_ids {
            let id: UserIdBytes = id
                .as_slice()
                .try_into()
                .map_err(|_| RequestError::bad_request("a user id is not 32 bytes"))?;
            users.insert(id);
        }
        let users: Vec<UserIdBytes> = users.into_iter().collect();
        let max_devices = max_users.saturating_mul(self.shared.config.limits.max_devices_per_user);
        if r.device_ids.len() > max_devices {
            return Err(RequestError::limit(format!(
                "{} device ids in one fetch; at most {max_devices} (max_users_per_fetch x max_devices_per_user)",
                r.device_ids.len()
            )));
        }
        let mut only = BTreeSet::new();
        for id in &r.device_ids {
            let id: DeviceIdBytes = id
                .as_slice()
                .try_into()
                .map_err(|_| RequestError::bad_request("a device id is not 16 bytes"))?;
            only.insert(id);
        }
        let now = now_ms();
        let certificates_only = r.certificates_only;
        let shared = Arc::clone(&self.shared);
        // One blocking task: read users and devices, ask the pop limiter which devices
        // may give up a prekey to this requester now, then pop one prekey of each of
        // those in a single transaction (no two fetchers get the same prekey).
        let fetched = self
            .shared
            .blocking("bundle fetch", move |s| {
                let mut per_user = Vec::with_capacity(users.len());
                let mut device_ids = Vec::new();
                for user in users {
                    let key = s.user_key(&user)?;
                    let devices: Vec<DeviceRecord> = match key {
                        Some(_) => s
                            .user_devices(&user)?
                            .into_iter()
                            .filter(|d| d.device_id != me)
                            .filter(|d| only.is_empty() || only.contains(&d.device_id))
                            .collect(),
                        None => Vec::new(),
                    };
                    device_ids.extend(devices.iter().map(|d| d.device_id));
                    per_user.push((user, key, devices));
                }
                let mut withheld = HashMap::new();
                let taken = if certificates_only {
                    Vec::new()
                } else {
                    let clock = Instant::now();
                    let mut pops = shared.prekey_pops();
                    device_ids.retain(|target| match pops.try_pop(&me, target, clock) {
                        Ok(()) => true,
                        Err(refused) => {
                            withheld.insert(*target, refused);
                            false
                        }
                    });
                    drop(pops);
                    s.take_prekeys(&device_ids, now)?
                };
                // Devices without a one-time prekey for this requester get their
                // last-resort prekey, which is never deleted.
                let mut last_resort = HashMap::new();
                let needy = withheld.keys().copied().chain(
                    taken
                        .iter()
                        .filter(|t| t.prekey.is_none())
                        .map(|t| t.device_id),
                );
                for device in needy.collect::<Vec<_>>() {
                    if let Some(prekey) = s.last_resort_prekey(&device, now)? {
                        last_resort.insert(device, prekey);
                    }
                }
                Ok((per_user, taken, withheld, last_resort))
            })
            .await?;
        let (per_user, taken, withheld, last_resort) = fetched;
        let last_resort_of =
            |device: &DeviceIdBytes| -> Result<Option<v1::SignedPrekey>, RequestError> {
                last_resort
                    .get(device)
                    .map(|p| {
                        counter!(telemetry::PREKEYS_LAST_RESORT_SERVED).increment(1);
                        v1::SignedPrekey::decode(p.signed.as_slice())
                            .map_err(|_| RequestError::internal("last-resort prekey load"))
                    })
                    .transpose()
            };
        let mut taken = taken.into_iter();
        let mut bundles = Vec::with_capacity(per_user.len());
        let mut low = Vec::new();
        let threshold = self.shared.config.limits.prekeys_low_threshold;
        for (user, key, devices) in per_user {
            let mut device_bundles = Vec::with_capacity(devices.len());
            for device in devices {
                let certificate = v1::DeviceCertificate::decode(device.certificate.as_slice())
                    .map_err(|_| RequestError::internal("certificate load"))?;
                if certificates_only {
                    device_bundles.push(v1::DeviceBundle {
                        certificate: Some(certificate),
                        ..Default::default()
                    });
                    continue;
                }
                if let Some(refused) = withheld.get(&device.device_id) {
                    let scope = match refused {
                        PopRefused::Pair(_) => "pair",
                        PopRefused::Target(_) => "target",
                    };
                    counter!(telemetry::PREKEYS_RATE_LIMITED, "scope" => scope).increment(1);
                    let wait = refused.retry_after().as_millis().saturating_add(1);
                    let prekey = last_resort_of(&device.device_id)?;
                    device_bundles.push(v1::DeviceBundle {
                        certificate: Some(certificate),
                        last_resort: prekey.is_some(),
                        prekey,
                        prekeys_exhausted: false,
                        prekey_rate_limited: true,
                        prekey_retry_after_ms: u64::try_from(wait).unwrap_or(u64::MAX),
                    });
                    continue;
                }
                let Some(TakenPrekey {
                    prekey, remaining, ..
                }) = taken.next()
                else {
                    break;
                };
                let one_time = prekey.is_some();
                let prekey = match prekey {
                    Some(p) => {
                        counter!(telemetry::PREKEYS_SERVED).increment(1);
                        Some(
                            v1::SignedPrekey::decode(p.signed.as_slice())
                                .map_err(|_| RequestError::internal("prekey load"))?,
                        )
                    }
                    None => {
                        counter!(telemetry::PREKEYS_EXHAUSTED).increment(1);
                        None
                    }
                };
                // Warn once when the pool crosses below the threshold and once when it
                // runs dry, not on every fetch of a drained device (the owner is also
                // warned whenever it authenticates below the threshold).
                let crossed = remaining.saturating_add(1) == threshold;
                let ran_dry = remaining == 0 && one_time;
                if crossed || ran_dry {
                    low.push((device.device_id, remaining));
                }
                let prekey = match prekey {
                    Some(p) => Some(p),
                    None => last_resort_of(&device.device_id)?,
                };
                device_bundles.push(v1::DeviceBundle {
                    prekeys_exhausted: !one_time,
                    certificate: Some(certificate),
                    last_resort: !one_time && prekey.is_some(),
                    prekey,
                    prekey_rate_limited: false,
                    prekey_retry_after_ms: 0,
                });
            }
            bundles.push(v1::UserBundle {
                user_id: user.to_vec(),
                user_public_key: key.map(|k| k.to_vec()).unwrap_or_default(),
                devices: device_bundles,
            });
        }
        for (device, remaining) in low {
            self.notify_prekeys_low(&device, remaining, threshold);
        }
        Ok((
            response::Result::Bundles(v1::Bundles { users: bundles }),
            After::Nothing,
        ))
    }

    /// Tells a connected device its prekey pool is running low.
    fn notify_prekeys_low(&self, device: &DeviceIdBytes, held: usize, threshold: usize) {
        let Some(conn) = self.shared.online.get(device).map(|c| *c) else {
            return;
        };
        if let Some(handle) = self.shared.conns.get(&conn) {
            handle.push_event(v1::event::Event::PrekeysLow(v1::PrekeysLow {
                prekeys_held: to_u32(held),
                threshold: to_u32(threshold),
            }));
        }
    }
}

/// Checks an upload's prekeys (and last-resort prekey) against the device's signing
/// key, in order; the first refusal names its index and nothing is stored.
fn verify_upload(
    prekeys: &[v1::SignedPrekey],
    last_resort: Option<&v1::SignedPrekey>,
    device: &VerifiedDevice,
    now: UnixMillis,
) -> Result<(Vec<StoredPrekey>, Option<StoredPrekey>), RequestError> {
    let mut stored = Vec::with_capacity(prekeys.len());
    for (i, prekey) in prekeys.iter().enumerate() {
        let verified = VerifiedPrekey::verify(prekey, device, now).map_err(|e| {
            RequestError::bad_proof(format!("prekey #{i} refused (nothing stored): {e}"))
        })?;
        if verified.is_last_resort() {
            return Err(RequestError::bad_request(format!(
                "prekey #{i} is signed as a last-resort prekey; send it as `last_resort` \
                 (nothing stored)"
            )));
        }
        stored.push(StoredPrekey {
            prekey_id: verified.prekey_id(),
            expires_at_ms: verified.expires_at().0,
            signed: prekey.encode_to_vec(),
        });
    }
    let last_resort = match last_resort {
        None => None,
        Some(prekey) => {
            let verified = VerifiedPrekey::verify(prekey, device, now).map_err(|e| {
                RequestError::bad_proof(format!("last-resort prekey refused (nothing stored): {e}"))
            })?;
            if !verified.is_last_resort() {
                return Err(RequestError::bad_request(
                    "the last-resort prekey is not signed as one (nothing stored)",
                ));
            }
            Some(StoredPrekey {
                prekey_id: verified.prekey_id(),
                expires_at_ms: verified.expires_at().0,
                signed: prekey.encode_to_vec(),
            })
        }
    };
    Ok((stored, last_resort))
}
