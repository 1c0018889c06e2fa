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
    // One thread: everything on the thread that runs `main`, so that no wake-up
    // crosses threads (the accepting task and the connections' tasks included).
    let mut builder = match settings.query_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(threads));
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
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
