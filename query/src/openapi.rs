//! The service's OpenAPI 3.1 document, `query/openapi.json`, compiled in and served at
//! `GET /openapi.json`.
//!
//! Contract: the document describes every route [`crate::routes::routes`] serves, and
//! only those (a contract fuzzer runs against it: `tests/contract_fuzzing.rs`); it is
//! served byte for byte as checked in, as `application/json`. Endpoints join it when
//! they are served, not before.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::error::json_response;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub fn openapi_route() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("openapi.json")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, DOCUMENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(document["openapi"], "3.1.0");
    }
}
