//! The query tests' own helpers: a service over a fresh database per engine, with one
//! organization, one API key and one project, plus session rows written the way the
//! ingest worker writes them (read_model.rs); reading its answers and following its
//! pages; and the `sessions-query` binary as a child process. (The ingest worker the
//! end-to-end tests run in-process is the test kit's: `sessions_testkit::worker`.)

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessions_control::tenancy::{Project, Tenancy};
use sessions_query::{QueryService, Settings};
use sessions_shared::clickhouse::Store;
use sessions_shared::read_model::{Session, SessionRecord};
use sessions_testkit::clickhouse::{Target, TestDatabase};
use sessions_testkit::http::{free_loopback_address, http_get};
use sessions_testkit::task::AbortOnDrop;
use warp::http::Response;
use warp::hyper::body::Bytes;

pub const SEED_USER_AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36";

pub struct Fixture {
    pub engine: &'static str,
    pub db: TestDatabase,
    pub service: QueryService,
    pub org_id: u64,
    pub api_key: String,
    pub project: Project,
    /// The service's key reloads, as in production: keys older than the service's
    /// maximum age are refused (fail closed), so a test longer than that needs them.
    _key_reloads: AbortOnDrop,
}

impl Fixture {
    /// A migrated database, an organization with a key and a project, and a service
    /// whose auth cache is loaded.
    pub async fn new(engine: &'static str, target: &Target, label: &str) -> Fixture {
        Fixture::with_settings(engine, target, label, |_| {}).await
    }

    /// [`Fixture::new`] with the service's settings changed by `configure`.
    pub async fn with_settings(
        engine: &'static str,
        target: &Target,
        label: &str,
        configure: impl FnOnce(&mut Settings),
    ) -> Fixture {
        let db = TestDatabase::create(target, label)
            .await
            .unwrap_or_else(|error| {
                panic!("{engine}: cannot create a test database on {target:?}: {error}")
            });
        let tenancy = Tenancy::new(&db.store);
        let organization = tenancy.create_organization("acme").await.unwrap();
        let project = tenancy
            .create_project(organization.org_id, "web", None)
            .await
            .unwrap();
        let mut settings = Settings::new(db.settings.clone());
        configure(&mut settings);
        let service = QueryService::new(&settings).unwrap();
        service.refresh_auth().await.unwrap();
        let key_reloads = AbortOnDrop(service.spawn_auth_refresher());
        Fixture {
            engine,
            db,
            service,
            org_id: organization.org_id,
            api_key: organization.api_key,
            project,
            _key_reloads: key_reloads,
        }
    }

    pub fn tenancy(&self) -> Tenancy<'_> {
        Tenancy::new(&self.db.store)
    }

    /// The sessions path of this fixture's project for a raw (encoded) user id segment.
    pub fn path(&self, raw_user_id: &str, query: &str) -> String {
        let key = &self.project.project_key;
        if query.is_empty() {
            format!("/api/v1/{key}/users/{raw_user_id}/sessions")
        } else {
            format!("/api/v1/{key}/users/{raw_user_id}/sessions?{query}")
        }
    }

    /// `GET path` with this fixture's API key.
    pub async fn get(&self, path: &str) -> Response<Bytes> {
        self.request("GET", path, Some(&self.api_key)).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> Response<Bytes> {
        let mut request = warp::test::request().method(method).path(path);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.reply(&self.service.routes()).await
    }

    /// Writes live rows (version for `applied_events` events).
    pub async fn insert_live(&self, rows: &[Session], applied_events: u64) {
        self.db.insert_live(rows, applied_events).await;
    }

    pub async fn insert(&self, records: &[SessionRecord<'_>]) {
        self.db
            .insert::<SessionRecord<'_>>("sessions", records)
            .await;
    }

    pub async fn finish(self) {
        self.db.drop_database().await;
    }
}

/// On a cluster, whether each node of `CLICKHOUSE_URL` (in its order) holds rows of
/// `user_id` in its shard-local `sessions_local`.
pub async fn nodes_holding(store: &Store, user_id: &str) -> Vec<bool> {
    let mut holding = Vec::new();
    for node in 0..store.node_count() {
        let rows: u64 = store
            .run_on_node(node, |client| {
                client
                    .query("SELECT count() FROM sessions_local WHERE user_id = ?")
                    .bind(user_id)
                    .fetch_one()
            })
            .await
            .unwrap();
        holding.push(rows > 0);
    }
    holding
}

/// A session shaped like the seed's examples.
pub fn session(project_id: u32, user_id: &str, session_id: u64, start_ts: i64) -> Session {
    Session {
        project_id,
        session_id,
        user_uuid: "15bd70f6-aedf-4544-8ae6-57eb66398e94".into(),
        user_id: user_id.into(),
        user_agent: SEED_USER_AGENT.into(),
        user_os: "Mac OS X".into(),
        user_browser: "Chrome".into(),
        user_device: String::new(),
        user_country: "IN".into(),
        start_ts,
        duration: 12779,
        events_count: 1,
        pages_count: 1,
        errors_count: 0,
    }
}

pub fn body_text(response: &Response<Bytes>) -> &str {
    std::str::from_utf8(response.body()).expect("utf-8 body")
}

pub fn body_json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("JSON body")
}

