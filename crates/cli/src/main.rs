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

/// jemalloc instead of the system allocator: request handling allocates and frees many small
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
    /// Threads of the async runtime that serves requests and runs clients [default: one fewer
    /// than the available cores, at least 1]. The process's own storage threads (flusher,
    /// dispatcher, pre-faulter) and the kernel's network work run beside them.
    #[arg(long, global = true, env = "ROCKETLOG_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
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

/// The runtime's worker threads: `--worker-threads`, else one fewer than the available cores.
/// Measured on two cores with the load generator on the same machine (`rocketlog bench`, A B B
/// A), one worker in each process instead of two answered 1.4x more single-message sends and
/// cut the CPU per send in both: two processes with a worker per core each keep waking threads
/// on the other core and stealing each other's tasks, and the broker's storage threads need a
/// core too.
fn worker_threads(flag: Option<u16>) -> usize {
    match flag {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(cli.worker_threads))
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
