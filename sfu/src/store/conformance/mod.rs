//! Conformance suite shared by every [`Store`] implementation.
//!
//! Each test is a plain function taking a [`Factory`], grouped by area in
//! [`directory`], [`mailbox`], [`rooms`] and [`push`]; the `conformance!` macro at the
//! bottom instantiates every one of them as a `#[test]` per backend
//! (`store::conformance::memory::*`, `store::conformance::redb::*`,
//! `store::conformance::postgres::*` on a real PostgreSQL). A new backend
//! needs one factory and one more module in the macro; a new test one more name.

mod directory;
mod mailbox;
mod push;
mod rooms;

use std::any::Any;

use super::{MemoryStore, PgOptions, PgStore, RedbStore, Store};

/// Something that must outlive the store (e.g. its temporary directory).
type Guard = Box<dyn Any>;
/// Creates an empty store.
type Factory = fn() -> (Box<dyn Store>, Guard);

fn memory_store() -> (Box<dyn Store>, Guard) {
    (Box::new(MemoryStore::new()), Box::new(()))
}

fn redb_store() -> (Box<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    (Box::new(store), Box::new(dir))
}

/// A fresh database on the test process's PostgreSQL (see
/// [`testing`](super::postgres::testing)); fails when there is none.
fn postgres_store() -> (Box<dyn Store>, Guard) {
    let mut options = PgOptions::new(super::postgres::testing::fresh_database());
    options.pool_size = 4;
    let store = PgStore::connect(&options).expect("the test database accepts the schema");
    (Box::new(store), Box::new(()))
}

/// Instantiates every listed test (`area: [test, ...]`) for every backend.
macro_rules! conformance {
    ($($area:ident: [$($test:ident),* $(,)?]),* $(,)?) => {
        mod memory {
            $($( #[test] fn $test() { super::$area::$test(super::memory_store) } )*)*
        }
        mod redb {
            $($( #[test] fn $test() { super::$area::$test(super::redb_store) } )*)*
        }
        mod postgres {
            $($( #[test] fn $test() { super::$area::$test(super::postgres_store) } )*)*
        }
    };
}

conformance! {
    directory: [
        first_device_pins_new_user,
        second_device_with_same_key_is_new_device,
        different_user_key_is_refused,
        device_id_with_other_certificate_is_refused,
        reregistering_same_device_is_idempotent,
        too_many_devices_is_refused,
        add_prekeys_counts_and_replaces_same_id,
        add_prekeys_over_limit_stores_nothing,
        expired_prekeys_do_not_block_an_upload,
        add_prekeys_to_unknown_device_fails,
        take_prekeys_hands_out_lowest_id_first,
        take_prekeys_skips_and_deletes_expired,
        take_prekeys_exhausted_gives_none,
        take_prekeys_answers_in_input_order_with_duplicates,
        concurrent_takes_hand_out_each_prekey_once,
        last_resort_prekey_outlives_the_one_time_prekeys_and_is_never_deleted,
        last_resort_prekey_is_replaced_on_upload_and_deleted_on_request,
    ],
    mailbox: [
        mailbox_put_list_count_ack,
        mailbox_list_pages_after_id,
        mailbox_ack_ignores_other_devices_ids,
        mailbox_put_is_full_at_the_limit,
        mailbox_ids_strictly_increase_store_wide,
        mailbox_expire_deletes_by_time,
        mailbox_store_keeps_one_copy_for_all_recipients,
        mailbox_expire_releases_a_container_with_its_last_entry,
        mailbox_sender_quota_counts_each_container_once,
        mailbox_budget_bounds_all_senders_together,
        mailbox_store_with_every_recipient_full_stores_and_charges_nothing,
        mailbox_put_stores_once_for_the_unattributed_sender,
        mailbox_one_sender_cannot_fill_a_devices_mailbox,
        mailbox_per_sender_entries_come_back_on_expiry,
        concurrent_sends_never_overshoot_the_device_limit,
    ],
    rooms: [
        rooms_put_get_replace_delete,
        expire_rooms_spares_recent_and_live,
    ],
    push: [
        push_subscription_set_then_get_round_trips,
        push_subscription_set_replaces,
        push_subscription_for_unknown_device_is_refused,
        push_subscription_clear_returns_true_then_false,
        push_subscription_clear_of_another_endpoint_keeps_it,
        push_subscription_clear_of_its_endpoint_deletes_it,
        push_subscriptions_of_two_devices_are_independent,
    ],
}
