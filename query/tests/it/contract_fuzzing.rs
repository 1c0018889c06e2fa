//! Contract fuzzing: schemathesis (a third-party OpenAPI fuzzer, installed by
//! `scripts/install-deps.sh`) runs its examples, coverage and fuzzing phases against the
//! `sessions-query` binary, with the checks below, reading the document the binary serves
//! at `/openapi.json` (from a file: loaded from a URL, schemathesis leaves that URL's own
//! operation out). The service must give it zero failures.
//!
//! Two constraints of the contract that JSON Schema cannot state (a cursor comes from a
//! `Link` header; `start_date` ≤ `end_date`) are given to schemathesis as a hook,
//! `schemathesis_hooks.py`, which keeps its positive cases within them.
//!
//! The data is seeded so that the document's examples hit real rows: the project with
//! the seed's key `3sWXSsqHgSKnE87YkNJK` and sessions of `mickael@openreplay.com`, more
//! than one page of them. The run is seeded (`--seed`) and bounded (`--max-examples`,
//! `--max-time`), so a failure reproduces with the command it prints. `use_after_free`
//! is left out on purpose (api-users.md: a deleted user's data stays readable until its
//! job runs). Its turn is exclusive: schemathesis' two workers keep both cores busy for
//! about 100 s, which would stretch any neighbour's time bounds.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::common::{session, Fixture, QueryProcess};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::http::http_get;
use sessions_testkit::serial;

/// The project key and user of the document's examples.
const EXAMPLE_PROJECT_KEY: &str = "3sWXSsqHgSKnE87YkNJK";
const EXAMPLE_USER: &str = "mickael@openreplay.com";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
positive_data_acceptance,missing_required_header,unsupported_method,\
allow_header_conformance,ignored_auth";

/// Change it to explore other inputs; a failure names the seed it ran with.
const SEED: &str = "20240613";

/// `st` of the virtualenv install-deps.sh makes (`SCHEMATHESIS_BIN` overrides it).
fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("SCHEMATHESIS_BIN") {
        return PathBuf::from(path);
    }
    let state = std::env::var("SESSIONS_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.local")));
    state.join("schemathesis/bin/st")
}

#[tokio::test]
async fn schemathesis_finds_no_failure() {
    let _turn = serial::exclusive();
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} not found: run scripts/install-deps.sh (or set SCHEMATHESIS_BIN)",
        st.display()
    );
    let fixture = Fixture::new("clickhouse-18.16", &legacy_target(), "contract").await;
    let project = fixture
        .tenancy()
        .create_project(fixture.org_id, "seed", Some(EXAMPLE_PROJECT_KEY))
        .await
        .unwrap();
    let project_id = project.project_id;
    fixture
        .insert_live(
            &[
                session(project_id, EXAMPLE_USER, 4813018042986240, 1623440822825),
                session(project_id, EXAMPLE_USER, 4813023023591169, 1623440902620),
                session(project_id, EXAMPLE_USER, 4813023023591170, 1623440999999),
            ],
            1,
        )
        .await;
    // Positive creations are many: none may meet the cap on projects.
    let process = QueryProcess::spawn_with(&fixture, &[("MAX_PROJECTS_PER_ORG", "1000000")]);
    let first_page = format!("/api/v1/{EXAMPLE_PROJECT_KEY}/users/{EXAMPLE_USER}/sessions?limit=1");
    process.wait_until_serving(&fixture, &first_page).await;

    let base = format!("http://{}", process.address);
    let workdir = tempfile_dir();
    let served = http_get(process.address, "/openapi.json", &[])
        .await
        .unwrap();
    assert_eq!(served.body, sessions_query::openapi::DOCUMENT);
    let document = workdir.join("openapi.json");
    std::fs::write(&document, &served.body).unwrap();
    let arguments = [
        format!(
            "--config-file={}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml")
        ),
        "run".to_owned(),
        document.display().to_string(),
        format!("--url={base}"),
        format!("--checks={CHECKS}"),
        "--phases=examples,coverage,fuzzing".to_owned(),
        "--max-examples=150".to_owned(),
        "--max-time=100".to_owned(),
        format!("--seed={SEED}"),
        "--generation-database=none".to_owned(),
        "--request-timeout=10".to_owned(),
        "--workers=2".to_owned(),
        "--no-color".to_owned(),
        "--output-sanitize=false".to_owned(),
    ];
    let started = Instant::now();
    let output = Command::new(&st)
        .args(&arguments)
        .arg("--header")
        .arg(format!("Authorization: {}", fixture.api_key))
        .env(
            "SCHEMATHESIS_HOOKS",
            "schemathesis_hooks", // a module name, found through PYTHONPATH
        )
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it"),
        )
        .current_dir(&workdir)
        .output()
        .expect("running schemathesis");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&workdir);
    assert!(
        output.status.success(),
        "schemathesis found failures ({:?}, {elapsed:?}); reproduce with:\n  {} {} --header 'Authorization: <key>'\n{stdout}\n{stderr}",
        output.status,
        st.display(),
        arguments.join(" ")
    );
    println!("schemathesis passed in {elapsed:?}:\n{stdout}");
    drop(process);
    fixture.finish().await;
}

/// A directory of this run's own, so that nothing schemathesis writes lands in the
/// repository.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sessions-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
