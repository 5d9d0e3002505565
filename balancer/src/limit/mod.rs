//! Protection for the backends and for the balancer itself: the per-client token bucket
//! ([`rate`]), the per-backend concurrency cap with its FIFO wait queue ([`concurrency`]) and the
//! retry budget ([`retry`]). The algorithms are pure and tested without sockets or sleeps.

pub mod concurrency;
pub mod rate;
pub mod retry;
