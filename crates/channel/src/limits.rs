//! The caps a relay applies to batches, as `GET /v1/limits` announces them, with the v1
//! defaults a producer assumes when the relay does not say. It does no I/O.

use crate::wire::MAX_TAG_BYTES;

/// The caps a relay applies to batches, as `GET /v1/limits` announces them. A producer that
/// keeps every batch within them is never answered 413.
///
/// A relay without the endpoint (404) applies [`ChannelLimits::V1_DEFAULTS`]; a field missing
/// from the answer takes its default too, and unknown fields are ignored, so the answer can
/// grow within version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChannelLimits {
    /// Largest request body (compressed), in bytes.
    pub max_body_bytes: u64,
    /// Largest decompressed body, in bytes.
    pub max_batch_bytes: u64,
    /// Largest message (the bytes after `TAG SP`), in bytes.
    pub max_event_bytes: u64,
    /// Longest tag, in bytes.
    pub max_tag_bytes: u64,
}

impl ChannelLimits {
    /// The caps of a relay with an empty `[limits]` table, documented in docs/channel.md.
    pub const V1_DEFAULTS: ChannelLimits = ChannelLimits {
        max_body_bytes: 16 * 1024 * 1024,
        max_batch_bytes: 64 * 1024 * 1024,
        max_event_bytes: 1024 * 1024,
        max_tag_bytes: MAX_TAG_BYTES as u64,
    };
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits::V1_DEFAULTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_answer_defaults_missing_fields_and_ignores_unknown_ones() {
        let l: ChannelLimits =
            serde_json::from_str(r#"{"max_event_bytes":65536,"future":1}"#).unwrap();
        assert_eq!(l.max_event_bytes, 65536);
        assert_eq!(l.max_body_bytes, ChannelLimits::V1_DEFAULTS.max_body_bytes);
        assert_eq!(l.max_tag_bytes, 256);
        let text = serde_json::to_string(&ChannelLimits::V1_DEFAULTS).unwrap();
        assert_eq!(
            text,
            r#"{"max_body_bytes":16777216,"max_batch_bytes":67108864,"max_event_bytes":1048576,"max_tag_bytes":256}"#
        );
    }
}
