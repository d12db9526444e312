//! Handing a document to a friend: `meshcache share FILE` adds the file to the body store
//! under a `share:<hash>` tag and prints a ticket (`meshshare…`: the sharer's address, the
//! file's BLAKE3 hash, size and name). The hash is the capability: whoever holds the
//! ticket may fetch that one body, group or not. `meshcache get TICKET` fetches it with a
//! throwaway endpoint; a running proxy serves it at `/share/<ticket>`.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, RelayMode};
use iroh_blobs::api::remote::GetProgressItem;
use iroh_blobs::{Hash, HashAndFormat};
use serde::{Deserialize, Serialize};

use crate::{Mesh, MeshError};

const PREFIX: &str = "meshshare";

/// What a share ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareTicket {
    pub addr: EndpointAddr,
    pub hash: [u8; 32],
    pub size: u64,
    pub name: String,
}

impl ShareTicket {
    pub fn encode(&self) -> String {
        let raw = postcard::to_stdvec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&raw)
                .to_ascii_lowercase()
        )
    }

    pub fn decode(s: &str) -> Result<Self, MeshError> {
        let bad = |why: &str| MeshError::BadTicket(format!("not a share ticket: {why}"));
        let rest = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with 'meshshare'"))?;
        if rest.len() > 8192 {
            return Err(bad("too long"));
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("not base32"))?;
        let t: ShareTicket = postcard::from_bytes(&raw).map_err(|_| bad("malformed"))?;
        Ok(ShareTicket {
            name: safe_name(&t.name),
            ..t
        })
    }

    /// Decodes a ticket given as itself or inside a share URL —
    /// `http://host:port/share/<ticket>`, `meshcache.local/share/<ticket>`, with or without
    /// a query or fragment — as `meshcache get` takes it.
    pub fn decode_ticket_or_url(s: &str) -> Result<Self, MeshError> {
        Self::decode(ticket_in(s))
    }
}

/// The ticket in `s`: what follows the last `/share/` up to a `?`, `#` or `/`, or all of
/// `s` (trimmed) when it has no `/share/` (a ticket never does).
pub fn ticket_in(s: &str) -> &str {
    let s = s.trim();
    let Some(at) = s.rfind("/share/") else {
        return s;
    };
    let rest = &s[at + "/share/".len()..];
    &rest[..rest.find(['?', '#', '/']).unwrap_or(rest.len())]
}

/// A file name safe to write and to put in a header: no directories, no control
/// characters or quotes, at most 200 bytes.
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .collect();
    while out.len() > 200 {
        out.pop();
    }
    if out.is_empty() || out == "." || out == ".." {
        "shared-file".into()
    } else {
        out
    }
}

fn tag(hash: &[u8; 32]) -> String {
    format!("share:{}", Hash::from_bytes(*hash).to_hex())
}

/// Loads the hashes of files shared earlier (they stay shared across restarts).
pub(crate) async fn load_shared(mesh: &Mesh) {
    let store = mesh.inner.cache.blobs();
    let Ok(mut tags) = store.tags().list_prefix("share:").await else {
        return;
    };
    let mut shared = Vec::new();
    while let Some(Ok(t)) = tags.next().await {
        shared.push(<[u8; 32]>::from(t.hash));
    }
    mesh.inner
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(shared);
}

impl Mesh {
    /// The largest shared file, and the most bytes all shares may hold.
    pub fn share_limits(&self) -> (u64, u64) {
        (
            self.inner.opts.share_max_file,
            self.inner.opts.share_max_size,
        )
    }

    /// Bytes held by shared files (those complete in the store).
    pub async fn shared_bytes(&self) -> u64 {
        let hashes: Vec<[u8; 32]> = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let store = self.inner.cache.blobs();
        let mut total = 0;
        for h in hashes {
            if let Ok(iroh_blobs::api::proto::BlobStatus::Complete { size }) =
                store.blobs().status(Hash::from_bytes(h)).await
            {
                total += size;
            }
        }
        total
    }

