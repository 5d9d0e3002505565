//! Arbitrary text as a `--config` file: parsing, resolving against no flags and validating it
//! never panic, and whatever validates has the invariants the balancer relies on.
#![no_main]

use balancer::config::{Args, Config, FileConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    let args = <Args as clap::Parser>::parse_from(["balancer"]);
    let Ok(config) = Config::resolve(&args, Some(&file)) else {
        return;
    };
    if config.validate().is_ok() {
        assert!(!config.backends.is_empty());
        assert!(config.workers >= 1);
        assert!(config.backends.iter().all(|b| b.weight >= 1));
        assert!(config.admin_token.as_deref() != Some(""));
    }
});
