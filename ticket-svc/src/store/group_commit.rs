//! Group commit for SQLite: one writer thread owns the write connection and commits many
//! callers' writes at once.
//!
//! The thread takes every write waiting (up to [`MAX_GROUP_WRITES`]), runs each inside one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. A write that
//! fails is undone alone ([`Undo`]: its own savepoint, or SQLite's own undo of a failed single
//! statement); a failed commit fails every write of the group. A write alone in its group needs
//! neither: if it fails, the transaction is rolled back instead of committed. That is the
//! common case under a rush (a worker's batch of decisions), and a savepoint there made SQLite
//! copy every page the batch touched into its statement journal first. The thread ends when the
//! last sender is dropped (the store is gone).
//!
//! Durability per group: a write is [`Durability::Synced`] (decisions, events, dead letters:
//! the commit is fsynced before anyone is answered, `synchronous=FULL`) or
//! [`Durability::Relaxed`] (the API's pending rows: a read model the worker recreates from the
//! queued job, so losing the last ones to a power cut costs nothing but a moment of 404). A group
//! with only relaxed writes commits with `synchronous=NORMAL` (no fsync in WAL mode); the next
//! synced commit fsyncs the WAL and with it every earlier relaxed commit. What "202 means durably
//! queued" needs is the queue's durability, not this row's.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::error::{StoreError, sq};

/// The most writes one commit covers.
pub const MAX_GROUP_WRITES: usize = 512;
/// Writes waiting for the writer thread before callers wait to enqueue.
const WRITE_QUEUE: usize = 4_096;

/// How durable a write must be when its caller is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsynced) before the answer.
    Synced,
    /// Committed (visible, survives a process crash) before the answer; on disk with the next
    /// synced commit.
    Relaxed,
}

/// How a failed write's changes are undone, leaving the rest of its group intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// The write runs in its own savepoint, rolled back if it fails or panics. For writes of
    /// several statements.
    Savepoint,
    /// The write changes the database with one statement at most, and nothing that can fail or
    /// panic follows a change it made: SQLite itself backs out a failed statement's changes, so
    /// no savepoint is needed. That saves the savepoint's two statements, which the API's pending
    /// row (one `INSERT`) paid on every purchase.
    Statement,
}

/// Runs `f` on the writer thread inside the next group commit; answers after the commit.
pub async fn write<T, F>(
    writes: &mpsc::Sender<Box<dyn WriteOp>>,
    durability: Durability,
    undo: Undo,
    f: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let gone = || StoreError::Unavailable {
        reason: "the sqlite writer thread stopped".into(),
    };
    writes
        .send(Box::new(Write {
            f,
            reply,
            durability,
            undo,
        }))
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// One write waiting for the writer thread.
pub trait WriteOp: Send {
    /// Runs inside the group's transaction (undone alone if it fails, see [`Undo`]); returns
    /// how to answer once the commit's outcome is known. `alone`: it is the group's only write,
    /// so its caller rolls the whole transaction back if it fails, and it needs no undo of its
    /// own.
    fn run(self: Box<Self>, conn: &Connection, alone: bool) -> Box<dyn Finish>;
    /// How durable it must be.
    fn durability(&self) -> Durability;
    /// Answers without running (the group could not start).
    fn fail(self: Box<Self>, reason: String);
}

/// Answers one write after its group's commit.
pub trait Finish: Send {
    /// Whether the write failed: its changes must not be committed.
    fn failed(&self) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct Write<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
    durability: Durability,
    undo: Undo,
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
    fn run(self: Box<Self>, conn: &Connection, alone: bool) -> Box<dyn Finish> {
        let Self { f, reply, undo, .. } = *self;
        let result = match undo {
            Undo::Savepoint if !alone => in_savepoint(conn, f),
            Undo::Savepoint | Undo::Statement => unwind_safe(|| f(conn)),
        };
        Box::new(Done { result, reply })
    }

    fn fail(self: Box<Self>, reason: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable { reason }));
    }

    fn durability(&self) -> Durability {
        self.durability
    }
}

impl<T: Send + 'static> Finish for Done<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

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

/// Runs `f`, turning a panic into an error. A panic in one write is a bug, but it must cost that
/// write only: the thread (and with it every later write of the store) lives on.
fn unwind_safe<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("a sqlite write panicked; rolled back");
        Err(StoreError::Corrupt {
            what: "a write panicked (a bug); it was rolled back".into(),
        })
    })
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let step = |sql: &str| run_cached(conn, sql);
    step("SAVEPOINT op").map_err(sq("open savepoint"))?;
    let outcome = unwind_safe(|| f(conn));
    let undo = || {
        let _ = step("ROLLBACK TO op").and_then(|()| step("RELEASE op"));
    };
    match outcome {
        Ok(v) => match step("RELEASE op") {
            Ok(()) => Ok(v),
            Err(e) => {
                undo();
                Err(sq("release savepoint")(e))
            }
        },
        Err(e) => {
            undo();
            Err(e)
        }
    }
}

