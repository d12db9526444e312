use std::fs;
use std::sync::Arc;

use rustls::CertificateError;

use super::{handshake, is_name_error, H2, HTTP1};
use crate::{origin_client_config, Ca, CertError, Leaves};

fn ca_in(dir: &std::path::Path) -> Arc<Ca> {
    Arc::new(Ca::load_or_create(dir).unwrap())
}

#[test]
fn an_extra_root_verifies_leaves_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_in(&dir.path().join("ca"));
    let root = dir.path().join("private-ca.pem");
    fs::write(&root, ca.cert_pem()).unwrap();

    let client = origin_client_config(std::slice::from_ref(&root)).unwrap();
    assert_eq!(client.alpn_protocols, [H2.to_vec(), HTTP1.to_vec()]);
    let server = Leaves::new(ca, 4)
        .server_config("origin.test", &[H2, HTTP1])
        .unwrap();
    let outcome = handshake(client.clone(), server.clone(), "origin.test").unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(H2));
    let e = handshake(client, server, "other.test").unwrap_err();
    assert!(is_name_error(&e), "{e:?}");
}

#[test]
fn every_certificate_of_a_root_file_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let first = ca_in(&dir.path().join("one"));
    let second = ca_in(&dir.path().join("two"));
    let root = dir.path().join("roots.pem");
    fs::write(&root, format!("{}{}", first.cert_pem(), second.cert_pem())).unwrap();

    let client = origin_client_config(&[root]).unwrap();
    for ca in [first, second] {
        let server = Leaves::new(ca, 4)
            .server_config("origin.test", &[HTTP1])
            .unwrap();
        handshake(client.clone(), server, "origin.test").unwrap();
    }
}

#[test]
fn without_the_extra_root_our_leaves_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Leaves::new(ca_in(dir.path()), 4)
        .server_config("origin.test", &[H2])
        .unwrap();
    let e = handshake(origin_client_config(&[]).unwrap(), server, "origin.test").unwrap_err();
    assert_eq!(
        e,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn a_missing_root_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = origin_client_config(std::slice::from_ref(&missing)).unwrap_err();
    match &e {
        CertError::Io { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn a_root_file_without_certificates_is_invalid_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "nothing here\n").unwrap();
    let e = origin_client_config(std::slice::from_ref(&empty)).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == empty),
        "{e:?}"
    );

    let broken = dir.path().join("broken.pem");
    fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let e = origin_client_config(std::slice::from_ref(&broken)).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, .. } if *path == broken),
        "{e:?}"
    );

    let unusable = dir.path().join("unusable.pem");
    fs::write(&unusable, NOT_A_CERTIFICATE).unwrap();
    let e = origin_client_config(std::slice::from_ref(&unusable)).unwrap_err();
    assert!(
        matches!(&e, CertError::Invalid { path, message } if *path == unusable && message.contains("not a usable CA")),
        "{e:?}"
    );
}

/// A well-formed PEM CERTIFICATE block whose content is no certificate.
const NOT_A_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

/// Linux and the other Unix systems: the system store, as rustls-native-certs loads it, with
/// the bundled roots when it is empty.
#[cfg(not(any(
    target_os = "android",
    target_os = "ios",
    target_os = "macos",
    target_os = "windows"
)))]
mod system_store {
    use std::path::Path;
    use std::process::Command;

    use rustls_native_certs::{load_certs_from_paths, CertificateResult};

    use super::*;
    use crate::origin::native::{client_config, system_roots};

    /// Where [`ssl_cert_file_child`] finds the CA whose certificate `SSL_CERT_FILE` holds.
    const CHILD_CA_DIR: &str = "MESHCACHE_CERTS_TEST_CA_DIR";

    fn refused(e: rustls::Error) {
        assert_eq!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn a_root_only_in_the_system_store_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(&dir.path().join("ca"));
        let other = ca_in(&dir.path().join("other"));
        let store = dir.path().join("store");
        fs::create_dir(&store).unwrap();
        let file = store.join("ca-certificates.crt");
        fs::write(&file, ca.cert_pem()).unwrap();

        // As SSL_CERT_FILE names it, and as SSL_CERT_DIR does.
        for (file, dir) in [(Some(file.as_path()), None), (None, Some(store.as_path()))] {
            let found = || load_certs_from_paths(file, dir);
            let roots = system_roots(found());
            assert_eq!(roots.len(), 1, "the store only: no bundled roots added");

            let client = client_config(found(), &[]).unwrap();
            assert_eq!(client.alpn_protocols, [H2.to_vec(), HTTP1.to_vec()]);
            let server = Leaves::new(ca.clone(), 4)
                .server_config("origin.test", &[H2])
                .unwrap();
            handshake(client.clone(), server.clone(), "origin.test").unwrap();
            let e = handshake(client.clone(), server, "other.test").unwrap_err();
            assert!(is_name_error(&e), "{e:?}");

            let server = Leaves::new(other.clone(), 4)
                .server_config("origin.test", &[H2])
                .unwrap();
            refused(handshake(client, server, "origin.test").unwrap_err());
        }
    }

