use std::fs;

use crate::support::binary::{curl, run, Running};
use crate::support::{Origin, Reply};

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn curl_through_the_binary_hits_the_second_time_and_after_a_restart() {
    let origin = Origin::builder()
        .route("/photo.jpg", |_| {
            Reply::generated(300_000)
                .header("cache-control", "max-age=3600")
                .header("content-type", "image/jpeg")
        })
        .run()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = origin.url("/photo.jpg");
    let proxy = Running::start(dir.path(), &[]);
    let addr = proxy.addr;
    let first = tokio::task::spawn_blocking({
        let url = url.clone();
        move || curl(addr, &["-o", "/dev/null", &url])
    })
    .await
    .unwrap();
    assert!(status_line(&first).contains("200"), "{first}");
    assert!(
        header(&first, "cache-status")
            .unwrap()
            .contains("fwd=miss; stored"),
        "{first}"
    );
    // The entry commits right after the body is sent; ask again until it is a hit.
    let mut second = String::new();
    for _ in 0..500 {
        let u = url.clone();
        second = tokio::task::spawn_blocking(move || curl(addr, &["-o", "/dev/null", &u]))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        if header(&second, "cache-status") == Some("meshcache; hit") {
            break;
        }
    }
    assert_eq!(
        header(&second, "cache-status"),
        Some("meshcache; hit"),
        "{second}"
    );
    let ranged = tokio::task::spawn_blocking({
        let url = url.clone();
        move || curl(addr, &["-r", "0-99", &url])
    })
    .await
    .unwrap();
    assert!(status_line(&ranged).contains("206"), "{ranged}");
    assert_eq!(header(&ranged, "content-length"), Some("100"));
    proxy.stop();

    let proxy = Running::start(dir.path(), &[]);
    let addr = proxy.addr;
    let third = tokio::task::spawn_blocking({
        let url = url.clone();
        move || curl(addr, &["-o", "/dev/null", &url])
    })
    .await
    .unwrap();
    assert_eq!(
        header(&third, "cache-status"),
        Some("meshcache; hit"),
        "after restart: {third}"
    );
    assert_eq!(origin.hits("/photo.jpg"), 1);
    proxy.stop();

    let d = dir.path().to_str().unwrap();
    let stats = run(&["cache", "--data-dir", d, "stats"]);
    assert!(stats.status.success());
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains("urls:       1"),
        "{}",
        String::from_utf8_lossy(&stats.stdout)
    );
    let list =
        String::from_utf8_lossy(&run(&["cache", "--data-dir", d, "list"]).stdout).into_owned();
    assert!(list.contains(&url) && list.contains("300000"), "{list}");
    let purge = run(&["cache", "--data-dir", d, "purge", &url]);
    assert!(
        String::from_utf8_lossy(&purge.stdout).contains("purged 1"),
        "{:?}",
        purge
    );
    let stats =
        String::from_utf8_lossy(&run(&["cache", "--data-dir", d, "stats"]).stdout).into_owned();
    assert!(stats.contains("urls:       0"), "{stats}");
}

#[test]
fn config_check_names_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(&path, "[cache]\nshared = true\nmax_sise = \"1GiB\"\n").unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.toml:3:"), "{err}");
    assert!(err.contains("cache.max_sise"), "{err}");

    fs::write(
        &path,
        "[cache]\nmax_size = \"1GiB\"\nmax_object_size = \"2GiB\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_object_size"));

    fs::write(&path, "[cache]\nshared = true\n").unwrap();
    let out = run(&["config", "check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // `run` with a broken file exits non-zero with the same message, before listening.
    fs::write(&path, "[listen]\nforward = \"nope\"\n").unwrap();
    let out = run(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gateway.toml:2:"),
        "{out:?}"
    );
}

#[test]
fn config_show_prints_every_default_and_the_overrides() {
    let out = run(&["config", "show", "--data-dir", "/tmp/meshcache-show"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "forward = \"127.0.0.1:3128\"",
        "max_size",
        "shared = false",
        "dir = \"/tmp/meshcache-show\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let first = Running::start(dir.path(), &[]);
    let out = run(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use") || err.contains("already open"),
        "{err}"
    );
    first.stop();
}

#[test]
fn ca_export_and_path_create_and_print_the_local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let path = run(&["ca", "--data-dir", d, "path"]);
    assert!(path.status.success(), "{path:?}");
    let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
    assert!(path.ends_with("ca/ca.pem"), "{path}");
    let pem = run(&["ca", "--data-dir", d, "export"]);
    let pem_text = String::from_utf8_lossy(&pem.stdout).into_owned();
    assert!(
        pem_text.starts_with("-----BEGIN CERTIFICATE-----"),
        "{pem_text}"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        pem_text,
        "export prints the file it keeps"
    );
    let der = run(&["ca", "--data-dir", d, "export", "--der"]).stdout;
    assert_eq!(der[0], 0x30, "DER starts with a SEQUENCE");
    // The key is private to its owner; one readable by others is refused.
    use std::os::unix::fs::PermissionsExt;
    let key = std::path::Path::new(&path).with_file_name("ca.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["ca", "--data-dir", d, "export"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );
}

/// A SIGTERM right after the proxy says it is listening is a clean shutdown. (It used to
/// catch SIGTERM only after announcing itself: a signal in between killed it — seen once,
/// under load, in the crash-point tests. The window was a scheduling accident, too short
/// for this test to hit on demand; the handlers are now installed before the proxy
/// starts, which closes it by construction.) Each stop asserts a clean exit.
#[test]
fn a_sigterm_right_after_listening_shuts_down_cleanly() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        Running::start(dir.path(), &["--no-mesh"]).stop();
    }
}
