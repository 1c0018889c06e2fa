//! A page's decoding and JSON (`sessions::PageDecoder`: ClickHouse's RowBinary in,
//! the sessions' JSON out) as a plain loop, for profilers: instruction counts under
//! callgrind are deterministic where the clock on a shared VM is not. The rows have
//! the shape of `scripts/bench-query.sh`'s (the same four user agents, a uuid per
//! session, one user), fed in chunks of 4 KiB, about the size in which the `clickhouse` client hands an
//! answer over.
//!
//! ```sh
//! cargo build --release -p sessions-query --example page_profile
//! valgrind --tool=callgrind --toggle-collect='*page_pass*' \
//!     target/release/examples/page_profile 20
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -40
//! ```
//! Instructions per session = total collected instructions / sessions printed.

use sessions_query::sessions::PageDecoder;
use sessions_shared::read_model::Session;

/// Sessions per page: a `limit=1000` page and the one more it fetches.
const SESSIONS: usize = 1001;
/// Bytes per chunk of the answer.
const CHUNK: usize = 4 * 1024;

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(20);
    let answer = bench_answer();
    let mut sessions = 0;
    let mut bytes = 0;
    for _ in 0..passes {
        let (page_sessions, page_bytes) = page_pass(&answer);
        sessions += page_sessions;
        bytes += page_bytes;
    }
    println!(
        "{sessions} sessions in {passes} passes ({} bytes of RowBinary, {} of JSON per page)",
        answer.len(),
        bytes / passes
    );
}

#[inline(never)]
fn page_pass(answer: &[u8]) -> (usize, usize) {
    let mut decoder = PageDecoder::new(SESSIONS);
    for chunk in answer.chunks(CHUNK) {
        decoder.feed(chunk).expect("UTF-8 text");
    }
    let rows = decoder.finish().expect("whole rows");
    let sessions = rows.len();
    let body = std::hint::black_box(rows.into_body());
    (sessions, body.len())
}

/// The RowBinary of `SESSIONS` rows shaped like bench-query.sh's.
fn bench_answer() -> Vec<u8> {
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:89.0) Gecko/20100101 Firefox/89.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 14_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0",
    ];
    const OSES: [&str; 4] = ["Mac OS X", "Windows", "iOS", "Ubuntu"];
    const BROWSERS: [&str; 4] = ["Chrome", "Firefox", "Mobile Safari", "Firefox"];
    const DEVICES: [&str; 4] = ["", "", "iPhone", ""];
    const COUNTRIES: [&str; 6] = ["IN", "FR", "US", "DE", "BR", "JP"];
    let mut answer = Vec::new();
    for number in 110..110 + SESSIONS as u64 {
        let hash = number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let index = (number % 4) as usize;
        Session {
            project_id: 1,
            session_id: 4_000_000_000_000_000 + number,
            user_uuid: format!(
                "{:08x}-aedf-4544-8ae6-{:08x}{:04x}",
                hash >> 32,
                hash as u32,
                number % 65536
            ),
            user_id: "bench-1000@example.com".into(),
            user_agent: AGENTS[index].into(),
            user_os: OSES[index].into(),
            user_browser: BROWSERS[index].into(),
            user_device: DEVICES[index].into(),
            user_country: COUNTRIES[(number % 6) as usize].into(),
            start_ts: 1_700_000_000_000 + number as i64 * 97,
            duration: hash % 3_600_000,
            events_count: (number % 97) as u32,
            pages_count: (number % 31) as u32,
            errors_count: (number % 5) as u32,
        }
        .write_row_binary(&mut answer);
    }
    answer
}
