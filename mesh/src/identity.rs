//! This device's endpoint key, kept in `<mesh dir>/key` (mode 0600) so its endpoint id —
//! what peers, tickets and attestations name — survives restarts.

use std::io::Write;
use std::path::Path;

use iroh::SecretKey;

use crate::MeshError;

/// Loads the key, creating it on first use. A key file that others can read is refused.
pub fn load_or_create(dir: &Path) -> Result<SecretKey, MeshError> {
    let path = dir.join("key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)
                    .map_err(|e| MeshError::Io(format!("{}: {e}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(MeshError::Io(format!(
                        "{} is readable by others (mode {:o}); run: chmod 600 {}",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    )));
                }
            }
            let raw = data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.trim().as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    MeshError::Io(format!(
                        "{}: not a 64-digit hex key (delete it to make a new identity)",
                        path.display()
                    ))
                })?;
            Ok(SecretKey::from_bytes(&raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            write_private(&path, crate::hex(&key.to_bytes()).as_bytes())?;
            tracing::info!(id = %key.public(), "created this device's mesh identity");
            Ok(key)
        }
        Err(e) => Err(MeshError::Io(format!("{}: {e}", path.display()))),
    }
}

/// Writes a file only its owner can read, atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), MeshError> {
    let io = |e: std::io::Error| MeshError::Io(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
