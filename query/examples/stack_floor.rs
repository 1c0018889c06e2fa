//! The floor of the service's own stack, for the query benchmark: warp on one
//! current-thread runtime (as `sessions-query` with `QUERY_THREADS=1`, mimalloc too)
//! answering every request by sending one fixed statement through the `clickhouse`
//! client (lz4 as the service's default, or none with `CLICKHOUSE_COMPRESSION=none`)
//! and replying with its RowBinary bytes as they came.
//! No authorization, SQL building, decoding, JSON, cursor or metrics: what is left of
//! the service's cost per request when all of its own code is gone (BENCHMARKS.md §6).
//!
//!     cargo run --release -p sessions-query --example stack_floor -- \
//!         127.0.0.1:18124 http://127.0.0.1:8123 bench_query "$(statement_sql page 1 bench-100@example.com 50)"
//!
//! then `wrk -c1|-c16 -d5s --latency http://127.0.0.1:18124/`, alternating with wrk
//! straight to ClickHouse, through `tcp_relay`, and the service's page of that user.

use std::net::SocketAddr;
use std::sync::Arc;

use clickhouse::{Client, Compression};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, url, database, sql] = args.as_slice() else {
        anyhow::bail!("usage: stack_floor LISTEN_ADDR CLICKHOUSE_URL DATABASE SQL");
    };
    let listen: SocketAddr = listen.parse()?;
    let compression = match std::env::var("CLICKHOUSE_COMPRESSION").as_deref() {
        Ok("none") => Compression::None,
        Ok("lz4") | Err(_) => Compression::Lz4,
        Ok(other) => anyhow::bail!("CLICKHOUSE_COMPRESSION must be lz4 or none, not {other:?}"),
    };
    let client = Client::default()
        .with_url(url)
        .with_database(database)
        .with_validation(false)
        .with_compression(compression);
    let statement: Arc<str> = Arc::from(sql.as_str());
    let route = warp::any().then(move || {
        let client = client.clone();
        let statement = Arc::clone(&statement);
        async move {
            let answer = async {
                let mut cursor = client.query(&statement).fetch_bytes("RowBinary")?;
                cursor.collect().await
            };
            match answer.await {
                Ok(bytes) => Response::new(Vec::from(bytes).into()),
                Err(error) => {
                    let mut response = Response::new(error.to_string().into());
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response
                }
            }
        }
    });
    warp::serve(route).run(listen).await;
    Ok(())
}
