//! ticketrush's benchmarks: criterion micro-benchmarks (`benches/`) and load tools that drive
//! running servers over loopback (`src/bin/`). Figures and how they were produced are in
//! `RESULTS.md`.

pub mod naive;
pub mod peers;
pub mod workload;
