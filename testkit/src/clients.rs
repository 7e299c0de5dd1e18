//! SDK clients under test: devices of a [`User`] connected to a [`TestSfu`] with short
//! test timers, and waits for what a meeting does (frames, epochs, rosters).

use std::time::Duration;

use conclave_sdk::DeviceId;
use conclave_sdk::client::{
    Client, ClientConfig, ClientEvent, ClientEvents, DeviceCredentials, Invitation, MediaFrame,
    MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::meeting::Epoch;
use conclave_sdk::meeting::rekey::RekeyConfig;
use rand_core::OsRng;

use crate::clock::{WAIT, now};
use crate::identity::User;
use crate::sfu::TestSfu;

/// Short timers for clients under test: rekeys coalesce for 20 ms, a silent device
/// is dropped after 2 s, 40 prekeys are kept on the server.
pub fn test_timers(config: &mut ClientConfig) {
    config.rekey = RekeyConfig::default();
    config.rekey.coalesce = Duration::from_millis(20);
    config.rekey.grace = Duration::from_millis(300);
    config.rekey.switch_deadline = Duration::from_secs(1);
    config.rekey.key_request = Duration::from_millis(200);
    config.drop_after = Duration::from_secs(2);
    config.prekey_target = 40;
}

impl TestSfu {
    /// A client configuration for this server with [`test_timers`].
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr, self.trust.clone());
        test_timers(&mut config);
        config
    }
}

impl User {
    /// Credentials of a new device of this user.
    pub fn credentials(&self) -> DeviceCredentials {
        DeviceCredentials::create(&self.name, &self.key, now(), &mut OsRng)
            .expect("device credentials")
    }

    /// Connects a new device of this user with [`TestSfu::client_config`].
    pub async fn connect(&self, sfu: &TestSfu) -> Device {
        self.connect_with(sfu.client_config()).await
    }

    /// Connects a new device of this user with `config`.
    pub async fn connect_with(&self, config: ClientConfig) -> Device {
        Device::connect(config, self.credentials()).await
    }

    /// Connects the device of `credentials` (which the test created, e.g. to keep a
    /// copy of its keys).
    pub async fn connect_credentials(
        &self,
        sfu: &TestSfu,
        credentials: DeviceCredentials,
    ) -> Device {
        Device::connect(sfu.client_config(), credentials).await
    }

    /// Connects a new device and keeps a copy of its credentials, so that the test
    /// can seal containers in that device's name (as an insider would) while the
    /// device is connected (`hostile::deliver_forged`).
    pub async fn connect_keeping_a_copy(&self, sfu: &TestSfu) -> (Device, DeviceCredentials) {
        let credentials = self.credentials();
        let copy = DeviceCredentials::restore(
            &self.name,
            credentials.user_public_key(),
            credentials.certificate(),
            &credentials.export_secrets(),
            now(),
        )
        .expect("credentials restore from their own export");
        (self.connect_credentials(sfu, credentials).await, copy)
    }

    /// Connects a new device whose tasks run on `runtime` (shut that runtime down to
    /// make the device vanish without a word, as if its process died).
    pub async fn connect_on(
        &self,
        runtime: &tokio::runtime::Handle,
        config: ClientConfig,
    ) -> Device {
        let credentials = self.credentials();
        let (client, events) =
            tokio::time::timeout(WAIT, runtime.spawn(Client::connect(config, credentials)))
                .await
                .expect("connect in bounded time")
                .expect("connect task")
                .expect("connect");
        Device { client, events }
    }
}

/// One connected device.
pub struct Device {
    /// The client.
    pub client: Client,
    /// The client's events.
    pub events: ClientEvents,
}

impl Device {
    /// Connects the device of `credentials` (bounded wait).
    pub async fn connect(config: ClientConfig, credentials: DeviceCredentials) -> Device {
        let (client, events) = tokio::time::timeout(WAIT, Client::connect(config, credentials))
            .await
            .expect("connect in bounded time")
            .expect("connect");
        Device { client, events }
    }

    /// The device id.
    pub fn id(&self) -> DeviceId {
        self.client.device_id()
    }

