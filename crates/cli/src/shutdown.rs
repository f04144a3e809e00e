//! Turns SIGTERM and Ctrl-C into one shutdown signal that every server task can wait on.

use tokio::sync::watch;

/// A cloneable "shutdown requested" flag.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening for SIGTERM/SIGINT; the returned handle resolves once either arrives.
    pub fn on_signals() -> anyhow::Result<Self> {
        let (tx, rx) = watch::channel(false);
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            #[cfg(unix)]
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves when shutdown has been requested.
    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens after it sent `true`.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
