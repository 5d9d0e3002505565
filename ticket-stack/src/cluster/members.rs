//! The cluster's processes as a list that changes while the cluster runs.

use std::sync::Arc;

use super::process::{Kind, Supervised};

/// The cluster's processes, shared by the runner, chaos, the API autoscaler and the status page
/// (the list changes as APIs are added and removed).
#[derive(Debug, Clone, Default)]
pub struct Members(Arc<std::sync::Mutex<Vec<Arc<Supervised>>>>);

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Supervised>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every process now, in start order.
    pub fn all(&self) -> Vec<Arc<Supervised>> {
        self.lock().clone()
    }

    /// Adds a process.
    pub(super) fn add(&self, p: Arc<Supervised>) {
        self.lock().push(p);
    }

    /// Takes the process named `name` out of the list.
    pub(super) fn remove(&self, name: &str) -> Option<Arc<Supervised>> {
        let mut list = self.lock();
        let i = list.iter().position(|p| p.spec().name() == name)?;
        Some(list.remove(i))
    }

    /// Takes every process of `kind` out of the list.
    pub(super) fn take_kind(&self, kind: Kind) -> Vec<Arc<Supervised>> {
        let mut list = self.lock();
        let (taken, kept) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|p| p.spec().kind == kind);
        *list = kept;
        taken
    }
}
