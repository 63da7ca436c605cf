//! Notification stage: turns one SQS message body into the S3 objects it announces.
//!
//! Pure code over a string: no AWS, no I/O, no async. [`classify`] parses the body once into a
//! `serde_json::Value` (bodies are at most 256 KiB, so a generic tree is cheap here, unlike for
//! events), recognises its shape by the fields it has, first match wins, and extracts the
//! objects:
//!
//! | shape | recognised by | keys |
//! |---|---|---|
//! | SNS envelope | `Type` = `Notification` (`Message` re-classified, one layer only), `SubscriptionConfirmation`, `UnsubscribeConfirmation`; or no `Type` but `TopicArn` and `Message` (a `Notification`) | as the inner shape |
//! | `s3:TestEvent` | `Event` = `s3:TestEvent` | — |
//! | S3 event notification (`s3`) | `Records[]` with `s3` entities, `eventVersion` 2.x or none (`eventName` missing: a creation) | form-decoded (`+` → space, then `%XX`), once |
//! | EventBridge (`eventbridge`) | `source` = `aws.s3` and a `detail-type` | as given; form-decoded spelling in `fallback_key` |
//! | CrowdStrike FDR (`fdr`) | `bucket` and `files[]` | as given |
//! | CloudTrail's SNS message (`cloudtrail`) | `s3Bucket` and `s3ObjectKey` array | as given |
//! | AWS Config's SNS message (`config`) | `messageType` with `s3ObjectKey` string or `notificationCreationTime` | as given |
//!
//! crates/formats/docs/notifications.md has an example of each shape, the reasons for the key
//! rules and the test backing each row.
//!
//! It does not decide what to do with an object (filters and processors do) nor with the
//! message (the worker deletes it, or leaves it for the dead-letter queue on an error). It does
//! not follow an SNS `SubscribeURL` (confirming a subscription is an operator's decision), does
//! not unwrap Lambda trigger events ([`NotificationError::Unsupported`]), and does not handle
//! direct mode, where the body is itself the event: the worker should not call it for such an
//! input.

use serde_json::{Map, Value};

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
    /// MD5 of the object as 32 hex digits, when the notification says (CrowdStrike FDR).
    pub checksum: Option<String>,
}

impl ObjectRef {
    /// An object known only by its bucket and key.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            size: None,
            etag: None,
            version_id: None,
            fallback_key: None,
            checksum: None,
        }
    }
}

/// What a message asks for.
// `Objects` is the large variant and also the common one: boxing its origin would add an
// allocation per message to shrink the rare ones. One value per SQS message, moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Objects to process; may be empty when every record was skipped (e.g. deletions).
    Objects {
        /// The shape recognised, for logs and metrics: `s3`, `eventbridge`, `cloudtrail`,
        /// `config`, `fdr`, or one of them behind SNS (`sns+s3`, …).
        shape: &'static str,
        /// The objects, in the order the message lists them.
        objects: Vec<ObjectRef>,
        /// Records skipped because they do not announce a new object (deletions, Config
        /// change notifications, EventBridge events other than `Object Created`).
        skipped: usize,
        /// Identifiers of the envelopes the objects came through, for logs and enrichment.
        origin: Origin,
    },
    /// `s3:TestEvent`, raw or inside SNS: delete at once, no work.
    TestEvent,
    /// An SNS control message with no work (`SubscriptionConfirmation`,
    /// `UnsubscribeConfirmation`, the SNS `Type`): log and delete.
    Control { kind: String },
}

/// Identifiers of the envelopes around a notification. Each part is present only when the
/// message came that way; every field inside is optional because senders omit some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The SNS envelope, when the message came through SNS.
    pub sns: Option<SnsMeta>,
    /// The EventBridge event, for the `eventbridge` shape.
    pub eventbridge: Option<EventBridgeMeta>,
    /// The CrowdStrike batch, for the `fdr` shape.
    pub fdr: Option<FdrMeta>,
}

/// Fields of an SNS envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnsMeta {
    /// `MessageId`: SNS's id of the publication (not the SQS message id).
    pub message_id: Option<String>,
    /// `TopicArn`.
    pub topic_arn: Option<String>,
    /// `Subject`, e.g. `Amazon S3 Notification`.
    pub subject: Option<String>,
    /// `Timestamp`, ISO-8601 as SNS wrote it.
    pub timestamp: Option<String>,
}

/// Fields of an EventBridge event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBridgeMeta {
    /// `id` of the event.
    pub id: Option<String>,
    /// `detail-type`, e.g. `Object Created`.
    pub detail_type: String,
    /// `account` that owns the bucket.
    pub account: Option<String>,
    /// `region` of the bucket.
    pub region: Option<String>,
    /// `time`, ISO-8601 with second precision.
    pub time: Option<String>,
}

/// Fields of a CrowdStrike Falcon Data Replicator batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdrMeta {
    /// `cid`: the CrowdStrike customer id.
    pub cid: Option<String>,
    /// `pathPrefix` common to the batch's files.
    pub path_prefix: Option<String>,
    /// `timestamp` of the batch, epoch milliseconds.
    pub timestamp_ms: Option<u64>,
}

/// Why a body is not a notification sluice understands. Every variant means the same thing to
/// the worker: the message is poison (left for the dead-letter queue, never deleted silently).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("body is not JSON ({reason}); it starts with {preview:?}")]
    NotJson { reason: String, preview: String },
    /// No known shape. Behind an SNS envelope, `preview` is the start of the SNS `Message`
    /// (the envelope's own start says nothing).
    #[error("unknown notification shape; body starts with {preview:?}")]
    Unknown { preview: String },
    #[error("{shape} notification is malformed: {reason}")]
    Malformed { shape: &'static str, reason: String },
    /// A shape recognised on purpose and refused, with the reason (e.g. a Lambda trigger event
    /// put on a queue: `lambda-sqs`).
    #[error("{shape} messages are not supported: {reason}")]
    Unsupported { shape: &'static str, reason: String },
}

/// First bytes of a body, for error messages.
pub fn preview(body: &str) -> String {
    body.chars().take(120).collect()
}

/// Classifies a message body and extracts its objects.
///
/// Never panics, whatever the body; serde_json's recursion limit bounds nesting.
pub fn classify(body: &str) -> Result<Notification, NotificationError> {
    let doc: Value = serde_json::from_str(body).map_err(|e| NotificationError::NotJson {
        reason: e.to_string(),
        preview: preview(body),
    })?;
    classify_document(&doc, body, false)
}

/// The shapes that carry objects. SNS is a layer around them, not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    S3,
    EventBridge,
    CloudTrail,
    Config,
    Fdr,
}

