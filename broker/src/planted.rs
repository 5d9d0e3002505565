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
    /// A replica takes appends and promises from any epoch, older ones included.
    NoPromiseCheck,
    /// A new leader recovers from the longest log, whatever its epoch.
    BestByLength,
    /// A leader counts followers that have not reached its epoch's start towards the commit
    /// point (Raft's "figure 8").
    CountStaleFollowers,
    /// A leader resends from where a follower's log ends, not from where it diverges.
    TrustFollowerEnd,
    /// Retention deletes records up to the log's end, not only committed ones.
    RetainUncommitted,
    /// A replica whose log ends below its leader's log start never starts it again there.
    NoLogRestart,
}

impl Planted {
    /// Every planted bug.
    pub const ALL: [Self; 9] = [
        Self::SkipSync,
        Self::KeepTornRecord,
        Self::AckBeforeJournalSync,
        Self::NoPromiseCheck,
        Self::BestByLength,
        Self::CountStaleFollowers,
        Self::TrustFollowerEnd,
        Self::RetainUncommitted,
        Self::NoLogRestart,
    ];

    /// The bugs of the storage, which the disk-fault simulator (`crate::sim`) finds.
    pub const DISK: [Self; 3] = [
        Self::SkipSync,
        Self::KeepTornRecord,
        Self::AckBeforeJournalSync,
    ];

    /// The bugs of the replication protocol, which its simulation
    /// (`crate::replication::sim`) finds.
    pub const REPLICATION: [Self; 6] = [
        Self::NoPromiseCheck,
        Self::BestByLength,
        Self::CountStaleFollowers,
        Self::TrustFollowerEnd,
        Self::RetainUncommitted,
        Self::NoLogRestart,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipSync => "skip-sync",
            Self::KeepTornRecord => "keep-torn-record",
            Self::AckBeforeJournalSync => "ack-before-journal-sync",
            Self::NoPromiseCheck => "no-promise-check",
            Self::BestByLength => "best-by-length",
            Self::CountStaleFollowers => "count-stale-followers",
            Self::TrustFollowerEnd => "trust-follower-end",
            Self::RetainUncommitted => "retain-uncommitted",
            Self::NoLogRestart => "no-log-restart",
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
