//! Fuzz target: any bytes as one request's path, query string, cursor and
//! `Authorization` header (cut at NUL bytes), through the query service's own parsing.
//! The checks are `sessions_testkit::http_check` (shared with
//! `query/tests/it/http_parsing.rs`, which replays `fuzz/regressions/http_parsing/`).
//!
//! ```sh
//! mkdir -p fuzz/corpus/http_parsing
//! cargo +nightly fuzz run http_parsing fuzz/corpus/http_parsing \
//!     fuzz/regressions/http_parsing -- -dict=fuzz/http_parsing.dict -max_total_time=60
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessions_testkit::http_check::check_request(data);
});
