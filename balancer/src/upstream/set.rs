//! The live backend set: an immutable [`BackendSet`] (backends plus a selector built for
//! exactly that list) behind an `ArcSwap`. Readers take a snapshot without locking; writers
//! (admin API, reload) build a new set and swap it in, serialised by a mutex so two writers
//! never lose each other's change.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::config::Strategy;
use crate::select::Selector;

use super::Backend;

/// One immutable generation of the backend list.
#[derive(Debug)]
pub struct BackendSet {
    /// The backends, in configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// A selector whose state lines up with `backends`.
    pub selector: Selector,
}

impl BackendSet {
    /// Picks an available backend not in `skip`, preferring one that can start the request
    /// at once: a request queues behind a full backend only when every backend is full.
    pub fn pick(&self, skip: impl Fn(&SocketAddr) -> bool) -> Option<Arc<Backend>> {
        let usable = |b: &Arc<Backend>| b.is_available() && !skip(&b.addr());
        let i = self
            .selector
            .pick(&self.backends, |_, b| usable(b) && b.has_capacity())
            .or_else(|| self.selector.pick(&self.backends, |_, b| usable(b)))?;
        self.backends.get(i).cloned()
    }

    /// The backend at `addr`.
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.addr() == addr)
    }
}

/// The swappable backend set.
#[derive(Debug)]
pub struct Backends {
    current: ArcSwap<BackendSet>,
    writer: Mutex<(Strategy, Option<u64>)>,
}

impl Backends {
    /// A set of `backends` picked by `strategy`.
    pub fn new(backends: Vec<Arc<Backend>>, strategy: Strategy, seed: Option<u64>) -> Self {
        let selector = Selector::new(strategy, backends.len(), seed);
        Self {
            current: ArcSwap::from_pointee(BackendSet { backends, selector }),
            writer: Mutex::new((strategy, seed)),
        }
    }

    /// The current generation (lock-free).
    pub fn load(&self) -> Guard<Arc<BackendSet>> {
        self.current.load()
    }

    /// A full snapshot of the current backends.
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.current.load().backends.clone()
    }

    /// Builds a new generation from the current one with `edit`, optionally switching
    /// strategy, and swaps it in. Returns what `edit` returned.
    pub fn update<R>(
        &self,
        strategy: Option<Strategy>,
        edit: impl FnOnce(&mut Vec<Arc<Backend>>) -> R,
    ) -> R {
        let mut w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = strategy {
            w.0 = s;
        }
        let mut list = self.current.load().backends.clone();
        let out = edit(&mut list);
        let selector = Selector::new(w.0, list.len(), w.1);
        self.current.store(Arc::new(BackendSet {
            backends: list,
            selector,
        }));
        out
    }
}
