//! A dedicated I/O thread fed by a channel: what every group journal is.
//!
//! A journal's file I/O and `fdatasync` never run on the async runtime; they run on one of
//! these, which takes commands in order, and stops (after finishing what was queued) when
//! closed.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// A named thread and the sending side of its channel.
pub struct IoThread<T> {
    name: String,
    /// Read-locked by every send (senders run concurrently: `Sender` is `Sync`), write-locked
    /// once by `close`. A mutex here made the connections producing to one partition queue
    /// behind each other on every append.
    tx: RwLock<Option<Sender<T>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T> std::fmt::Debug for IoThread<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoThread")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> IoThread<T> {
    /// Starts `body` on a thread called `name`, receiving what [`IoThread::send`] sends.
    pub fn spawn(
        name: String,
        body: impl FnOnce(Receiver<T>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || body(rx))?;
        Ok(Self {
            name,
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a message; gives it back if the thread has stopped or is closing.
    pub fn send(&self, msg: T) -> Result<(), T> {
        let guard = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }

    /// Closes the channel and waits for the thread to finish what was queued.
    pub fn close(&self) {
        self.tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!(thread = %self.name, "I/O thread panicked");
        }
    }
}

/// What [`next`] got.
pub enum Next<T> {
    /// A message.
    Message(T),
    /// The sync interval passed with nothing to do.
    Tick,
    /// The channel is closed and empty.
    Closed,
}

/// Waits for the next message, or until `tick_in` has passed (then [`Next::Tick`]), so that
/// the thread can sync on time even when idle.
pub fn next<T>(rx: &Receiver<T>, tick_in: Option<Duration>) -> Next<T> {
    match tick_in {
        Some(wait) => match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(m) => Next::Message(m),
            Err(RecvTimeoutError::Timeout) => Next::Tick,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        },
        None => match rx.recv() {
            Ok(m) => Next::Message(m),
            Err(_) => Next::Closed,
        },
    }
}

/// Takes whatever else is already queued, up to `max` messages in all.
pub fn drain<T>(rx: &Receiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
}
