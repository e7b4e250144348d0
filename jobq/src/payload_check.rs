//! Checks a payload before it is written: things `jsonb` or JSON cannot
//! hold faithfully are refused at enqueue with the place they occur.
//!
//! * Non-finite floats (`NaN`, `±inf`): serde_json writes them as `null`
//!   without an error, so the handler would get a different value than
//!   the one enqueued (or fail to decode it).
//! * The character U+0000 in a string or key: `jsonb` rejects it.
//!
//! The check walks the payload with a serializer that writes nothing.

use std::fmt::{self, Display};

use serde::ser::{self, Serialize};

/// The first problem found, with its path (`$.field[3].key`).
#[derive(Debug)]
pub(crate) struct Problem(pub(crate) String);

impl Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Problem {}

impl ser::Error for Problem {
    fn custom<T: Display>(msg: T) -> Self {
        Problem(msg.to_string())
    }
}

/// Walks `value`; `Err` names the first value JSON/jsonb cannot hold.
pub(crate) fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), Problem> {
    let mut path = Vec::new();
    value.serialize(Walker { path: &mut path })
}

struct Walker<'p> {
    path: &'p mut Vec<String>,
}

impl Walker<'_> {
    fn here(&self) -> String {
        let mut out = String::from("$");
        for part in self.path.iter() {
            out.push_str(part);
        }
        out
    }

    fn float(&self, v: f64) -> Result<(), Problem> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(Problem(format!(
                "{} is {v}, which JSON cannot represent (serde_json would silently store null)",
                self.here()
            )))
        }
    }

    fn text(&self, s: &str) -> Result<(), Problem> {
        if s.contains('\0') {
            Err(Problem(format!(
                "{} contains the character U+0000, which PostgreSQL's jsonb cannot store",
                self.here()
            )))
        } else {
            Ok(())
        }
    }

    fn child<T: Serialize + ?Sized>(&mut self, part: String, value: &T) -> Result<(), Problem> {
        self.path.push(part);
        let result = value.serialize(Walker { path: self.path });
        self.path.pop();
        result
    }
}

/// Compound serializers: fields and elements, each under its own path.
struct Compound<'p> {
    walker: Walker<'p>,
    index: usize,
    key: Option<String>,
}

impl<'p> Compound<'p> {
    fn new(walker: Walker<'p>) -> Self {
        Self {
            walker,
            index: 0,
            key: None,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        let part = format!("[{}]", self.index);
        self.index += 1;
        self.walker.child(part, value)
    }
}

impl<'p> ser::Serializer for Walker<'p> {
    type Ok = ();
    type Error = Problem;
    type SerializeSeq = Compound<'p>;
    type SerializeTuple = Compound<'p>;
    type SerializeTupleStruct = Compound<'p>;
    type SerializeTupleVariant = Compound<'p>;
    type SerializeMap = Compound<'p>;
    type SerializeStruct = Compound<'p>;
    type SerializeStructVariant = Compound<'p>;

    fn serialize_bool(self, _: bool) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Problem> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Problem> {
        self.float(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Problem> {
        self.text(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Problem> {
        self.text(v)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Problem> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        self.child(format!(".{variant}"), value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'p>, Problem> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'p>, Problem> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'p>, Problem> {
        Ok(Compound::new(self))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'p>, Problem> {
        self.path.push(format!(".{variant}"));
        Ok(Compound::new(self))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'p>, Problem> {
        Ok(Compound::new(self))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'p>, Problem> {
        Ok(Compound::new(self))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'p>, Problem> {
        self.path.push(format!(".{variant}"));
        Ok(Compound::new(self))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        self.element(value)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        self.element(value)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        self.element(value)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        self.element(value)
    }
    fn end(self) -> Result<(), Problem> {
        self.walker.path.pop();
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Problem> {
        // Keys are strings in JSON; check them, and name them in paths.
        self.walker.child("<key>".to_owned(), key)?;
        self.key = Some(match serde_json::to_value(key) {
            Ok(serde_json::Value::String(s)) => format!("[{s:?}]"),
            Ok(other) => format!("[{other}]"),
            Err(_) => "[?]".to_owned(),
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        let part = self.key.take().unwrap_or_else(|| "[?]".to_owned());
        self.walker.child(part, value)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        self.walker.child(format!(".{key}"), value)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        self.walker.child(format!(".{key}"), value)
    }
    fn end(self) -> Result<(), Problem> {
        self.walker.path.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(serde::Serialize)]
    struct Outer {
        name: String,
        values: Vec<f64>,
        tags: BTreeMap<String, f32>,
    }

    #[test]
    fn finds_non_finite_floats_and_nul_with_their_path() {
        let ok = Outer {
            name: "x".into(),
            values: vec![1.0, 2.5],
            tags: BTreeMap::from([("a".to_owned(), 1.0)]),
        };
        assert!(check(&ok).is_ok());
        let nan = Outer {
            values: vec![1.0, f64::NAN],
            ..ok
        };
        let msg = check(&nan).unwrap_err().to_string();
        assert!(msg.contains("$.values[1]") && msg.contains("NaN"), "{msg}");
        let inf = Outer {
            name: "x".into(),
            values: vec![],
            tags: BTreeMap::from([("k".to_owned(), f32::INFINITY)]),
        };
        let msg = check(&inf).unwrap_err().to_string();
        assert!(
            msg.contains("$.tags[\"k\"]") && msg.contains("inf"),
            "{msg}"
        );
        let nul = Outer {
            name: "a\0b".into(),
            values: vec![],
            tags: BTreeMap::new(),
        };
        let msg = check(&nul).unwrap_err().to_string();
        assert!(msg.contains("$.name") && msg.contains("U+0000"), "{msg}");
        let nul_key: BTreeMap<String, i32> = BTreeMap::from([("\0".to_owned(), 1)]);
        assert!(check(&nul_key).is_err());
        // A backslash followed by "u0000" is an ordinary string.
        assert!(check("\\u0000").is_ok());
    }
}
