//! ClickHouse access: one configured client, bounded request time, error classes.
//!
//! Contract: every request goes through [`Store::run`] (or its variants), so none waits
//! longer than the configured timeout, and a node that fails is replaced by the next
//! one of `CLICKHOUSE_URL` (cluster mode) for this request and the following ones. Errors are classed as transient (network, timeout, server
//! overload: retry or answer 503) or permanent (the server refused the statement).
//! Error values never carry the password (it travels in a header, never in the URL).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{ClickHouseSettings, WireCompression};

pub use clickhouse::query::Query;
use clickhouse::Compression;
pub use clickhouse::{Client, Row, RowWrite};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse did not answer within {0:?}")]
    Timeout(Duration),
    #[error("clickhouse is unreachable: {0}")]
    Unavailable(String),
    #[error("clickhouse rejected the request: {message}")]
    Rejected { code: Option<u32>, message: String },
    /// The answer did not decode into the expected rows (a bug or a schema mismatch).
    #[error("clickhouse's answer does not decode: {0}")]
    Malformed(String),
}

/// Server error codes that mean "try again later" (overload, limits, network).
const TRANSIENT_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    160, // TOO_SLOW
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    252, // TOO_MANY_PARTS
    242, // TABLE_IS_READ_ONLY (a replica without its coordination service)
    279, // ALL_CONNECTION_TRIES_FAILED
    285, // TOO_FEW_LIVE_REPLICAS
    286, // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    289, // REPLICA_IS_NOT_IN_QUORUM (a sequentially consistent read on a lagging replica)
    999, // KEEPER_EXCEPTION
];

/// UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE: another quorum insert into the same table is
/// still waiting for its replicas (or one of them is down).
const QUORUM_INSERT_IN_PROGRESS: u32 = 286;

/// The least time one attempt gets (a node failed over to near the deadline).
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// Server error codes that say the node itself is unwell, not the request.
const NODE_FAILURE_CODES: &[u32] = &[
    242, // TABLE_IS_READ_ONLY
    999, // KEEPER_EXCEPTION
];

impl StoreError {
    pub fn is_transient(&self) -> bool {
        self.is_unreachable_or_coded(TRANSIENT_CODES)
    }

    /// The server's error code, when it sent one (`Code: 60. DB::Exception…`).
    pub fn code(&self) -> Option<u32> {
        match self {
            StoreError::Rejected { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the node that answered (or did not) is the problem, so that another
    /// node may succeed: it is unreachable, timed out, or lost its ZooKeeper session.
    pub fn is_node_failure(&self) -> bool {
        self.is_unreachable_or_coded(NODE_FAILURE_CODES)
    }

    /// No answer in time, no connection, or a server error with one of `codes`.
    fn is_unreachable_or_coded(&self, codes: &[u32]) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Unavailable(_) => true,
            StoreError::Rejected { code, .. } => code.is_some_and(|code| codes.contains(&code)),
            StoreError::Malformed(_) => false,
        }
    }
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(error: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error;
        match error {
            Error::Network(source) => StoreError::Unavailable(source.to_string()),
            Error::TimedOut => StoreError::Unavailable("request timed out".into()),
            Error::BadResponse(message) => StoreError::Rejected {
                code: parse_error_code(&message),
                message,
            },
            other => StoreError::Malformed(other.to_string()),
        }
    }
}

/// Reads `NNN` from `Code: NNN, e.displayText()…` (18.16) or `Code: NNN. DB::…` (current).
pub fn parse_error_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Ids for an SQL `IN (…)` or a list: integers, never text from a message or a client.
pub fn id_list(ids: impl IntoIterator<Item = u64>) -> String {
    ids.into_iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the tables live: one server, or a cluster (docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    SingleNode,
    Cluster(ClusterLayout),
}

/// What cluster mode needs to know: the cluster's name in `remote_servers`, where the
/// replicated tables live in ZooKeeper, and how many replicas acknowledge a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    pub name: String,
    pub zookeeper_path: String,
    pub insert_quorum: u32,
}

impl Layout {
    /// ` ON CLUSTER `name`` for DDL that every node runs, or nothing on one server.
    pub fn on_cluster(&self) -> String {
        match self {
            Layout::SingleNode => String::new(),
            Layout::Cluster(cluster) => cluster.on_cluster(),
        }
    }

