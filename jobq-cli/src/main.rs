//! `jobq`, the command-line tool of the jobq job queue. See `jobq --help`
//! and the README's "Operating jobq".

mod args;
mod commands;
mod connect;
mod error;
mod output;

use clap::Parser;

fn main() {
    // Usage errors exit with 2 here (clap's default), --help and --version
    // with 0.
    let cli = args::Cli::parse();
    // jobq's own warnings (a refused TLS option, ...) on stderr; RUST_LOG
    // can ask for more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(commands::run(cli)) {
        eprintln!("error: {}", error::chain(&e));
        std::process::exit(e.exit_code());
    }
}