impl Shape {
    /// The name reported in [`Notification::Objects::shape`] and in errors.
    fn name(self, via_sns: bool) -> &'static str {
        match (self, via_sns) {
            (Shape::S3, false) => "s3",
            (Shape::S3, true) => "sns+s3",
            (Shape::EventBridge, false) => "eventbridge",
            (Shape::EventBridge, true) => "sns+eventbridge",
            (Shape::CloudTrail, false) => "cloudtrail",
            (Shape::CloudTrail, true) => "sns+cloudtrail",
            (Shape::Config, false) => "config",
            (Shape::Config, true) => "sns+config",
            (Shape::Fdr, false) => "fdr",
            (Shape::Fdr, true) => "sns+fdr",
        }
    }
}

/// What an extractor found: the `Objects` variant minus its shape name.
#[derive(Default)]
struct Extracted {
    objects: Vec<ObjectRef>,
    skipped: usize,
    origin: Origin,
}

/// Classifies one parsed document. `text` is its source, for previews; `in_sns` says it is the
/// `Message` of an SNS envelope (shape names get `sns+`, a second envelope is refused).
fn classify_document(
    doc: &Value,
    text: &str,
    in_sns: bool,
) -> Result<Notification, NotificationError> {
    let unknown = || NotificationError::Unknown {
        preview: preview(text),
    };
    let Some(obj) = doc.as_object() else {
        return Err(unknown());
    };

    // Only the three SNS types count as an envelope, so that some other JSON with a `Type`
    // field falls through to the other shapes (and to `Unknown`). Without any `Type` (dropped by
    // a re-publisher or a hand-written message), `TopicArn` with `Message` is SNS's alone.
    let sns_kind = match str_field(obj, "Type") {
        Some(kind @ ("Notification" | "SubscriptionConfirmation" | "UnsubscribeConfirmation")) => {
            Some(kind)
        }
        None if !obj.contains_key("Type")
            && obj.get("TopicArn").is_some_and(Value::is_string)
            && obj.contains_key("Message") =>
        {
            Some("Notification")
        }
        _ => None,
    };
    if let Some(kind) = sns_kind {
        if in_sns {
            return Err(NotificationError::Malformed {
                shape: "sns",
                reason: "the Message is itself an SNS envelope; sluice unwraps one layer".into(),
            });
        }
        if kind != "Notification" {
            // Never follow SubscribeURL: subscribing a queue is the operator's decision.
            return Ok(Notification::Control { kind: kind.into() });
        }
        return sns_notification(obj);
    }

    if str_field(obj, "Event") == Some("s3:TestEvent") {
        return Ok(Notification::TestEvent);
    }

    let (shape, result) = if let Some(records) = obj.get("Records") {
        if let Some(lambda) = lambda_wrapper(records) {
            return Err(lambda);
        }
        (Shape::S3, s3_event(records))
    } else if str_field(obj, "source") == Some("aws.s3") && obj.contains_key("detail-type") {
        (Shape::EventBridge, eventbridge(obj))
    } else if obj.get("bucket").is_some_and(Value::is_string)
        && obj.get("files").is_some_and(Value::is_array)
    {
        (Shape::Fdr, fdr(obj))
    } else if obj.get("s3ObjectKey").is_some_and(Value::is_array) {
        (Shape::CloudTrail, cloudtrail(obj))
    } else if obj.get("messageType").is_some_and(Value::is_string)
        && (obj.get("s3ObjectKey").is_some_and(Value::is_string)
            || obj.contains_key("notificationCreationTime"))
    {
        (Shape::Config, config(obj))
    } else {
        return Err(unknown());
    };

    let name = shape.name(in_sns);
    let extracted = result.map_err(|reason| NotificationError::Malformed {
        shape: name,
        reason,
    })?;
    Ok(Notification::Objects {
        shape: name,
        objects: extracted.objects,
        skipped: extracted.skipped,
        origin: extracted.origin,
    })
}

/// An SNS `Notification`: re-classifies its `Message` and records the envelope in the origin.
fn sns_notification(envelope: &Map<String, Value>) -> Result<Notification, NotificationError> {
    let malformed = |reason: String| NotificationError::Malformed {
        shape: "sns",
        reason,
    };
    let inner = match envelope.get("Message") {
        Some(Value::String(message)) => {
            // The second parse is unavoidable: SNS carries the payload as a JSON string.
            let doc: Value = serde_json::from_str(message).map_err(|e| {
                malformed(format!(
                    "its Message is not JSON ({e}); it starts with {:?}",
                    preview(message)
                ))
            })?;
            classify_document(&doc, message, true)?
        }
        // AWS documentation prints `Message` as an object; SNS always sends a string, but the
        // object form costs nothing to accept and the docs' examples then classify.
        Some(doc @ Value::Object(_)) => classify_document(doc, &doc.to_string(), true)?,
        _ => return Err(malformed("Message is missing or not a string".into())),
    };
    Ok(match inner {
        Notification::Objects {
            shape,
            objects,
            skipped,
            mut origin,
        } => {
            origin.sns = Some(SnsMeta {
                message_id: string_field(envelope, "MessageId"),
                topic_arn: string_field(envelope, "TopicArn"),
                subject: string_field(envelope, "Subject"),
                timestamp: string_field(envelope, "Timestamp"),
            });
            Notification::Objects {
                shape,
                objects,
                skipped,
                origin,
            }
        }
        other => other,
    })
}

/// A Lambda trigger event (`Records[]` of SQS messages or SNS notifications) is refused: sluice
/// reads the queue itself, so one only arrives if something re-published a Lambda's input.
/// Unwrapping it would turn up to ten messages, each with its own receipt and retry count, into
/// one unit of work; better to make the mistake visible in the dead-letter queue.
fn lambda_wrapper(records: &Value) -> Option<NotificationError> {
    let first = records.as_array()?.first()?.as_object()?;
    let shape = if str_field(first, "eventSource") == Some("aws:sqs")
        || (first.contains_key("body") && first.contains_key("receiptHandle"))
    {
        "lambda-sqs"
    } else if str_field(first, "EventSource") == Some("aws:sns") || first.contains_key("Sns") {
        "lambda-sns"
    } else {
        return None;
    };
    Some(NotificationError::Unsupported {
        shape,
        reason: "this is a Lambda trigger event, not an SQS message body; point sluice at the \
                 queue the Lambda reads instead"
            .into(),
    })
}

