use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::{client_trusting, contains, handshake, serial_of, H2};
use crate::{Ca, CertError, Leaves};

fn mode_of(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn creates_then_reloads_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let created = Ca::load_or_create(dir.path()).unwrap();
    assert_eq!(created.cert_path(), dir.path().join("ca.pem"));
    assert_eq!(mode_of(&dir.path().join("ca.key")), 0o600);
    assert!(created
        .cert_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(contains(created.cert_der(), b"meshcache local CA "));
    assert!(
        serial_of(created.cert_der()).len() >= 15,
        "a random 128-bit serial"
    );
    assert_eq!(
        fs::read_to_string(created.cert_path()).unwrap(),
        created.cert_pem()
    );

    let loaded = Ca::load_or_create(dir.path()).unwrap();
    assert_eq!(loaded.cert_der(), created.cert_der());
    assert_eq!(loaded.cert_pem(), created.cert_pem());
    // Nothing but the two files: the temporary files were renamed into place.
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.key", "ca.pem"]);
}

#[test]
fn a_reloaded_ca_signs_leaves_that_chain_to_the_created_one() {
    let dir = tempfile::tempdir().unwrap();
    let created = Ca::load_or_create(dir.path()).unwrap();
    let loaded = Arc::new(Ca::load_or_create(dir.path()).unwrap());
    let leaves = Leaves::new(loaded, 4);
    let server = leaves.server_config("example.test", &[H2]).unwrap();
    let client = client_trusting(created.cert_der(), &[H2], 0);
    handshake(client, server, "example.test").unwrap();
}

#[test]
fn creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let ca = Ca::load_or_create(&nested).unwrap();
    assert_eq!(ca.cert_path(), nested.join("ca.pem"));
}

#[test]
fn two_cas_differ() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Ca::load_or_create(a.path()).unwrap();
    let b = Ca::load_or_create(b.path()).unwrap();
    assert_ne!(a.cert_der(), b.cert_der());
    assert_ne!(serial_of(a.cert_der()), serial_of(b.cert_der()));
}

#[test]
fn refuses_a_key_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load_or_create(dir.path()).unwrap();
    let key = dir.path().join("ca.key");
    for mode in [0o644, 0o640, 0o604, 0o700] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        match Ca::load_or_create(dir.path()) {
            Ok(_) if mode & 0o077 == 0 => {}
            Err(e @ CertError::KeyPermissions { .. }) if mode & 0o077 != 0 => {
                let CertError::KeyPermissions { path, mode: seen } = &e else {
                    unreachable!()
                };
                assert_eq!((path, *seen), (&key, mode));
                let message = e.to_string();
                assert!(
                    message.contains(&format!("chmod 600 {}", key.display())),
                    "{message}"
                );
                assert!(message.contains(&format!("{mode:04o}")), "{message}");
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
}

#[test]
fn garbage_files_are_invalid_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load_or_create(dir.path()).unwrap();
    let cert = dir.path().join("ca.pem");
    let key = dir.path().join("ca.key");
    let good_key = fs::read(&key).unwrap();

    fs::write(&cert, "this is not a certificate\n").unwrap();
    let e = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == cert),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&cert.display().to_string()),
        "{e}"
    );

    fs::write(&cert, [0xff, 0xfe, 0x00]).unwrap();
    let e = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == cert),
        "{e:?}"
    );

    // A valid certificate with a garbage key: the key file is named.
    let other = tempfile::tempdir().unwrap();
    fs::write(&cert, Ca::load_or_create(other.path()).unwrap().cert_pem()).unwrap();
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == key),
        "{e:?}"
    );

    // A valid key that is not the certificate's.
    fs::write(&key, good_key).unwrap();
    let e = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, message } if *path == key && message.contains("does not belong")),
        "{e:?}"
    );
}

#[test]
fn a_missing_key_beside_a_certificate_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let created = Ca::load_or_create(dir.path()).unwrap();
    let key = dir.path().join("ca.key");
    fs::remove_file(&key).unwrap();
    let e = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == key),
        "{e:?}"
    );
    // The certificate users installed is still there.
    assert_eq!(
        fs::read_to_string(created.cert_path()).unwrap(),
        created.cert_pem()
    );
}

#[test]
fn a_key_without_its_certificate_is_replaced() {
    // What a crash between the two renames leaves: the key, not the certificate.
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::load_or_create(dir.path()).unwrap();
    fs::remove_file(first.cert_path()).unwrap();
    let second = Ca::load_or_create(dir.path()).unwrap();
    assert_ne!(second.cert_der(), first.cert_der());
    assert!(Ca::load_or_create(dir.path()).is_ok());
}
