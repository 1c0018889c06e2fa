//! Fuzz target: any bytes as one Kafka message value, through `decode_message`, the
//! worker's aggregation and `encode_batch`, with the heap's peak bounded by a multiple
//! of the message's size. The checks are `sessions_testkit::fuzz_check` (shared with
//! `ingest/tests/it/fuzz_corpus.rs`, which replays `fuzz/regressions/`).
//!
//! ```sh
//! mkdir -p fuzz/corpus/decode_and_aggregate
//! cargo +nightly fuzz run decode_and_aggregate fuzz/corpus/decode_and_aggregate \
//!     fuzz/regressions/decode_and_aggregate -- -dict=fuzz/decode_and_aggregate.dict \
//!     -max_total_time=60
//! ```
//!
//! With `FUZZ_PEAK_REPORT=1`, each new worst ratio of peak heap bytes to message bytes
//! (messages of 1 KiB or more, where fixed costs no longer dominate) is printed.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sessions_testkit::fuzz_check::{self, CheckReport, PeakAlloc};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

fuzz_target!(|message: &[u8]| {
    let report = fuzz_check::check_message(message);
    report_worst_ratio(&report);
});

fn report_worst_ratio(report: &CheckReport) {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    static WORST_MILLIS: AtomicU64 = AtomicU64::new(0);
    if !*ENABLED.get_or_init(|| std::env::var_os("FUZZ_PEAK_REPORT").is_some()) {
        return;
    }
    if report.message_bytes < 1024 {
        return;
    }
    let millis = (report.peak_ratio() * 1000.0) as u64;
    if WORST_MILLIS.fetch_max(millis, Ordering::Relaxed) < millis {
        eprintln!(
            "worst peak ratio {:.2} heap bytes per message byte: {report:?}",
            report.peak_ratio()
        );
    }
}
