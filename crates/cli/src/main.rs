//! `rocketlog`: the one binary users run.
//!
//! - `rocketlog standalone`: a nameserver and a broker in one process (the local default);
//! - `rocketlog nameserver`, `rocketlog broker`: the cluster roles;
//! - `rocketlog admin …`: topics, consumer groups, message lookup, offsets, stats;
//! - `rocketlog bench …`: load generator over the Rust SDK.
//!
//! Layering: the top of the workspace. It may use every crate; no crate depends on it.
//!
//! Configuration is layered: `--config FILE` (TOML), then `ROCKETLOG_*` environment variables
//! (`__` between levels, e.g. `ROCKETLOG_BROKER__FLUSH_MODE=sync`), then flags.

mod admin;
mod bench;
mod logging;
mod servers;
mod settings;
mod shutdown;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: request handling allocates and frees many small
/// buffers across threads, where glibc malloc spent 10-15 % of the broker's and the bench
/// client's CPU (measured with perf on `rocketlog bench produce`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "rocketlog",
    version,
    about = "A RocketMQ-compatible message broker"
)]
struct Cli {
    /// TOML configuration file (sections `[broker]` and `[nameserver]`).
    #[arg(long, global = true, env = "ROCKETLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: logging::LogFormat,
    /// Log level when RUST_LOG is not set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Nameserver and broker in one process, data in a local folder.
    Standalone(servers::StandaloneArgs),
    /// A nameserver.
    Nameserver(servers::NameserverArgs),
    /// A broker that registers with the given nameservers.
    Broker(servers::BrokerArgs),
    /// Administer a running broker.
    Admin(admin::AdminArgs),
    /// Load-test a broker through the Rust SDK.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rocketlog: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config.as_deref();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Standalone(args) => servers::standalone(config, args).await,
            Command::Nameserver(args) => servers::nameserver(config, args).await,
            Command::Broker(args) => servers::broker(config, args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rocketlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}
