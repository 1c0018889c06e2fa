//! The hot path of `benches/hot_path.rs` (decode + validate + dedupe + aggregate, one
//! event per message) as a plain loop, for profilers: instruction counts under
//! callgrind are deterministic where wall-clock time on a shared VM is not.
//!
//! ```sh
//! cargo build --release -p sessions-ingest --example hot_path_profile
//! valgrind --tool=callgrind --toggle-collect='*hot_path_pass*' \
//!     target/release/examples/hot_path_profile 3
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -40
//! ```
//! Instructions per event = total collected instructions / events printed.

use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::home_cache::HomeCache;
use sessions_testkit::workload::Workload;

#[path = "common/hot_path.rs"]
mod common;
use common::hot_path_pass;

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(3);
    let messages = Workload::benchmark_events();
    let mut events = 0;
    for _ in 0..passes {
        // Fresh state each pass, made and dropped outside the counted function, as the
        // criterion bench makes it in its untimed setup and drops it untimed.
        let mut aggregator = Aggregator::new();
        let mut homes = HomeCache::default();
        events += hot_path_pass(&messages, &mut aggregator, &mut homes);
    }
    println!("{events} events in {passes} passes");
}