/// S3 event notification: every `ObjectCreated:*` record is an object, the others are counted.
fn s3_event(records: &Value) -> Result<Extracted, String> {
    let records = records.as_array().ok_or("Records is not an array")?;
    // S3 never sends an empty Records; an empty one says nothing about where it came from.
    if records.is_empty() {
        return Err("Records is empty".into());
    }
    let mut out = Extracted::default();
    for (i, record) in records.iter().enumerate() {
        let at = format!("Records[{i}]");
        let record = record
            .as_object()
            .ok_or_else(|| format!("{at} is not an object"))?;
        // Major 2 only: a new major may change what fields mean (the key encoding above all).
        // Minors are additive (2.0 to 2.5 seen), so an unknown one is fine. A missing version is
        // tolerated for S3-compatible stores that omit it.
        match record.get("eventVersion") {
            None => {}
            Some(Value::String(version)) if version.split('.').next() == Some("2") => {}
            Some(version) => {
                return Err(format!(
                    "{at}.eventVersion is {version}; sluice reads version 2.x only"
                ))
            }
        }
        let s3 = record
            .get("s3")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{at}.s3 is missing or not an object"))?;
        // MinIO writes `s3:ObjectCreated:Put`, AWS `ObjectCreated:Put`. A record without any
        // `eventName` (S3-compatible stores that send only the `s3` entity) is taken as a
        // creation: if the object is gone after all, fetching it says so (logged as missing),
        // whereas skipping it would lose a new object without a trace.
        let created = match str_field(record, "eventName") {
            Some(name) => name
                .strip_prefix("s3:")
                .unwrap_or(name)
                .starts_with("ObjectCreated:"),
            None => !record.contains_key("eventName"),
        };
        if !created {
            out.skipped += 1;
            continue;
        }
        let bucket = required(s3.get("bucket"), "name", &format!("{at}.s3.bucket"))?;
        let object = s3.get("object");
        let raw_key = required(object, "key", &format!("{at}.s3.object"))?;
        out.objects.push(ObjectRef {
            bucket: bucket.into(),
            key: form_decode(raw_key),
            size: object.and_then(|o| o.get("size")).and_then(Value::as_u64),
            etag: object.and_then(|o| o.get("eTag")).and_then(string_of),
            version_id: object.and_then(|o| o.get("versionId")).and_then(string_of),
            fallback_key: None,
            checksum: None,
        });
    }
    Ok(out)
}

/// EventBridge event from S3: `Object Created` is one object, any other detail-type is skipped.
fn eventbridge(event: &Map<String, Value>) -> Result<Extracted, String> {
    let detail_type = str_field(event, "detail-type").ok_or("detail-type is not a string")?;
    let mut out = Extracted {
        origin: Origin {
            eventbridge: Some(EventBridgeMeta {
                id: string_field(event, "id"),
                detail_type: detail_type.into(),
                account: string_field(event, "account"),
                region: string_field(event, "region"),
                time: string_field(event, "time"),
            }),
            ..Origin::default()
        },
        ..Extracted::default()
    };
    if !detail_type.starts_with("Object Created") {
        out.skipped = 1;
        return Ok(out);
    }
    let detail = event.get("detail");
    let bucket = required(
        detail.and_then(|d| d.get("bucket")),
        "name",
        "detail.bucket",
    )?;
    let object = detail.and_then(|d| d.get("object"));
    let key = required(object, "key", "detail.object")?;
    // AWS does not say whether EventBridge keys are form-encoded (FORMATS.md §1.4): use the key
    // as given and offer the decoded spelling, decoded once, for when the first is missing.
    let fallback_key = if key.contains(['%', '+']) {
        Some(form_decode(key)).filter(|decoded| decoded != key)
    } else {
        None
    };
    out.objects.push(ObjectRef {
        bucket: bucket.into(),
        key: key.into(),
        size: object.and_then(|o| o.get("size")).and_then(Value::as_u64),
        etag: object.and_then(|o| o.get("etag")).and_then(string_of),
        version_id: object.and_then(|o| o.get("version-id")).and_then(string_of),
        fallback_key,
        checksum: None,
    });
    Ok(out)
}

/// CrowdStrike FDR batch: every listed file is an object of this one message; paths are plain.
fn fdr(batch: &Map<String, Value>) -> Result<Extracted, String> {
    let bucket = nonempty(str_field(batch, "bucket"), "bucket")?;
    let files = batch
        .get("files")
        .and_then(Value::as_array)
        .ok_or("files is not an array")?;
    let mut out = Extracted {
        origin: Origin {
            fdr: Some(FdrMeta {
                cid: string_field(batch, "cid"),
                path_prefix: string_field(batch, "pathPrefix"),
                timestamp_ms: batch.get("timestamp").and_then(Value::as_u64),
            }),
            ..Origin::default()
        },
        ..Extracted::default()
    };
    for (i, file) in files.iter().enumerate() {
        let path = required(Some(file), "path", &format!("files[{i}]"))?;
        out.objects.push(ObjectRef {
            size: file.get("size").and_then(Value::as_u64),
            checksum: file.get("checksum").and_then(string_of),
            ..ObjectRef::new(bucket, path)
        });
    }
    Ok(out)
}

/// CloudTrail's SNS message: `s3ObjectKey` is an array of plain keys.
fn cloudtrail(message: &Map<String, Value>) -> Result<Extracted, String> {
    let bucket = nonempty(str_field(message, "s3Bucket"), "s3Bucket")?;
    let keys = message
        .get("s3ObjectKey")
        .and_then(Value::as_array)
        .ok_or("s3ObjectKey is not an array")?;
    let mut out = Extracted::default();
    for (i, key) in keys.iter().enumerate() {
        let key = nonempty(key.as_str(), &format!("s3ObjectKey[{i}]"))?;
        out.objects.push(ObjectRef::new(bucket, key));
    }
    Ok(out)
}

/// AWS Config's SNS message: `Configuration*DeliveryCompleted` names one plain key; the other
/// message types on the same topic (item changes, compliance, delivery started) carry no file
/// and are skipped, not errors, since a Config topic sends them all the time.
fn config(message: &Map<String, Value>) -> Result<Extracted, String> {
    let message_type = str_field(message, "messageType").unwrap_or("");
    let mut out = Extracted::default();
    if !(message_type.starts_with("Configuration") && message_type.ends_with("DeliveryCompleted")) {
        out.skipped = 1;
        return Ok(out);
    }
    let bucket = nonempty(str_field(message, "s3Bucket"), "s3Bucket")?;
    let key = nonempty(str_field(message, "s3ObjectKey"), "s3ObjectKey")?;
    out.objects.push(ObjectRef::new(bucket, key));
    Ok(out)
}

/// `obj[name]` when it is a string.
fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(Value::as_str)
}

/// `obj[name]`, owned, when it is a string.
fn string_field(obj: &Map<String, Value>, name: &str) -> Option<String> {
    str_field(obj, name).map(str::to_owned)
}

