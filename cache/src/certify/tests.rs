//! The rule table, the streaming check, and the stated digests (client, origin).
use super::*;

const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn c(url: &str) -> Option<Certified> {
    certify(&url.parse().unwrap(), None)
}

fn check(cert: &Certified, body: &[u8]) -> Result<(), String> {
    let mut k = Check::new(cert);
    k.update(body);
    k.finish()
}

#[test]
fn apt_by_hash() {
    let u = format!(
        "http://deb.debian.org/debian/dists/stable/main/binary-amd64/by-hash/SHA256/{SHA256_ABC}"
    );
    let cert = c(&u).unwrap();
    assert_eq!((cert.rule, cert.alg), ("apt-by-hash", Alg::Sha256));
    assert!(check(&cert, b"abc").is_ok());
    assert!(check(&cert, b"abd").is_err());
    assert!(
        c(&u.replace("SHA256", "MD5Sum")).is_none(),
        "MD5 proves nothing"
    );
    assert!(c(&u[..u.len() - 2]).is_none(), "a short digest");
    let sha512 = ring::digest::digest(&ring::digest::SHA512, b"abc");
    let hex: String = sha512.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let cert = c(&format!("http://m/by-hash/SHA512/{hex}")).unwrap();
    assert!(check(&cert, b"abc").is_ok());
}

#[test]
fn oci_blobs_and_manifests() {
    for kind in ["blobs", "manifests"] {
        let cert = c(&format!(
            "https://registry-1.docker.io/v2/library/debian/{kind}/sha256:{SHA256_ABC}"
        ))
        .unwrap();
        assert_eq!(cert.rule, "oci-digest");
        assert!(check(&cert, b"abc").is_ok());
    }
    assert!(
        c("https://r/v2/library/debian/manifests/latest").is_none(),
        "a tag"
    );
    assert!(c(&format!("https://r/v3/x/blobs/sha256:{SHA256_ABC}")).is_none());
}

#[test]
fn pypi_files() {
    let b2 = blake2b_simd::Params::new().hash_length(32).hash(b"abc");
    let hex: String = b2.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let u = format!(
        "https://files.pythonhosted.org/packages/{}/{}/{}/pkg-1.0.tar.gz",
        &hex[..2],
        &hex[2..4],
        &hex[4..]
    );
    let cert = c(&u).unwrap();
    assert_eq!((cert.rule, cert.alg), ("pypi", Alg::Blake2b256));
    assert!(check(&cert, b"abc").is_ok());
    assert!(check(&cert, b"abcd").is_err());
    assert!(c(&u.replace("files.pythonhosted.org", "example.org")).is_none());
}

