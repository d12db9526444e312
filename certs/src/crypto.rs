//! The crypto provider and randomness every part of this crate uses.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use crate::CertError;

/// The ring provider, always passed explicitly: a process-wide default provider would
/// depend on which crates happen to be linked (and whoever installs one first), and the
/// project standardizes on ring (iroh uses it).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `N` bytes from the operating system's CSPRNG (through the provider).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CertError> {
    let mut bytes = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError::Generate("the system random number generator failed".into()))?;
    Ok(bytes)
}

/// A random, positive 128-bit serial number.
///
/// Random rather than rcgen's default (a hash of the subject's public key): every leaf
/// shares one key, and browsers reject two different certificates with the same issuer
/// and serial (Firefox's SEC_ERROR_REUSED_ISSUER_AND_SERIAL).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, CertError> {
    let mut bytes = random_bytes::<16>()?;
    // DER INTEGERs are signed: a clear top bit keeps the serial positive, as RFC 5280 requires.
    bytes[0] &= 0x7f;
    // And non-zero (also RFC 5280); 126 random bits remain.
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
