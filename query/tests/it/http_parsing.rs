//! The HTTP parsing fuzz target's checks (`sessions_testkit::http_check`) on the stable
//! toolchain: every file of `fuzz/regressions/http_parsing/`, then random inputs built
//! from the API's own vocabulary. No services needed.

use std::path::Path;

use proptest::prelude::*;
use sessions_testkit::http_check::check_request;
use sessions_testkit::serial;

#[test]
fn every_regression_input_passes_the_http_checks() {
    let _turn = serial::shared();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/http_parsing");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the seeds are missing: {files:?}");
    for path in files {
        let data = std::fs::read(&path).expect("reading a regression input");
        if std::panic::catch_unwind(|| check_request(&data)).is_err() {
            panic!("{} fails the HTTP checks", path.display());
        }
    }
}

/// A piece of a request: the API's words, separators, escapes and noise.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/api/v1/".to_owned()),
        Just("/users/".to_owned()),
        Just("/sessions".to_owned()),
        Just("/jobs/".to_owned()),
        Just("/".to_owned()),
        Just("limit=".to_owned()),
        Just("start_date=".to_owned()),
        Just("end_date=".to_owned()),
        Just("cursor=".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just("+".to_owned()),
        Just("Bearer ".to_owned()),
        Just("\0".to_owned()),
        "%[0-9A-Fa-f]{0,2}",
        "[0-9]{1,20}",
        "-?[0-9]{1,3}",
        "[a-zA-Z0-9@._~-]{1,12}",
        "\\PC{1,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn random_requests_pass_the_http_checks(pieces in prop::collection::vec(piece(), 0..40)) {
        let _turn = serial::shared();
        check_request(pieces.concat().as_bytes());
    }

    #[test]
    fn random_bytes_pass_the_http_checks(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _turn = serial::shared();
        check_request(&data);
    }
}