    /// The table that stores the rows of `table`: itself on one server, its
    /// shard-local table behind the `Distributed` one on a cluster.
    pub fn storage_table(&self, table: &str) -> String {
        match self {
            Layout::SingleNode => table.to_owned(),
            Layout::Cluster(_) => format!("{table}_local"),
        }
    }
}

impl ClusterLayout {
    /// ` ON CLUSTER `name``.
    pub fn on_cluster(&self) -> String {
        format!(" ON CLUSTER `{}`", self.name)
    }
}

/// Settings that do not fit together.
#[derive(Debug, thiserror::Error)]
#[error("invalid ClickHouse settings: {0}")]
pub struct SettingsError(String);

/// One ClickHouse node: a client bound to the configured database, and one without a
/// default database (to create it).
struct Node {
    /// The URL without user info, for logs.
    shown_as: String,
    client: Client,
    server: Client,
}

/// The configured nodes (one, unless in cluster mode) with the request time bound.
/// Requests go to the current node; a node that refuses connections or times out
/// makes the next one current (in the order of `CLICKHOUSE_URL`, wrapping around).
#[derive(Clone)]
pub struct Store {
    nodes: Arc<[Node]>,
    current: Arc<AtomicUsize>,
    database: String,
    timeout: Duration,
    layout: Layout,
}

/// Which of a node's clients a request uses.
#[derive(Clone, Copy)]
enum Scope {
    Database,
    Server,
}

impl Store {
    pub fn new(settings: &ClickHouseSettings) -> Result<Store, SettingsError> {
        settings.validate().map_err(SettingsError)?;
        let layout = match settings.cluster_name() {
            None => Layout::SingleNode,
            Some(name) => Layout::Cluster(ClusterLayout {
                name: name.to_owned(),
                zookeeper_path: settings.clickhouse_zookeeper_path.clone(),
                insert_quorum: settings.clickhouse_insert_quorum,
            }),
        };
        let nodes = settings
            .clickhouse_url
            .iter()
            .map(|url| {
                let mut server = Client::default()
                    .with_url(url)
                    .with_user(&settings.clickhouse_user)
                    .with_password(settings.clickhouse_password.expose())
                    .with_validation(false)
                    .with_compression(match settings.clickhouse_compression {
                        WireCompression::Lz4 => Compression::Lz4,
                        WireCompression::None => Compression::None,
                    });
                if let Layout::Cluster(cluster) = &layout {
                    // Writes through `Distributed` tables reach their shard before the
                    // INSERT returns, on `insert_quorum` replicas; the server gives up
                    // waiting for the quorum before this client gives up on the request.
                    server = server
                        .with_setting("insert_distributed_sync", "1")
                        .with_setting("insert_quorum", cluster.insert_quorum.to_string())
                        .with_setting(
                            "insert_quorum_timeout",
                            settings.clickhouse_timeout.as_millis().to_string(),
                        );
                }
                Node {
                    shown_as: without_user_info(url),
                    client: server.clone().with_database(&settings.clickhouse_database),
                    server,
                }
            })
            .collect();
        Ok(Store {
            nodes,
            current: Arc::new(AtomicUsize::new(0)),
            database: settings.clickhouse_database.clone(),
            timeout: settings.clickhouse_timeout,
            layout,
        })
    }

    /// The current node's client for statements on the configured database (tests and
    /// tools; services go through [`Store::run`], which fails over).
    pub fn client(&self) -> &Client {
        &self.current_node().client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The request time bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// In cluster mode, makes `query` see every write acknowledged before it started
    /// (`select_sequential_consistency`: a replica behind the last quorum write refuses
    /// rather than answer without it). The worker's loads rest on this.
    pub fn read_your_writes(&self, query: Query) -> Query {
        match self.layout {
            Layout::SingleNode => query,
            Layout::Cluster(_) => query.with_setting("select_sequential_consistency", "1"),
        }
    }

    /// Runs one request on the configured database under the time bound, failing over.
    pub async fn run<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        self.attempt(Scope::Database, self.timeout, request).await
    }

    /// [`Store::run`] under another time bound (large inserts).
    pub async fn run_for<T, F, Fut>(&self, timeout: Duration, request: F) -> Result<T, StoreError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        self.attempt(Scope::Database, timeout, request).await
    }

    /// [`Store::run`] on a client with no default database (to create or drop it).
    pub async fn run_on_server<T, F, Fut>(
        &self,
        timeout: Duration,
        request: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        self.attempt(Scope::Server, timeout, request).await
    }

