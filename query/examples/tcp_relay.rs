//! A byte relay for the query benchmark's floor: it accepts on a local port and copies
//! bytes both ways to ClickHouse, parsing nothing, on one current-thread runtime like
//! `sessions-query` with `QUERY_THREADS=1`. wrk through it against wrk straight to
//! ClickHouse, with the same statement, measures what one more hop costs on this
//! machine before any HTTP, decoding or JSON (BENCHMARKS.md §6).
//!
//!     cargo run --release -p sessions-query --example tcp_relay -- 127.0.0.1:18123 127.0.0.1:8123
//!
//! With `scripts/bench-query.sh`'s data kept (`BENCH_KEEP_DATA=1`) and its service
//! running, the statement from `statement_sql` (e.g. `statement_sql page 1 bench-100@example.com 50`),
//! URL-encoded, is sent by `wrk -c1|-c16 -d5s --latency` to
//! `http://127.0.0.1:8123/?database=bench_query&default_format=RowBinary&query=…` and
//! to the same path on port 18123, alternating with the service's page of that user.

use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: tcp_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
