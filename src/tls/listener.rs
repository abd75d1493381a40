//! [`TlsListener`]: an `axum::serve` listener that yields TLS streams. The
//! handshakes run as tasks of their own, each with a time limit, so one slow
//! or silent client cannot hold up the accepts of others; a failed handshake
//! (plain HTTP to the TLS port, an untrusted client certificate) is counted,
//! logged at debug, and the loop goes on.

use crate::telemetry::catalog;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past it, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 1024;

type Handshake = Result<(TlsStream<TcpStream>, SocketAddr), (SocketAddr, String)>;

/// A TCP listener whose connections are served after a TLS handshake.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, addr: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Ok((stream, addr)),
                Ok(Err(e)) => Err((addr, e.to_string())),
                Err(_) => Err((addr, format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe, as axum needs (it drops this future on shutdown): both
    // awaited futures are, and a started handshake lives in the set.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => match done {
                    Ok(Ok(conn)) => return conn,
                    Ok(Err((addr, error))) => {
                        metrics::counter!(catalog::API_TLS_HANDSHAKE_FAILURES.name).increment(1);
                        tracing::debug!(peer = %addr, %error, "TLS handshake failed");
                    }
                    Err(e) => tracing::debug!(error = %e, "TLS handshake task ended"),
                },
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((tcp, addr)) => self.start_handshake(tcp, addr),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What axum does for its own TCP listener: errors of one connection are
/// passed over; others (out of file descriptors) are logged and waited out.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
