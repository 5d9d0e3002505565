//! Group commit for SQLite: one writer thread owns the write connection and commits many
//! callers' writes at once.
//!
//! The thread takes every write waiting (up to [`MAX_GROUP_WRITES`]), runs each in its own
//! savepoint inside one `BEGIN IMMEDIATE` transaction, commits once, and only then answers each
//! caller. A write that fails rolls back its own savepoint only; a failed commit fails every
//! write of the group. The thread ends when the last sender is dropped (the store is gone).

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// The most writes one commit covers.
pub const MAX_GROUP_WRITES: usize = 512;
/// Writes waiting for the writer thread before callers wait to enqueue.
const WRITE_QUEUE: usize = 4_096;

fn sq(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

/// Runs `f` on the writer thread inside the next group commit; answers after the commit.
pub async fn write<T, F>(writes: &mpsc::Sender<Box<dyn WriteOp>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let gone = || StoreError::Unavailable {
        reason: "the sqlite writer thread stopped".into(),
    };
    writes
        .send(Box::new(Write { f, reply }))
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// One write waiting for the writer thread.
pub trait WriteOp: Send {
    /// Runs inside the group's transaction (in its own savepoint); returns how to answer once
    /// the commit's outcome is known.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish>;
    /// Answers without running (the group could not start).
    fn fail(self: Box<Self>, reason: String);
}

/// Answers one write after its group's commit.
pub trait Finish: Send {
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Write<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Done<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish> {
        let Self { f, reply } = *self;
        Box::new(Done {
            result: in_savepoint(conn, f),
            reply,
        })
    }

    fn fail(self: Box<Self>, reason: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable { reason }));
    }
}

impl<T: Send + 'static> Finish for Done<T> {
    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let out = match (commit, self.result) {
            (Ok(()), r) => r,
            (Err(_), Err(e)) => Err(e),
            (Err(reason), Ok(_)) => Err(StoreError::Unavailable { reason }),
        };
        // The caller may have given up (timed out); nothing to do then.
        let _ = self.reply.send(out);
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT op")
        .map_err(sq("open savepoint"))?;
    match f(conn) {
        Ok(v) => match conn.execute_batch("RELEASE op") {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
                Err(sq("release savepoint")(e))
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
            Err(e)
        }
    }
}

pub fn spawn_writer(conn: Connection) -> Result<mpsc::Sender<Box<dyn WriteOp>>, StoreError> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(&conn, rx))
        .map_err(|e| StoreError::Unavailable {
            reason: format!("cannot start the sqlite writer thread: {e}"),
        })?;
    Ok(tx)
}

fn writer_loop(conn: &Connection, mut rx: mpsc::Receiver<Box<dyn WriteOp>>) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_WRITES {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let reason = format!("sqlite: begin: {e}");
            tracing::warn!(error = %e, writes = group.len(), "sqlite group could not begin");
            for op in group {
                op.fail(reason.clone());
            }
            continue;
        }
        let finishes: Vec<Box<dyn Finish>> = group.into_iter().map(|op| op.run(conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::warn!(error = %e, writes = finishes.len(), "sqlite group commit failed");
            format!("sqlite: commit: {e}")
        });
        for f in finishes {
            f.finish(commit.clone());
        }
    }
}
