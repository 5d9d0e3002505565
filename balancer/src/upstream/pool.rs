//! A small per-backend pool of idle HTTP/1.1 [`Connection`]s.
//!
//! No per-request key hashing, no checkout futures — a LIFO stack (the warmest connection
//! first) behind a mutex held for a push or pop only. Bounded: at most `max_idle` idle
//! connections; one idle longer than the idle timeout, or that the backend closed (checked
//! on the reactor's readiness, no system call unless the socket became readable), is
//! dropped instead of reused. A connection is put back only after a response that ended
//! cleanly (see [`super::conn`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Connection;

#[derive(Debug)]
struct Idle {
    conn: Connection,
    since: Instant,
}

/// Idle connections to one backend, for one worker.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

impl Pool {
    /// An empty pool keeping at most `max_idle` connections.
    pub fn new(max_idle: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The vector stays consistent even if a holder panicked: push/pop are atomic to it.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The warmest live connection idle for less than `idle_timeout`, if any, with how long
    /// it has been idle.
    pub fn take(&self, idle_timeout: Duration) -> Option<(Connection, Duration)> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            let idle_for = entry.since.elapsed();
            if idle_for < idle_timeout && !entry.conn.is_closed() {
                return Some((entry.conn, idle_for));
            }
        }
        None
    }

    /// Gives a connection back (dropped if the pool is full).
    pub fn put(&self, conn: Connection) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections now.
    pub fn idle_len(&self) -> usize {
        self.lock().len()
    }

    /// Drops closed and expired connections.
    pub fn sweep(&self, idle_timeout: Duration) {
        self.lock()
            .retain(|e| e.since.elapsed() < idle_timeout && !e.conn.is_closed());
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        self.lock().clear();
    }
}
