//! The shape of data expressions read (which fields a map has, and what each holds), taken from
//! the Rust type that data is serialized from, so that it stays right when the type changes.
//!
//! [`Shape::of`] runs the type's own `Deserialize` on a tracing deserializer: serde's derive names
//! every field of a struct (optional ones included, which a serialized sample would leave out when
//! they are empty), and each field's type asks for what it is (a string, a number, a map...). A
//! type the tracer cannot follow (`serde_json::Value`, `RawValue`) is [`Shape::Any`]: anything may
//! be read from it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// What a value is, as far as expressions reading it can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Anything: free-form, or not known.
    Any,
    /// `true` or `false`.
    Bool,
    /// An integer or a decimal.
    Number,
    /// Text (times are RFC 3339 text).
    String,
    /// A list whose items have this shape.
    List(Box<Shape>),
    /// A map with exactly these fields (an optional one may be absent: `()` when read).
    Record(BTreeMap<String, Shape>),
    /// A map with free keys, each value of this shape (`labels`).
    Dict(Box<Shape>),
}

impl Shape {
    /// The shape of `T`'s serialized form.
    pub fn of<T: DeserializeOwned>() -> Shape {
        let state = RefCell::new(Trace::default());
        // Each pass that fails inside a field marks that field as untraceable and starts again; the
        // derive cannot go on after an error, but the fields after the culprit are reached next time.
        for _ in 0..256 {
            {
                let mut s = state.borrow_mut();
                s.nodes.clear();
                s.stack.clear();
            }
            let failed = T::deserialize(Tracer {
                state: &state,
                path: Vec::new(),
            })
            .is_err();
            let mut s = state.borrow_mut();
            let culprit = s.stack.last().copied();
            match culprit {
                Some(field) if failed && s.skip.insert(field) => continue,
                _ => break,
            }
        }
        let nodes = &state.borrow().nodes;
        assemble(nodes, &mut Vec::new())
    }

    /// The field `name` of a record, or what a dict holds.
    pub fn field(&self, name: &str) -> Option<&Shape> {
        match self {
            Shape::Record(fields) => fields.get(name),
            Shape::Dict(value) => Some(value),
            Shape::Any => Some(&Shape::Any),
            _ => None,
        }
    }

    /// `a map`, `a number`... for messages.
    pub fn described(&self) -> &'static str {
        match self {
            Shape::Any => "a value",
            Shape::Bool => "a bool",
            Shape::Number => "a number",
            Shape::String => "a string",
            Shape::List(_) => "a list",
            Shape::Record(_) | Shape::Dict(_) => "a map",
        }
    }

    /// `record` with `field` set to `shape` (for fields added outside the type, like
    /// `incident.alerts`).
    pub fn with_field(self, field: &str, shape: Shape) -> Shape {
        match self {
            Shape::Record(mut fields) => {
                fields.insert(field.to_owned(), shape);
                Shape::Record(fields)
            }
            other => other,
        }
    }
}

/// What one place of the type is, before the tree is put together.
#[derive(Debug, Clone)]
enum Node {
    Any,
    Bool,
    Number,
    String,
    List,
    Dict,
    Record(&'static [&'static str]),
}

#[derive(Default)]
struct Trace {
    nodes: BTreeMap<Vec<String>, Node>,
    /// The struct fields being read, outermost first: on an error, the last is the culprit.
    stack: Vec<(&'static str, &'static str)>,
    /// Struct fields the tracer cannot follow, by struct name and field.
    skip: BTreeSet<(&'static str, &'static str)>,
}

fn assemble(nodes: &BTreeMap<Vec<String>, Node>, path: &mut Vec<String>) -> Shape {
    let child = |key: &str, path: &mut Vec<String>| {
        path.push(key.to_owned());
        let shape = assemble(nodes, path);
        path.pop();
        shape
    };
    match nodes.get(path.as_slice()) {
        None | Some(Node::Any) => Shape::Any,
        Some(Node::Bool) => Shape::Bool,
        Some(Node::Number) => Shape::Number,
        Some(Node::String) => Shape::String,
        Some(Node::List) => Shape::List(Box::new(child("[]", path))),
        Some(Node::Dict) => Shape::Dict(Box::new(child("*", path))),
        Some(Node::Record(fields)) => Shape::Record(
            fields
                .iter()
                .map(|f| ((*f).to_owned(), child(f, path)))
                .collect(),
        ),
    }
}

/// Why a pass stopped; only that it stopped matters.
#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

/// A time, for types that parse the text they are given (chrono's).
const TEXT: &str = "1970-01-01T00:00:00Z";

struct Tracer<'a> {
    state: &'a RefCell<Trace>,
    path: Vec<String>,
}

