//! What a selector may know about a backend ([`Candidate`]: its weight and its load), and
//! the one load comparison the load-aware strategies share. Every strategy builds on this
//! module and it builds on none of them; the upstream `Backend` implements the trait.

/// What a selector may know about a backend.
pub trait Candidate {
    /// Relative share of traffic (≥ 1).
    fn weight(&self) -> u32;
    /// Requests in flight right now (the load measure of least-conn and p2c).
    fn in_flight(&self) -> u64;
}

/// `a` carries less load per unit of weight than `b`: `a.in_flight / a.weight <
/// b.in_flight / b.weight`, compared by cross-multiplying in u128 (no division, no overflow).
pub(crate) fn less_loaded<C: Candidate>(a: &C, b: &C) -> bool {
    let lhs = u128::from(a.in_flight()) * u128::from(b.weight().max(1));
    let rhs = u128::from(b.in_flight()) * u128::from(a.weight().max(1));
    lhs < rhs
}