    /// Waits for an invitation.
    pub async fn invitation(&mut self) -> Invitation {
        let event = self
            .wait_for(|e| matches!(e, ClientEvent::Invited(_)))
            .await;
        match event {
            ClientEvent::Invited(invitation) => invitation,
            _ => unreachable!("wait_for returns a matching event"),
        }
    }

    /// Waits for an invitation and accepts it.
    pub async fn accept_next(&mut self, kinds: &[MediaKind]) -> Meeting {
        let invitation = self.invitation().await;
        self.client
            .accept(&invitation, kinds)
            .await
            .expect("accept")
    }

    /// Waits for the first event matching `pick`; other events are passed over.
    pub async fn wait_for(&mut self, mut pick: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("client running");
                if pick(&e) {
                    return e;
                }
            }
        })
        .await
        .expect("event within the wait bound")
    }

    /// Waits until the client follows a cluster redirect for a meeting's room;
    /// returns the owner's address.
    pub async fn wait_redirected(&mut self) -> String {
        let moved = self
            .wait_for(|e| matches!(e, ClientEvent::RoomRedirected { .. }))
            .await;
        match moved {
            ClientEvent::RoomRedirected { address, .. } => address,
            _ => unreachable!("wait_for returns a matching event"),
        }
    }
}

/// Sends `payload` from `meeting` until a frame with exactly that payload reaches
/// `receiver` (media is loss-tolerant and joins are asynchronous, so tests resend
/// rather than sleep). Other frames are skipped, and so are the receiver's control
/// events. Returns the received frame.
pub async fn deliver(
    from: &Meeting,
    kind: MediaKind,
    payload: &[u8],
    receiver: &mut Meeting,
) -> MediaFrame {
    deliver_with(from, kind, payload, receiver, false).await
}

/// [`deliver`], leaving the receiver's control events queued (for a test that reads
/// them afterwards with `try_next_control_event`).
pub async fn deliver_keeping_events(
    from: &Meeting,
    kind: MediaKind,
    payload: &[u8],
    receiver: &mut Meeting,
) -> MediaFrame {
    deliver_with(from, kind, payload, receiver, true).await
}

async fn deliver_with(
    from: &Meeting,
    kind: MediaKind,
    payload: &[u8],
    receiver: &mut Meeting,
    keep_events: bool,
) -> MediaFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            let _ = from.send_frame(kind, false, payload);
            let got = tokio::time::timeout(Duration::from_millis(50), async {
                loop {
                    let next = if keep_events {
                        receiver.recv_frame().await.map(MeetingEvent::Frame)
                    } else {
                        receiver.next_event().await
                    };
                    match next {
                        Some(MeetingEvent::Frame(f)) if f.data == payload => return Some(f),
                        Some(_) => continue,
                        None => return None,
                    }
                }
            })
            .await;
            if let Ok(Some(frame)) = got {
                return frame;
            }
        }
    })
    .await
    .expect("the frame arrives within the wait bound")
}

/// Reads `meeting`'s events until one that `pick` accepts, and returns it; panics if the
/// meeting ends first or nothing comes within the wait bound.
pub async fn wait_meeting_event(
    meeting: &mut Meeting,
    mut pick: impl FnMut(&MeetingEvent) -> bool,
) -> MeetingEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match meeting.next_event().await {
                Some(event) if pick(&event) => return event,
                Some(MeetingEvent::Ended { reason }) => {
                    panic!("the meeting ended while waiting: {reason:?}")
                }
                None => panic!("the meeting's events closed while waiting"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("the event arrives within the wait bound")
}

/// Waits until `meeting` sends on an epoch above `epoch`; returns that epoch.
pub async fn wait_epoch_above(meeting: &Meeting, epoch: Epoch) -> Epoch {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = meeting.sending_epoch();
            if e > epoch {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the meeting moves to a new epoch within the wait bound")
}

/// Waits until `meeting` has `n` participants.
pub async fn wait_participants(meeting: &Meeting, n: usize) {
    tokio::time::timeout(WAIT, async {
        while meeting.participants().len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the roster reaches the expected size");
}