/// The `sessionId`s of a 200 page, in order.
pub fn session_ids(response: &Response<Bytes>) -> Vec<String> {
    assert_eq!(response.status(), 200, "{}", body_text(response));
    body_json(response)["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|session| session["sessionId"].as_str().expect("string id").to_owned())
        .collect()
}

/// The target of a `Link: <…>; rel="next"` header, if any.
pub fn next_link(response: &Response<Bytes>) -> Option<String> {
    let link = response
        .headers()
        .get("link")?
        .to_str()
        .expect("ascii link");
    let target = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(target.to_owned())
}

/// The error message of an error response, checking the JSON error shape.
pub fn error_message(response: &Response<Bytes>) -> String {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap()),
        Some("application/json")
    );
    let json = body_json(response);
    let errors = json["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    errors[0].as_str().unwrap().to_owned()
}

/// The cursor key of the `sessions-query` processes tests start (the binary requires
/// one of at least 32 bytes).
pub const TEST_CURSOR_SECRET: &str = "test-cursor-secret-of-at-least-32-bytes";

/// The `sessions-query` binary, with none of its settings taken from the environment
/// but those the caller sets, and [`TEST_CURSOR_SECRET`].
pub fn query_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessions-query"));
    command
        .env_remove("QUERY_ADDR")
        .env_remove("ALLOW_BUILT_IN_CURSOR_KEY")
        .env("CURSOR_SECRET", TEST_CURSOR_SECRET)
        .env_remove("AUTH_REFRESH_MS");
    command
}

/// A `sessions-query` process serving this fixture's database on a free loopback
/// port; killed when dropped (a test that wants a clean stop sends SIGTERM itself).
pub struct QueryProcess {
    pub child: Child,
    pub address: SocketAddr,
}

impl QueryProcess {
    pub fn spawn(fixture: &Fixture) -> QueryProcess {
        QueryProcess::spawn_with(fixture, &[])
    }

    /// [`QueryProcess::spawn`] with more environment variables.
    pub fn spawn_with(fixture: &Fixture, environment: &[(&str, &str)]) -> QueryProcess {
        let address = free_loopback_address();
        let child = query_binary()
            .envs(environment.iter().copied())
            .args(fixture.db.settings.to_args())
            .env("QUERY_ADDR", address.to_string())
            .env("AUTH_REFRESH_MS", "500")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        QueryProcess { child, address }
    }

    /// Waits (10 s at most) until `GET path` with the fixture's key answers 200, and
    /// returns that answer's body.
    pub async fn wait_until_serving(&self, fixture: &Fixture, path: &str) -> String {
        let started = Instant::now();
        let authorization = [("Authorization", fixture.api_key.as_str())];
        loop {
            if let Ok(answer) = http_get(self.address, path, &authorization).await {
                if answer.status == 200 {
                    return answer.body;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sessions-query did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for QueryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every page of one user's sessions, following `Link: <…>; rel="next"`; the status
/// of the first answer that is not 200, if one is not.
pub async fn fetch_all_pages(
    routes: &(impl warp::Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    api_key: &str,
    first_path: String,
) -> Result<Vec<Value>, u16> {
    let mut sessions = Vec::new();
    let mut path = Some(first_path);
    while let Some(current) = path.take() {
        let response = warp::test::request()
            .method("GET")
            .path(&current)
            .header("authorization", api_key)
            .reply(routes)
            .await;
        if response.status() != 200 {
            return Err(response.status().as_u16());
        }
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        sessions.extend(body["data"].as_array().unwrap().iter().cloned());
        path = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
    }
    Ok(sessions)
}
