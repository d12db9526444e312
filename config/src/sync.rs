//! `[sync]`: feeds this device keeps up to date from the devices nearby (feed sync,
//! docs/sync.md), and the daily budget for it.

use serde::{Deserialize, Serialize};

use crate::{ByteSize, ConfigError};

/// `[sync]` and its `[[sync.feed]]` subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sync {
    /// Most bytes prefetched per day, all feeds together. Default `"256MiB"`.
    pub budget: ByteSize,
    /// Also prefetch from the internet, not only from nearby devices. Default `false`.
    pub from_origin: bool,
    /// The feeds subscribed to. Default none.
    pub feed: Vec<Feed>,
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            budget: ByteSize(256 << 20),
            from_origin: false,
            feed: Vec::new(),
        }
    }
}

/// One `[[sync.feed]]`: an RSS 2.0, Atom or JSON Feed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// The feed's URL (`http` or `https`). Required.
    pub url: String,
    /// Which media of its items to prefetch. Default `"all"`.
    #[serde(default)]
    pub media: Media,
    /// Larger media are left for the user to ask for. Default `"8MiB"`.
    #[serde(default = "default_max_item")]
    pub max_item: ByteSize,
}

fn default_max_item() -> ByteSize {
    ByteSize(8 << 20)
}

/// Which media of a feed's items are prefetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// The feed document only.
    None,
    /// The document and its thumbnails.
    Thumbnails,
    /// The document, thumbnails, images and enclosures.
    #[default]
    All,
}

impl Sync {
    /// Checks what serde cannot: URLs, and that a budget exists when feeds do.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: Default::default(),
            field,
            message,
        };
        for (i, f) in self.feed.iter().enumerate() {
            let ok = url::Url::parse(&f.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if ok.is_none() {
                return Err(invalid(
                    format!("sync.feed[{i}].url"),
                    format!("{:?} is not an http or https URL", f.url),
                ));
            }
            if f.max_item.bytes() == 0 {
                return Err(invalid(
                    format!("sync.feed[{i}].max_item"),
                    "must be above 0".into(),
                ));
            }
            if self.feed[..i].iter().any(|g| g.url == f.url) {
                return Err(invalid(
                    format!("sync.feed[{i}].url"),
                    format!("{:?} is subscribed twice", f.url),
                ));
            }
        }
        Ok(())
    }
}
