//! The one error type of configuration: what was wrong with a flag, the file, or the
//! settings they resolve to. Below every other part of `config`.

use std::path::PathBuf;

/// Errors found while reading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A backend spec is not `ADDR[,weight=N]`.
    #[error("invalid backend {spec:?}: {reason}")]
    Backend {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration is not `<number><ms|s|m|h>`.
    #[error("invalid duration {0:?} (expected e.g. 500ms, 2s, 1m)")]
    Duration(String),
    /// An address does not parse or resolve.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        source: toml::de::Error,
    },
    /// A value is out of range or settings contradict each other.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting (flag name without dashes).
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
}
