//! The ticket API, purchase workers, stores, stack runner and buyer crowd.
//!
//! Layout: [`domain`] holds the sale rules (pure), [`store`] the databases, [`queue`] the purchase
//! queue abstraction, [`http`] the API, [`worker`] the deciding loop.

pub mod affinity;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod rush;
pub mod stack;
pub mod store;
pub mod supervisor;
pub mod worker;
