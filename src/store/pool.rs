//! The Redis connection pool. Each checkout hands out one multiplexed
//! connection for exclusive use (so a blocking stream read never stalls
//! other commands). Unlike a ping-on-checkout pool, it adds no round trip
//! per call: a connection whose command failed at the transport level
//! (I/O error, dropped, timed out) is marked broken and replaced at its
//! next checkout instead.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

pub struct RedisManager {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl RedisManager {
    /// A manager for `info`; `tls` is used for `rediss://` addresses
    /// (certificates verified against `tls.ca`, or the system's roots).
    pub fn new(
        info: redis::ConnectionInfo,
        config: AsyncConnectionConfig,
        tls: &crate::config::RedisTls,
    ) -> redis::RedisResult<Self> {
        let client = if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            let client_tls = match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
                _ => None,
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert: tls.ca.clone(),
                },
            )?
        } else {
            redis::Client::open(info)?
        };
        Ok(RedisManager { client, config })
    }
}

/// A pooled connection and whether it has failed.
pub struct Link {
    con: MultiplexedConnection,
    broken: bool,
}

impl managed::Manager for RedisManager {
    type Type = Link;
    type Error = RedisError;

    async fn create(&self) -> Result<Link, RedisError> {
        let con = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(Link { con, broken: false })
    }

    async fn recycle(&self, link: &mut Link, _: &Metrics) -> RecycleResult<RedisError> {
        if link.broken {
            Err(RecycleError::message("the connection failed"))
        } else {
            Ok(())
        }
    }
}

pub type Pool = managed::Pool<RedisManager>;
pub type PoolError = managed::PoolError<RedisError>;

/// A checked-out connection; usable wherever redis-rs takes a connection.
pub struct Con(managed::Object<RedisManager>);

impl From<managed::Object<RedisManager>> for Con {
    fn from(o: managed::Object<RedisManager>) -> Self {
        Con(o)
    }
}

/// Errors after which the connection cannot be trusted for the next command.
fn fatal(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.0.con.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.0.broken |= fatal(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.0.con.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.0.broken |= fatal(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.0.con.get_db()
    }
}
