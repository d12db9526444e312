//! Certificates for meshcache: the local certificate authority, the leaf certificates that
//! let the proxy terminate TLS for the hosts its clients ask for, and the TLS client
//! configuration for origins.
//!
//! - [`Ca`]: the local CA, created on first run in the data directory (`ca.pem`, and
//!   `ca.key` with mode 0600) and installed by users on their devices.
//! - [`Leaves`]: mints leaf certificates signed by the CA and caches one rustls
//!   [`ServerConfig`](rustls::ServerConfig) per host in a bounded map.
//! - [`origin_client_config`]: the rustls [`ClientConfig`](rustls::ClientConfig) for origins,
//!   always verifying, against the operating system's trust store plus any private CAs
//!   given: on Linux (and the other Unix systems) the system's certificates, honouring
//!   `SSL_CERT_FILE` and `SSL_CERT_DIR`, with the bundled Mozilla roots when there are none;
//!   on Android, iOS, macOS and Windows the platform's verifier.
//! - [`CertError`]: every failure, naming the file at fault.
//!
//! Every configuration uses the ring crypto provider explicitly, never a process-wide default.

mod bounded;
mod ca;
mod crypto;
mod error;
mod files;
mod leaf;
mod origin;

#[cfg(test)]
mod tests;

pub use ca::Ca;
pub use error::CertError;
pub use leaf::Leaves;
pub use origin::origin_client_config;
