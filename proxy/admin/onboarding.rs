//! What a passenger needs to use the proxy: the CA certificate (PEM and DER), install steps
//! per platform (as mitmproxy's mitm.it offers them), and the PAC file.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;

use crate::flow::{Outcome, Phase};
use crate::http::full;
use crate::http::respond::build;
use crate::state::State;

/// `/ca.pem` or `/ca.der`, when interception is set up.
pub(super) fn ca(state: &State, der: bool) -> Option<Outcome> {
    let tls = state.tls.as_ref()?;
    let (ctype, body): (&'static str, Bytes) = if der {
        (
            "application/x-x509-ca-cert",
            Bytes::copy_from_slice(tls.ca.cert_der()),
        )
    } else {
        (
            "application/x-pem-file",
            Bytes::copy_from_slice(tls.ca.cert_pem().as_bytes()),
        )
    };
    let mut h = http::HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(Outcome {
        response: build(StatusCode::OK, h, full(body)),
        phase: Phase::Local("ca"),
        fwd_status: None,
    })
}

/// The PAC file: everything through this proxy, local names direct.
pub(super) fn pac(state: &State) -> String {
    format!(
        "function FindProxyForURL(url, host) {{\n  if (isPlainHostName(host) || host == \"localhost\" || shExpMatch(host, \"127.*\")) return \"DIRECT\";\n  return \"PROXY {}; DIRECT\";\n}}\n",
        state.listen
    )
}

/// Install steps for the CA, per platform (as mitmproxy's mitm.it offers them).
pub(super) const INSTALL: &str = r#"<h2>Cache HTTPS too: install the meshcache certificate</h2>
<p>meshcache decrypts HTTPS on this device only, with a certificate authority created on
this device. Download it: <a href="/ca.pem">ca.pem</a> (most systems) or
<a href="/ca.der">ca.der</a> (Android, Windows). Or run <code>meshcache ca export</code>.</p>
<dl>
<dt>Android</dt><dd>Settings → Security → Encryption &amp; credentials → Install a certificate → CA certificate → pick <code>ca.der</code>. Apps trust user CAs only if they opt in (network security config).</dd>
<dt>iOS / iPadOS</dt><dd>Open <code>/ca.pem</code> in Safari → Allow → Settings → General → VPN &amp; Device Management → install the profile; then Settings → General → About → Certificate Trust Settings → enable full trust for "meshcache local CA".</dd>
<dt>macOS</dt><dd><code>sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.pem</code></dd>
<dt>Windows</dt><dd><code>certutil -addstore root ca.der</code> (as administrator), or double-click → Install Certificate → Local Machine → Trusted Root Certification Authorities.</dd>
<dt>Linux (Debian/Ubuntu)</dt><dd><code>sudo cp ca.pem /usr/local/share/ca-certificates/meshcache.crt &amp;&amp; sudo update-ca-certificates</code>; curl: <code>curl --cacert ca.pem</code>.</dd>
<dt>Firefox</dt><dd>Settings → Privacy &amp; Security → Certificates → View Certificates → Authorities → Import → <code>ca.pem</code> → trust for websites.</dd>
</dl>
<p>Automatic proxy configuration: point the system or browser at <a href="/proxy.pac">/proxy.pac</a>.</p>
"#;
