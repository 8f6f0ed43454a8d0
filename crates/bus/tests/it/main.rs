//! Integration tests of the bus, one binary with topic modules: `suite` holds the behaviour both
//! implementations must share, `memory` and `redis` run it against each (the Redis half on a real
//! `redis-server` started per test by `support`), and `redis` adds what only Redis can do.

/// Expands to one `#[tokio::test]` per behaviour of `suite`, run against `$backend`. The list
/// lives here once, so a new behaviour test cannot be added for one backend and forgotten for the
/// other.
macro_rules! all_behaviour_tests {
    ($backend:expr) => {
        all_behaviour_tests!(
            $backend;
            publish_read_ack,
            new_group_sees_entries_published_before_it,
            read_blocks_until_an_entry_arrives,
            blocking_read_does_not_hold_up_other_commands,
            unacked_entries_come_back_via_pending_for,
            pending_for_pages_through_many_entries,
            stale_entries_move_to_another_consumer_only_after_min_idle,
            claim_stale_takes_the_oldest_up_to_count,
            streams_stay_bounded,
            pending_entry_trimmed_away_is_reported_not_fatal,
            dead_letter_keeps_the_original_text,
            latest_is_newest_first,
            progress_set_get_nx_and_ttl,
            entry_without_payload_is_malformed_not_fatal,
            missing_group_is_reported_as_no_group,
            group_info_reports_pending_lag_and_consumers,
            ping_answers,
            map_put_overwrite_delete_round_trip,
            map_apply_moves_a_record_atomically,
            map_of_ten_thousand_fields_round_trips,
            map_empty_inputs_are_no_ops,
            publish_and_set_does_both,
            a_released_entry_is_claimed_at_once,
            rate_budget_is_shared_exact_and_windowed,
            rate_ban_stops_every_taker_until_it_ends,
        );
    };
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            // Multi-threaded, as in the service, so a blocking read and other commands really
            // run side by side.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::suite::$name($backend).await;
            }
        )*
    };
}

mod memory;
mod redis;
mod suite;
mod support;
