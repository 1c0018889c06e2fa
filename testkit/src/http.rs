//! A tiny HTTP GET over a plain `TcpStream`, so tests can reach a real listener (the
//! API, `/metrics`, `/readyz`) without an HTTP client dependency; and a free loopback
//! address for a listener a test starts in another process.
//!
//! The request is HTTP/1.0: the server then ends the body by closing the connection
//! and never chunks it, so reading to the end gives the body as sent.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status code, headers (names lowercased) and body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(header_name, _)| *header_name == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A free port on 127.0.0.1 (bound and released: free unless someone takes it first).
pub fn free_loopback_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// GETs `path` from `address` with the given request headers (e.g.
/// `[("Authorization", key)]`). A refused connection or a response that is not
/// HTTP is an error.
pub async fn http_get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    parse_response(&response)
}

fn parse_response(response: &str) -> std::io::Result<HttpResponse> {
    let not_http = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(not_http)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|status_line| status_line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_http)?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let response = parse_response(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nLink: </next>; rel=\"next\"\r\n\r\n{\"data\":[]}",
        )
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("LINK"), Some("</next>; rel=\"next\""));
        assert_eq!(response.body, "{\"data\":[]}");
        assert!(parse_response("garbage").is_err());
    }
}
