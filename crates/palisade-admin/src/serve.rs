//! Serving the admin router on a listener of its own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`AdminServer::shutdown`] waits for open requests before it aborts the server.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why [`AdminRouterBuilder::serve`](crate::AdminRouterBuilder::serve) did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is not loopback and non-loopback binds were not allowed.
    #[error(
        "refusing to serve the admin API on {addr}: it is not a loopback address; bind \
         127.0.0.1 or [::1] (and expose probes and metrics with serve_probes), or call \
         allow_non_loopback(true) behind TLS termination"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
}

/// A running admin server. Dropping it stops the server (without waiting); call
/// [`shutdown`](Self::shutdown) to stop it and wait for open requests.
#[must_use = "dropping the AdminServer stops it"]
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: Arc<watch::Sender<bool>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl AdminServer {
    pub(crate) async fn start(
        router: Router,
        addr: SocketAddr,
        shutdown: Arc<watch::Sender<bool>>,
    ) -> Result<Self, crate::ServeError> {
        let listener = crate::bind_nodelay(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let mut stopped = shutdown.subscribe();
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    // An error means the sender is gone: stop as well.
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(target: "palisade::admin", %local_addr, "admin API listening");
        Ok(Self {
            local_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the server listens on (with the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, ends live event streams, and waits up to
    /// [`SHUTDOWN_GRACE`] for open requests before aborting the rest.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shutdown.send_replace(true);
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io::Error::other(join)),
            Err(_) => {
                task.abort();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin server did not stop within the grace period; aborted",
                ))
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
