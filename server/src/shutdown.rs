//! The server-wide shutdown signal: one token that listeners, connections and
//! process supervisors watch, fired by SIGTERM/SIGINT or by the embedding code.

use tokio_util::sync::CancellationToken;

/// Cloneable handle; cancelling any clone shuts the whole server down.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// Resolves on the first SIGTERM or SIGINT, then triggers shutdown.
    pub async fn trigger_on_signals(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = self.triggered() => return Ok(()),
        }
        self.trigger();
        Ok(())
    }
}