    /// One request on every configured node in turn, each under the time bound, with
    /// no failover (what must happen on each node's own tables): the errors of the
    /// nodes that failed, with their URLs (no user info).
    pub async fn run_on_each_node<T, F, Fut>(&self, request: F) -> Vec<(String, StoreError)>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        let mut failures = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if let Err(error) = self.run_on_node(index, &request).await {
                failures.push((node.shown_as.clone(), error));
            }
        }
        failures
    }

    /// How many nodes `CLICKHOUSE_URL` lists (one on a single server).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The client of node `index` (in `CLICKHOUSE_URL`'s order) on the configured
    /// database, for a request built once that must reach that node (a streamed read).
    pub fn node_client(&self, index: usize) -> &Client {
        &self.nodes[index % self.nodes.len()].client
    }

    /// One request on node `index` under the time bound, with no failover (reads that
    /// must see one replica's parts).
    pub async fn run_on_node<T, F, Fut>(&self, index: usize, request: F) -> Result<T, StoreError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        bounded_by(self.timeout, request(self.node_client(index))).await
    }

    /// `SELECT 1`: is a node there and answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run_on_server(self.timeout, |server| {
            server.query("SELECT 1").fetch_one::<u8>()
        })
        .await
        .map(drop)
    }

    fn current_node(&self) -> &Node {
        &self.nodes[self.current.load(Ordering::Relaxed) % self.nodes.len()]
    }

    /// The request on the current node; when the node fails (it refuses the
    /// connection, or has lost ZooKeeper), on the next ones in turn. A timeout is not
    /// retried (the time is spent), but the next request starts on the next node. A
    /// quorum insert that meets another one in progress on the same table (18.16 runs
    /// one at a time) is retried after a short random pause, all within `timeout`.
    async fn attempt<T, F, Fut>(
        &self,
        scope: Scope,
        timeout: Duration,
        request: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        let deadline = Instant::now() + timeout;
        let mut index = self.current.load(Ordering::Relaxed) % self.nodes.len();
        let mut nodes_tried = 1;
        loop {
            let node = &self.nodes[index];
            let client = match scope {
                Scope::Database => &node.client,
                Scope::Server => &node.server,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = bounded_by(remaining.max(MIN_ATTEMPT_TIME), request(client)).await;
            let Err(error) = &result else { return result };
            if error.code() == Some(QUORUM_INSERT_IN_PROGRESS) {
                let pause = Duration::from_millis(rand::thread_rng().gen_range(5..50));
                if Instant::now() + pause >= deadline {
                    return result;
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            if !error.is_node_failure() || self.nodes.len() == 1 {
                return result;
            }
            let next = (index + 1) % self.nodes.len();
            if self
                .current
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::warn!(
                    failed = %node.shown_as,
                    next = %self.nodes[next].shown_as,
                    %error,
                    "clickhouse node failed; moving to the next one"
                );
            }
            if nodes_tried == self.nodes.len() || matches!(error, StoreError::Timeout(_)) {
                return result;
            }
            index = next;
            nodes_tried += 1;
        }
    }
}

/// Runs one request under a time bound (a request that is built once: tests, tools).
pub async fn bounded_by<T, F>(timeout: Duration, request: F) -> Result<T, StoreError>
where
    F: Future<Output = clickhouse::error::Result<T>>,
{
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// `http://user:secret@host:8123` → `http://host:8123`: what a log may show of a URL.
fn without_user_info(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host_start = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..host_start];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{}", &rest[host_start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_codes_of_old_and_new_servers() {
        assert_eq!(
            parse_error_code("Code: 46, e.displayText() = DB::Exception: Unknown function"),
            Some(46)
        );
        assert_eq!(
            parse_error_code("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(parse_error_code("bad gateway"), None);
    }

    #[test]
    fn network_trouble_is_transient_and_syntax_errors_are_not() {
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(StoreError::Unavailable("refused".into()).is_transient());
        assert!(!StoreError::Rejected {
            code: Some(62),
            message: "syntax".into()
        }
        .is_transient());
        assert!(StoreError::Rejected {
            code: Some(252),
            message: "parts".into()
        }
        .is_transient());
    }

    #[test]
    fn logs_show_urls_without_credentials() {
        assert_eq!(
            without_user_info("http://user:secret@host:8123/x"),
            "http://host:8123/x"
        );
        assert_eq!(without_user_info("http://host:8123"), "http://host:8123");
    }

    #[test]
    fn a_node_that_refuses_is_replaced_by_the_next() {
        let urls = vec![
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let store = Store::new(&ClickHouseSettings::cluster(&urls, "c", "db")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime.block_on(store.ping()).unwrap_err();
        assert!(error.is_node_failure(), "{error}");
        // Both were tried, in turn: the current node is the first again.
        assert_eq!(store.current.load(Ordering::Relaxed), 0);
        assert!(Store::new(&ClickHouseSettings {
            clickhouse_cluster: Default::default(),
            ..ClickHouseSettings::cluster(&urls, "c", "db")
        })
        .is_err());
    }
}
