//! The control plane: what operators and API clients change rather than read.
//! Organizations, hashed API keys and projects (`tenancy`, and `key_reads`, how the
//! keys in force are read), the background jobs log
//! and its runner with the user deletion it carries out (`jobs`), moving the
//! `sessions` table to the current layout (`rebuild`), and the `sessions-admin` CLI
//! over all of them. The query service serves and runs it; the ingest worker does not
//! depend on it.

pub mod jobs;
pub mod key_reads;
pub mod rebuild;
pub mod tenancy;
