//! The live backend set: an immutable [`BackendSet`] (backends plus a selector built for
//! exactly that list) behind an `ArcSwap`. Readers take a snapshot without locking; writers
//! (admin API, reload) build a new set and swap it in, serialised by a mutex so two writers
//! never lose each other's change.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A backend picked for a request.
#[derive(Debug)]
pub struct Picked {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Every backend was out when it was picked (see [`BackendSet::in_panic`]).
    pub panic: bool,
}

impl BackendSet {
    /// Whether every backend is out: down by its health checks or passively ejected (draining
    /// ones aside). The balancer then tries every backend that is not draining anyway, as Envoy
    /// does below its panic threshold, rather than answer 503 to everything: what took them all
    /// out at once (a moment's errors, a check that saw them before they were ready) is more
    /// often the balancer's view than every backend being gone.
    pub fn in_panic(&self) -> bool {
        !self.backends.iter().any(|b| b.is_available())
    }

    /// Picks a backend not in `skip`, preferring one that can start the request at once: a
    /// request queues behind a full backend only when every backend is full. Only available
    /// backends are picked, or in a panic every backend that is not draining.
    pub fn pick(&self, skip: impl Fn(&SocketAddr) -> bool) -> Option<Picked> {
        let panic = self.in_panic();
        let usable = |b: &Arc<Backend>| may_take(b, panic) && !skip(&b.addr());
        let i = self
            .selector
            .pick(&self.backends, |_, b| usable(b) && b.has_capacity())
            .or_else(|| self.selector.pick(&self.backends, |_, b| usable(b)))?;
        let backend = self.backends.get(i).cloned()?;
        Some(Picked { backend, panic })
    }

    /// Whether some backend that [`BackendSet::pick`] may take is not in `skip`.
    pub fn has_untried(&self, skip: impl Fn(&SocketAddr) -> bool) -> bool {
        let panic = self.in_panic();
        self.backends
            .iter()
            .any(|b| may_take(b, panic) && !skip(&b.addr()))
    }

    /// The backend at `addr`.
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.addr() == addr)
    }
}

/// Whether a request may go to `b`: an available backend, or in a panic any that is not
/// draining (an operator's removal is never overridden).
fn may_take(b: &Backend, panic: bool) -> bool {
    if panic {
        !b.is_draining()
    } else {
        b.is_available()
    }
}

/// The swappable backend set.
#[derive(Debug)]
pub struct Backends {
    current: ArcSwap<BackendSet>,
    writer: Mutex<(Strategy, Option<u64>)>,
    /// The last request was picked in a panic (only its changes are logged).
    panicking: AtomicBool,
}

impl Backends {
    /// A set of `backends` picked by `strategy`.
    pub fn new(backends: Vec<Arc<Backend>>, strategy: Strategy, seed: Option<u64>) -> Self {
        let selector = Selector::new(strategy, backends.len(), seed);
        Self {
            current: ArcSwap::from_pointee(BackendSet { backends, selector }),
            writer: Mutex::new((strategy, seed)),
            panicking: AtomicBool::new(false),
        }
    }

    /// Records whether a request was picked in a panic, logging when that changes.
    pub fn note_panic(&self, panic: bool) {
        if self.panicking.load(Ordering::Relaxed) == panic
            || self.panicking.swap(panic, Ordering::Relaxed) == panic
        {
            return;
        }
        if panic {
            tracing::warn!(
                "every backend is down or ejected: trying them anyway (panic) rather than refusing every request"
            );
        } else {
            tracing::info!("a backend is available again: the panic is over");
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
