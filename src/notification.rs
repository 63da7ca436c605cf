//! Notification stage: turns one SQS message body into the S3 objects it announces.
//!
//! Pure code over a string: no AWS, no I/O. It recognises the envelope shapes (see the table
//! in docs/formats.md) and decodes keys where the shape encodes them. It does not decide what
//! to do with an object (filters and processors do) nor with the message (the worker does).

use serde::Deserialize;

/// One object to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// Object key, decoded as the shape requires.
    pub key: String,
    /// Size in bytes, when the notification says.
    pub size: Option<u64>,
    /// ETag, when the notification says.
    pub etag: Option<String>,
    /// Version id, when the notification says.
    pub version_id: Option<String>,
    /// A second spelling of the key to try when `key` does not exist (EventBridge keys may
    /// or may not be form-encoded).
    pub fallback_key: Option<String>,
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Objects to process; may be empty when every record was skipped (e.g. deletions).
    Objects {
        /// The shape recognised, for logs and metrics (`s3`, `sns+s3`, `eventbridge`, …).
        shape: &'static str,
        /// The objects, in the order the message lists them.
        objects: Vec<ObjectRef>,
        /// Records skipped because they do not announce a new object.
        skipped: usize,
    },
    /// `s3:TestEvent`: delete at once, no work.
    TestEvent,
    /// A control message with no work (SNS subscription confirmations): log and delete.
    Control { kind: String },
}

/// Why a body is not a notification sluice understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("body is not JSON ({reason}); it starts with {preview:?}")]
    NotJson { reason: String, preview: String },
    #[error("unknown notification shape; body starts with {preview:?}")]
    Unknown { preview: String },
    #[error("{shape} notification is malformed: {reason}")]
    Malformed { shape: &'static str, reason: String },
}

/// First bytes of a body, for error messages.
pub fn preview(body: &str) -> String {
    body.chars().take(120).collect()
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

/// Classifies a message body and extracts its objects.
pub fn classify(body: &str) -> Result<Notification, NotificationError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| NotificationError::NotJson {
            reason: e.to_string(),
            preview: preview(body),
        })?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Notification::TestEvent);
    }
    if value.get("Records").is_some() {
        let event: S3Event =
            serde_json::from_value(value).map_err(|e| NotificationError::Malformed {
                shape: "s3",
                reason: e.to_string(),
            })?;
        let mut objects = Vec::new();
        let mut skipped = 0;
        for record in event.records {
            let name = record.event_name.trim_start_matches("s3:");
            if !name.starts_with("ObjectCreated:") {
                skipped += 1;
                continue;
            }
            objects.push(ObjectRef {
                bucket: record.s3.bucket.name,
                key: form_decode(&record.s3.object.key),
                size: record.s3.object.size,
                etag: record.s3.object.etag,
                version_id: record.s3.object.version_id,
                fallback_key: None,
            });
        }
        return Ok(Notification::Objects {
            shape: "s3",
            objects,
            skipped,
        });
    }
    Err(NotificationError::Unknown {
        preview: preview(body),
    })
}

/// Decodes an S3 event key with query-unescape rules: `+` is a space, then `%XX`. An invalid
/// escape is kept as it is rather than refused: the object name is what S3 says it is.
pub fn form_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys() {
        assert_eq!(form_decode("dir%2Fa+b%2Bc%3Dd.log"), "dir/a b+c=d.log");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("a%zz"), "a%zz");
        assert_eq!(form_decode("%25"), "%");
    }

    #[test]
    fn s3_event() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a+b","size":3}}},{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"x"}}}]}"#;
        match classify(body).unwrap() {
            Notification::Objects {
                objects, skipped, ..
            } => {
                assert_eq!(objects.len(), 1);
                assert_eq!(objects[0].key, "a b");
                assert_eq!(skipped, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_event_and_unknown() {
        assert_eq!(
            classify(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#).unwrap(),
            Notification::TestEvent
        );
        assert!(matches!(
            classify("{}"),
            Err(NotificationError::Unknown { .. })
        ));
        assert!(matches!(
            classify("nope"),
            Err(NotificationError::NotJson { .. })
        ));
    }
}