#[test]
fn ipfs_raw_blocks() {
    // CIDv1 raw, sha2-256 of "abc": multibase b, version 1, codec raw (0x55).
    let mut bytes = vec![0x01, 0x55, 0x12, 0x20];
    bytes.extend(unhex(SHA256_ABC, Alg::Sha256).unwrap());
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    let cid = format!("b{}", spec.encoding().unwrap().encode(&bytes));
    let cert = c(&format!("http://gw/ipfs/{cid}?format=raw")).unwrap();
    assert_eq!(cert.rule, "ipfs-raw");
    assert!(check(&cert, b"abc").is_ok());
    assert!(
        c(&format!("http://gw/ipfs/{cid}")).is_none(),
        "not asked as a raw block"
    );
    let accept = HeaderValue::from_static("application/vnd.ipld.raw");
    assert!(certify(
        &format!("http://gw/ipfs/{cid}").parse().unwrap(),
        Some(&accept)
    )
    .is_some());
    // CIDv0 (base58btc) of the same multihash.
    let mh = [
        &[0x12u8, 0x20][..],
        &unhex(SHA256_ABC, Alg::Sha256).unwrap(),
    ]
    .concat();
    let b58 = {
        // Encode base58 the slow way for the test.
        let mut n = mh.clone();
        let mut out = Vec::new();
        while n.iter().any(|&b| b != 0) {
            let mut rem = 0u32;
            for b in n.iter_mut() {
                let v = (rem << 8) | u32::from(*b);
                *b = (v / 58) as u8;
                rem = v % 58;
            }
            out.push(b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"[rem as usize]);
        }
        out.reverse();
        String::from_utf8(out).unwrap()
    };
    assert!(b58.starts_with("Qm") && b58.len() == 46, "{b58}");
    let cert = c(&format!("http://gw/ipfs/{b58}?format=raw")).unwrap();
    assert!(check(&cert, b"abc").is_ok());
    assert!(c("http://gw/ipfs/bnotbase32!?format=raw").is_none());
}

#[test]
fn meshcache_by_digest() {
    let cert = c(&format!(
        "http://any.host/.well-known/meshcache/by-digest/sha-256/{SHA256_ABC}"
    ))
    .unwrap();
    assert_eq!(cert.rule, "by-digest");
    assert!(check(&cert, b"abc").is_ok());
    assert!(c(&format!(
        "http://h/.well-known/meshcache/by-digest/md5/{SHA256_ABC}"
    ))
    .is_none());
    assert!(c("http://h/.well-known/meshcache/by-digest/sha-256/zz").is_none());
    assert!(c("http://h/ordinary/file.txt").is_none());
}

#[test]
fn freshness_is_added_only_when_none_is_stated() {
    let mut h = HeaderMap::new();
    assert!(immutable_unless_stated(&mut h));
    assert_eq!(h["cache-control"], IMMUTABLE);
    let mut h = HeaderMap::new();
    h.insert("cache-control", HeaderValue::from_static("public"));
    assert!(immutable_unless_stated(&mut h));
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    for stated in [
        "max-age=60",
        "no-store",
        "no-cache",
        "private",
        "s-maxage=5",
    ] {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static(stated));
        assert!(!immutable_unless_stated(&mut h), "{stated}");
        assert_eq!(h["cache-control"], stated);
    }
    let mut h = HeaderMap::new();
    h.insert(
        "expires",
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    assert!(!immutable_unless_stated(&mut h));
}

fn sri_of(alg: &'static ring::digest::Algorithm, name: &str, body: &[u8]) -> String {
    let d = ring::digest::digest(alg, body);
    format!("{name}-{}", data_encoding::BASE64.encode(d.as_ref()))
}

#[test]
fn integrity_takes_the_strongest_algorithm_and_skips_unknown_ones() {
    let s256 = sri_of(&ring::digest::SHA256, "sha256", b"abc");
    let s512 = sri_of(&ring::digest::SHA512, "sha512", b"abc");
    let v = |t: &str| integrity(&HeaderValue::from_str(t).unwrap());
    let got = v(&format!("md5-xyz {s256} {s512}?opt")).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].rule, got[0].alg), ("integrity", Alg::Sha512));
    assert_eq!(got[0].sri(), s512);
    let mut k = Check::all(&got);
    k.update(b"abc");
    assert!(k.finish().is_ok());
    assert!(
        v("md5-1B2M2Y8AsgTpgAmY7PhCfg==").is_err(),
        "no known algorithm"
    );
    assert!(v("sha256-AAAA").is_err(), "wrong length");
    assert!(v("sha256-***").is_err(), "not base64");
    assert!(v("").is_err());
}

#[test]
fn every_statement_must_be_met_by_one_of_its_values() {
    let url = c(&format!(
        "http://h/.well-known/meshcache/by-digest/sha-256/{SHA256_ABC}"
    ))
    .unwrap();
    let wrong = sri_of(&ring::digest::SHA256, "sha256", b"xyz");
    let right = sri_of(&ring::digest::SHA256, "sha256", b"abc");
    let stated = integrity(&HeaderValue::from_str(&format!("{wrong} {right}")).unwrap()).unwrap();
    let mut all = vec![url.clone()];
    all.extend(stated);
    let mut k = Check::all(&all);
    k.update(b"abc");
    assert!(k.finish().is_ok(), "the URL and one stated value match");
    let only_wrong = integrity(&HeaderValue::from_str(&wrong).unwrap()).unwrap();
    let mut k = Check::all(&[vec![url], only_wrong].concat());
    k.update(b"abc");
    let err = k.finish().unwrap_err();
    assert!(err.contains("Meshcache-Integrity"), "{err}");
}

#[test]
fn origin_digests_content_digest_first_and_only_sha2() {
    let b64 =
        |alg, body: &[u8]| data_encoding::BASE64.encode(ring::digest::digest(alg, body).as_ref());
    let mut h = HeaderMap::new();
    h.insert(
        "content-digest",
        HeaderValue::from_str(&format!(
            "md5=:AAAA:, sha-256=:{}:, sha-512=:{}:",
            b64(&ring::digest::SHA256, b"abc"),
            b64(&ring::digest::SHA512, b"abc")
        ))
        .unwrap(),
    );
    let got = stated_digest(&h);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].rule, got[0].alg), ("origin-digest", Alg::Sha512));
    let mut h = HeaderMap::new();
    h.insert(
        "repr-digest",
        HeaderValue::from_static("sha-256=:AAAA:, unixsum=:1:"),
    );
    assert!(
        stated_digest(&h).is_empty(),
        "a digest of the wrong length counts for nothing"
    );
    h.insert(
        "repr-digest",
        HeaderValue::from_str(&format!("sha-256=:{}:", b64(&ring::digest::SHA256, b"abc")))
            .unwrap(),
    );
    let got = stated_digest(&h);
    assert_eq!(got[0].header_value().unwrap(), h["repr-digest"]);
}
