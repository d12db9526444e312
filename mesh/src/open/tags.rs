//! The tag index: which cache key holds the body a stranger's tag names. Built from the
//! index at start, then kept current by the cache's commit hook; bounded (the oldest tags
//! go first). A tag is only a pointer: every answer re-reads the entry and re-derives its
//! tags, so an evicted or replaced entry is simply not found.

use std::num::NonZeroUsize;
use std::sync::Arc;

use http::HeaderValue;
use lru::LruCache;

use cache::certify::{self, Certified};
use cache::Entry;

use super::proto::{content_tag, key_tag};
use crate::Inner;

/// Tags remembered at once.
pub const MAX_TAGS: usize = 1 << 18;

pub(crate) struct Tags(LruCache<[u8; 32], String>);

impl Default for Tags {
    fn default() -> Self {
        Self(LruCache::new(NonZeroUsize::new(MAX_TAGS).unwrap()))
    }
}

impl Tags {
    pub fn insert(&mut self, key: &str, e: &Entry) {
        let (content, signed) = entry_tags(key, e);
        for t in content.iter().chain(signed.iter()) {
            self.0.put(*t, key.to_string());
        }
    }

    pub fn get(&mut self, tag: &[u8; 32]) -> Option<String> {
        self.0.get(tag).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The digests an entry's body is known to have: its URL's rule, the digest its client
/// stated (the key's `#integrity=` part) and the `Content-Digest` / `Repr-Digest` it was
/// stored with (a fill checks the body against each before it stores it).
pub(crate) fn digests(key: &str, e: &Entry) -> Vec<Certified> {
    if !e.shareable || e.status != 200 {
        return Vec::new();
    }
    let mut out = key_digests(key);
    out.extend(certify::stated_digest(&e.header_map()));
    out
}

/// The digests a key itself names: its URL's rule, the digest its client stated.
pub(crate) fn key_digests(key: &str) -> Vec<Certified> {
    let (url, stated) = match key.split_once("#integrity=") {
        Some((u, s)) => (u, Some(s)),
        None => (key, None),
    };
    let mut out: Vec<Certified> = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| certify::certify(&u, None))
        .into_iter()
        .collect();
    if let Some(Ok(list)) = stated
        .and_then(|s| HeaderValue::from_str(s).ok())
        .map(|v| certify::integrity(&v))
    {
        out.extend(list);
    }
    out
}

/// An entry's content tags, and its key tag (for an entry with an attestation).
pub(crate) fn entry_tags(key: &str, e: &Entry) -> (Vec<[u8; 32]>, Option<[u8; 32]>) {
    let content = digests(key, e).iter().map(content_tag).collect();
    let signed =
        (e.shareable && e.attestation.is_some() && !key.contains('#')).then(|| key_tag(key));
    (content, signed)
}

/// Fills the index from the store, in the background.
pub(crate) fn build(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let Some(inner) = weak.upgrade() else { return };
        let list = match inner.cache.list().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("open mesh: cannot read the index for the tag index: {e}");
                return;
            }
        };
        let Some(open) = inner.open() else { return };
        let mut tags = super::lock(&open.tags);
        for (key, e) in &list {
            tags.insert(key, e);
        }
        tracing::debug!(tags = tags.len(), "open mesh: tag index built");
    });
}
