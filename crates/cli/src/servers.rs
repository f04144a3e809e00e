//! `standalone`, `nameserver` and `broker`: bind, print the readiness line, serve until
//! SIGTERM/Ctrl-C, then shut down cleanly (the broker flushes and checkpoints).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rocketlog_broker::BrokerConfig;
use rocketlog_nameserver::NameserverConfig;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::settings;
use crate::shutdown::Shutdown;

/// Flags shared by every command that runs a broker.
#[derive(Debug, Args)]
pub struct BrokerFlags {
    /// Data folder (commit log, consume queues, consumer state).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client port address (apache.rocketmq.v2 gRPC; plaintext and TLS on one port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// When sends are acknowledged: `sync` (after fsync, group commit) or `async`.
    #[arg(long)]
    flush_mode: Option<String>,
    /// PEM certificate chain for TLS (default: a self-signed certificate made at start).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the broker's Prometheus metrics at `GET /metrics` on this address (default: off).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    broker: BrokerFlags,
    /// Nameserver address.
    #[arg(long)]
    nameserver_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct NameserverArgs {
    /// Nameserver address.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    broker: BrokerFlags,
    /// Nameservers to register with, comma separated `host:port` list.
    #[arg(long, value_delimiter = ',')]
    nameserver: Vec<String>,
    /// Broker group name.
    #[arg(long)]
    broker_name: Option<String>,
    /// 0 = master, 1.. = slave.
    #[arg(long)]
    broker_id: Option<u64>,
    /// Address clients are told to dial (`host:port`).
    #[arg(long)]
    advertised_address: Option<String>,
}

/// Everything a configuration file may hold.
#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    /// Client port address (default 0.0.0.0:8081).
    listen: Option<SocketAddr>,
    /// Nameserver address (default 0.0.0.0:9876).
    nameserver_listen: Option<SocketAddr>,
    broker: BrokerConfig,
    nameserver: NameserverConfig,
}

/// [`FileConfig`]'s top-level keys.
const FILE_SECTIONS: &[&str] = &["listen", "nameserver_listen", "broker", "nameserver"];

const DEFAULT_CLIENT_ADDR: &str = "0.0.0.0:8081";
const DEFAULT_NAMESERVER_ADDR: &str = "0.0.0.0:9876";

fn path_string(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn load(
    file: Option<&Path>,
    flags: &BrokerFlags,
    extra: &[(&str, Option<String>)],
) -> anyhow::Result<FileConfig> {
    let mut overrides: Vec<(&str, Option<String>)> = vec![
        ("broker.data_dir", path_string(&flags.data_dir)),
        ("broker.flush_mode", flags.flush_mode.clone()),
        ("broker.tls_cert_path", path_string(&flags.tls_cert)),
        ("broker.tls_key_path", path_string(&flags.tls_key)),
        ("listen", flags.listen.map(|a| a.to_string())),
        (
            "broker.metrics_listen",
            flags.metrics_listen.map(|a| a.to_string()),
        ),
    ];
    overrides.extend_from_slice(extra);
    settings::load(file, FILE_SECTIONS, &overrides)
}

async fn bind(addr: Option<SocketAddr>, default: &str, what: &str) -> anyhow::Result<TcpListener> {
    let addr = match addr {
        Some(a) => a,
        None => default.parse().context("default address")?,
    };
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// Raises the file-descriptor soft limit to the hard one before any port is bound; each
/// transport then sizes its connection limit by what it allows.
fn prepare_process() {
    let _ = rocketlog_transport::raise_fd_limit();
}

/// The one line test harnesses and scripts wait for (see README).
fn announce(
    client: Option<SocketAddr>,
    nameserver: Option<SocketAddr>,
    replication: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) {
    let mut line = String::from("rocketlog ready");
    if let Some(c) = client {
        line.push_str(&format!(" client={c}"));
    }
    if let Some(n) = nameserver {
        line.push_str(&format!(" nameserver={n}"));
    }
    if let Some(r) = replication {
        line.push_str(&format!(" replication={r}"));
    }
    if let Some(m) = metrics {
        line.push_str(&format!(" metrics={m}"));
    }
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is closed; the server keeps running.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn standalone(file: Option<&Path>, args: StandaloneArgs) -> anyhow::Result<()> {
    prepare_process();
    let cfg = load(
        file,
        &args.broker,
        &[(
            "nameserver_listen",
            args.nameserver_listen.map(|a| a.to_string()),
        )],
    )?;
    let ns_listener = bind(cfg.nameserver_listen, DEFAULT_NAMESERVER_ADDR, "nameserver").await?;
    let client_listener = bind(cfg.listen, DEFAULT_CLIENT_ADDR, "client").await?;
    let ns_addr = ns_listener.local_addr()?;
    let client_addr = client_listener.local_addr()?;
    let broker_config = rocketlog_broker::standalone(cfg.broker, ns_addr);

    let shutdown = Shutdown::on_signals()?;
    let ns_task = tokio::spawn(rocketlog_nameserver::run(
        cfg.nameserver,
        ns_listener,
        shutdown.clone().wait(),
    ));
    // Announced once the broker has recovered and serves, not when its port is bound.
    let broker_result = rocketlog_broker::run_with_ready(
        broker_config,
        client_listener,
        shutdown.wait(),
        move |r| announce(Some(client_addr), Some(ns_addr), r.replication, r.metrics),
    )
    .await;
    // The broker has flushed; stop the nameserver too if the broker ended on its own.
    ns_task.abort();
    broker_result.context("broker")?;
    Ok(())
}

pub async fn nameserver(file: Option<&Path>, args: NameserverArgs) -> anyhow::Result<()> {
    prepare_process();
    let cfg: FileConfig = settings::load(
        file,
        FILE_SECTIONS,
        &[("nameserver_listen", args.listen.map(|a| a.to_string()))],
    )?;
    let listener = bind(cfg.nameserver_listen, DEFAULT_NAMESERVER_ADDR, "nameserver").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::on_signals()?;
    announce(None, Some(addr), None, None);
    rocketlog_nameserver::run(cfg.nameserver, listener, shutdown.wait())
        .await
        .context("nameserver")
}

pub async fn broker(file: Option<&Path>, args: BrokerArgs) -> anyhow::Result<()> {
    prepare_process();
    let cfg = load(
        file,
        &args.broker,
        &[
            ("broker.broker_name", args.broker_name.clone()),
            ("broker.broker_id", args.broker_id.map(|i| i.to_string())),
            ("broker.advertised_address", args.advertised_address.clone()),
        ],
    )?;
    let mut broker_config = cfg.broker;
    if let Some(list) = (!args.nameserver.is_empty()).then_some(args.nameserver) {
        // A flag list replaces whatever the file or environment said.
        broker_config.nameserver_addresses = list;
    }
    let listener = bind(cfg.listen, DEFAULT_CLIENT_ADDR, "client").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::on_signals()?;
    rocketlog_broker::run_with_ready(broker_config, listener, shutdown.wait(), move |r| {
        announce(Some(addr), None, r.replication, r.metrics)
    })
    .await
    .context("broker")
}
