//! Restarting the broker of a [`Cluster`] in the middle of a test: a graceful stop, then a new
//! broker on the same data directory, configuration and client port (so clients that are
//! still running find it where they left it), ready when the harness's readiness probe passes.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::cluster::{Cluster, Server, STOP_TIMEOUT};

/// The stopped broker's port may stay busy for a moment; binding is retried until this passes.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two bind attempts (polling with a deadline).
const REBIND_INTERVAL: Duration = Duration::from_millis(50);

impl Cluster {
    /// Stops the broker gracefully (flush, checkpoints) and starts it again on the same data
    /// directory and port; returns once it serves and the nameserver lists it again.
    pub fn restart_broker(&mut self) -> anyhow::Result<()> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster was stopped"))?;
        let index = self
            .servers
            .iter()
            .position(|s| s.name == "broker")
            .ok_or_else(|| anyhow!("the cluster has no broker"))?;
        let mut old = self.servers.remove(index);
        if let Some(stop) = old.stop.take() {
            // The broker may already be gone; then there is nobody to tell.
            let _ = stop.send(());
        }
        match runtime.block_on(async { tokio::time::timeout(STOP_TIMEOUT, old.task).await }) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("the broker returned an error when stopped: {e}"),
            Ok(Err(join)) => bail!("the broker task failed: {join}"),
            Err(_) => bail!("the broker did not stop within {STOP_TIMEOUT:?}"),
        }

        let addr = self.client_addr;
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match runtime.block_on(TcpListener::bind(addr)) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("binding {addr} again"));
                }
                Err(_) => std::thread::sleep(REBIND_INTERVAL),
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        let task = runtime.spawn(async move {
            let shutdown = async move {
                // A dropped sender stops the broker as well.
                let _ = stopped.await;
            };
            rocketlog_broker::run(config, listener, shutdown)
                .await
                .map_err(|e| format!("{e}"))
        });
        // Stopped first at the end, as at start.
        self.servers.insert(
            0,
            Server {
                name: "broker",
                stop: Some(stop),
                task,
            },
        );
        self.wait_ready()
    }
}
