//! The ticketrush broker.