    /// Fails when a new share of `size` bytes would go beyond the limits.
    async fn check_share_room(&self, size: u64) -> Result<(), MeshError> {
        let (max_file, max_total) = self.share_limits();
        if size > max_file {
            return Err(MeshError::ShareLimit(format!(
                "{size} bytes is more than mesh.share_max_file ({max_file} bytes)"
            )));
        }
        let held = self.shared_bytes().await;
        if held.saturating_add(size) > max_total {
            return Err(MeshError::ShareLimit(format!(
                "shared files hold {held} bytes; {size} more would pass mesh.share_max_size ({max_total} bytes)"
            )));
        }
        Ok(())
    }

    /// Shares a file (copied into the store); returns its ticket. Fails if the file is
    /// larger than `share_max_file`, or the shares would pass `share_max_size`.
    pub async fn share_path(&self, path: &Path, name: &str) -> Result<ShareTicket, MeshError> {
        let abs = std::path::absolute(path)
            .map_err(|e| MeshError::Io(format!("{}: {e}", path.display())))?;
        let len = std::fs::metadata(&abs)
            .map_err(|e| MeshError::Io(format!("{}: {e}", abs.display())))?
            .len();
        self.check_share_room(len).await?;
        let store = self.inner.cache.blobs();
        let tt = store
            .blobs()
            .add_path(&abs)
            .temp_tag()
            .await
            .map_err(|e| MeshError::Io(format!("{}: {e}", abs.display())))?;
        let hash: [u8; 32] = tt.hash().into();
        store
            .tags()
            .set(tag(&hash), HashAndFormat::raw(tt.hash()))
            .await
            .map_err(|e| MeshError::Io(format!("tag shared file: {e}")))?;
        drop(tt);
        let size = match store.blobs().status(Hash::from_bytes(hash)).await {
            Ok(iroh_blobs::api::proto::BlobStatus::Complete { size }) => size,
            other => return Err(MeshError::Io(format!("shared file not stored: {other:?}"))),
        };
        self.inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash);
        tracing::info!(hash = %Hash::from_bytes(hash), size, name, "shared a file");
        Ok(ShareTicket {
            addr: self.addr(),
            hash,
            size,
            name: safe_name(name),
        })
    }

    /// Makes sure the shared file of `ticket` is in the local store, fetching it from the
    /// sharer if needed (verified against the hash).
    pub async fn fetch_shared(&self, ticket: &ShareTicket) -> Result<(), MeshError> {
        let inner = &self.inner;
        let store = inner.cache.blobs();
        let h = Hash::from_bytes(ticket.hash);
        if !inner.cache.has_body(&ticket.hash, ticket.size).await {
            self.check_share_room(ticket.size).await?;
            if inner.peers.banned(&ticket.addr.id) {
                return Err(MeshError::Transfer("the sharer is banned".into()));
            }
            // Tag first: a partial download must survive garbage collection to resume.
            store
                .tags()
                .set(tag(&ticket.hash), HashAndFormat::raw(h))
                .await
                .map_err(|e| MeshError::Io(format!("tag shared file: {e}")))?;
            let conn = tokio::time::timeout(
                crate::proto::HANDSHAKE_TIMEOUT,
                inner
                    .endpoint
                    .connect(ticket.addr.clone(), iroh_blobs::ALPN),
            )
            .await
            .map_err(|_| MeshError::Transfer("the sharer did not answer".into()))?
            .map_err(|e| MeshError::Transfer(format!("cannot reach the sharer: {e}")))?;
            let stream = store.remote().fetch(conn, h).stream();
            run_transfer(stream, inner.opts.fetch_idle_timeout, |_| {}).await?;
        }
        if !inner.cache.has_body(&ticket.hash, ticket.size).await {
            return Err(MeshError::Transfer(
                "the file's size is not the ticket's".into(),
            ));
        }
        inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ticket.hash);
        Ok(())
    }
}

async fn run_transfer(
    stream: impl futures_util::Stream<Item = GetProgressItem>,
    idle: Duration,
    mut progress: impl FnMut(u64),
) -> Result<u64, MeshError> {
    let mut stream = std::pin::pin!(stream);
    let mut got = 0;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(MeshError::Transfer(format!("no progress for {idle:?}"))),
            Ok(None) => return Err(MeshError::Transfer("transfer ended early".into())),
            Ok(Some(GetProgressItem::Progress(n))) => {
                got = n;
                progress(n);
            }
            Ok(Some(GetProgressItem::Done(_))) => return Ok(got),
            Ok(Some(GetProgressItem::Error(e))) => {
                return Err(MeshError::Transfer(format!("transfer failed: {e}")))
            }
        }
    }
}

