//! `broker`
fn main() {}
