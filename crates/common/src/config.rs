//! The key list of a configuration struct, read from its `Deserialize` implementation, so a
//! list of accepted keys (for "unknown key" errors and the config reference) can never drift
//! from the struct that reads them.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names serde reads for `T` (after `rename`), in declaration order. Empty for a
/// type that is not a plain struct (a map, or a struct with `#[serde(flatten)]`).
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut captured = None;
    let _ = T::deserialize(Capture(&mut captured));
    captured.unwrap_or(&[])
}

/// A deserializer that answers only `deserialize_struct`, by remembering its field list.
struct Capture<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for Capture<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Raw {
        a: u32,
        #[serde(rename = "bee")]
        b: Option<String>,
        #[serde(default)]
        c: Vec<u8>,
    }

    #[test]
    fn lists_the_fields_serde_reads() {
        assert_eq!(super::field_names::<Raw>(), ["a", "bee", "c"]);
        assert!(super::field_names::<u32>().is_empty());
    }
}
