//! Values written as a whole number with a unit: durations (`30s`, `1h30m`) and byte sizes
//! (`64MiB`). Their serde and JSON Schema code is the same but for the parser, the formatter
//! and a few words, so it lives here once: a string is parsed by the type's own parser, a bare
//! YAML number is refused with the accepted forms (never guessed at), and the schema is a
//! string with the type's pattern.
use std::fmt;
use std::marker::PhantomData;

use schemars::{json_schema, Schema};
use serde::{de, Deserializer, Serializer};

/// A value written as text with a unit.
pub(crate) trait UnitText: Sized {
    /// What it is called in errors: "duration", "size".
    const WHAT: &'static str;
    /// What serde says it expected: "a duration such as 200ms, ...".
    const EXPECTING: &'static str;
    /// The accepted forms, quoted by every error.
    const ACCEPTED_FORMS: &'static str;
    /// The JSON Schema definition's name.
    const SCHEMA_NAME: &'static str;
    /// The JSON Schema definition's description.
    const SCHEMA_DESCRIPTION: &'static str;
    /// The JSON Schema definition's pattern (the same forms the parser takes).
    const SCHEMA_PATTERN: &'static str;
    /// Why a text is not such a value (its message ends with the accepted forms).
    type Error: std::fmt::Display;
    /// Parses the text as written in a workflow file.
    fn parse(text: &str) -> Result<Self, Self::Error>;
    /// The value in a syntax [`UnitText::parse`] reads.
    fn format(&self) -> String;
}

/// Serializes the value as its text.
pub(crate) fn serialize<T: UnitText, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.format())
}

/// Deserializes the value from its text; a bare number is an error naming the accepted forms.
pub(crate) fn deserialize<'de, T: UnitText, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(TextVisitor::<T>(PhantomData))
}

/// The JSON Schema of the value: a string with the type's pattern.
pub(crate) fn schema<T: UnitText>() -> Schema {
    json_schema!({
        "description": T::SCHEMA_DESCRIPTION,
        "type": "string",
        "pattern": T::SCHEMA_PATTERN
    })
}

struct TextVisitor<T>(PhantomData<T>);

impl<T: UnitText> de::Visitor<'_> for TextVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Err(E::custom(bare_number::<T>(&v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Err(E::custom(bare_number::<T>(&v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(E::custom(bare_number::<T>(&v.to_string())))
    }
}

fn bare_number<T: UnitText>(n: &str) -> String {
    format!(
        "invalid {} `{n}`: a number needs a unit; write {}",
        T::WHAT,
        T::ACCEPTED_FORMS
    )
}

/// `Display`, `Serialize`, `Deserialize` and `JsonSchema` for a [`UnitText`] type, all through
/// the functions above.
macro_rules! unit_text_impls {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::workflow::unit_text::UnitText::format(self))
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::workflow::unit_text::serialize(self, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::workflow::unit_text::deserialize(d)
            }
        }
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                <$t as $crate::workflow::unit_text::UnitText>::SCHEMA_NAME.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $crate::workflow::unit_text::schema::<$t>()
            }
        }
    };
}
pub(crate) use unit_text_impls;
