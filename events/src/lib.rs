//! The tracker event contract and the pure session fold: decoding and validating
//! messages (`event`), what identifies a session (`identity`: its project and its id),
//! the state of one session built from its distinct events (`session`, with its
//! applied-index sets in `index_set`), and the user-agent parser
//! that fills a session's OS and browser (`useragent`). No I/O. The worker, the test
//! kit and the fuzz targets use it; the query service does not.

pub mod event;
pub mod identity;
pub mod index_set;
pub mod session;
pub mod useragent;