fn string_of(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// `parent.name` as a non-empty string, or an error naming the path (`at.name`).
fn required<'a>(parent: Option<&'a Value>, name: &str, at: &str) -> Result<&'a str, String> {
    nonempty(
        parent.and_then(|p| p.get(name)).and_then(Value::as_str),
        &format!("{at}.{name}"),
    )
}

/// A bucket or key must be a non-empty string: S3 has no empty names, and an empty one would
/// only turn into a confusing fetch error later.
fn nonempty<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str, String> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("{what} is empty")),
        None => Err(format!("{what} is missing or not a string")),
    }
}

/// Decodes an S3 event key with query-unescape rules: `+` is a space, then `%XX`. An invalid
/// escape is kept as it is rather than refused: the object name is what S3 says it is. Bytes
/// that do not form UTF-8 once decoded become U+FFFD (S3 keys are UTF-8, so only a corrupt
/// notification does that, and the fetch then fails naming the key).
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

    /// Fixtures written for these tests (crates/formats/fixtures/notifications/, see its table in
    /// crates/formats/docs/notifications.md).
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../fixtures/notifications/", $name))
        };
    }

    /// Every fixture, for the no-panic test.
    const FIXTURES: &[&str] = &[
        fixture!("s3_put_delete_multipart.json"),
        fixture!("s3_minio.json"),
        fixture!("s3_test_event.json"),
        fixture!("sns_s3.json"),
        fixture!("sns_test_event.json"),
        fixture!("sns_subscription_confirmation.json"),
        fixture!("sns_cloudtrail.json"),
        fixture!("sns_config_snapshot.json"),
        fixture!("sns_config_item_change.json"),
        fixture!("eventbridge_object_created.json"),
        fixture!("eventbridge_object_deleted.json"),
        fixture!("eventbridge_guardduty_finding.json"),
        fixture!("fdr_batch.json"),
        fixture!("lambda_sqs_event.json"),
        fixture!("sns_without_type.json"),
        fixture!("s3_without_event_version.json"),
    ];

    /// The `Objects` of a body, or a panic naming what came instead.
    fn expect_objects(body: &str) -> (&'static str, Vec<ObjectRef>, usize, Origin) {
        match classify(body) {
            Ok(Notification::Objects {
                shape,
                objects,
                skipped,
                origin,
            }) => (shape, objects, skipped, origin),
            other => panic!("expected objects, got {other:?}"),
        }
    }

    /// An SNS envelope around `message`, as SNS writes it (the message as a JSON string).
    fn in_sns(message: &str) -> String {
        serde_json::json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-1:000011112222:t",
            "Message": message,
        })
        .to_string()
    }

    #[test]
    fn decodes_keys() {
        assert_eq!(form_decode("dir%2Fa+b%2Bc%3Dd.log"), "dir/a b+c=d.log");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("a%zz"), "a%zz");
        assert_eq!(form_decode("%25"), "%");
        // Decoded once: a literal `%25` in a key arrives as `%2525`.
        assert_eq!(form_decode("%2525"), "%25");
        assert_eq!(form_decode("caf%C3%A9"), "café");
        assert_eq!(form_decode("%"), "%");
        assert_eq!(form_decode("%4"), "%4");
    }

    #[test]
    fn s3_event_several_records_versions_and_unknown_fields() {
        let (shape, objects, skipped, origin) =
            expect_objects(fixture!("s3_put_delete_multipart.json"));
        assert_eq!(shape, "s3");
        assert_eq!(skipped, 1, "the ObjectRemoved:Delete record");
        assert_eq!(origin, Origin::default());
        assert_eq!(
            objects,
            vec![
                ObjectRef {
                    size: Some(2048),
                    etag: Some("0123456789abcdef0123456789abcdef".into()),
                    version_id: Some("v1.example".into()),
                    ..ObjectRef::new("acme-app-logs", "app/2024/05/01/web 01:00+main=x.log")
                },
                ObjectRef {
                    size: Some(73400320),
                    etag: Some("fedcba9876543210fedcba9876543210-14".into()),
                    ..ObjectRef::new("acme-app-logs", "café/100%done.gz")
                },
            ]
        );
    }

    #[test]
    fn s3_event_minio_prefix_and_encoded_slashes() {
        let (shape, objects, skipped, _) = expect_objects(fixture!("s3_minio.json"));
        assert_eq!((shape, skipped), ("s3", 0));
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].bucket, "ingest");
        assert_eq!(objects[0].key, "dir/sub/a b.txt");
        assert_eq!(objects[0].size, Some(11));
    }

    #[test]
    fn s3_event_only_deletions_is_empty_not_an_error() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}},{"eventVersion":"2.3","eventName":"LifecycleExpiration:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k2"}}}]}"#;
        let (shape, objects, skipped, _) = expect_objects(body);
        assert_eq!((shape, objects.len(), skipped), ("s3", 0, 2));
    }

    #[test]
    fn s3_event_refuses_other_major_versions_and_broken_records() {
        let cases = [
            (
                r#"{"Records":[{"eventVersion":"3.0","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#,
                "Records[0].eventVersion",
            ),
            (
                r#"{"Records":[{"eventVersion":2.1,"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#,
                "Records[0].eventVersion",
            ),
            (
                r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#,
                "Records[0].s3.object.key",
            ),
            (
                r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":""},"object":{"key":"k"}}}]}"#,
                "Records[0].s3.bucket.name is empty",
            ),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}},{"eventName":"ObjectCreated:Put"}]}"#,
                "Records[1].s3",
            ),
            (r#"{"Records":[]}"#, "Records is empty"),
            (r#"{"Records":{}}"#, "not an array"),
            (r#"{"Records":[7]}"#, "Records[0] is not an object"),
        ];
        for (body, expected) in cases {
            match classify(body) {
                Err(NotificationError::Malformed {
                    shape: "s3",
                    reason,
                }) => {
                    assert!(reason.contains(expected), "{reason:?} for {body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn test_events_raw_and_in_sns() {
        assert_eq!(
            classify(fixture!("s3_test_event.json")),
            Ok(Notification::TestEvent)
        );
        assert_eq!(
            classify(fixture!("sns_test_event.json")),
            Ok(Notification::TestEvent)
        );
    }

    #[test]
    fn sns_envelope_around_s3_decodes_the_key_once() {
        let (shape, objects, skipped, origin) = expect_objects(fixture!("sns_s3.json"));
        assert_eq!((shape, skipped), ("sns+s3", 0));
        assert_eq!(
            objects,
            vec![ObjectRef {
                size: Some(512),
                etag: Some("aaaabbbbccccddddeeeeffff00001111".into()),
                ..ObjectRef::new(
                    "acme-flow-logs",
                    "AWSLogs/aws-account-id=000011112222/aws-service=vpcflowlogs/year=2024/flow%25.log.gz"
                )
            }]
        );
        assert_eq!(
            origin.sns,
            Some(SnsMeta {
                message_id: Some("11111111-2222-3333-4444-555555555555".into()),
                topic_arn: Some("arn:aws:sns:eu-west-1:000011112222:acme-log-topic".into()),
                subject: Some("Amazon S3 Notification".into()),
                timestamp: Some("2024-05-01T10:00:05.123Z".into()),
            })
        );
    }

    #[test]
    fn sns_envelope_without_type_is_recognised_by_topic_arn_and_message() {
        let (shape, objects, _, origin) = expect_objects(fixture!("sns_without_type.json"));
        assert_eq!(shape, "sns+s3");
        assert_eq!(objects.len(), 1);
        assert_eq!(
            (objects[0].bucket.as_str(), objects[0].key.as_str()),
            ("acme-app-logs", "app/2024/05/01/web 1.log.gz")
        );
        let sns = origin.sns.expect("the envelope is recorded");
        assert_eq!(
            sns.topic_arn.as_deref(),
            Some("arn:aws:sns:eu-west-1:000011112222:acme-republished")
        );
        assert_eq!(
            sns.message_id.as_deref(),
            Some("22222222-3333-4444-5555-666666666666")
        );
        // Both fields are needed, and any `Type` other than SNS's three is not an envelope.
        let inner = r#"{\"Event\":\"s3:TestEvent\"}"#;
        for body in [
            format!(r#"{{"Message":"{inner}"}}"#),
            format!(r#"{{"TopicArn":"t","Type":"Alarm","Message":"{inner}"}}"#),
            format!(r#"{{"TopicArn":1,"Message":"{inner}"}}"#),
        ] {
            assert!(
                matches!(classify(&body), Err(NotificationError::Unknown { .. })),
                "{body}"
            );
        }
        let body = format!(r#"{{"TopicArn":"t","Message":"{inner}"}}"#);
        assert_eq!(classify(&body), Ok(Notification::TestEvent));
        // One SNS layer only, with or without `Type`.
        let twice = in_sns(fixture!("sns_without_type.json"));
        assert!(matches!(
            classify(&twice),
            Err(NotificationError::Malformed { shape: "sns", .. })
        ));
    }

    #[test]
    fn s3_records_without_event_version_or_event_name_are_objects() {
        let (shape, objects, skipped, _) =
            expect_objects(fixture!("s3_without_event_version.json"));
        assert_eq!((shape, skipped), ("s3", 1), "the deletion is still skipped");
        let keys: Vec<_> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["edge/2024/05/01/node 1.log", "edge/2024/05/01/node-2.log"]
        );
        assert_eq!(objects[0].size, Some(77));
        assert_eq!(objects[1].etag.as_deref(), Some("0123"));
        // Without bucket name or key it is still malformed, named by path.
        let e = classify(r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{}}}]}"#);
        assert!(
            matches!(&e, Err(NotificationError::Malformed { shape: "s3", reason }) if reason.contains("Records[0].s3.object")),
            "{e:?}"
        );
        // A non-string eventName is not a creation.
        let (_, objects, skipped, _) = expect_objects(
            r#"{"Records":[{"eventName":7,"s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#,
        );
        assert_eq!((objects.len(), skipped), (0, 1));
    }

    #[test]
    fn sns_control_messages() {
        assert_eq!(
            classify(fixture!("sns_subscription_confirmation.json")),
            Ok(Notification::Control {
                kind: "SubscriptionConfirmation".into()
            })
        );
        let unsubscribe = r#"{"Type":"UnsubscribeConfirmation","MessageId":"m","TopicArn":"arn:aws:sns:eu-west-1:000011112222:t","Message":"You have unsubscribed","SubscribeURL":"https://example.invalid/","Token":"t"}"#;
        assert_eq!(
            classify(unsubscribe),
            Ok(Notification::Control {
                kind: "UnsubscribeConfirmation".into()
            })
        );
    }

    #[test]
    fn sns_errors_name_the_message() {
        // Message not JSON.
        match classify(&in_sns("hello from a human")) {
            Err(NotificationError::Malformed {
                shape: "sns",
                reason,
            }) => {
                assert!(reason.contains("\"hello from a human\""), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Message JSON of no known shape: the preview is the Message's, not the envelope's.
        assert_eq!(
            classify(&in_sns(r#"{"alarm":"high cpu"}"#)),
            Err(NotificationError::Unknown {
                preview: r#"{"alarm":"high cpu"}"#.into()
            })
        );
        // Two envelopes.
        assert!(matches!(
            classify(&in_sns(&in_sns("{}"))),
            Err(NotificationError::Malformed { shape: "sns", .. })
        ));
        // No Message.
        assert!(matches!(
            classify(r#"{"Type":"Notification","TopicArn":"t"}"#),
            Err(NotificationError::Malformed { shape: "sns", .. })
        ));
        // A malformed inner shape is reported with its SNS name.
        assert!(matches!(
            classify(&in_sns(r#"{"Records":[]}"#)),
            Err(NotificationError::Malformed {
                shape: "sns+s3",
                ..
            })
        ));
    }

    #[test]
    fn sns_message_as_object_is_accepted() {
        // As AWS documentation prints it; SNS itself sends a string.
        let body = r#"{"Type":"Notification","TopicArn":"t","Message":{"s3Bucket":"b","s3ObjectKey":["k1"]}}"#;
        let (shape, objects, _, origin) = expect_objects(body);
        assert_eq!(shape, "sns+cloudtrail");
        assert_eq!(objects, vec![ObjectRef::new("b", "k1")]);
        assert_eq!(origin.sns.unwrap().topic_arn.as_deref(), Some("t"));
    }

    #[test]
    fn eventbridge_object_created_keeps_the_key_and_offers_the_decoded_one() {
        let (shape, objects, skipped, origin) =
            expect_objects(fixture!("eventbridge_object_created.json"));
        assert_eq!((shape, skipped), ("eventbridge", 0));
        assert_eq!(
            objects,
            vec![ObjectRef {
                size: Some(4096),
                etag: Some("99998888777766665555444433332222".into()),
                version_id: Some("ver-example-1".into()),
                fallback_key: Some("exports/q1 totals tax=100%.csv".into()),
                ..ObjectRef::new("acme-exports", "exports/q1 totals+tax=100%.csv")
            }]
        );
        assert_eq!(
            origin.eventbridge,
            Some(EventBridgeMeta {
                id: Some("aaaaaaaa-1111-2222-3333-bbbbbbbbbbbb".into()),
                detail_type: "Object Created".into(),
                account: Some("000011112222".into()),
                region: Some("eu-west-1".into()),
                time: Some("2024-05-01T10:00:08Z".into()),
            })
        );
        // A plain key has no fallback; nor has one whose decoding changes nothing.
        for key in ["plain/key.txt", "odd%zz"] {
            let body = format!(
                r#"{{"source":"aws.s3","detail-type":"Object Created","detail":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}"#
            );
            let (_, objects, _, _) = expect_objects(&body);
            assert_eq!(objects[0].key, key);
            assert_eq!(objects[0].fallback_key, None);
        }
    }

    #[test]
    fn eventbridge_other_detail_types_are_skipped() {
        let (shape, objects, skipped, origin) =
            expect_objects(fixture!("eventbridge_object_deleted.json"));
        assert_eq!((shape, objects.len(), skipped), ("eventbridge", 0, 1));
        assert_eq!(origin.eventbridge.unwrap().detail_type, "Object Deleted");
        // Through SNS too.
        let (shape, objects, _, origin) =
            expect_objects(&in_sns(fixture!("eventbridge_object_created.json")));
        assert_eq!((shape, objects.len()), ("sns+eventbridge", 1));
        assert!(origin.sns.is_some() && origin.eventbridge.is_some());
    }

    #[test]
    fn eventbridge_malformed() {
        let body = r#"{"source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"}}}"#;
        match classify(body) {
            Err(NotificationError::Malformed {
                shape: "eventbridge",
                reason,
            }) => assert!(reason.contains("detail.object.key"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cloudtrail_keys_are_plain() {
        let (shape, objects, skipped, origin) = expect_objects(fixture!("sns_cloudtrail.json"));
        assert_eq!((shape, skipped), ("sns+cloudtrail", 0));
        assert_eq!(objects.len(), 2);
        assert!(objects.iter().all(|o| o.bucket == "acme-trail"));
        assert_eq!(
            objects[1].key,
            "AWSLogs/o-exampleorg/000011112222/CloudTrail/us-east-1/2024/05/01/000011112222_CloudTrail_us-east-1_20240501T1005Z_QrStUvWxYz012345.json.gz"
        );
        assert!(origin.sns.is_some());
        // Raw delivery, and a key that a form-decoder would have changed.
        let (shape, objects, _, _) =
            expect_objects(r#"{"s3Bucket":"b","s3ObjectKey":["a+b%3D.json.gz"]}"#);
        assert_eq!(shape, "cloudtrail");
        assert_eq!(objects[0].key, "a+b%3D.json.gz");
        assert!(matches!(
            classify(r#"{"s3Bucket":"b","s3ObjectKey":["k",3]}"#),
            Err(NotificationError::Malformed { shape: "cloudtrail", reason }) if reason.contains("s3ObjectKey[1]")
        ));
    }

    #[test]
    fn config_delivery_completed_and_other_message_types() {
        let (shape, objects, skipped, _) = expect_objects(fixture!("sns_config_snapshot.json"));
        assert_eq!((shape, skipped), ("sns+config", 0));
        assert_eq!(
            objects,
            vec![ObjectRef::new(
                "acme-config",
                "AWSLogs/000011112222/Config/eu-west-1/2024/5/1/ConfigSnapshot/000011112222_Config_eu-west-1_ConfigSnapshot_20240501T100000Z_00000000-aaaa-bbbb-cccc-000000000001.json.gz"
            )]
        );
        let (shape, objects, skipped, _) = expect_objects(fixture!("sns_config_item_change.json"));
        assert_eq!((shape, objects.len(), skipped), ("sns+config", 0, 1));
        // History delivery, raw, key kept as given.
        let (shape, objects, _, _) = expect_objects(
            r#"{"s3ObjectKey":"h/AWS::S3::Bucket+x.json.gz","s3Bucket":"c","messageType":"ConfigurationHistoryDeliveryCompleted","notificationCreationTime":"t"}"#,
        );
        assert_eq!(shape, "config");
        assert_eq!(
            objects,
            vec![ObjectRef::new("c", "h/AWS::S3::Bucket+x.json.gz")]
        );
        // A delivery without its key is broken, not skipped.
        assert!(matches!(
            classify(
                r#"{"messageType":"ConfigurationSnapshotDeliveryCompleted","notificationCreationTime":"t","s3Bucket":"c"}"#
            ),
            Err(NotificationError::Malformed {
                shape: "config",
                ..
            })
        ));
    }

    #[test]
    fn fdr_every_file_is_an_object() {
        let (shape, objects, skipped, origin) = expect_objects(fixture!("fdr_batch.json"));
        assert_eq!((shape, skipped), ("fdr", 0));
        let keys: Vec<_> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "data/00000000-1111-2222-3333-444444444444/part-00000.gz",
                "data/00000000-1111-2222-3333-444444444444/part-00001.gz",
                "fdrv2/aidmaster/00000000-1111-2222-3333-444444444444/part-00000.gz",
            ]
        );
        assert!(objects
            .iter()
            .all(|o| o.bucket == "cs-prod-cannon-0123456789abcdef"));
        assert_eq!(objects[1].size, Some(20480));
        assert_eq!(
            objects[2].checksum.as_deref(),
            Some("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")
        );
        assert_eq!(
            origin.fdr,
            Some(FdrMeta {
                cid: Some("0123456789abcdef0123456789abcdef".into()),
                path_prefix: Some("data/00000000-1111-2222-3333-444444444444".into()),
                timestamp_ms: Some(1714557600123),
            })
        );
        // Paths are plain.
        let (_, objects, _, _) = expect_objects(r#"{"bucket":"b","files":[{"path":"a+b%20c"}]}"#);
        assert_eq!(objects[0].key, "a+b%20c");
        assert!(matches!(
            classify(r#"{"bucket":"b","files":[{"size":1}]}"#),
            Err(NotificationError::Malformed { shape: "fdr", reason }) if reason.contains("files[0].path")
        ));
    }

    #[test]
    fn lambda_trigger_events_are_refused() {
        assert!(matches!(
            classify(fixture!("lambda_sqs_event.json")),
            Err(NotificationError::Unsupported {
                shape: "lambda-sqs",
                ..
            })
        ));
        assert!(matches!(
            classify(r#"{"Records":[{"EventSource":"aws:sns","Sns":{"Message":"{}"}}]}"#),
            Err(NotificationError::Unsupported {
                shape: "lambda-sns",
                ..
            })
        ));
    }

    #[test]
    fn unknown_and_not_json() {
        let finding = fixture!("eventbridge_guardduty_finding.json");
        assert_eq!(
            classify(finding),
            Err(NotificationError::Unknown {
                preview: preview(finding)
            })
        );
        for body in ["{}", "[]", "42", "\"s\"", "null", r#"{"Type":"Alarm"}"#] {
            assert!(
                matches!(classify(body), Err(NotificationError::Unknown { .. })),
                "{body}"
            );
        }
        for body in ["", "nope", "{", "{\"Records\":[", "\u{feff}{}"] {
            assert!(
                matches!(classify(body), Err(NotificationError::NotJson { .. })),
                "{body:?}"
            );
        }
        let long = "x".repeat(1000);
        match classify(&long) {
            Err(NotificationError::NotJson { preview, .. }) => {
                assert_eq!(preview.chars().count(), 120)
            }
            other => panic!("{other:?}"),
        }
    }

    /// One line describing a classification, for the sample table of
    /// crates/formats/docs/notifications.md.
    fn describe(result: &Result<Notification, NotificationError>) -> String {
        match result {
            Ok(Notification::Objects {
                shape,
                objects,
                skipped,
                ..
            }) => {
                let first = objects.first().map_or(String::new(), |o| {
                    let more = if objects.len() > 1 { " …" } else { "" };
                    let fallback = o
                        .fallback_key
                        .as_ref()
                        .map_or(String::new(), |f| format!(" (fallback {f:?})"));
                    format!("; {}/{:?}{fallback}{more}", o.bucket, o.key)
                });
                format!(
                    "`{shape}`, {} object(s), {skipped} skipped{first}",
                    objects.len()
                )
            }
            Ok(Notification::TestEvent) => "TestEvent".into(),
            Ok(Notification::Control { kind }) => format!("Control {kind}"),
            Err(NotificationError::Unsupported { shape, .. }) => format!("Unsupported `{shape}`"),
            Err(NotificationError::Malformed { shape, .. }) => format!("Malformed `{shape}`"),
            Err(NotificationError::Unknown { .. }) => "Unknown".into(),
            Err(NotificationError::NotJson { .. }) => "NotJson".into(),
        }
    }

    /// The public samples in ../shared/samples, next to the repository (not part of it, hence
    /// ignored; the default path is relative to this crate's manifest, crates/formats/; set
    /// SLUICE_SAMPLES to their directory to run it elsewhere). Each body is checked raw and
    /// re-wrapped in an SNS envelope. Run with `-- --ignored --nocapture` to print the table.
    #[test]
    #[ignore = "reads ../shared/samples, outside the repository"]
    fn shared_samples_classify_as_documented() {
        let dir = std::env::var("SLUICE_SAMPLES").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples").into()
        });
        // (file, line of a one-body-per-line file, expected raw, expected inside SNS)
        let expected: &[(&str, Option<usize>, &str, &str)] = &[
            ("notifications/cloudtrail_sns_message_multi_awsdocs.json", None,
             "`cloudtrail`, 3 object(s), 0 skipped; your-bucket-name/\"AWSLogs/123456789012/CloudTrail/us-east-2/2016/08/11/123456789012_CloudTrail_us-east-2_20160811T2215Z_kpaMYavMQA9Ahp7L.json.gz\" …",
             "`sns+cloudtrail`, 3 object(s), 0 skipped; your-bucket-name/\"AWSLogs/123456789012/CloudTrail/us-east-2/2016/08/11/123456789012_CloudTrail_us-east-2_20160811T2215Z_kpaMYavMQA9Ahp7L.json.gz\" …"),
            ("notifications/cloudtrail_sns_message_single_awsdocs.json", None,
             "`cloudtrail`, 1 object(s), 0 skipped; your-bucket-name/\"AWSLogs/123456789012/CloudTrail/us-east-2/2013/12/13/123456789012_CloudTrail_us-west-2_20131213T1920Z_LnPgDQnpkSKEsppV.json.gz\"",
             "`sns+cloudtrail`, 1 object(s), 0 skipped; your-bucket-name/\"AWSLogs/123456789012/CloudTrail/us-east-2/2013/12/13/123456789012_CloudTrail_us-west-2_20131213T1920Z_LnPgDQnpkSKEsppV.json.gz\""),
            ("notifications/eventbridge_object_created.json", None,
             "`eventbridge`, 1 object(s), 0 skipped; example-bucket/\"IMG_m7fzo3.jpg\"",
             "`sns+eventbridge`, 1 object(s), 0 skipped; example-bucket/\"IMG_m7fzo3.jpg\""),
            ("notifications/eventbridge_object_created_elastic.json", None,
             "`eventbridge`, 1 object(s), 0 skipped; test-eb-crowds-s3-buck/\"fdr-0_aidmaster.log\"",
             "`sns+eventbridge`, 1 object(s), 0 skipped; test-eb-crowds-s3-buck/\"fdr-0_aidmaster.log\""),
            ("notifications/eventbridge_object_created_lambda_promtail.json", None,
             "`eventbridge`, 1 object(s), 0 skipped; bucket/\"pizza.txt\"",
             "`sns+eventbridge`, 1 object(s), 0 skipped; bucket/\"pizza.txt\""),
            ("notifications/lambda_sqs_event_wrapping_s3_event.json", None,
             "Unsupported `lambda-sqs`", "Unsupported `lambda-sqs`"),
            ("notifications/s3_event_direct_sqs_body_elastic.json", None,
             "`s3`, 1 object(s), 0 skipped; test-sqs-cs-s3/\"fdr-sample.log\"",
             "`sns+s3`, 1 object(s), 0 skipped; test-sqs-cs-s3/\"fdr-sample.log\""),
            ("notifications/s3_event_object_removed.json", None,
             "`s3`, 0 object(s), 1 skipped", "`sns+s3`, 0 object(s), 1 skipped"),
            ("notifications/s3_event_objectcreated_put.json", None,
             "`s3`, 1 object(s), 0 skipped; lambda-artifacts-deafc19498e3f2df/\"b21b84d653bb07b05b1e6b33684dc11b\"",
             "`sns+s3`, 1 object(s), 0 skipped; lambda-artifacts-deafc19498e3f2df/\"b21b84d653bb07b05b1e6b33684dc11b\""),
            ("notifications/s3_event_percent_encoded_key_awslambdago.json", None,
             "`s3`, 1 object(s), 0 skipped; sourcebucket/\"Happy Face.jpg\"",
             "`sns+s3`, 1 object(s), 0 skipped; sourcebucket/\"Happy Face.jpg\""),
            ("notifications/s3_event_v2_5_awsGeneratedTags.json", None,
             "`s3`, 1 object(s), 0 skipped; aws-landing-zone-logs-000000000000-eu-central-1/\"AWSLogs/000000000000/CloudTrail/us-east-1/2026/07/16/example_CloudTrail_us-east-1.json.gz\"",
             "`sns+s3`, 1 object(s), 0 skipped; aws-landing-zone-logs-000000000000-eu-central-1/\"AWSLogs/000000000000/CloudTrail/us-east-1/2026/07/16/example_CloudTrail_us-east-1.json.gz\""),
            ("notifications/s3_test_event_lambda_promtail.json", None, "TestEvent", "TestEvent"),
            ("notifications/s3_test_event_vector.json", None, "TestEvent", "TestEvent"),
            ("notifications/sns_envelope_s3_objectcreated_elastic.json", None,
             "`sns+s3`, 1 object(s), 0 skipped; test-crowds-s3-buck/\"fdr-0_userinfo.log\"",
             "Malformed `sns`"),
            ("notifications/sns_envelope_s3_testevent_vector.json", None, "TestEvent", "Malformed `sns`"),
            ("notifications/sqs_bodies_vpcflow_delivery_and_testevent.txt", Some(1),
             "`s3`, 1 object(s), 0 skipped; aws-vpcflowlogs-111111111111-3abc4c4f/\"AWSLogs/111111111111/vpcflowlogs/eu-west-2/2022/02/21/111111111111_vpcflowlogs_eu-west-2_fl-0dcbf7c4c2483c6b6_20220221T1955Z_7fe2e5f7.log.gz\"",
             "`sns+s3`, 1 object(s), 0 skipped; aws-vpcflowlogs-111111111111-3abc4c4f/\"AWSLogs/111111111111/vpcflowlogs/eu-west-2/2022/02/21/111111111111_vpcflowlogs_eu-west-2_fl-0dcbf7c4c2483c6b6_20220221T1955Z_7fe2e5f7.log.gz\""),
            ("notifications/sqs_bodies_vpcflow_delivery_and_testevent.txt", Some(2), "TestEvent", "TestEvent"),
            ("notifications/sqs_bodies_vpcflow_delivery_and_testevent.txt", Some(3),
             "`s3`, 1 object(s), 0 skipped; aws-vpcflowlogs-111111111111-3abc4c4f/\"AWSLogs/111111111111/vpcflowlogs/eu-west-2/2022/02/21/111111111111_vpcflowlogs_eu-west-2_fl-0dcbf7c4c2483c6b6_20220221T2025Z_55a7d2af.log.gz\"",
             "`sns+s3`, 1 object(s), 0 skipped; aws-vpcflowlogs-111111111111-3abc4c4f/\"AWSLogs/111111111111/vpcflowlogs/eu-west-2/2022/02/21/111111111111_vpcflowlogs_eu-west-2_fl-0dcbf7c4c2483c6b6_20220221T2025Z_55a7d2af.log.gz\""),
            ("crowdstrike_fdr/fdr_sqs_notification_elastic_tf.json", None,
             "`fdr`, 3 object(s), 0 skipped; <test-bucket>/\"data\" …",
             "`sns+fdr`, 3 object(s), 0 skipped; <test-bucket>/\"data\" …"),
            ("config/config_history_delivery_sns_awsdocs.json", None,
             "`sns+config`, 1 object(s), 0 skipped; config-bucket-123456789012-ohio/\"AWSLogs/123456789012/Config/us-east-2/2016/9/27/ConfigHistory/123456789012_Config_us-east-2_ConfigHistory_AWS::CloudTrail::Trail_20160927T195818Z_20160927T195818Z_1.json.gz\"",
             "Malformed `sns`"),
            ("config/config_snapshot_delivery_sns_awsdocs.json", None,
             "`sns+config`, 1 object(s), 0 skipped; config-bucket-123456789012-ohio/\"AWSLogs/123456789012/Config/us-east-2/2016/9/27/ConfigSnapshot/123456789012_Config_us-east-2_ConfigSnapshot_20160927T183939Z_16da64e4-cb65-4846-b061-e6c3ba43cb96.json.gz\"",
             "Malformed `sns`"),
        ];
        let mut failures = Vec::new();
        println!("| sample | raw | inside an SNS envelope |\n|---|---|---|");
        for &(file, line, raw, wrapped) in expected {
            let text = std::fs::read_to_string(format!("{dir}/{file}"))
                .unwrap_or_else(|e| panic!("{dir}/{file}: {e}"));
            let body = match line {
                Some(n) => text.lines().nth(n - 1).expect("line").to_owned(),
                None => text,
            };
            let got_raw = describe(&classify(&body));
            let got_wrapped = describe(&classify(&in_sns(&body)));
            let name = match line {
                Some(n) => format!("`{file}` line {n}"),
                None => format!("`{file}`"),
            };
            println!("| {name} | {got_raw} | {got_wrapped} |");
            if got_raw != raw || got_wrapped != wrapped {
                failures.push(format!("{name}: got {got_raw} / {got_wrapped}"));
            }
        }
        // Every sample notification is in the table: a new sample file fails here until it is.
        for sub in ["notifications", "crowdstrike_fdr", "config"] {
            for entry in std::fs::read_dir(format!("{dir}/{sub}")).expect("samples dir") {
                let name = format!(
                    "{sub}/{}",
                    entry.expect("entry").file_name().to_string_lossy()
                );
                let is_notification = sub != "crowdstrike_fdr" || name.contains("sqs_notification");
                if is_notification && !expected.iter().any(|e| e.0 == name) {
                    failures.push(format!("{name}: not in the table"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// Property-style: random bytes, every truncation of every fixture and random byte edits of
    /// them never panic; a truncated fixture is never accepted as a valid notification.
    #[test]
    fn never_panics() {
        let mut rng = fastrand::Rng::with_seed(0x5e1c_e000);
        for _ in 0..2000 {
            let len = rng.usize(0..200);
            let bytes: Vec<u8> = (0..len)
                .map(|_| *rng.choice(b"{}[]\":,0123 aeTRS\\%+.-").unwrap())
                .collect();
            let _ = classify(&String::from_utf8_lossy(&bytes));
        }
        for fixture in FIXTURES {
            let trimmed = fixture.trim_end();
            for (cut, _) in trimmed.char_indices().skip(1) {
                assert!(classify(&trimmed[..cut]).is_err(), "{}", &trimmed[..cut]);
            }
            for _ in 0..300 {
                let mut bytes = fixture.as_bytes().to_vec();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(0..bytes.len());
                    bytes[at] = *rng.choice(b"{}[]\":,0 %+x\\").unwrap();
                }
                let _ = classify(&String::from_utf8_lossy(&bytes));
            }
        }
        // Deep nesting stops at serde_json's recursion limit instead of the stack.
        let deep = "[".repeat(100_000);
        assert!(matches!(
            classify(&deep),
            Err(NotificationError::NotJson { .. })
        ));
    }
}
