//! TCP listeners for request/response servers: every accepted connection has `TCP_NODELAY`.

use std::io;
use std::net::SocketAddr;

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose accepted connections have `TCP_NODELAY` set, for [`axum::serve`]
/// (with `ConnectInfo<SocketAddr>` like a plain listener). Made by [`bind_nodelay`] or
/// [`nodelay`].
///
/// A plain [`TcpListener`] leaves Nagle's algorithm on. An HTTP server that answers in more
/// than one write (headers, then body chunks: every server-sent-events response, every MCP
/// streamable-HTTP response) then holds the second write until the client acknowledges the
/// first, and a client that delays its acknowledgements (Linux and most stacks do, by up to
/// 40 ms) stalls every such response by that much. The admin router, the MCP gateway and the
/// example upstreams all serve through this listener, and the workspace's clippy configuration
/// refuses `tokio::net::TcpListener::bind` elsewhere so the stall cannot return by accident.
pub type NoDelayListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// Binds `addr`; every connection accepted has `TCP_NODELAY` set.
///
/// ```no_run
/// use axum::serve::Listener;
///
/// # async fn demo() -> std::io::Result<()> {
/// let listener = palisade_admin::bind_nodelay("127.0.0.1:0".parse().unwrap()).await?;
/// println!("listening on {}", listener.local_addr()?);
/// axum::serve(listener, axum::Router::new()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn bind_nodelay(addr: SocketAddr) -> io::Result<NoDelayListener> {
    #[allow(clippy::disallowed_methods)] // the one place a raw listener is made
    let listener = TcpListener::bind(addr).await?;
    Ok(nodelay(listener))
}

/// Wraps a bound listener so every connection it accepts has `TCP_NODELAY` set. A failure to
/// set the option is logged: the connection still works, only with Nagle's algorithm on.
pub fn nodelay(listener: TcpListener) -> NoDelayListener {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

fn set_nodelay(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(target: "palisade::admin", error = %e, "cannot set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let mut listener = bind_nodelay("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await;
        assert!(stream.nodelay().unwrap());
        assert!(peer.ip().is_loopback());

        // What it guards against: a plain listener's connections have Nagle on.
        #[allow(clippy::disallowed_methods)]
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = plain.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap());
    }
}
