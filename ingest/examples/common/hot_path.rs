//! The hot path as the criterion bench (`benches/hot_path.rs`) and the examples
//! `hot_path_profile` and `hot_path_ratio` run it, defined once (each includes this
//! file by `#[path]`; cargo does not take a file in a subfolder of `examples/` for an
//! example): every message decoded into reused buffers, the worker's home check, then
//! its apply-if-held. Nothing is loaded here, so a session not held simply starts, as
//! after a load that found none.

use sessions_events::event::{decode_message_into, DecodedMessage};
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::forward::Router;
use sessions_ingest::home_cache::HomeCache;
use sessions_ingest::partitioner::Partitioner;

/// One partition: every session is at home, as with producers that key by session.
const ROUTER: Router = Router {
    partitioner: Partitioner::Murmur2Random,
    partition_count: 1,
};

/// One pass of `messages` into `aggregator` (fresh, like `homes`, for equal work each
/// pass: the callers make and drop both outside what they time). Returns the events
/// decoded.
#[inline(never)]
pub fn hot_path_pass(
    messages: &[Vec<u8>],
    aggregator: &mut Aggregator,
    homes: &mut HomeCache,
) -> usize {
    let mut events = 0;
    let mut decoded = DecodedMessage::default();
    for message in messages {
        decode_message_into(message, &mut decoded);
        std::hint::black_box(ROUTER.all_local(&decoded.events, 0, homes));
        if aggregator.apply_if_held(&decoded.events, 0).is_err() {
            aggregator.apply(&decoded.events, 0);
        }
        events += decoded.events.len();
    }
    std::hint::black_box(&*aggregator);
    events
}