/// Starts the writer thread that owns `conn`; writes go through the returned sender.
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
    let mut synced = true; // the connection was opened with synchronous=FULL
    let mut waiting = Vec::with_capacity(MAX_GROUP_WRITES);
    while let Some(first) = rx.blocking_recv() {
        waiting.push(first);
        while waiting.len() < MAX_GROUP_WRITES {
            match rx.try_recv() {
                Ok(op) => waiting.push(op),
                Err(_) => break,
            }
        }
        // One commit for everything waiting. With a synced write among them the commit is
        // fsynced, and the relaxed writes ride along: they wait for that fsync, but a second
        // commit (its WAL frames, its page writes, two synchronous switches) costs the writer
        // more than the wait costs them, and under a rush the writer is the busiest thread.
        let wants_sync = waiting
            .iter()
            .any(|op| op.durability() == Durability::Synced);
        commit_group(conn, &mut waiting, wants_sync, &mut synced);
    }
}

/// Runs a statement without a result through the connection's statement cache: the writer
/// runs the same few control statements thousands of times a second.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.raw_execute())
        .map(drop)
}

/// Runs one group in one transaction and answers each write with the commit's outcome; leaves
/// `group` empty.
fn commit_group(
    conn: &Connection,
    group: &mut Vec<Box<dyn WriteOp>>,
    wants_sync: bool,
    synced: &mut bool,
) {
    if wants_sync != *synced {
        let pragma = if wants_sync {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        match run_cached(conn, pragma) {
            Ok(()) => *synced = wants_sync,
            // A relaxed group may commit stricter than asked; a durable one may not.
            Err(e) => tracing::warn!(error = %e, "could not switch sqlite synchronous mode"),
        }
    }
    if wants_sync && !*synced {
        let reason = "sqlite: cannot make this commit synchronous".to_owned();
        for op in group.drain(..) {
            op.fail(reason.clone());
        }
        return;
    }
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        let reason = format!("sqlite: begin: {e}");
        tracing::warn!(error = %e, writes = group.len(), "sqlite group could not begin");
        for op in group.drain(..) {
            op.fail(reason.clone());
        }
        return;
    }
    if group.len() == 1 {
        if let Some(op) = group.pop() {
            commit_alone(conn, op);
        }
        return;
    }
    let mut finishes: Vec<Box<dyn Finish>> = Vec::with_capacity(group.len());
    for op in group.drain(..) {
        // SQLite ends a transaction by itself after some errors (SQLITE_FULL, SQLITE_IOERR,
        // SQLITE_BUSY, SQLITE_NOMEM). The writes after that would each commit on their own,
        // outside the group, while the group's COMMIT fails and tells their callers they did
        // not: fail them unrun instead. The group's COMMIT then fails every write that ran.
        if conn.is_autocommit() {
            op.fail("sqlite: an earlier write's error ended the group's transaction".into());
            continue;
        }
        finishes.push(op.run(conn, false));
    }
    let commit = commit_or_roll_back(conn, finishes.len());
    for f in finishes {
        f.finish(commit.clone());
    }
}

/// The group's only write, in the transaction already begun, without an undo of its own: if
/// it fails, nothing is committed (SQLite may have ended the transaction itself already; the
/// ROLLBACK then has nothing to do) and its caller gets its own error.
fn commit_alone(conn: &Connection, op: Box<dyn WriteOp>) {
    let done = op.run(conn, true);
    let commit = if done.failed() {
        let _ = run_cached(conn, "ROLLBACK");
        Err("sqlite: the write failed; rolled back".to_owned())
    } else {
        commit_or_roll_back(conn, 1)
    };
    done.finish(commit);
}

