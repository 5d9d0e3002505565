//! The credentials a stack's APIs share: a signing key for buyer sessions and an organizer
//! token, kept under the data dir (readable by the owner only) so that a restart on the same
//! data keeps every session valid and the token the operator was shown.

use std::io::Write;
use std::path::{Path, PathBuf};

use ticket_svc::access::KeyRing;

/// The files under a data dir.
const SIGNING_KEY_FILE: &str = "signing-key";
const ORGANIZER_TOKEN_FILE: &str = "organizer-token";

/// A stack's shared credentials.
#[derive(Clone)]
pub struct StackCredentials {
    /// `ID:SECRET`, what `api --signing-key` takes.
    pub signing_key: String,
    /// What organizer routes accept as `Authorization: Bearer TOKEN`.
    pub organizer_token: String,
    /// Where the token is kept, to tell the operator.
    pub organizer_token_file: PathBuf,
}

impl std::fmt::Debug for StackCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackCredentials")
            .field("organizer_token_file", &self.organizer_token_file)
            .finish_non_exhaustive()
    }
}

impl StackCredentials {
    /// The credentials kept under `data_dir`, each made (random) the first time.
    ///
    /// # Errors
    /// A file that cannot be read or written; no randomness.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let signing_key = read_or_write(&data_dir.join(SIGNING_KEY_FILE), || {
            KeyRing::generate_spec().map_err(std::io::Error::other)
        })?;
        let organizer_token_file = data_dir.join(ORGANIZER_TOKEN_FILE);
        let organizer_token = read_or_write(&organizer_token_file, || {
            KeyRing::generate_spec()
                .map(|spec| format!("org-{}", spec.replace(':', "")))
                .map_err(std::io::Error::other)
        })?;
        Ok(Self {
            signing_key,
            organizer_token,
            organizer_token_file,
        })
    }

    /// The `Authorization` header value of the organizer.
    pub fn organizer_authorization(&self) -> String {
        format!("Bearer {}", self.organizer_token)
    }
}

/// The trimmed content of `path`, or `make()` written there first (mode 0600).
fn read_or_write(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<String>,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            writeln!(file, "{value}")?;
            file.sync_all()?;
            Ok(value)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = StackCredentials::load_or_create(dir.path()).unwrap();
        let again = StackCredentials::load_or_create(dir.path()).unwrap();
        assert_eq!(first.signing_key, again.signing_key);
        assert_eq!(first.organizer_token, again.organizer_token);
        KeyRing::parse(&[first.signing_key.as_str()]).unwrap();
        ticket_svc::access::OrganizerTokens::parse(&[first.organizer_token.as_str()]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.organizer_token_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = StackCredentials::load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(first.signing_key, other.signing_key);
    }
}
