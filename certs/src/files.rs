//! Writing files atomically with a given mode, and checking a key file's mode.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::crypto::{hex, random_bytes};
use crate::CertError;

/// Writes `contents` to `path` through a temporary file in the same directory, then a rename,
/// so that a crash leaves either the old file or the complete new one, never a torn one.
///
/// On Unix the temporary file is created with `mode` (less the umask) by `open` itself:
/// a private key is never, even for an instant, readable by anyone else.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let suffix = hex(&random_bytes::<6>()?);
    let tmp = dir.join(format!(".{}.{suffix}.tmp", name.unwrap_or_default()));

    let result = write_new(&tmp, contents, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| CertError::io(path, e)));
    if result.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

fn write_new(tmp: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    // create_new: never follow a symlink or reuse a file someone else planted at this name.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp).map_err(|e| CertError::io(tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CertError::io(tmp, e))
}

/// Makes the rename durable: fsync the directory that holds the new entry.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), CertError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CertError::io(dir, e))
}

/// Elsewhere a directory cannot be opened to be synced: the rename is what we have.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), CertError> {
    Ok(())
}

/// Refuses a private key file that the group or others may access: a readable CA key lets
/// any local user mint certificates that every client trusting our CA accepts for any site.
pub(crate) fn check_key_mode(path: &Path) -> Result<(), CertError> {
    let metadata = fs::metadata(path).map_err(|e| CertError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CertError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}