/// Fetches a shared file into `out` with a throwaway endpoint (no data directory
/// needed). `progress(bytes_so_far, total)` is called as bytes arrive.
pub async fn download(
    ticket: &ShareTicket,
    out: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<(), MeshError> {
    let mut progress = progress;
    let out =
        std::path::absolute(out).map_err(|e| MeshError::Io(format!("{}: {e}", out.display())))?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp = tempdir_in(dir)?;
    let result = async {
        let store = iroh_blobs::store::fs::FsStore::load(&tmp)
            .await
            .map_err(|e| MeshError::Io(format!("temporary store: {e}")))?;
        let ep = Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .bind()
            .await
            .map_err(|e| MeshError::Endpoint(e.to_string()))?;
        let r = async {
            let conn = tokio::time::timeout(
                Duration::from_secs(10),
                ep.connect(ticket.addr.clone(), iroh_blobs::ALPN),
            )
            .await
            .map_err(|_| MeshError::Transfer("the sharer did not answer".into()))?
            .map_err(|e| MeshError::Transfer(format!("cannot reach the sharer: {e}")))?;
            let h = Hash::from_bytes(ticket.hash);
            let stream = store.remote().fetch(conn, h).stream();
            let total = ticket.size;
            run_transfer(stream, Duration::from_secs(30), |n| progress(n, total)).await?;
            match store.blobs().status(h).await {
                Ok(iroh_blobs::api::proto::BlobStatus::Complete { size })
                    if size == ticket.size => {}
                other => {
                    return Err(MeshError::Transfer(format!(
                        "the file is not complete: {other:?}"
                    )))
                }
            }
            store
                .blobs()
                .export(h, &out)
                .await
                .map_err(|e| MeshError::Io(format!("{}: {e}", out.display())))?;
            Ok(())
        }
        .await;
        ep.close().await;
        let _ = store.shutdown().await;
        r
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn tempdir_in(dir: &Path) -> Result<std::path::PathBuf, MeshError> {
    let mut n = [0u8; 8];
    getrandom::fill(&mut n).map_err(|e| MeshError::Io(e.to_string()))?;
    let p = dir.join(format!(".meshcache-get-{}", crate::hex(&n)));
    std::fs::create_dir_all(&p).map_err(|e| MeshError::Io(format!("{}: {e}", p.display())))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("a\"b\r\n.pdf"), "ab.pdf");
        assert_eq!(safe_name(".."), "shared-file");
        assert_eq!(safe_name(""), "shared-file");
        assert_eq!(safe_name("C:\\x\\report.pdf"), "report.pdf");
    }

    #[test]
    fn tickets_round_trip() {
        let id = iroh::SecretKey::generate().public();
        let t = ShareTicket {
            addr: EndpointAddr::new(id).with_ip_addr("127.0.0.1:5000".parse().unwrap()),
            hash: [9; 32],
            size: 42,
            name: "notes.txt".into(),
        };
        let s = t.encode();
        assert_eq!(ShareTicket::decode(&s).unwrap(), t);
        assert!(ShareTicket::decode("meshshareAAAA").is_err());
        assert!(ShareTicket::decode("hello").is_err());
    }

    #[test]
    fn a_ticket_is_taken_bare_or_from_its_share_url() {
        let id = iroh::SecretKey::generate().public();
        let t = ShareTicket {
            addr: EndpointAddr::new(id).with_ip_addr("127.0.0.1:5000".parse().unwrap()),
            hash: [7; 32],
            size: 5,
            name: "a.txt".into(),
        };
        let s = t.encode();
        for form in [
            s.clone(),
            format!("  {s}\n"),
            format!("http://127.0.0.1:3128/share/{s}"),
            format!("http://meshcache.local/share/{s}?download"),
            format!("meshcache.local/share/{s}#x"),
            format!("https://example.org/x/share/{s}/"),
        ] {
            assert_eq!(
                ShareTicket::decode_ticket_or_url(&form).unwrap(),
                t,
                "{form}"
            );
        }
        assert_eq!(ticket_in("http://h/share/"), "");
        assert!(ShareTicket::decode_ticket_or_url("http://h/share/").is_err());
        assert!(ShareTicket::decode_ticket_or_url("http://h/other/x").is_err());
    }
}
