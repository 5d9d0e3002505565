//! The PostgreSQL connection pool: up to N connections, each with its prepared statements
//! cached. A caller waits at most [`POOL_WAIT`] for a connection; a broken connection is not
//! given back, and a new one is opened in its place on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls, Statement};

use super::error::StoreError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a caller waits for a free connection.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

/// Wraps a driver error with what the store was doing.
pub fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { context, source }
}

/// Up to `pool_size` connections to one database (and schema).
pub struct Pool {
    url: String,
    schema: Option<String>,
    pool_size: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<PgConn>>,
}

/// A connection and its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Pool {
    /// A pool of up to `size` connections, starting with `first`.
    pub fn new(url: &str, schema: Option<String>, size: usize, first: Client) -> Self {
        let size = size.max(1);
        Self {
            url: url.to_owned(),
            schema,
            pool_size: size,
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(vec![PgConn {
                client: first,
                statements: HashMap::new(),
            }]),
        }
    }

    /// The schema every connection uses, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The most connections.
    pub fn size(&self) -> usize {
        self.pool_size
    }

    /// A connection: an idle one, or a new one while fewer than the pool size are out.
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, StoreError> {
        let permit = tokio::time::timeout(POOL_WAIT, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| StoreError::Unavailable {
                reason: format!("no postgres connection free within {POOL_WAIT:?}"),
            })?
            .map_err(|_| StoreError::Unavailable {
                reason: "postgres pool closed".into(),
            })?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) if !c.client.is_closed() => c,
            _ => PgConn {
                client: connect_one(&self.url, self.schema.as_deref()).await?,
                statements: HashMap::new(),
            },
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }
}

/// Opens one session: statement timeout set, and `search_path` when a schema is given.
pub async fn connect_one(url: &str, schema: Option<&str>) -> Result<Client, StoreError> {
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| StoreError::Unavailable {
                reason: format!("postgres connect timed out after {CONNECT_TIMEOUT:?}"),
            })?
            .map_err(pg("connect"))?;
    // The connection task ends when the client is dropped (pool replaced it or shut down).
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    let mut setup = format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS};");
    if let Some(s) = schema {
        setup.push_str(&format!(" SET search_path TO {s};"));
    }
    client
        .batch_execute(&setup)
        .await
        .map_err(pg("set session"))?;
    Ok(client)
}

/// A pooled connection, given back to the pool when dropped (unless it broke).
pub struct Pooled {
    conn: Option<PgConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// The connection's client.
    pub fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.conn
            .as_mut()
            .map(|c| &mut c.client)
            .ok_or_else(|| StoreError::Unavailable {
                reason: "postgres connection missing".into(),
            })
    }

    /// The prepared statement for `sql` on this connection (prepared on first use).
    pub async fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let conn = self.conn.as_mut().ok_or_else(|| StoreError::Unavailable {
            reason: "postgres connection missing".into(),
        })?;
        if let Some(st) = conn.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = conn.client.prepare(sql).await.map_err(pg("prepare"))?;
        conn.statements.insert(sql, st.clone());
        Ok(st)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(conn);
        }
    }
}
