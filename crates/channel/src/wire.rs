//! The wire rules of the channel (docs/channel.md): paths and headers, the line syntax
//! `TAG SP MESSAGE LF` with its tag rules, and idempotency keys.
//!
//! Both sides check against these same rules: the collector before it sends, the relay when
//! it receives. It does no I/O.

/// Path of the batch endpoint, version 1.
pub const BATCHES_PATH: &str = "/v1/batches";
/// Header carrying the producer's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Optional header carrying the number of lines in the batch.
pub const EVENTS_HEADER: &str = "x-sluice-events";
/// Content type of a decompressed batch body.
pub const CONTENT_TYPE: &str = "application/x-sluice-lines";
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Path of the endpoint where a relay announces its caps, version 1.
pub const LIMITS_PATH: &str = "/v1/limits";

/// Why a tag is not a Devo tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag is empty")]
    Empty,
    #[error("tag is longer than {MAX_TAG_BYTES} bytes")]
    TooLong,
    #[error("tag has {0} levels; Devo tags have 2 to 6")]
    Levels(usize),
    #[error("tag level {0} is empty")]
    EmptyLevel(usize),
    #[error("tag holds the byte {0:#04x}; only A-Z a-z 0-9 _ - and . are allowed")]
    Byte(u8),
}

/// Checks that `tag` is a Devo tag: 2 to 6 dot-separated levels of `[A-Za-z0-9_-]`.
pub fn validate_tag(tag: &[u8]) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(TagError::TooLong);
    }
    let mut levels = 0;
    for (i, level) in tag.split(|&b| b == b'.').enumerate() {
        levels += 1;
        if level.is_empty() {
            return Err(TagError::EmptyLevel(i + 1));
        }
        if let Some(&b) = level
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(TagError::Byte(b));
        }
    }
    if !(2..=6).contains(&levels) {
        return Err(TagError::Levels(levels));
    }
    Ok(())
}

/// Checks an idempotency key: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
pub fn validate_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(validate_tag(b"cloud.aws.cloudtrail.events").is_ok());
        assert!(validate_tag(b"my.app.a-b.c_d").is_ok());
        assert_eq!(validate_tag(b"single"), Err(TagError::Levels(1)));
        assert_eq!(validate_tag(b"a.b.c.d.e.f.g"), Err(TagError::Levels(7)));
        assert_eq!(validate_tag(b"a..b"), Err(TagError::EmptyLevel(2)));
        assert_eq!(validate_tag(b"a.b c"), Err(TagError::Byte(b' ')));
        assert_eq!(validate_tag(b""), Err(TagError::Empty));
    }

    #[test]
    fn keys() {
        assert!(validate_idempotency_key("collector-1:42"));
        assert!(!validate_idempotency_key(""));
        assert!(!validate_idempotency_key("a b"));
        assert!(!validate_idempotency_key(&"x".repeat(129)));
    }
}