    #[test]
    fn an_empty_system_store_falls_back_to_the_bundled_roots() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let unusable = dir.path().join("unusable.pem");
        fs::write(&unusable, NOT_A_CERTIFICATE).unwrap();
        let missing = dir.path().join("missing.pem");

        let nothing = load_certs_from_paths(Some(&missing), None);
        assert!(nothing.certs.is_empty() && !nothing.errors.is_empty());
        let unusable = load_certs_from_paths(Some(&unusable), None);
        assert_eq!(unusable.certs.len(), 1);
        for found in [
            CertificateResult::default(),
            load_certs_from_paths(Some(&empty), None),
            nothing,
            unusable,
        ] {
            let roots = system_roots(found);
            assert!(!roots.is_empty());
            assert_eq!(roots.roots, webpki_roots::TLS_SERVER_ROOTS);
        }
        client_config(CertificateResult::default(), &[]).unwrap();
    }

    #[test]
    fn load_errors_beside_usable_certificates_are_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(&dir.path().join("ca"));
        let file = dir.path().join("ca-certificates.crt");
        fs::write(&file, ca.cert_pem()).unwrap();
        let found = load_certs_from_paths(Some(&file), Some(&dir.path().join("missing")));
        assert!(!found.errors.is_empty());

        let client = client_config(found, &[]).unwrap();
        let server = Leaves::new(ca, 4)
            .server_config("origin.test", &[H2])
            .unwrap();
        handshake(client, server, "origin.test").unwrap();
    }

    #[test]
    fn extra_roots_are_trusted_on_top_of_the_system_store() {
        let dir = tempfile::tempdir().unwrap();
        let system = ca_in(&dir.path().join("system"));
        let private = ca_in(&dir.path().join("private"));
        let file = dir.path().join("ca-certificates.crt");
        fs::write(&file, system.cert_pem()).unwrap();
        let extra = dir.path().join("private-ca.pem");
        fs::write(&extra, private.cert_pem()).unwrap();

        let client = client_config(
            load_certs_from_paths(Some(&file), None),
            std::slice::from_ref(&extra),
        )
        .unwrap();
        for ca in [&system, &private] {
            let server = Leaves::new(ca.clone(), 4)
                .server_config("origin.test", &[H2])
                .unwrap();
            handshake(client.clone(), server, "origin.test").unwrap();
        }

        // And on top of the bundled roots.
        let client = client_config(CertificateResult::default(), &[extra]).unwrap();
        let server = Leaves::new(private, 4)
            .server_config("origin.test", &[H2])
            .unwrap();
        handshake(client.clone(), server, "origin.test").unwrap();
        let server = Leaves::new(system, 4)
            .server_config("origin.test", &[H2])
            .unwrap();
        refused(handshake(client, server, "origin.test").unwrap_err());
    }

    #[test]
    fn a_bad_extra_root_file_is_an_error_naming_it_whatever_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "nothing here\n").unwrap();
        for bad in [missing, empty] {
            for found in [CertificateResult::default, || {
                load_certs_from_paths(None, Some(Path::new("/nonexistent")))
            }] {
                let e = client_config(found(), std::slice::from_ref(&bad)).unwrap_err();
                assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");
            }
        }
    }

    /// The real thing: [`origin_client_config`] trusts what `SSL_CERT_FILE` names, in a
    /// child process (this one's environment is left alone) that runs
    /// [`ssl_cert_file_child`].
    #[test]
    fn origin_client_config_trusts_the_file_ssl_cert_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = ca_in(&ca_dir);
        let file = dir.path().join("ca-certificates.crt");
        fs::write(&file, ca.cert_pem()).unwrap();

        let (_, module) = module_path!().split_once("::").unwrap();
        let child = format!("{module}::ssl_cert_file_child");
        let output = Command::new(std::env::current_exe().unwrap())
            .args([child.as_str(), "--exact", "--ignored", "--test-threads=1"])
            .env("SSL_CERT_FILE", &file)
            .env_remove("SSL_CERT_DIR")
            .env(CHILD_CA_DIR, &ca_dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    #[ignore = "run by origin_client_config_trusts_the_file_ssl_cert_file_names in a child process"]
    fn ssl_cert_file_child() {
        let Some(ca_dir) = std::env::var_os(CHILD_CA_DIR) else {
            return;
        };
        let ca = ca_in(Path::new(&ca_dir));
        let server = Leaves::new(ca, 4)
            .server_config("origin.test", &[H2])
            .unwrap();
        handshake(origin_client_config(&[]).unwrap(), server, "origin.test").unwrap();
    }
}
