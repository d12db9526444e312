//! Free space on the filesystem that holds the cache, so a full disk is seen coming
//! instead of discovered half-way through a body.

use std::path::Path;

/// Bytes available to this (unprivileged) process on the filesystem of `path`, or `None`
/// when the platform cannot tell.
#[cfg(unix)]
pub fn available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs only writes into it, and we read it only on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn available(_path: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_space_for_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::available(dir.path()).is_some_and(|n| n > 0));
        assert_eq!(super::available(&dir.path().join("missing")), None);
    }
}
