//! Flat CSV records from `serde::Serialize` structs: each struct field (nested structs
//! flattened into their fields) becomes one column named after the field, so a log's columns
//! are derived from the types it records, never written by hand.
//!
//! ```
//! use safestep_host::outputs::record::Record;
//! #[derive(serde::Serialize)]
//! struct Inner { b: f64, c: Option<u32> }
//! #[derive(serde::Serialize)]
//! struct Outer { a: u64, inner: Inner }
//! let mut rec = Record::default();
//! rec.push(&Outer { a: 1, inner: Inner { b: 0.5, c: None } }).unwrap();
//! assert_eq!(rec.names(), ["a", "b", "c"]);
//! assert_eq!(rec.values(), ["1", "0.5", ""]);
//! ```

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

/// The columns of one CSV row: names and rendered values, in field order. A name already
/// present is skipped (the first part pushed wins), so parts that share a field (the
/// minibatch's `‖ḡ‖²` in the engine's statistics and in the noise statistics) give one
/// column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    names: Vec<&'static str>,
    values: Vec<String>,
}

/// A value that has no flat CSV form (a sequence, a map, a non-unit enum variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(String);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot flatten into a CSV record: {}", self.0)
    }
}

impl std::error::Error for RecordError {}

impl ser::Error for RecordError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RecordError(msg.to_string())
    }
}

impl Record {
    /// Appends the fields of `part` (a struct) as columns.
    ///
    /// # Errors
    /// [`RecordError`] when `part` is not a struct of scalars, options, unit enum variants
    /// and nested such structs.
    pub fn push<T: Serialize + ?Sized>(&mut self, part: &T) -> Result<(), RecordError> {
        part.serialize(StructFields { record: self })
    }

    /// Drops the column `name` (e.g. a field that duplicates another under a new name).
    pub fn remove(&mut self, name: &str) {
        if let Some(i) = self.names.iter().position(|n| *n == name) {
            self.names.remove(i);
            self.values.remove(i);
        }
    }

    /// Column names.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Rendered values, one per name.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn add(&mut self, name: &'static str, value: String) {
        if !self.names.contains(&name) {
            self.names.push(name);
            self.values.push(value);
        }
    }
}

/// Serializes a struct by handing each field to a [`FieldValue`].
struct StructFields<'r> {
    record: &'r mut Record,
}

/// Serializes one field's value into a column (or, for a nested struct, its columns).
struct FieldValue<'r> {
    record: &'r mut Record,
    name: &'static str,
}

fn unsupported(what: &str) -> RecordError {
    RecordError(format!("{what} values are not supported"))
}

/// Shortest round-trip rendering (`1e-300`, `0.001`, `1.0`), as CSV writers use.
fn float(x: f64) -> String {
    if x.is_finite() {
        ryu::Buffer::new().format(x).to_string()
    } else {
        x.to_string() // NaN, inf, -inf
    }
}

impl<'r> ser::SerializeStruct for StructFields<'r> {
    type Ok = ();
    type Error = RecordError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), RecordError> {
        value.serialize(FieldValue {
            record: self.record,
            name: key,
        })
    }

    fn end(self) -> Result<(), RecordError> {
        Ok(())
    }
}

/// The serializer methods a flat record cannot take.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self $(, _: $arg)*) -> Result<$ret, RecordError> {
            Err(unsupported(stringify!($method)))
        })*
    };
}

impl<'r> ser::Serializer for StructFields<'r> {
    type Ok = ();
    type Error = RecordError;
    type SerializeSeq = Impossible<(), RecordError>;
    type SerializeTuple = Impossible<(), RecordError>;
    type SerializeTupleStruct = Impossible<(), RecordError>;
    type SerializeTupleVariant = Impossible<(), RecordError>;
    type SerializeMap = Impossible<(), RecordError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), RecordError>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, RecordError> {
        Ok(self)
    }

    refuse! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), RecordError> {
        Err(unsupported("top-level option"))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), RecordError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RecordError> {
        Err(unsupported("newtype variant"))
    }
}

impl<'r> FieldValue<'r> {
    fn put(self, value: String) -> Result<(), RecordError> {
        self.record.add(self.name, value);
        Ok(())
    }
}

impl<'r> ser::Serializer for FieldValue<'r> {
    type Ok = ();
    type Error = RecordError;
    type SerializeSeq = Impossible<(), RecordError>;
    type SerializeTuple = Impossible<(), RecordError>;
    type SerializeTupleStruct = Impossible<(), RecordError>;
    type SerializeTupleVariant = Impossible<(), RecordError>;
    type SerializeMap = Impossible<(), RecordError>;
    type SerializeStruct = StructFields<'r>;
    type SerializeStructVariant = Impossible<(), RecordError>;

    fn serialize_bool(self, v: bool) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_f32(self, v: f32) -> Result<(), RecordError> {
        self.put(float(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<(), RecordError> {
        self.put(float(v))
    }
    fn serialize_char(self, v: char) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<(), RecordError> {
        self.put(v.to_string())
    }
    fn serialize_none(self) -> Result<(), RecordError> {
        self.put(String::new())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), RecordError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), RecordError> {
        self.put(String::new())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), RecordError> {
        self.put(String::new())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), RecordError> {
        self.put(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), RecordError> {
        value.serialize(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StructFields<'r>, RecordError> {
        Ok(StructFields {
            record: self.record,
        })
    }

    refuse! {
        serialize_bytes(&[u8]) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RecordError> {
        Err(unsupported("newtype variant"))
    }
}