fn commit_or_roll_back(conn: &Connection, writes: usize) -> Result<(), String> {
    run_cached(conn, "COMMIT").map_err(|e| {
        let _ = run_cached(conn, "ROLLBACK");
        tracing::warn!(error = %e, writes, "sqlite group commit failed");
        format!("sqlite: commit: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database with a table `t` whose values must be positive.
    fn positive_values() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL CHECK (v > 0))")
            .unwrap();
        conn
    }

    /// A writer over [`positive_values`].
    fn writer_over_positive_values() -> mpsc::Sender<Box<dyn WriteOp>> {
        spawn_writer(positive_values()).unwrap()
    }

    async fn sum_of_values(writes: &mpsc::Sender<Box<dyn WriteOp>>) -> i64 {
        write(writes, Durability::Synced, Undo::Savepoint, |c| {
            c.query_row("SELECT SUM(v) FROM t", [], |r| r.get(0))
                .map_err(sq("sum"))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_costs_only_itself() {
        let writes = writer_over_positive_values();
        let insert = |v: i64| {
            let writes = writes.clone();
            async move {
                write(&writes, Durability::Synced, Undo::Savepoint, move |c| {
                    c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                        .map_err(sq("insert"))
                })
                .await
            }
        };
        let (ok, bad, panicked, ok2) = tokio::join!(
            insert(1),
            insert(-1),
            write(
                &writes,
                Durability::Relaxed,
                Undo::Savepoint,
                |c| -> Result<(), StoreError> {
                    c.execute("INSERT INTO t (v) VALUES (5)", [])
                        .map_err(sq("insert"))?;
                    panic!("a bug in a write");
                }
            ),
            insert(2)
        );
        ok.unwrap();
        assert!(bad.is_err());
        assert!(matches!(panicked, Err(StoreError::Corrupt { .. })));
        ok2.unwrap();
        let sum = sum_of_values(&writes).await;
        assert_eq!(
            sum, 3,
            "only the good writes stayed; the panicked one rolled back"
        );
    }

    #[tokio::test]
    async fn a_failing_single_statement_write_is_undone_by_sqlite_alone() {
        let writes = writer_over_positive_values();
        let insert = |sql: &'static str| {
            let writes = writes.clone();
            async move {
                write(&writes, Durability::Relaxed, Undo::Statement, move |c| {
                    c.execute(sql, []).map_err(sq("insert"))
                })
                .await
            }
        };
        // The second statement fails on its third row: SQLite backs out its first two rows too.
        let (ok, bad, ok2) = tokio::join!(
            insert("INSERT INTO t (v) VALUES (1)"),
            insert("INSERT INTO t (v) VALUES (10), (20), (-1)"),
            insert("INSERT INTO t (v) VALUES (2)")
        );
        assert_eq!(ok.unwrap(), 1);
        assert!(bad.is_err());
        assert_eq!(ok2.unwrap(), 1);
        let sum = sum_of_values(&writes).await;
        assert_eq!(sum, 3, "the failed statement left none of its rows");
    }

    /// Runs `f` as the only write of a group, as the writer thread would, and returns its answer.
    async fn alone(
        conn: &Connection,
        f: fn(&Connection) -> Result<usize, StoreError>,
    ) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut group: Vec<Box<dyn WriteOp>> = vec![Box::new(Write {
            f,
            reply,
            durability: Durability::Synced,
            undo: Undo::Savepoint,
        })];
        let mut synced = true;
        commit_group(conn, &mut group, true, &mut synced);
        assert!(conn.is_autocommit(), "the group's transaction ended");
        answer.await.unwrap()
    }

    #[tokio::test]
    async fn a_write_alone_in_its_group_is_rolled_back_whole_when_it_fails() {
        let conn = positive_values();
        let inserted_two = alone(&conn, |c| {
            c.execute("INSERT INTO t (v) VALUES (1)", [])
                .map_err(sq("insert"))?;
            c.execute("INSERT INTO t (v) VALUES (2)", [])
                .map_err(sq("insert"))
        })
        .await;
        assert_eq!(inserted_two.unwrap(), 1);
        // The first statement succeeds, the second breaks the CHECK: the first is undone too,
        // and the caller sees the write's own error, not a commit failure.
        let failed = alone(&conn, |c| {
            c.execute("INSERT INTO t (v) VALUES (10)", [])
                .map_err(sq("insert"))?;
            c.execute("INSERT INTO t (v) VALUES (-1)", [])
                .map_err(sq("insert"))
        })
        .await;
        assert!(
            matches!(
                failed,
                Err(StoreError::Sqlite {
                    context: "insert",
                    ..
                })
            ),
            "{failed:?}"
        );
        let panicked = alone(&conn, |c| {
            c.execute("INSERT INTO t (v) VALUES (100)", [])
                .map_err(sq("insert"))?;
            panic!("a bug in a write");
        })
        .await;
        assert!(
            matches!(panicked, Err(StoreError::Corrupt { .. })),
            "{panicked:?}"
        );
        let sum: i64 = conn
            .query_row("SELECT SUM(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sum, 3, "only the write that succeeded was committed");
    }

    #[tokio::test]
    async fn writes_after_the_transaction_ended_are_not_committed_on_their_own() {
        let conn = positive_values();
        let mut answers = Vec::new();
        let mut group: Vec<Box<dyn WriteOp>> = Vec::new();
        let mut queue = |undo, f: fn(&Connection) -> Result<usize, StoreError>| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            group.push(Box::new(Write {
                f,
                reply,
                durability: Durability::Synced,
                undo,
            }));
        };
        queue(Undo::Savepoint, |c| {
            c.execute("INSERT INTO t (v) VALUES (1)", [])
                .map_err(sq("insert"))
        });
        // Stands in for an error after which SQLite rolls the whole transaction back.
        queue(Undo::Statement, |c| {
            c.execute_batch("ROLLBACK").map_err(sq("rollback"))?;
            Ok(0)
        });
        queue(Undo::Savepoint, |c| {
            c.execute("INSERT INTO t (v) VALUES (2)", [])
                .map_err(sq("insert"))
        });
        queue(Undo::Statement, |c| {
            c.execute("INSERT INTO t (v) VALUES (3)", [])
                .map_err(sq("insert"))
        });
        let mut synced = true;
        commit_group(&conn, &mut group, true, &mut synced);
        for answer in answers {
            assert!(
                answer.await.unwrap().is_err(),
                "no write of the group succeeded"
            );
        }
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "nothing was committed outside the group");
    }
}
