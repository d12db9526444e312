//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong loading, creating or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CA key file is readable by other users: we refuse to use it.
    #[error(
        "{path}: the CA private key is accessible to other users (mode {mode:04o}); \
         run `chmod 600 {path}` and start again",
        path = path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
    },
    /// A file exists but its content is not what it should be (unparsable PEM, wrong key...).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A certificate or key could not be generated or signed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A rustls configuration could not be built.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}

impl CertError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CertError {
        CertError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> CertError {
        CertError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
