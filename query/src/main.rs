//! `sessions-query`: settings, logging, then [`sessions_query::run`] on its listener,
//! on a runtime of `QUERY_THREADS` threads.

use std::process::ExitCode;

use clap::Parser;
use sessions_query::Settings;
use sessions_shared::service::serve_main;

/// Fewer, cheaper allocations per request than the system allocator (a page decodes
/// and encodes a few strings per session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = Settings::parse();
    sessions_shared::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(settings.query_threads))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessions-query: cannot start its runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = settings.query_addr;
    runtime.block_on(serve_main(address, |listener, shutdown| {
        sessions_query::run(settings, listener, shutdown)
    }))
}