impl<'a> Tracer<'a> {
    fn record(&self, node: Node) {
        self.state
            .borrow_mut()
            .nodes
            .insert(self.path.clone(), node);
    }

    fn at(&self, key: &str) -> Tracer<'a> {
        let mut path = self.path.clone();
        path.push(key.to_owned());
        Tracer {
            state: self.state,
            path,
        }
    }

    fn untraceable<T>(self) -> Result<T, Stop> {
        self.record(Node::Any);
        Err(Stop("not traceable".into()))
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident($zero:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            self.record(Node::Number);
            visitor.$visit($zero)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.untraceable()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::Bool);
        visitor.visit_bool(false)
    }

    numbers! {
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::String);
        visitor.visit_char('a')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::String);
        visitor.visit_str(TEXT)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.untraceable()
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.untraceable()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::Any);
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        // serde_json's RawValue asks for a newtype too, and then refuses this tracer: it becomes
        // `Any` through the retry in `Shape::of`.
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::List);
        visitor.visit_seq(OneItem {
            item: Some(self.at("[]")),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        self.untraceable()
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.untraceable()
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record(Node::Dict);
        visitor.visit_map(OneEntry {
            value: Some(self.at("*")),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.record(Node::Record(fields));
        let skip = self.state.borrow().skip.clone();
        visitor.visit_map(Fields {
            tracer: self,
            name,
            fields: fields
                .iter()
                .copied()
                .filter(|f| !skip.contains(&(name, *f)))
                .collect(),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        // Unit variants serialize as their name: a string.
        self.record(Node::String);
        let first = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(UnitVariant(first))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_str("")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_unit()
    }
}

/// A struct's fields, each read once.
struct Fields<'a> {
    tracer: Tracer<'a>,
    name: &'static str,
    fields: Vec<&'static str>,
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        let Some(&field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        self.tracer
            .state
            .borrow_mut()
            .stack
            .push((self.name, field));
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let field = self.fields[self.next];
        self.next += 1;
        let value = seed.deserialize(self.tracer.at(field))?;
        self.tracer.state.borrow_mut().stack.pop();
        Ok(value)
    }
}

/// A map of one entry, so that the value's type is traced.
struct OneEntry<'a> {
    value: Option<Tracer<'a>>,
}

impl<'de> de::MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.value.is_none() {
            return Ok(None);
        }
        seed.deserialize("key".into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let tracer = self.value.take().ok_or_else(|| Stop("no value".into()))?;
        seed.deserialize(tracer)
    }
}

/// A list of one item, so that the item's type is traced.
struct OneItem<'a> {
    item: Option<Tracer<'a>>,
}

impl<'de> de::SeqAccess<'de> for OneItem<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.item.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}

struct UnitVariant(&'static str);

impl<'de> de::EnumAccess<'de> for UnitVariant {
    type Error = Stop;
    type Variant = UnitVariant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitVariant), Stop> {
        let value = seed.deserialize(self.0.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant {
    type Error = Stop;

    fn unit_variant(self) -> Result<(), Stop> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, Stop> {
        Err(Stop("not a unit variant".into()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        Err(Stop("not a unit variant".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop("not a unit variant".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum Status {
        Open,
        Closed,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Inner {
        score: u8,
        native: String,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Outer {
        id: String,
        inner: Inner,
        raw: Box<serde_json::value::RawValue>,
        #[serde(default)]
        maybe: Option<Inner>,
        labels: BTreeMap<String, String>,
        free: serde_json::Value,
        tags: Vec<String>,
        status: Status,
        when: chrono::DateTime<chrono::Utc>,
        /// After two fields the tracer cannot follow: still traced.
        last: bool,
    }

    #[test]
    fn every_field_is_traced_even_after_ones_that_cannot_be() {
        let Shape::Record(fields) = Shape::of::<Outer>() else {
            panic!("not a record");
        };
        let inner = Shape::Record(
            [
                ("score".to_owned(), Shape::Number),
                ("native".to_owned(), Shape::String),
            ]
            .into(),
        );
        assert_eq!(fields["id"], Shape::String);
        assert_eq!(fields["inner"], inner);
        assert_eq!(fields["maybe"], inner);
        assert_eq!(fields["raw"], Shape::Any);
        assert_eq!(fields["free"], Shape::Any);
        assert_eq!(fields["labels"], Shape::Dict(Box::new(Shape::String)));
        assert_eq!(fields["tags"], Shape::List(Box::new(Shape::String)));
        assert_eq!(fields["status"], Shape::String);
        assert_eq!(fields["when"], Shape::String);
        assert_eq!(fields["last"], Shape::Bool);
        assert_eq!(fields.len(), 10);
    }
}
