//! The `drover` binary: parse the command line and hand off to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the roles allocate many small,
/// short-lived buffers per task (replies, envelopes, ids), and glibc's
/// malloc/free/consolidate took about a third of the roles' CPU in a
/// `perf` profile of `drover bench` (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = drover::cli::Cli::parse();
    if let Err(e) = drover::cli::execute(cli).await {
        // One line, naming what is wrong (config errors name the key).
        eprintln!("drover: {e:#}");
        std::process::exit(2);
    }
}
