//! The `drover` binary: parse the command line and hand off to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = drover::cli::Cli::parse();
    if let Err(e) = drover::cli::execute(cli).await {
        // One line, naming what is wrong (config errors name the key).
        eprintln!("drover: {e:#}");
        std::process::exit(2);
    }
}
