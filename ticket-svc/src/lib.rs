//! The ticket API, purchase workers, stores, stack runner and buyer crowd.
