//! The fuzz target's corpus as regression tests: every file of
//! `fuzz/regressions/decode_and_aggregate/` goes through the target's own checks
//! (`sessions_testkit::fuzz_check`), allocation bound included, on the stable
//! toolchain. No services needed.
//!
//! The allocation counters are process-wide (the counting allocator is the binary's,
//! installed in `main.rs`): these tests take exclusive turns, so that no other test
//! allocates during a check.

use std::path::{Path, PathBuf};

use sessions_events::event::MAX_MESSAGE_BYTES;
use sessions_testkit::fuzz_check::{self, CheckReport};
use sessions_testkit::serial;

fn corpus_files() -> Vec<PathBuf> {
    let directory =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/decode_and_aggregate");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_passes_the_fuzz_checks() {
    let _turn = serial::exclusive();
    let files = corpus_files();
    assert!(files.len() >= 7, "the seeds are missing: {files:?}");
    let mut failed = Vec::new();
    // The highest share of its bound that an input used.
    let mut closest: Option<(f64, CheckReport, PathBuf)> = None;
    for path in &files {
        let message = std::fs::read(path).expect("reading a corpus file");
        match std::panic::catch_unwind(|| fuzz_check::check_message(&message)) {
            Ok(report) => {
                let share = report.peak_bytes as f64
                    / fuzz_check::peak_bytes_allowed(report.message_bytes) as f64;
                if closest.as_ref().is_none_or(|(worst, _, _)| share > *worst) {
                    closest = Some((share, report, path.clone()));
                }
            }
            Err(_) => failed.push(path.display().to_string()),
        }
    }
    if let Some((share, report, path)) = closest {
        println!(
            "{} inputs; closest to the bound: {} ({:.0}% of it, {:.1} heap bytes per \
             message byte, {report:?})",
            files.len(),
            path.display(),
            share * 100.0,
            report.peak_ratio(),
        );
    }
    assert!(failed.is_empty(), "failed the fuzz checks: {failed:#?}");
}

/// Found by the fuzz checks on the 1 MiB seed (and by the hostile-input test at the
/// same time): the events of a message within the 1 MiB limit used to re-encode, as
/// the worker forwards them to their home partition, to more than the limit, which
/// the home's decoder rejects as `too_large`. A single event of 1 MiB gained the two
/// brackets of a batch; a batch of one session's smallest events grew by about a
/// tenth (integer `sessionId`s became strings, unlisted types `"other"`). Forwards
/// are now cut into messages within the limit, an event alone is one object, and
/// `sessionId` is written as a number.
#[test]
fn messages_at_the_size_limit_re_encode_within_it() {
    let _turn = serial::exclusive();
    let head = r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":1700000000000,"type":"session_start","userUuid":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","userAgent":""#;
    let tail = r#""}"#;
    let padding = "a".repeat(MAX_MESSAGE_BYTES - head.len() - tail.len());
    let single_event = format!("{head}{padding}{tail}");
    assert_eq!(single_event.len(), MAX_MESSAGE_BYTES);

    let mut batch = String::from("[");
    for index in 0.. {
        let event =
            format!(r#"{{"projectId":1,"sessionId":9,"index":{index},"timestamp":1,"type":""}},"#);
        if batch.len() + event.len() > MAX_MESSAGE_BYTES - 1 {
            break;
        }
        batch.push_str(&event);
    }
    batch.pop();
    batch.push(']');

    for message in [single_event, batch] {
        fuzz_check::check_message(message.as_bytes());
    }
}
