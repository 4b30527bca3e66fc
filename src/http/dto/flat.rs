//! Bodies whose top level holds two groups of fields side by side: a submit is a
//! [`JobSpec`](super::JobSpec) and its own fields, a schedule its own fields and a `JobSpec`.
//! Writing such a body is serde's `#[serde(flatten)]`; reading it is here. serde's `flatten`
//! would buffer the fields it does not know and read them afterwards, so an error in a value
//! would lose its path (such as `limits.fuel`), and `deny_unknown_fields` does not work with
//! it. So a body is read one key at a time, straight into the group that owns the key, with
//! serde's own errors: an unknown field is refused while its key is read (naming it and
//! every field of the body), a duplicate or missing field as a derived struct would refuse
//! it. Only a JSON object is a body (a derived struct would also take a sequence of its
//! fields in order). Its OpenAPI schema is one object with the properties of both groups and
//! no others, as if the body were one struct. What the fields mean is the groups' business.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, Schema};

/// Makes `$body { $a: $A, $b: $B }` a body of two field groups: `Deserialize` key by key
/// ([`deserialize`], with `$fields` in the order an unknown field's error lists them), and an
/// OpenAPI schema of one closed object ([`schema`]) described as `$description`.
macro_rules! flat_body {
    ($body:ident { $a:ident: $A:ty, $b:ident: $B:ty }, $fields:expr, $description:expr) => {
        impl<'de> serde::Deserialize<'de> for $body {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let ($a, $b) = super::flat::deserialize(deserializer, stringify!($body), $fields)?;
                Ok(Self { $a, $b })
            }
        }

        impl utoipa::PartialSchema for $body {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                super::flat::schema::<$A, $B>($description)
            }
        }

        impl utoipa::ToSchema for $body {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($body))
            }

            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <$A as utoipa::ToSchema>::schemas(schemas);
                <$B as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}
pub(super) use flat_body;

/// A group of a body's fields, read one key at a time.
pub(super) trait FieldGroup: Default {
    /// The fields of this group a body must have.
    const REQUIRED: &'static [&'static str] = &[];

    /// Reads the value of `key` into its field if `key` is one of this group's fields;
    /// false if it is not.
    fn read_field<'de, M: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut M,
    ) -> Result<bool, M::Error>;
}

/// Reads the body `name` made of groups `A` and `B`, whose fields together are `fields` (in
/// the order an unknown field's error lists them).
pub(super) fn deserialize<'de, D, A, B>(
    deserializer: D,
    name: &'static str,
    fields: &'static [&'static str],
) -> Result<(A, B), D::Error>
where
    D: Deserializer<'de>,
    A: FieldGroup,
    B: FieldGroup,
{
    let body = Body {
        name,
        fields,
        groups: PhantomData,
    };
    deserializer.deserialize_struct(name, fields, body)
}

/// The OpenAPI schema of a body made of groups `A` and `B`: one object with the properties
/// and the required fields of both, closed to others (unknown fields are refused).
pub(super) fn schema<A: PartialSchema, B: PartialSchema>(description: &str) -> RefOr<Schema> {
    let [
        RefOr::T(Schema::Object(mut object)),
        RefOr::T(Schema::Object(b)),
    ] = [A::schema(), B::schema()]
    else {
        panic!("the field groups of a body have object schemas");
    };
    object.properties.extend(b.properties);
    object.required.extend(b.required);
    object.description = Some(description.to_owned());
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    RefOr::T(Schema::Object(object))
}

struct Body<A, B> {
    name: &'static str,
    fields: &'static [&'static str],
    groups: PhantomData<(A, B)>,
}

impl<'de, A: FieldGroup, B: FieldGroup> Visitor<'de> for Body<A, B> {
    type Value = (A, B);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", self.name)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(A, B), M::Error> {
        let (mut a, mut b) = (A::default(), B::default());
        let mut seen: Vec<&'static str> = Vec::with_capacity(self.fields.len());
        while let Some(key) = map.next_key_seed(Key(self.fields))? {
            if seen.contains(&key) {
                return Err(de::Error::duplicate_field(key));
            }
            seen.push(key);
            if !a.read_field(key, &mut map)? && !b.read_field(key, &mut map)? {
                return Err(de::Error::custom(format_args!(
                    "field `{key}` of {} is in neither of its groups",
                    self.name
                )));
            }
        }
        match A::REQUIRED
            .iter()
            .chain(B::REQUIRED)
            .find(|f| !seen.contains(f))
        {
            Some(missing) => Err(de::Error::missing_field(missing)),
            None => Ok((a, b)),
        }
    }
}

/// A key of the body: one of its fields; any other is refused while the key is read, so
/// the error's path names it, as with `deny_unknown_fields`.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<&'static str, E> {
        self.0
            .iter()
            .copied()
            .find(|f| *f == key)
            .ok_or_else(|| E::unknown_field(key, self.0))
    }
}
