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
}
