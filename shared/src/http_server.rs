//! Serving a warp filter on a listener the caller bound, with bounds that warp's own
//! server does not offer: at most `max_connections` connections open at once, and a
//! header read timeout.
//!
//! Contract: while `max_connections` connections are open, no other is accepted: new
//! ones wait in the kernel's accept queue (the listener's backlog, 1,024 for a tokio
//! listener, capped by `net.core.somaxconn`; past it the kernel drops new SYNs and
//! clients retry them) and are accepted, in order, as open ones close. A connection
//! that has not sent a whole request head within `header_read_timeout` of waiting for
//! one is closed: a client sending its headers slowly, and an HTTP/1 keep-alive
//! connection idle that long. On `shutdown` the listener is closed (connections not
//! yet accepted are refused), idle connections are closed and requests in flight
//! finish (hyper's graceful shutdown, as `warp::Server::graceful`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use warp::{Filter, Reply};

/// The connection bounds (the services' `MAX_CONNECTIONS`, `HEADER_READ_TIMEOUT_MS`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `filter` on `listener` until `shutdown`, then drains (module contract).
pub async fn serve<F, R>(
    filter: F,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: until one is, connections wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(warp::service(filter.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection (reset before it was accepted) are ignored; others (out of
/// file descriptors) are logged and accepting pauses a second, as warp's server does.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn server(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = warp::any().map(|| "ok");
        tokio::spawn(serve(routes, listener, limits, async {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0; 1024];
        let read = stream.read(&mut buffer).await.unwrap();
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    }

    #[tokio::test]
    async fn past_the_connection_bound_a_connection_waits_until_one_closes() {
        let limits = ConnectionLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
        };
        let (address, _stop) = server(limits).await;
        let mut first = TcpStream::connect(address).await.unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        assert!(get(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(get(&mut second).await.starts_with("HTTP/1.1 200"));
        // The third connects (the kernel's backlog) but is not served...
        let mut third = TcpStream::connect(address).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0; 1024];
        let waited =
            tokio::time::timeout(Duration::from_millis(300), third.read(&mut buffer)).await;
        assert!(waited.is_err(), "served past the bound");
        // ...until another closes.
        drop(first);
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buffer))
            .await
            .expect("served once a connection closed")
            .unwrap();
        assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_connection_without_a_whole_head_in_time_is_closed() {
        let limits = ConnectionLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(200),
        };
        let (address, _stop) = server(limits).await;
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        let mut buffer = [0; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
            .await
            .expect("closed by the server");
        // Closed, perhaps after a 408 (hyper answers one when it can).
        let answer = String::from_utf8_lossy(&buffer[..closed.unwrap_or(0)]).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        // An idle keep-alive connection is closed after the same time.
        let mut idle = TcpStream::connect(address).await.unwrap();
        assert!(get(&mut idle).await.starts_with("HTTP/1.1 200"));
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer))
            .await
            .expect("closed by the server");
        assert_eq!(read.unwrap_or(0), 0);
    }
}
