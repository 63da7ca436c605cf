//! `parquet`: each row of a parquet object as one compact JSON object (VPC flow logs in parquet,
//! Security Lake OCSF). Parquet needs random access (the footer is at the end), so the stream is
//! first spilled to an anonymous temporary file, capped by `max_spill_bytes`; never to memory.
//! Rows are then read group by group with the `parquet` crate's row reader.
//!
//! JSON mapping: groups → objects (column order kept), lists → arrays, maps → objects (keys as
//! text), integers and finite floats → numbers (NaN/infinity → null), strings → strings, byte
//! arrays → strings when UTF-8 else base64, timestamps → epoch numbers in their stored unit
//! (OCSF `time` stays epoch milliseconds), dates, times and decimals → their text form.
//!
//! It does not read encrypted parquet or the brotli codec (not compiled in).

use std::fs::File;
use std::io::{BufRead, BufWriter, Seek, Write};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use super::emit::Emitter;
use super::json::{json_field, write_json_string};
use super::tag::FieldSource;
use super::{ProcessError, ProcessorSpec};

/// The first (and last) four bytes of a parquet file.
pub(crate) const MAGIC: &[u8] = b"PAR1";

/// Deepest nesting written (deeper values become null).
const MAX_DEPTH: usize = 64;

/// Spills, then emits every row.
pub(crate) fn process(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    let (file, size) = spill(input, spec.max_spill_bytes)?;
    out.stats.bytes_in = size;
    let reader = SerializedFileReader::new(file).map_err(|e| ProcessError::Parquet {
        size,
        message: e.to_string(),
    })?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| ProcessError::Parquet {
            size,
            message: e.to_string(),
        })?;
    let mut json = Vec::with_capacity(4096);
    for (n, row) in rows.enumerate() {
        let row = row.map_err(|e| ProcessError::Parquet {
            size,
            message: format!("row {n}: {e}"),
        })?;
        json.clear();
        write_row(&row, &mut json, 0);
        // Tag fields are looked up in the JSON form (dotted paths into groups).
        let fields = JsonRow(&json);
        out.json(&json, false, &fields)?;
    }
    Ok(())
}

/// Tag fields of a row, read from its JSON form.
struct JsonRow<'a>(&'a [u8]);

impl FieldSource for JsonRow<'_> {
    fn field(&self, path: &str) -> Option<std::borrow::Cow<'_, str>> {
        json_field(self.0, path)
    }
}

/// Copies the stream to an anonymous temporary file (removed when closed); checks the magic.
fn spill(input: &mut dyn BufRead, cap: u64) -> Result<(File, u64), ProcessError> {
    let spill_err = |offset: u64| move |source| ProcessError::Spill { offset, source };
    let file = tempfile::tempfile().map_err(spill_err(0))?;
    let mut w = BufWriter::with_capacity(256 * 1024, file);
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(4);
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ProcessError::Read {
                    offset: size,
                    source,
                })
            }
        };
        if buf.is_empty() {
            break;
        }
        if head.len() < 4 {
            let take = (4 - head.len()).min(buf.len());
            head.extend_from_slice(&buf[..take]);
            if head.len() == 4 && head != MAGIC {
                return Err(ProcessError::NotParquet { found: head });
            }
        }
        let n = buf.len();
        if size + n as u64 > cap {
            return Err(ProcessError::SpillTooLarge { limit: cap });
        }
        w.write_all(buf).map_err(spill_err(size))?;
        input.consume(n);
        size += n as u64;
    }
    if head.len() < 4 {
        return Err(ProcessError::NotParquet { found: head });
    }
    let mut file = w.into_inner().map_err(|e| ProcessError::Spill {
        offset: size,
        source: e.into_error(),
    })?;
    file.rewind().map_err(spill_err(size))?;
    Ok((file, size))
}

fn write_row(row: &Row, out: &mut Vec<u8>, depth: usize) {
    out.push(b'{');
    for (i, (name, field)) in row.get_column_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(name.as_bytes(), out);
        out.push(b':');
        write_field(field, out, depth + 1);
    }
    out.push(b'}');
}

