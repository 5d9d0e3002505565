//! Bugs planted on purpose, to show that the simulator finds them (`crate::sim`).
//!
//! Compiled in only with the `planted-bugs` feature, and then active only on a thread that a
//! simulated run switched on with [`set`]: the broker's own tests and binaries never see one.

/// A bug the broker can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// Every fifth partition sync is skipped and reported as done.
    SkipSync,
    /// Recovery keeps a torn record at the end of a segment instead of cutting it.
    KeepTornRecord,
    /// A group journal answers an acknowledgement before its entry is synced, and syncs it
    /// with the next batch.
    AckBeforeJournalSync,
}

impl Planted {
    /// Every planted bug.
    pub const ALL: [Self; 3] = [
        Self::SkipSync,
        Self::KeepTornRecord,
        Self::AckBeforeJournalSync,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipSync => "skip-sync",
            Self::KeepTornRecord => "keep-torn-record",
            Self::AckBeforeJournalSync => "ack-before-journal-sync",
        }
    }
}

/// Whether this build can plant bugs.
pub const ENABLED: bool = cfg!(feature = "planted-bugs");

#[cfg(feature = "planted-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<(Option<Planted>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// Switches a bug on (or all off) for this thread.
pub fn set(bug: Option<Planted>) {
    #[cfg(feature = "planted-bugs")]
    ACTIVE.with(|a| a.set((bug, 0)));
    #[cfg(not(feature = "planted-bugs"))]
    let _ = bug;
}

/// Whether `bug` is switched on for this thread.
pub fn active(bug: Planted) -> bool {
    #[cfg(feature = "planted-bugs")]
    return ACTIVE.with(|a| a.get().0 == Some(bug));
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Whether `bug` is on and strikes this time: every `n`th call.
pub fn strikes(bug: Planted, n: u64) -> bool {
    #[cfg(feature = "planted-bugs")]
    return ACTIVE.with(|a| {
        let (on, count) = a.get();
        a.set((on, count + 1));
        on == Some(bug) && (count + 1) % n.max(1) == 0
    });
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = (bug, n);
        false
    }
}