fn write_display(v: impl std::fmt::Display, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

fn write_float(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        write_display(v, out);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_field(field: &Field, out: &mut Vec<u8>, depth: usize) {
    if depth > MAX_DEPTH {
        out.extend_from_slice(b"null");
        return;
    }
    match field {
        Field::Null => out.extend_from_slice(b"null"),
        Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Field::Byte(v) => write_display(v, out),
        Field::Short(v) => write_display(v, out),
        Field::Int(v) => write_display(v, out),
        Field::Long(v) => write_display(v, out),
        Field::UByte(v) => write_display(v, out),
        Field::UShort(v) => write_display(v, out),
        Field::UInt(v) => write_display(v, out),
        Field::ULong(v) => write_display(v, out),
        Field::Float16(v) => write_float(f64::from(*v), out),
        Field::Float(v) => write_float(f64::from(*v), out),
        Field::Double(v) => write_float(*v, out),
        Field::Str(s) => write_json_string(s.as_bytes(), out),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => write_json_string(s.as_bytes(), out),
            Err(_) => {
                out.push(b'"');
                base64(b.data(), out);
                out.push(b'"');
            }
        },
        Field::TimestampMillis(v) | Field::TimestampMicros(v) => write_display(v, out),
        Field::Decimal(_) | Field::Date(_) | Field::TimeMillis(_) | Field::TimeMicros(_) => {
            write_json_string(field.to_string().trim_matches('"').as_bytes(), out)
        }
        Field::Group(row) => write_row(row, out, depth),
        Field::ListInternal(list) => {
            out.push(b'[');
            for (i, f) in list.elements().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_field(f, out, depth + 1);
            }
            out.push(b']');
        }
        Field::MapInternal(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.entries().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    Field::Str(s) => write_json_string(s.as_bytes(), out),
                    other => write_json_string(other.to_string().trim_matches('"').as_bytes(), out),
                }
                out.push(b':');
                write_field(v, out, depth + 1);
            }
            out.push(b'}');
        }
    }
}

/// Standard base64 with padding.
fn base64(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::super::testutil::*;
    use super::super::{ProcessError, ProcessorKind, ProcessorSpec};
    use super::*;

    /// A small VPC-flow-like parquet file: 3 rows, one null.
    fn sample() -> Vec<u8> {
        let schema = Arc::new(
            parse_message_type(
                "message schema {
                    REQUIRED INT32 version;
                    OPTIONAL BYTE_ARRAY account_id (UTF8);
                    REQUIRED INT64 bytes;
                }",
            )
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut buf = Vec::new();
        let mut w = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int32Type>()
            .write_batch(&[2, 2, 5], None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(
                &[ByteArray::from("123"), ByteArray::from("a\"b")],
                Some(&[1, 0, 1]),
                None,
            )
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&[10, 20, 1 << 40], None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        buf
    }

    #[test]
    fn rows_become_json_objects() {
        let spec =
            ProcessorSpec::new(ProcessorKind::Parquet).with_tag("my.app.pq.{account_id|none}");
        let (r, sink) = run_key(&sample(), &spec, "k");
        let stats = r.unwrap();
        assert_eq!(
            sink.messages(),
            vec![
                r#"{"version":2,"account_id":"123","bytes":10}"#,
                r#"{"version":2,"account_id":null,"bytes":20}"#,
                r#"{"version":5,"account_id":"a\"b","bytes":1099511627776}"#,
            ]
        );
        assert_eq!(
            sink.tags(),
            vec!["my.app.pq.123", "my.app.pq.none", "my.app.pq.a_b"]
        );
        assert_eq!(stats.events, 3);
    }

    #[test]
    fn parquet_magic_is_detected_under_any_processor() {
        let (r, sink) = run_key(&sample(), &ProcessorSpec::new(ProcessorKind::Lines), "k");
        r.unwrap();
        assert_eq!(sink.0.len(), 3);
    }

    #[test]
    fn not_parquet() {
        let spec = ProcessorSpec::new(ProcessorKind::Parquet);
        let (r, _) = run_key(b"{\"json\":1}", &spec, "k");
        match r {
            Err(ProcessError::NotParquet { found }) => assert_eq!(found, b"{\"js"),
            other => panic!("{other:?}"),
        }
        let (r, _) = run_key(b"PA", &spec, "k");
        assert!(matches!(r, Err(ProcessError::NotParquet { .. })), "{r:?}");
        // Right magic, broken body.
        let mut broken = sample();
        broken.truncate(broken.len() - 20);
        let (r, _) = run_key(&broken, &spec, "k");
        let e = r.unwrap_err();
        assert!(matches!(e, ProcessError::Parquet { .. }), "{e:?}");
        assert!(e.to_string().starts_with("invalid parquet file of"), "{e}");
    }

    #[test]
    fn spill_is_capped() {
        let mut spec = ProcessorSpec::new(ProcessorKind::Parquet);
        spec.max_spill_bytes = 100;
        let (r, _) = run_key(&sample(), &spec, "k");
        assert!(
            matches!(r, Err(ProcessError::SpillTooLarge { limit: 100 })),
            "{r:?}"
        );
    }

    #[test]
    fn base64_pads() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\xfe", "//4="),
        ] {
            let mut out = Vec::new();
            base64(input, &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }
}
